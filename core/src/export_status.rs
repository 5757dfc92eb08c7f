//! Where one export's recovery stands: its newest point, the newest instant
//! a restore reaches, the exposure against its RPO, its last restore test
//! and the restore time predicted for its newest point.
//!
//! One computation ([`ExportStatus::assess`]) for every view: `status`, the
//! metrics, the compliance report, the fleet's table and the handover page.
//! [`ExportStatus::gather`] reads its inputs from the repositories and the
//! archive themselves; [`ExportStatus::from_state`] (the metrics) from the
//! host's state, which every backup, archive push and `status` keeps.
//!
//! The exposure is `now` minus the newest restorable instant: for an export
//! archived continuously (WAL, binary logs) the end of the archive's
//! unbroken run from its best base point; for any other, the consistency
//! time of its newest committed point.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::archiving::ArchiveReach;
use crate::config::{Export, Policy};
use crate::manifest::Manifest;
use crate::records::Tested;
use crate::rehearsal::Prediction;
use crate::state::{ArchiveState, ExportState, Kept, LastTest};

/// What bounds the export's loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// Its newest committed point.
    Point,
    /// Its WAL archive, replayed from a base backup.
    WalArchive,
    /// Its shipped binary logs, replayed from a dump.
    BinlogArchive,
}

/// The newest committed point, on any target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewestPoint {
    pub id: String,
    pub consistency_time: DateTime<Utc>,
    pub raw_bytes: u64,
}

/// The export's last restore test, from its record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRestoreTest {
    pub at: DateTime<Utc>,
    pub passed: bool,
    pub point: Option<String>,
    /// Receive and load, in seconds.
    pub restore_seconds: f64,
    pub restore_bytes_per_second: f64,
    pub error: Option<String>,
}

/// The newest drill that restored the export (the coordinator fills it
/// from its reports; an agent knows none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastDrill {
    pub at: DateTime<Utc>,
    pub runbook: String,
    pub passed: bool,
    pub rto_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportStatus {
    pub export: String,
    pub kind: String,
    pub schedule: String,
    /// Committed points per reachable target.
    pub points: BTreeMap<String, usize>,
    /// Targets that could not be read, with why.
    #[serde(default)]
    pub unreadable: Vec<String>,
    pub newest_point: Option<NewestPoint>,
    pub bound: Bound,
    /// The newest instant a restore reaches.
    pub recoverable_until: Option<DateTime<Utc>>,
    /// Now minus `recoverable_until`, in seconds.
    pub rpo_exposure_seconds: Option<f64>,
    pub rpo_objective_seconds: Option<f64>,
    /// `None` without an RPO objective; `false` with nothing restorable.
    pub within_rpo: Option<bool>,
    pub rto_objective_seconds: Option<f64>,
    pub last_restore_test: Option<LastRestoreTest>,
    /// Never tested, or not for twice its `restore_test.every`.
    pub restore_test_overdue: bool,
    /// The newest point's restore time at the last test's throughput.
    pub predicted_restore: Option<Prediction>,
    pub last_drill: Option<LastDrill>,
    /// The first archive file missing after `recoverable_until`.
    #[serde(skip)]
    reach_next: Option<String>,
}

/// The inputs of one assessment, however they were read.
struct Inputs {
    points: BTreeMap<String, usize>,
    unreadable: Vec<String>,
    /// Every committed point of the target holding the newest, oldest first.
    history: Vec<Manifest>,
    newest: Option<NewestPoint>,
    reach: Option<ArchiveReach>,
    test: Option<LastRestoreTest>,
}

impl ExportStatus {
    /// Reads the export's repositories and archive and assesses them.
    pub async fn gather(policy: &Policy, e: &Export, now: DateTime<Utc>) -> ExportStatus {
        let (repos, unreachable) = crate::repository::open_reachable(policy, &e.targets).await;
        let mut inputs = Inputs {
            points: BTreeMap::new(),
            unreadable: unreachable.iter().map(|x| x.to_string()).collect(),
            history: Vec::new(),
            newest: None,
            reach: bound_of(e).ne(&Bound::Point).then(ArchiveReach::default),
            test: None,
        };
        let host = &policy.host;
        for repo in &repos {
            let listing = match repo.list(host, &e.name).await {
                Ok(l) => l,
                Err(x) => {
                    inputs.unreadable.push(x.to_string());
                    continue;
                }
            };
            inputs
                .points
                .insert(repo.name().to_string(), listing.points.len());
            if let Some(m) = listing.points.last()
                && inputs
                    .newest
                    .as_ref()
                    .is_none_or(|n| m.consistency_time > n.consistency_time)
            {
                inputs.newest = Some(NewestPoint {
                    id: m.id.clone(),
                    consistency_time: m.consistency_time,
                    raw_bytes: m.raw.size,
                });
                inputs.history = listing.points.clone();
            }
            let reach = match bound_of(e) {
                Bound::Point => None,
                Bound::WalArchive => Some(
                    crate::archiving::run::wal_reach(repo, host, &e.name, &listing.points).await,
                ),
                Bound::BinlogArchive => Some(
                    crate::archiving::ship::binlog_reach(repo, host, &e.name, &listing.points)
                        .await,
                ),
            };
            match (reach, inputs.reach.as_mut()) {
                (Some(Ok(r)), Some(best)) => best.merge(r),
                (Some(Err(x)), _) => inputs.unreadable.push(x.to_string()),
                _ => {}
            }
            if let Ok(tests) = repo.restore_tests(host, &e.name).await
                && let Some(t) = tests.last()
                && inputs.test.as_ref().is_none_or(|b| t.at > b.at)
            {
                inputs.test = Some(LastRestoreTest::of(t));
            }
        }
        Self::assess(policy, e, inputs, now)
    }

