//! What the agent remembers between runs, keyed by host and export, in one
//! store: per export, its last run (attempt, result, sizes, what the targets
//! held), what its archiving last saw, and its last restore test; per
//! declared snapshot, the newest one taken. Each record is a small JSON file,
//! `<state_dir>/<host>/<kind>/<export>.json`, written atomically.
//!
//! The state is a cache of what the repositories hold: losing it only makes
//! every export and restore test due once, the archive's reach computed
//! again from the archive, and `status` forget the snapshots until the next
//! one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Policy;
use crate::{Error, Result};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExportState {
    pub last_attempt: Option<DateTime<Utc>>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_result: Option<RunResult>,
    pub last_error: Option<String>,
    pub last_duration_seconds: Option<f64>,
    pub last_raw_bytes: Option<u64>,
    pub last_stored_bytes: Option<u64>,
    /// Committed points per target, as last listed.
    #[serde(default)]
    pub points: BTreeMap<String, usize>,
    /// Consistency time of the newest committed point on any target.
    pub newest_consistency: Option<DateTime<Utc>>,
    /// What the last scheduled run did after its backup: the newest point
    /// read back, retention applied.
    #[serde(default)]
    pub last_maintenance: Option<Maintenance>,
}

/// How a backup attempt ended, over its targets.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    /// Committed on every target.
    Ok,
    /// Committed on some targets only.
    Partial,
    /// Committed nowhere.
    Failed,
}

impl RunResult {
    pub fn name(self) -> &'static str {
        match self {
            RunResult::Ok => "ok",
            RunResult::Partial => "partial",
            RunResult::Failed => "failed",
        }
    }
}

impl std::fmt::Display for RunResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Upkeep after a scheduled backup (`run --due`, the daemon).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Maintenance {
    pub at: Option<DateTime<Utc>>,
    /// Targets whose newest point was read back and matched its digests.
    pub verified: Vec<String>,
    /// Points retention deleted, over every target.
    pub deleted: usize,
    /// Points kept.
    pub kept: usize,
    /// Orphans (uploads of killed runs) removed.
    pub orphans_removed: usize,
    pub errors: Vec<String>,
}

/// A record the store keeps per export of a host, each kind in a folder
/// of its own.
pub trait Kept: Serialize + serde::de::DeserializeOwned + Default {
    const FOLDER: &'static str;

    /// The record of `export` on the policy's host; the default when there
    /// is none, or when it cannot be read (it is a cache).
    fn load(policy: &Policy, export: &str) -> Self {
        std::fs::read(path::<Self>(policy, export))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, policy: &Policy, export: &str) -> Result<()> {
        let body = serde_json::to_vec_pretty(self).expect("state serialises");
        write_atomically(&path::<Self>(policy, export), &body)
    }
}

impl Kept for ExportState {
    const FOLDER: &'static str = "exports";
}

impl Kept for ArchiveState {
    const FOLDER: &'static str = "archive";
}

impl Kept for LastTest {
    const FOLDER: &'static str = "restore-tests";
}

fn path<T: Kept>(policy: &Policy, export: &str) -> PathBuf {
    policy
        .state_dir
        .join(&policy.host)
        .join(T::FOLDER)
        .join(format!("{export}.json"))
}

/// The folder where an archiving export marks the files already on every
/// target.
pub fn spool_dir(policy: &Policy, export: &str) -> PathBuf {
    policy
        .state_dir
        .join(&policy.host)
        .join("wal-spool")
        .join(export)
}

/// What the agent last saw of an export's archiving, for `status` and the
/// metrics: written by each push, the daemon and `wal status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ArchiveState {
    pub checked_at: Option<DateTime<Utc>>,
    /// The newest instant a restore can reach, when last computed.
    pub recoverable_until: Option<DateTime<Utc>>,
    /// The first file missing after that reach: a push of exactly this
    /// file carries the reach to its end, without reading the archive.
    #[serde(default)]
    pub reach_next: Option<String>,
    pub reach_checked_at: Option<DateTime<Utc>>,
    pub restorable_base_backups: usize,
    pub backlog_files: usize,
    pub pg_wal_free_bytes: Option<u64>,
    /// Seconds a push took, lately (50th and 99th percentiles).
    pub push_p50_seconds: Option<f64>,
    pub push_p99_seconds: Option<f64>,
    /// Seconds from a file's last write to every target holding it (99th).
    pub lag_p99_seconds: Option<f64>,
    pub last_error: Option<String>,
}

/// The last restore test of an export on this host.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LastTest {
    pub at: Option<DateTime<Utc>>,
    pub passed: bool,
    pub point: Option<String>,
    /// Receive and load, in seconds.
    pub restore_seconds: f64,
    pub raw_bytes: u64,
    pub restore_bytes_per_second: f64,
    pub error: Option<String>,
}

impl LastTest {
    /// Whether the schedule (`every`) wants a test now.
    pub fn due(&self, every: std::time::Duration, now: DateTime<Utc>) -> bool {
        self.at.is_none_or(|t| {
            now - t >= chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX)
        })
    }
}

