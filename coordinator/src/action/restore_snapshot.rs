//! Roll back to the snapshot set taken for a change.

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Action, ActionError, Context, Invalid};
use drp_core::config::Policy;

/// Rolling back to a change's snapshot set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreSnapshot {
    pub change: String,
}

impl Action for RestoreSnapshot {
    fn describe(&self) -> String {
        format!("roll back to the snapshot set of change `{}`", self.change)
    }

    fn destructive(&self) -> bool {
        true
    }

    fn validate(&self, policy: &Policy) -> Result<(), Invalid> {
        if policy.snapshots.is_empty() {
            return Err(Invalid::NoSnapshotsToRollBack);
        }
        Ok(())
    }

    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<String, ActionError>> {
        Box::pin(async move {
            let mut set = drp_core::snapshot::find(&ctx.policy, &self.change).await?;
            let results = drp_core::snapshot::rollback(&ctx.policy, &mut set).await?;
            let failed: Vec<String> = results
                .iter()
                .filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}")))
                .collect();
            if !failed.is_empty() {
                return Err(ActionError::Partial { failed });
            }
            Ok(format!(
                "rolled back to snapshot set {} of change `{}`",
                set.id, self.change
            ))
        })
    }
}
