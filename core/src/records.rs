//! The records drp writes beside the points they speak of, read back by
//! status, reports and the coordinator. A record is data: it imports no
//! operation, and an operation that writes one fills it in.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What one check found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    pub check: String,
    pub passed: bool,
    pub detail: String,
}

/// A restore test of one point: the record stored beside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tested {
    pub id: String,
    pub host: String,
    pub export: String,
    pub kind: String,
    pub at: DateTime<Utc>,
    pub passed: bool,
    /// Why it failed, when it did.
    pub error: Option<String>,
    pub raw_sha256: String,
    pub stored_sha256: String,
    pub target: String,
    pub tools: std::collections::BTreeMap<String, String>,
    /// Starting the throwaway instance.
    pub start_seconds: f64,
    /// Fetching, decrypting, decompressing and checking both digests.
    pub receive_seconds: f64,
    /// Loading into the instance.
    pub load_seconds: f64,
    pub validate_seconds: f64,
    pub raw_bytes: u64,
    /// Raw bytes per second over receive and load.
    pub restore_bytes_per_second: f64,
    pub checks: Vec<CheckResult>,
    /// For a physical base backup: the random instant it was restored to
    /// (`None`: to the end of its archive).
    #[serde(default)]
    pub to_time: Option<DateTime<Utc>>,
    pub agent: String,
}

/// A host fenced after a failover, or its fence lifted: stored in the
/// repositories under `fencing/<host>/`, the newest (by `at`) in force. The
/// fenced host's agent reads it at every turn and keeps the services its
/// own policy lists under `fencing:` stopped while it is fenced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fence {
    /// The host it is about.
    pub host: String,
    /// `false`: the fence is lifted (failback, or `drp unfence`).
    pub fenced: bool,
    pub at: DateTime<Utc>,
    /// Who wrote it: a coordinator (`drp on HOST`) or the host's own agent.
    pub by: String,
    /// Why, in words (`failover by runbook web-failover`).
    pub reason: String,
    /// The runbook that fenced it, when one did.
    #[serde(default)]
    pub runbook: Option<String>,
    /// The host that took its place, when the runbook says.
    #[serde(default)]
    pub successor: Option<String>,
    /// Fenced without the host's answer nor a witness's agreement, because
    /// the operator said `--force`.
    #[serde(default)]
    pub forced: bool,
    /// What the other vantage points saw when the coordinator could not
    /// reach the host.
    #[serde(default)]
    pub witnesses: Vec<Witnessed>,
}

/// One witness's view of a host the coordinator could not reach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Witnessed {
    pub witness: String,
    /// Whether the witness reached the host.
    pub reached: bool,
    pub detail: String,
}

impl Fence {
    /// The key under `fencing/<host>/` (sortable by time).
    pub fn id(&self) -> String {
        format!(
            "{}-{}",
            self.at.format("%Y%m%dT%H%M%S%.6fZ"),
            if self.fenced { "fenced" } else { "lifted" }
        )
    }
}

/// What the host's watchdog did about one service that went down: stored in
/// the repositories under `incidents/<host>/` (signed when the host signs)
/// and kept in the host's state while it is open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub host: String,
    /// The watched service (a name under the policy's `watch:`).
    pub service: String,
    /// The first failed check of the run of failures: where the RTO starts.
    pub first_failed: DateTime<Utc>,
    /// When `fall` consecutive failures were reached.
    pub detected: DateTime<Utc>,
    /// What the failing check said last.
    pub failure: String,
    /// Each rung tried, in order.
    pub rungs: Vec<RungTried>,
    /// When `rise` consecutive checks passed after a rung.
    pub recovered_at: Option<DateTime<Utc>>,
    /// From the first failed check to the recovery.
    pub rto_seconds: Option<f64>,
    /// The recovery point or snapshot set the service came back from.
    pub restored: Option<RestoredFrom>,
    /// From the restored data's consistency time to the first failed check.
    pub rpo_seconds: Option<f64>,
    /// The host asked its coordinator for help (the ladder's `handover`).
    pub needs_coordinator: bool,
    /// Why the watchdog stopped acting without a recovery, when it did.
    pub stopped: Option<String>,
}

/// One rung of a watchdog's ladder, as tried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RungTried {
    /// Its place in the ladder, from 1.
    pub number: usize,
    /// `restart`, `rollback`, `restore` or `handover`.
    pub rung: String,
    pub started: DateTime<Utc>,
    pub ended: Option<DateTime<Utc>>,
    pub outcome: RungOutcome,
    /// What the rung said (or would have done, in a dry run).
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RungOutcome {
    /// Done; the checks decide next.
    Done,
    /// The rung itself failed.
    Failed,
    /// The checks passed again after it.
    Recovered,
    /// The checks still failed after its grace.
    NotRecovered,
    /// The coordinator was asked for help.
    HandedOver,
}

impl RungOutcome {
    pub fn name(self) -> &'static str {
        match self {
            RungOutcome::Done => "done",
            RungOutcome::Failed => "failed",
            RungOutcome::Recovered => "recovered",
            RungOutcome::NotRecovered => "not recovered",
            RungOutcome::HandedOver => "handed over",
        }
    }
}

/// The data a service came back from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoredFrom {
    /// `point` (an export's recovery point) or `snapshot_set`.
    pub kind: String,
    /// The export, or the change of the set.
    pub of: String,
    pub id: String,
    pub consistency_time: DateTime<Utc>,
}

impl Incident {
    /// An incident just detected: `host` acting on `service`, whose run of
    /// failed checks began at `first_failed`; nothing tried yet.
    pub fn open(
        host: &str,
        service: &str,
        first_failed: DateTime<Utc>,
        detected: DateTime<Utc>,
    ) -> Incident {
        Incident {
            host: host.to_string(),
            service: service.to_string(),
            first_failed,
            detected,
            failure: String::new(),
            rungs: Vec::new(),
            recovered_at: None,
            rto_seconds: None,
            restored: None,
            rpo_seconds: None,
            needs_coordinator: false,
            stopped: None,
        }
    }

    /// The key under `incidents/<host>/` (sortable by time).
    pub fn id(&self) -> String {
        format!(
            "{}-{}",
            self.first_failed.format("%Y%m%dT%H%M%S%.6fZ"),
            self.service
        )
    }
}