/// What the agent last saw of a standby, for `status` and the metrics.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StandbyState {
    pub checked_at: Option<DateTime<Utc>>,
    /// Still replaying (`false`: promoted, or not a standby at all).
    pub in_recovery: bool,
    /// Where its replay stands.
    pub replay_lsn: Option<String>,
    /// The commit time of the last transaction it replayed.
    pub replayed_commit_at: Option<DateTime<Utc>>,
    /// The newest WAL segment the archive holds.
    pub newest_archived: Option<String>,
    /// Archived segments not replayed yet.
    pub behind_segments: usize,
    /// A warm standby: how old the oldest archived change not yet replayed
    /// is (0 when it has replayed everything the archive holds). A restored
    /// one: how old the point it holds is.
    pub lag_seconds: Option<f64>,
    /// Whether the last lag alert is still standing (alerted once per
    /// crossing).
    #[serde(default)]
    pub alerted: bool,
    /// A restored standby: when it was last brought to the primary's
    /// newest point, which point, and the instant it holds.
    #[serde(default)]
    pub refreshed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub point: Option<String>,
    #[serde(default)]
    pub point_consistent_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

impl StandbyState {
    /// Whether this look at a standby calls for an alert: it did not
    /// answer, or it replays with its lag past `lag_alert` (seconds).
    pub fn alerting(&self, lag_alert: f64) -> bool {
        self.error.is_some()
            || (self.in_recovery && self.lag_seconds.is_some_and(|l| l > lag_alert))
    }
}

impl Kept for StandbyState {
    const FOLDER: &'static str = "standby";
}

/// What the host's watchdog knows of one watched service
/// (`<host>/watch/<service>.json`): its last check, where its counters
/// stand, the incident being handled, and whether it is paused or stopped.
/// The watchdog (`watch.rs`) moves it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WatchState {
    pub checked_at: Option<DateTime<Utc>>,
    /// Whether the last check passed.
    pub up: Option<bool>,
    /// What the last check said.
    pub detail: Option<String>,
    /// Consecutive failed checks that counted.
    #[serde(default)]
    pub fails: u32,
    /// Consecutive passed checks since the last rung.
    #[serde(default)]
    pub passes: u32,
    /// The first failed check of the current run of failures.
    pub failing_since: Option<DateTime<Utc>>,
    /// Checks do not count before this (the grace after a rung).
    pub grace_until: Option<DateTime<Utc>>,
    /// The incident being handled.
    pub incident: Option<crate::records::Incident>,
    /// The last incident closed (recovered, or given up on).
    pub last_incident: Option<crate::records::Incident>,
    /// No action until then (`watch pause`).
    pub paused_until: Option<DateTime<Utc>>,
    /// Why the watchdog stopped acting on the service, until `watch resume`.
    pub stopped: Option<String>,
    /// When rungs were tried, within the flap limit's window.
    #[serde(default)]
    pub escalations: Vec<DateTime<Utc>>,
    /// Rungs tried since the state began, by rung.
    #[serde(default)]
    pub escalations_total: BTreeMap<String, u64>,
}

impl Kept for WatchState {
    const FOLDER: &'static str = "watch";
}

/// The newest fence record this host has read about itself
/// (`<host>/fence.json`): kept so that a fenced host stays fenced when no
/// repository answers.
pub fn load_fence(policy: &Policy) -> Option<crate::records::Fence> {
    std::fs::read(fence_path(policy))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

pub fn save_fence(policy: &Policy, fence: &crate::records::Fence) -> Result<()> {
    let body = serde_json::to_vec_pretty(fence).expect("record serialises");
    write_atomically(&fence_path(policy), &body)
}

fn fence_path(policy: &Policy) -> PathBuf {
    policy.state_dir.join(&policy.host).join("fence.json")
}

/// Writes `body` to `path` through a temporary file and a rename, with mode 0640.
pub fn write_atomically(path: &Path, body: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io_path("cannot create", dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".drp-")
        .tempfile_in(dir)
        .map_err(|e| Error::io_path("cannot write in", dir, e))?;
    tmp.write_all(body)
        .map_err(|e| Error::io_path("cannot write", path, e))?;
    let _ = tmp
        .as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o640));
    tmp.persist(path)
        .map_err(|e| Error::io_path("cannot write", path, e.error))?;
    Ok(())
}

/// The newest complete snapshot of each declared snapshot name, kept for
/// `status` and the metrics (the set records in the repository stay the
/// truth).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Newest {
    pub by_name: BTreeMap<String, NewestSnapshot>,
    /// When each snapshot last failed to be taken (a change it guards was
    /// then not run): newer than its `by_name` entry means changes go unprotected.
    #[serde(default)]
    pub failed: BTreeMap<String, DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewestSnapshot {
    pub kind: String,
    pub set: String,
    pub change: String,
    pub taken_at: DateTime<Utc>,
}

fn newest_path(policy: &Policy) -> PathBuf {
    policy.state_dir.join(&policy.host).join("snapshots.json")
}

/// The newest snapshots this host recorded (none if it never took one).
pub fn newest(policy: &Policy) -> Newest {
    std::fs::read(newest_path(policy))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Records snapshots just taken, by name, over what was recorded before,
/// and those that failed. A failure to write is logged: the state is a cache.
pub(crate) fn record_newest(
    policy: &Policy,
    taken: impl IntoIterator<Item = (String, NewestSnapshot)>,
    failed: impl IntoIterator<Item = (String, DateTime<Utc>)>,
) {
    let mut n = newest(policy);
    n.by_name.extend(taken);
    n.failed.extend(failed);
    let body = serde_json::to_vec_pretty(&n).expect("serialises");
    if let Err(e) = write_atomically(&newest_path(policy), &body) {
        tracing::warn!(error = %e, "snapshot state not recorded");
    }
}