    /// Assesses the export from what the host's state recorded.
    pub fn from_state(policy: &Policy, e: &Export, now: DateTime<Utc>) -> ExportStatus {
        let st = ExportState::load(policy, &e.name);
        let last = LastTest::load(policy, &e.name);
        let newest = st.newest_consistency.map(|t| NewestPoint {
            id: String::new(),
            consistency_time: t,
            raw_bytes: st.last_raw_bytes.unwrap_or_default(),
        });
        let reach = (bound_of(e) != Bound::Point).then(|| {
            let a = ArchiveState::load(policy, &e.name);
            ArchiveReach {
                until: a.recoverable_until,
                restorable: a.restorable_base_backups,
                next_missing: a.reach_next,
            }
        });
        let test = last.at.map(|at| LastRestoreTest {
            at,
            passed: last.passed,
            point: last.point.clone(),
            restore_seconds: last.restore_seconds,
            restore_bytes_per_second: last.restore_bytes_per_second,
            error: last.error.clone(),
        });
        let inputs = Inputs {
            points: st.points.clone(),
            unreadable: Vec::new(),
            history: Vec::new(),
            newest,
            reach,
            test,
        };
        Self::assess(policy, e, inputs, now)
    }

    /// The one computation of exposure, objectives and prediction.
    fn assess(policy: &Policy, e: &Export, i: Inputs, now: DateTime<Utc>) -> ExportStatus {
        let objectives = e.objectives(&policy.objectives);
        let rpo = objectives.rpo.map(|d| d.as_duration().as_secs_f64());
        let rto = objectives.rto.map(|d| d.as_duration());
        let recoverable_until = match &i.reach {
            Some(r) => r.until,
            None => i.newest.as_ref().map(|n| n.consistency_time),
        };
        let exposure = recoverable_until.map(|t| seconds(now - t).max(0.0));
        let within_rpo = rpo.map(|r| exposure.is_some_and(|x| x <= r));
        // Overdue only where the policy asks for restore tests.
        let restore_test_overdue = e.restore_test.as_ref().is_some_and(|c| {
            let every = chrono::Duration::from_std(c.every.as_duration() * 2)
                .unwrap_or(chrono::Duration::MAX);
            i.test.as_ref().is_none_or(|t| now - t.at > every)
        });
        let predicted_restore = match (&i.test, &i.newest) {
            (Some(t), Some(n)) if t.restore_bytes_per_second > 0.0 => {
                Some(crate::rehearsal::predict_at(
                    t.restore_bytes_per_second,
                    n.raw_bytes,
                    &i.history,
                    rto,
                ))
            }
            _ => None,
        };
        ExportStatus {
            export: e.name.clone(),
            kind: e.source.kind().name().to_string(),
            schedule: e.schedule.expression.clone(),
            points: i.points,
            unreadable: i.unreadable,
            newest_point: i.newest,
            bound: bound_of(e),
            recoverable_until,
            rpo_exposure_seconds: exposure,
            rpo_objective_seconds: rpo,
            within_rpo,
            rto_objective_seconds: rto.map(|r| r.as_secs_f64()),
            last_restore_test: i.test,
            restore_test_overdue,
            predicted_restore,
            last_drill: None,
            reach_next: i.reach.and_then(|r| r.next_missing),
        }
    }

