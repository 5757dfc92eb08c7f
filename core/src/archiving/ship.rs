//! Shipping MariaDB's binary logs: the agent makes the server close its
//! log (`FLUSH BINARY LOGS`), fetches every closed file it has not shipped
//! yet through the replication protocol, and stores it create-only on every
//! target of the export, with its digest and close time in the key.

use std::time::Instant;

use chrono::{DateTime, Utc};

use super::ArchiveReach;
use super::binlog::{self, BinlogStart};
use super::spool::Spool;
use crate::config::Policy;
use crate::notify::archive_alert as alert;
use crate::repository::Repository;
use crate::repository::binlog::BinlogObject;
use crate::repository::wal::sha256_hex;
use crate::source::SourceConfig;
use crate::source::mysql::{Mysql, MysqlConfig};
use crate::state::{ArchiveState, Kept};
use crate::{Error, Result};

/// A MariaDB export whose binary logs are shipped, with its opened targets.
pub struct BinlogArchive<'p> {
    pub policy: &'p Policy,
    pub export: String,
    pub mysql: MysqlConfig,
    pub repos: Vec<Repository>,
    pub unreachable: Vec<Error>,
    level: i32,
}

/// What one shipment did.
#[derive(Debug, Default)]
pub struct Shipped {
    /// Files stored now.
    pub shipped: Vec<String>,
    /// Closed files every target already held.
    pub already: usize,
}

impl<'p> BinlogArchive<'p> {
    pub async fn open(policy: &'p Policy, export: &str) -> Result<BinlogArchive<'p>> {
        let e = policy.export(export)?;
        let mysql = match &e.source {
            SourceConfig::Mysql(c) if c.binlog.is_some() => c.clone(),
            _ => {
                return Err(Error::Usage(format!(
                    "export `{export}` does not ship binary logs (a mariadb source with `binlog:`)"
                )));
            }
        };
        let (repos, unreachable) = crate::repository::open_reachable(policy, &e.targets).await;
        Ok(BinlogArchive {
            policy,
            export: export.to_string(),
            mysql,
            repos,
            unreachable,
            level: e.compression.level,
        })
    }

    pub fn spool(&self) -> Result<Spool> {
        Spool::open(self.policy, &self.export)
    }

    /// Ships every closed binary log not shipped yet; with `rotate`, makes
    /// the server close the one it is writing first.
    pub async fn ship(&self, rotate: bool) -> Result<Shipped> {
        if let Some(e) = self.unreachable.first() {
            return Err(Error::Failed(format!(
                "not shipped: {} of the export's targets cannot be reached ({e})",
                self.unreachable.len()
            )));
        }
        let server = Mysql::new(self.mysql.clone(), &self.policy.base_dir);
        let logs = tokio::task::spawn_blocking(move || {
            if rotate {
                server.flush_binary_logs()?;
            }
            server.binary_logs()
        })
        .await
        .map_err(|e| Error::Failed(format!("the listing task stopped: {e}")))??;
        let spool = self.spool()?;
        let mut out = Shipped::default();
        // The last one is being written.
        for (name, size) in logs.iter().take(logs.len().saturating_sub(1)) {
            if spool.is_marked_sized(name, *size) {
                continue;
            }
            let started = Instant::now();
            let (bytes, facts) = self.fetch(name).await?;
            let sha = sha256_hex(&bytes);
            let level = self.level;
            let stored = tokio::task::spawn_blocking(move || zstd::bulk::compress(&bytes, level))
                .await
                .map_err(|e| Error::Failed(format!("the compression task stopped: {e}")))?
                .map_err(|e| Error::io(format!("cannot compress {name}"), e))?;
            let mut stored_now = false;
            for repo in &self.repos {
                let existing: Vec<BinlogObject> = repo
                    .binlog_list(&self.policy.host, &self.export)
                    .await?
                    .into_iter()
                    .filter(|o| &o.name == name)
                    .collect();
                if existing.iter().any(|o| o.sha256 == sha) {
                    continue;
                }
                if let Some(other) = existing.first() {
                    return Err(Error::Conflict(format!(
                        "target `{}` already holds a different {name} (SHA-256 {}): another server is shipping into \
                         export `{}`, or the server's binary logs were reset; nothing was overwritten",
                        repo.name(),
                        &other.sha256[..12],
                        self.export
                    )));
                }
                repo.binlog_store(
                    &self.policy.host,
                    &self.export,
                    name,
                    &sha,
                    &facts,
                    stored.clone(),
                )
                .await?;
                stored_now = true;
            }
            let closed = facts.closed_at.unwrap_or_else(Utc::now);
            spool.mark_file(name, &sha, *size, closed, started.elapsed().as_secs_f64());
            if stored_now {
                out.shipped.push(name.clone());
            } else {
                out.already += 1;
            }
        }
        Ok(out)
    }

    async fn fetch(&self, name: &str) -> Result<(Vec<u8>, binlog::BinlogFacts)> {
        let server = Mysql::new(self.mysql.clone(), &self.policy.base_dir);
        let name = name.to_string();
        tokio::task::spawn_blocking(move || {
            let dir = tempfile::Builder::new()
                .prefix("drp-binlog-")
                .tempdir()
                .map_err(|e| Error::io("cannot create a folder for the binary log", e))?;
            let bytes = server.fetch_binary_log(&name, dir.path())?;
            let facts = binlog::facts(&bytes)
                .map_err(|e| Error::Failed(format!("{name} is not a whole binary log: {e}")))?;
            if !facts.terminated {
                // Closed by a crash: the server opened the next one at its
                // restart. Shipped as it is, up to its last event.
                tracing::warn!("{name} has no rotate event (the server stopped abruptly): shipped up to its last event");
            }
            Ok((bytes, facts))
        })
        .await
        .map_err(|e| Error::Failed(format!("the fetch task stopped: {e}")))?
    }

    /// Saves what was seen: the shipment's outcome, the latencies, and how
    /// far a restore reaches now.
    pub async fn record(&self, turn: Option<Result<Shipped>>) -> Result<ArchiveState> {
        let mut state = ArchiveState::load(self.policy, &self.export);
        let spool = self.spool()?;
        // An observation (`wal status`) is not a turn: the last turn's
        // outcome and time stay.
        let outcome = match turn {
            Some(Ok(s)) => {
                state.last_error = None;
                state.backlog_files = 0;
                state.checked_at = Some(Utc::now());
                Some(Ok(s))
            }
            Some(Err(e)) => {
                state.last_error = Some(e.to_string());
                state.checked_at = Some(Utc::now());
                if let Error::Conflict(msg) = &e {
                    let targets: Vec<String> =
                        self.repos.iter().map(|r| r.name().to_string()).collect();
                    alert(
                        self.policy,
                        &self.export,
                        &targets,
                        "binary-log conflict",
                        msg,
                    )
                    .await;
                }
                Some(Err(e))
            }
            None => None,
        };
        (
            state.push_p50_seconds,
            state.push_p99_seconds,
            state.lag_p99_seconds,
        ) = spool.latencies();
        let r = self.reach().await;
        state.recoverable_until = r.until;
        state.restorable_base_backups = r.restorable;
        state.reach_checked_at = Some(Utc::now());
        state.save(self.policy, &self.export)?;
        match outcome {
            Some(Err(e)) => Err(e),
            _ => Ok(state),
        }
    }

    /// The newest instant a restore reaches, over every reachable target.
    pub async fn reach(&self) -> ArchiveReach {
        let mut best = ArchiveReach::default();
        for repo in &self.repos {
            if let Ok(listing) = repo.list(&self.policy.host, &self.export).await
                && let Ok(r) =
                    binlog_reach(repo, &self.policy.host, &self.export, &listing.points).await
            {
                best.merge(r);
            }
        }
        best
    }
}

/// How far the binary logs shipped to `repo` carry a restore of the best
/// of `points` (the export's dumps).
pub async fn binlog_reach(
    repo: &Repository,
    host: &str,
    export: &str,
    points: &[crate::manifest::Manifest],
) -> Result<ArchiveReach> {
    let objects = repo.binlog_list(host, export).await?;
    let mut best = ArchiveReach::default();
    for m in points {
        let Some(start) = &m.binlog else { continue };
        best.restorable += 1;
        let r = reach(&objects, start);
        let until = r.until.max(Some(m.consistency_time));
        if until > best.until {
            best.until = until;
            best.next_missing = Some(r.next_missing);
        }
    }
    Ok(best)
}

/// How far the shipped logs carry an export that stands at `start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogReach {
    /// The files to replay, in order: `start`'s file, then each next one.
    pub files: Vec<BinlogObject>,
    /// The newest instant they reach: when the last of them was closed.
    pub until: Option<DateTime<Utc>>,
    /// The first file not (yet) shipped.
    pub next_missing: String,
}

