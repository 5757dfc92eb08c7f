//! The drill's heartbeat: rows written into the live database until the
//! failure, then the newest one read back from the recovered data (the
//! restored database, or the standby the service moved to), to measure the
//! RPO from the data itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::runbook::{Heartbeat, Runbook};
use drp_core::Result;
use drp_core::source::SourceKind;

/// Heartbeat rows written into the live database until stopped. Dropping
/// it stops the writer too, so no way out of a run leaves it writing.
pub(super) struct HeartbeatWriter {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<Option<DateTime<Utc>>>>,
}

impl HeartbeatWriter {
    /// Creates the table and starts writing a row every interval.
    pub(super) fn start(runbook: &Runbook, hb: &Heartbeat) -> Result<HeartbeatWriter> {
        let policy = &runbook.policy;
        let export = policy.export(&hb.export)?;
        let source = drp_core::source::build(&export.source, &policy.base_dir);
        source.sql(None, &create_table(export.source.kind(), &hb.table))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, table, interval) = (stop.clone(), hb.table.clone(), hb.interval.as_duration());
        let task = tokio::task::spawn_blocking(move || {
            let mut last = None;
            while !flag.load(Ordering::SeqCst) {
                let at = Utc::now();
                match source.sql(
                    None,
                    &format!("insert into {table} (beat_at) values ('{}')", stamp(at)),
                ) {
                    Ok(_) => last = Some(at),
                    Err(e) => tracing::warn!(error = %e, "heartbeat not written"),
                }
                let until = Instant::now() + interval;
                while Instant::now() < until && !flag.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            last
        });
        Ok(HeartbeatWriter {
            stop,
            task: Some(task),
        })
    }

    /// Stops the writer; the time of the last heartbeat it wrote.
    pub(super) async fn stop(mut self) -> Option<DateTime<Utc>> {
        self.stop.store(true, Ordering::SeqCst);
        let task = self.task.take()?;
        task.await.ok().flatten()
    }
}

impl Drop for HeartbeatWriter {
    fn drop(&mut self) {
        // The writer's thread sees this within its 20 ms poll and ends.
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn create_table(kind: SourceKind, table: &str) -> String {
    let id = match kind {
        SourceKind::Postgres | SourceKind::PostgresCluster => "id bigserial primary key",
        SourceKind::Mysql => "id bigint auto_increment primary key",
        SourceKind::Sqlite | SourceKind::Directory | SourceKind::Command | SourceKind::Redis => {
            "id integer primary key"
        }
    };
    format!("create table if not exists {table} ({id}, beat_at varchar(40) not null)")
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Why the heartbeat could not be read back.
#[derive(Debug, thiserror::Error)]
pub(super) enum ReadError {
    #[error(transparent)]
    Core(#[from] drp_core::Error),
    #[error(transparent)]
    Query(#[from] drp_core::source::SourceError),
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    #[error("heartbeat `{value}`: {source}")]
    Unreadable {
        value: String,
        #[source]
        source: chrono::ParseError,
    },
}

/// The newest heartbeat in the recovered database (the restored one, or
/// the standby's under `read_from`); `None` when it has none.
pub(super) async fn newest(
    runbook: &Runbook,
    hb: &Heartbeat,
) -> std::result::Result<Option<DateTime<Utc>>, ReadError> {
    let policy = &runbook.policy;
    let export = policy.export(hb.read_export())?;
    let source = drp_core::source::build(&export.source, &policy.base_dir);
    let sql = format!("select max(beat_at) from {}", hb.table);
    let rows = tokio::task::spawn_blocking(move || source.sql(None, &sql)).await??;
    let v = rows
        .first()
        .and_then(|r| r.first())
        .cloned()
        .unwrap_or_default();
    if v.is_empty() || v == "NULL" {
        return Ok(None);
    }
    match DateTime::parse_from_rfc3339(&v) {
        Ok(t) => Ok(Some(t.with_timezone(&Utc))),
        Err(source) => Err(ReadError::Unreadable { value: v, source }),
    }
}
