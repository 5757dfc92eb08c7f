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
