//! `kind: stand_down`, the fenced host's end of a fence: sent by a
//! coordinator's `fence` step to the old primary's agent, which records the
//! fence in its state and repositories and stops the services its own
//! policy lists under `fencing:` (or, with `lift: true`, records that the
//! fence is lifted). A host whose policy declares no `fencing:` refuses it.

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Action, ActionError, Context, Invalid};
use drp_core::config::Policy;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandDown {
    /// Who fences (the coordinator), for the record.
    pub by: String,
    pub reason: String,
    pub successor: Option<String>,
    /// Record that the fence is lifted instead.
    #[serde(default)]
    pub lift: bool,
}

impl Action for StandDown {
    fn describe(&self) -> String {
        if self.lift {
            format!("lift this host's fence ({})", self.reason)
        } else {
            format!("stand down: fence this host ({})", self.reason)
        }
    }

    fn destructive(&self) -> bool {
        true
    }

    fn validate(&self, policy: &Policy) -> Result<(), Invalid> {
        if policy.fencing.is_none() {
            return Err(Invalid::NoFencing(policy.host.clone()));
        }
        Ok(())
    }

    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<String, ActionError>> {
        Box::pin(async move {
            let policy = &ctx.policy;
            let mut fence = drp_core::fence::now(
                &policy.host,
                !self.lift,
                self.by.clone(),
                self.reason.clone(),
            );
            fence.runbook = Some(ctx.runbook.clone());
            fence.successor = self.successor.clone();
            let done = drp_core::fence::record_here(policy, &fence).await?;
            if !done.errors.is_empty() {
                return Err(ActionError::failed(done.summary()));
            }
            Ok(if self.lift {
                format!("{}: fence lifted", policy.host)
            } else if done.stopped.is_empty() {
                format!("{}: fenced, nothing of it was running", policy.host)
            } else {
                format!(
                    "{}: fenced, stopped {}",
                    policy.host,
                    done.stopped.join(", ")
                )
            })
        })
    }
}