    /// Records what `gather` read in the host's state, so that the metrics
    /// follow: the points per target, the newest point, the archive's reach.
    pub fn record(&self, policy: &Policy) {
        let mut st = ExportState::load(policy, &self.export);
        st.points = self.points.clone();
        st.newest_consistency = self.newest_point.as_ref().map(|n| n.consistency_time);
        if let Err(e) = st.save(policy, &self.export) {
            tracing::warn!(error = %e, "the export's state is not recorded");
        }
        if self.bound != Bound::Point {
            let mut a = ArchiveState::load(policy, &self.export);
            a.recoverable_until = self.recoverable_until;
            a.reach_next = self.reach_next.clone();
            a.reach_checked_at = Some(Utc::now());
            if let Err(e) = a.save(policy, &self.export) {
                tracing::warn!(error = %e, "the archive's reach is not recorded");
            }
        }
    }
}

impl LastRestoreTest {
    fn of(t: &Tested) -> LastRestoreTest {
        LastRestoreTest {
            at: t.at,
            passed: t.passed,
            point: Some(t.id.clone()),
            restore_seconds: t.receive_seconds + t.load_seconds,
            restore_bytes_per_second: t.restore_bytes_per_second,
            error: t.error.clone(),
        }
    }
}

fn bound_of(e: &Export) -> Bound {
    use crate::source::SourceConfig;
    match &e.source {
        SourceConfig::PostgresCluster(_) => Bound::WalArchive,
        SourceConfig::Mysql(c) if c.binlog.is_some() => Bound::BinlogArchive,
        _ => Bound::Point,
    }
}

fn seconds(d: chrono::TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

/// One export as `status` shows it: where its recovery stands, and its
/// runs on this host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportRow {
    #[serde(flatten)]
    pub status: ExportStatus,
    pub last_attempt: Option<DateTime<Utc>>,
    pub last_result: Option<crate::state::RunResult>,
    pub last_error: Option<String>,
    pub last_success: Option<DateTime<Utc>>,
    pub next_run: Option<DateTime<Utc>>,
    pub last_maintenance: Option<crate::state::Maintenance>,
}

/// Whether a target's repository can be opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetHealth {
    pub target: String,
    pub status: String,
}

/// The newest of one declared snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRow {
    pub snapshot: String,
    pub kind: String,
    pub set: Option<String>,
    pub change: Option<String>,
    pub taken_at: Option<DateTime<Utc>>,
    pub age_seconds: Option<i64>,
}

/// A saved standby state older than this is stale: the daemon looks every
/// 30 s, `run --due` every minute.
pub const STANDBY_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(300);

/// What a standby's last look found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StandbyCondition {
    Replaying,
    /// It answered out of recovery.
    Promoted,
    /// A restored standby (`into`), holding the point it was last brought to.
    Restored,
    /// It did not answer (a restored standby: its last refresh failed).
    Down,
    /// No look was ever saved.
    NeverChecked,
}

/// One declared standby (`standby:`), from the state its last look saved
/// (the daemon, `run --due` or `standby status`); nothing is asked of its
/// server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StandbyRow {
    pub name: String,
    /// The primary's host and export it replays.
    pub of_host: String,
    pub of_export: String,
    /// A restored standby: the export of this host it is restored into.
    pub into: Option<String>,
    pub condition: StandbyCondition,
    pub checked_at: Option<DateTime<Utc>>,
    /// Never checked, or not for [`STANDBY_STALE_AFTER`] (a restored
    /// standby: past its `every` too).
    pub stale: bool,
    /// The commit time of the last transaction it replayed (a restored
    /// standby: the instant its point holds).
    pub replayed_commit_at: Option<DateTime<Utc>>,
    /// As of `checked_at` (a restored standby: the age of its point now).
    pub lag_seconds: Option<f64>,
    pub behind_segments: usize,
    pub newest_archived: Option<String>,
    pub lag_alert_seconds: f64,
    /// Down (its refresh failed), or replaying with its lag past
    /// `lag_alert`: `status` exits as for an export over its RPO.
    pub alerting: bool,
    /// Why it did not answer.
    pub error: Option<String>,
}

impl StandbyRow {
    fn of(policy: &Policy, name: &str, now: DateTime<Utc>) -> StandbyRow {
        let standby = &policy.standby[name];
        let s = crate::state::StandbyState::load(policy, name);
        let (into, every) = match standby.keeps() {
            crate::config::standby::Keeps::Cluster(_) => (None, std::time::Duration::ZERO),
            crate::config::standby::Keeps::Restored { into, every } => {
                (Some(into.to_string()), every)
            }
        };
        let condition = match (s.checked_at, &s.error, s.in_recovery, &into) {
            (None, ..) => StandbyCondition::NeverChecked,
            (Some(_), Some(_), ..) => StandbyCondition::Down,
            (Some(_), None, _, Some(_)) => StandbyCondition::Restored,
            (Some(_), None, true, None) => StandbyCondition::Replaying,
            (Some(_), None, false, None) => StandbyCondition::Promoted,
        };
        let restored_at = s.point_consistent_at.filter(|_| into.is_some());
        let alerting = s.alerting(standby.lag_alert().as_secs_f64());
        StandbyRow {
            name: name.to_string(),
            of_host: standby.of.host.clone(),
            of_export: standby.of.export.clone(),
            into,
            condition,
            checked_at: s.checked_at,
            stale: s.checked_at.is_none_or(|t| {
                now - t
                    > chrono::Duration::from_std(STANDBY_STALE_AFTER + every)
                        .unwrap_or(chrono::Duration::MAX)
            }),
            replayed_commit_at: restored_at.or(s.replayed_commit_at),
            lag_seconds: match restored_at {
                Some(t) => Some((now - t).num_milliseconds().max(0) as f64 / 1000.0),
                None => s.lag_seconds,
            },
            behind_segments: s.behind_segments,
            newest_archived: s.newest_archived,
            lag_alert_seconds: standby.lag_alert().as_secs_f64(),
            alerting,
            error: s.error,
        }
    }
}

