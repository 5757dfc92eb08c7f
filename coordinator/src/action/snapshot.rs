//! Take a snapshot set for a change (the step before a change), through the
//! core's snapshot providers.

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Action, ActionError, Context, Invalid};
use drp_core::config::Policy;

/// Taking a snapshot set for a change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TakeSnapshot {
    pub change: String,
    pub reason: String,
    #[serde(default)]
    pub only: Vec<String>,
}

impl Action for TakeSnapshot {
    fn describe(&self) -> String {
        format!("snapshot before change `{}`", self.change)
    }

    fn validate(&self, policy: &Policy) -> Result<(), Invalid> {
        if policy.snapshots.is_empty() {
            return Err(Invalid::NoSnapshots);
        }
        match self
            .only
            .iter()
            .find(|n| !policy.snapshots.contains_key(*n))
        {
            Some(n) => Err(Invalid::UnknownSnapshot(n.clone())),
            None => Ok(()),
        }
    }

    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<String, ActionError>> {
        Box::pin(async move {
            let set =
                drp_core::snapshot::create(&ctx.policy, &self.change, &self.reason, &self.only)
                    .await?;
            if set.status != drp_core::snapshot::SetStatus::Complete {
                return Err(ActionError::SnapshotIncomplete {
                    failed: set
                        .members
                        .iter()
                        .filter_map(|m| m.error.as_ref().map(|e| format!("{}: {e}", m.name)))
                        .collect(),
                    set: set.id,
                });
            }
            Ok(format!(
                "snapshot set {} taken ({} snapshots)",
                set.id,
                set.members.len()
            ))
        })
    }
}
