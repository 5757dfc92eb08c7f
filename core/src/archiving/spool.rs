//! The agent's record of WAL files already archived on every target, so
//! that `archive_command` returns at once for a file the daemon (or an
//! earlier push) has already made durable, and the push latencies behind the
//! worst-case RPO.
//!
//! One small file per archived WAL file, in the policy's state folder:
//! `<state>/<host>/wal-spool/<export>/<file name>`, holding its digest and latency. A
//! marker only ever says "this exact content is on every target"; a file
//! whose digest differs is pushed again.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use std::time::Instant;

use super::archive::{Archive, Ready};
use crate::repository::wal::sha256_hex;
use crate::{Error, Result};

/// How long markers are kept: PostgreSQL removes a file's `.ready` once it
/// is acknowledged, so older markers only serve the latency figures.
const KEEP: chrono::TimeDelta = chrono::TimeDelta::hours(24);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Marker {
    pub sha256: String,
    /// The file's size (older markers have none).
    #[serde(default)]
    pub size: Option<u64>,
    pub pushed_at: DateTime<Utc>,
    /// Seconds from reading the file to every target holding it.
    pub seconds: f64,
    /// Seconds from the file's last write to every target holding it.
    pub lag_seconds: f64,
}

pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// The spool of `export`. It is a cache: a folder that cannot be
    /// created (another user's, a read-only state folder) only means every
    /// file is pushed in full, never that a push fails.
    pub fn open(policy: &crate::config::Policy, export: &str) -> Result<Spool> {
        let dir = crate::state::spool_dir(policy, export);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(error = %e, "the WAL spool {} cannot be created; pushing without it", dir.display());
        }
        Ok(Spool { dir })
    }

    /// Records that `ready` is on every target (best effort: see [`Spool::open`]).
    pub fn mark(&self, ready: &Ready, seconds: f64) -> Result<()> {
        self.mark_file(
            &ready.file.to_string(),
            &ready.sha256,
            ready.raw_size,
            ready.ended,
            seconds,
        );
        Ok(())
    }

    /// Records that the file `name` (its last byte written at `ended`) is on
    /// every target.
    /// every target. Best effort: a marker not written only means the file
    /// is checked against the targets again next time.
    pub fn mark_file(
        &self,
        name: &str,
        sha256: &str,
        size: u64,
        ended: DateTime<Utc>,
        seconds: f64,
    ) {
        let now = Utc::now();
        let marker = Marker {
            sha256: sha256.to_string(),
            size: Some(size),
            pushed_at: now,
            seconds,
            lag_seconds: (now - ended).as_seconds_f64().max(0.0),
        };
        let body = serde_json::to_vec(&marker).expect("marker serialises");
        if let Err(e) = crate::state::write_atomically(&self.dir.join(name), &body) {
            tracing::warn!(error = %e, "the spool marker of {name} is not written");
        }
    }

    /// When the last byte of the file `name` was written, if it is marked
    /// as on every target.
    pub fn archived_end(&self, name: &str) -> Option<DateTime<Utc>> {
        let m = self.marker(name)?;
        let lag = chrono::TimeDelta::milliseconds((m.lag_seconds * 1000.0) as i64);
        Some(m.pushed_at - lag)
    }

    /// Whether a file of this name and size was archived (binary logs,
    /// whose names come back after `RESET MASTER`).
    pub fn is_marked_sized(&self, name: &str, size: u64) -> bool {
        self.marker(name).is_some_and(|m| m.size == Some(size))
    }

    /// The latencies of recent pushes: 50th and 99th percentiles of their
    /// duration, 99th of their lag.
    pub fn latencies(&self) -> (Option<f64>, Option<f64>, Option<f64>) {
        let markers = self.markers();
        let seconds: Vec<f64> = markers.iter().map(|(_, m)| m.seconds).collect();
        let lags: Vec<f64> = markers.iter().map(|(_, m)| m.lag_seconds).collect();
        (
            percentile(&seconds, 50.0),
            percentile(&seconds, 99.0),
            percentile(&lags, 99.0),
        )
    }

    fn marker(&self, name: &str) -> Option<Marker> {
        let body = std::fs::read(self.dir.join(name)).ok()?;
        serde_json::from_slice(&body).ok()
    }

    /// Whether a file of this name was archived (whatever its content).
    pub fn is_marked_name(&self, name: &str) -> bool {
        self.dir.join(name).is_file()
    }

    /// Whether the file at `path`, with exactly its current content, is
    /// already on every target.
    pub fn is_archived(&self, path: &Path) -> bool {
        let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            return false;
        };
        let Some(marker) = self.marker(&name) else {
            return false;
        };
        std::fs::read(path).is_ok_and(|bytes| sha256_hex(&bytes) == marker.sha256)
    }

    /// Every marker, oldest first; removes those past [`KEEP`].
    pub fn markers(&self) -> Vec<(String, Marker)> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        let cutoff = Utc::now() - KEEP;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            match self.marker(&name) {
                Some(m) if m.pushed_at < cutoff => {
                    let _ = std::fs::remove_file(e.path());
                }
                Some(m) => out.push((name, m)),
                None => {}
            }
        }
        out.sort_by_key(|(_, m)| m.pushed_at);
        out
    }
}

/// The files PostgreSQL has marked ready for archiving in `pg_wal`
/// (`archive_status/<name>.ready`), history files first, then in WAL order.
pub fn ready_files(pg_wal: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(pg_wal.join("archive_status")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".ready")
                .map(str::to_string)
        })
        .filter(|n| super::WalFile::parse(n).is_some())
        .collect();
    names.sort_by_key(|n| (!n.ends_with(".history"), n.clone()));
    names
}

/// Percentile `p` (0–100) of `values`, nearest-rank.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

/// Pushes the files waiting in `archive_status` (`*.ready`) that the spool
/// does not already mark as archived (but `skip`, being pushed by its own
/// request), up to `max` at once, and marks each one archived. Returns how
/// many were pushed and the errors met.
pub async fn push_waiting(
    archive: &Archive<'_>,
    pg_wal: &Path,
    spool: &Spool,
    max: usize,
    skip: Option<&str>,
) -> (usize, Vec<Error>) {
    let waiting: Vec<_> = ready_files(pg_wal)
        .into_iter()
        .filter(|name| !spool.is_marked_name(name) && Some(name.as_str()) != skip)
        .take(max)
        .collect();
    let results = futures::future::join_all(waiting.iter().map(|name| async move {
        let path = pg_wal.join(name);
        let started = Instant::now();
        let level = archive.level;
        let p = path.clone();
        let ready = tokio::task::spawn_blocking(move || Ready::read(&p, level))
            .await
            .map_err(|e| Error::Failed(format!("the read task stopped: {e}")))??;
        archive.push(&ready).await?;
        spool.mark(&ready, started.elapsed().as_secs_f64())
    }))
    .await;
    let mut pushed = 0;
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(()) => pushed += 1,
            Err(e) => errors.push(e),
        }
    }
    (pushed, errors)
}
