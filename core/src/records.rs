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
