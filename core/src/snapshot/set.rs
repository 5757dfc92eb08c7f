//! The set model: every snapshot taken for one change, as recorded (in
//! JSON) on the policy's targets.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::SnapshotError;

/// One snapshot of a set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Member {
    pub name: String,
    pub kind: String,
    /// How the provider finds it again: a path, a tag, a snapshot id, a point id.
    pub reference: Option<String>,
    pub created_at: DateTime<Utc>,
    pub ok: bool,
    pub error: Option<String>,
    #[serde(default)]
    pub details: BTreeMap<String, String>,
}

impl Member {
    /// The provider's reference to the snapshot, which rollback needs.
    pub fn snapshot_ref(&self) -> Result<&str, SnapshotError> {
        self.reference
            .as_deref()
            .ok_or_else(|| SnapshotError::NeverTaken {
                name: self.name.clone(),
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetStatus {
    /// Every member was taken.
    Complete,
    /// At least one member failed: never to be rolled back to as a whole.
    Failed,
    /// Rolled back to (it stays usable).
    RolledBack,
}

/// What `guard` recorded about the change it ran.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GuardOutcome {
    pub command: Vec<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub rolled_back: bool,
    pub finished_at: DateTime<Utc>,
}

/// One rollback of a set: when, and what each member's provider said.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rollback {
    pub at: DateTime<Utc>,
    pub results: Vec<(String, Result<String, String>)>,
}

/// A snapshot set: every snapshot taken for one change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotSet {
    pub format: u32,
    pub id: String,
    pub host: String,
    pub change: String,
    pub reason: String,
    pub created_at: DateTime<Utc>,
    pub status: SetStatus,
    pub members: Vec<Member>,
    pub guard: Option<GuardOutcome>,
    #[serde(default)]
    pub rollbacks: Vec<Rollback>,
    /// The `snapshot_hooks` that ran around taking the set, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<crate::hooks::HookRun>,
}

/// A set id: sortable by time, naming the change.
pub(super) fn set_id(at: DateTime<Utc>, change: &str) -> String {
    let change: String = change
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    format!("{}-{change}", at.format("%Y%m%dT%H%M%SZ"))
}