/// A host's status: what `drp-agent status --json` prints and what an
/// agent answers the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    pub host: String,
    pub exports: Vec<ExportRow>,
    pub targets: Vec<TargetHealth>,
    pub snapshots: Vec<SnapshotRow>,
    /// The warm standbys this host keeps (none from an agent that predates them).
    #[serde(default)]
    pub standbys: Vec<StandbyRow>,
    /// The services its watchdog checks, as it last left them.
    #[serde(default)]
    pub watched: Vec<WatchRow>,
}

/// One watched service (`watch:`), from the watchdog's saved state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WatchRow {
    pub service: String,
    pub checked_at: Option<DateTime<Utc>>,
    /// Whether its last check passed (`None`: never checked).
    pub up: Option<bool>,
    /// No action until then.
    pub paused_until: Option<DateTime<Utc>>,
    /// Why the watchdog stopped acting on it, until `watch resume`.
    pub stopped: Option<String>,
    /// An incident is being handled.
    pub incident_open: bool,
}

impl HostStatus {
    /// Reads every export's repositories and archive, and records what it
    /// read in the host's state (the metrics follow).
    pub async fn gather(policy: &Policy, now: DateTime<Utc>) -> HostStatus {
        let mut targets = Vec::new();
        for (name, config) in &policy.targets {
            let status =
                match crate::repository::Repository::open(name, config, &policy.base_dir).await {
                    Ok(_) => "ok".to_string(),
                    Err(crate::Error::NotFound(_)) => {
                        "no repository (not initialised, or the share is not mounted)".to_string()
                    }
                    Err(e) => format!("unreachable: {e}"),
                };
            targets.push(TargetHealth {
                target: name.clone(),
                status,
            });
        }
        let mut exports = Vec::new();
        for e in policy.exports.values() {
            let status = ExportStatus::gather(policy, e, now).await;
            status.record(policy);
            let st = ExportState::load(policy, &e.name);
            exports.push(ExportRow {
                status,
                last_attempt: st.last_attempt,
                last_result: st.last_result,
                last_error: st.last_error,
                last_success: st.last_success,
                next_run: e.schedule.next(now),
                last_maintenance: st.last_maintenance,
            });
        }
        let newest = crate::state::newest(policy);
        let snapshots = policy
            .snapshots
            .iter()
            .map(|(name, config)| {
                let n = newest.by_name.get(name);
                SnapshotRow {
                    snapshot: name.clone(),
                    kind: config.kind().to_string(),
                    set: n.map(|n| n.set.clone()),
                    change: n.map(|n| n.change.clone()),
                    taken_at: n.map(|n| n.taken_at),
                    age_seconds: n.map(|n| (now - n.taken_at).num_seconds().max(0)),
                }
            })
            .collect();
        HostStatus {
            host: policy.host.clone(),
            exports,
            targets,
            snapshots,
            standbys: policy
                .standby
                .keys()
                .map(|name| StandbyRow::of(policy, name, now))
                .collect(),
            watched: policy
                .watch
                .keys()
                .map(|service| {
                    let w = crate::state::WatchState::load(policy, service);
                    WatchRow {
                        service: service.clone(),
                        checked_at: w.checked_at,
                        up: w.up,
                        paused_until: w.paused_until.filter(|t| *t > now),
                        stopped: w.stopped,
                        incident_open: w.incident.is_some(),
                    }
                })
                .collect(),
        }
    }

    /// Whether an export is over its RPO objective.
    pub fn over_objective(&self) -> bool {
        self.exports
            .iter()
            .any(|e| e.status.within_rpo == Some(false))
    }

    /// Whether a standby is down or lags past its `lag_alert`.
    pub fn standby_alerting(&self) -> bool {
        self.standbys.iter().any(|s| s.alerting)
    }
}