/// The unbroken run of shipped files from `start`'s file on.
pub fn reach(objects: &[BinlogObject], start: &BinlogStart) -> BinlogReach {
    let base = start.file.rsplit_once('.').map_or("", |(b, _)| b);
    let digits = start.file.len() - base.len() - 1;
    let mut seq = binlog::sequence(&start.file).unwrap_or(0);
    let mut files = Vec::new();
    loop {
        let name = format!("{base}.{seq:0digits$}");
        let Some(o) = objects.iter().find(|o| o.name == name) else {
            return BinlogReach {
                until: files.last().map(|f: &BinlogObject| f.closed_at),
                files,
                next_missing: name,
            };
        };
        files.push(o.clone());
        seq += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str, closed: i64) -> BinlogObject {
        BinlogObject {
            name: name.into(),
            sha256: "0".repeat(64),
            closed_at: DateTime::from_timestamp(closed, 0).unwrap(),
            key: String::new(),
        }
    }

    #[test]
    fn the_reach_is_the_unbroken_run_from_the_dumps_file() {
        let objects = [
            object("mysql-bin.000001", 10),
            object("mysql-bin.000002", 20),
            object("mysql-bin.000003", 30),
            object("mysql-bin.000005", 50),
        ];
        let start = BinlogStart {
            file: "mysql-bin.000002".into(),
            position: 342,
            gtid: None,
        };
        let r = reach(&objects, &start);
        assert_eq!(r.files.len(), 2);
        assert_eq!(r.until, DateTime::from_timestamp(30, 0));
        assert_eq!(r.next_missing, "mysql-bin.000004");
    }
}
