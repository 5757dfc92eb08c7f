//! Take a recovery point of an export now, as `drp-agent backup` does:
//! before a failover, or on another host before its drill's failure.

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Action, ActionError, Context, Invalid};
use drp_core::config::Policy;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    pub export: String,
}

impl Action for Backup {
    fn describe(&self) -> String {
        format!("back up `{}`", self.export)
    }

    fn validate(&self, policy: &Policy) -> Result<(), Invalid> {
        match policy.exports.contains_key(&self.export) {
            true => Ok(()),
            false => Err(Invalid::unknown_export(&self.export, policy)),
        }
    }

    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<String, ActionError>> {
        Box::pin(async move {
            let outcome = drp_core::runner::run_export(
                &ctx.policy,
                &self.export,
                std::time::Duration::from_secs(60),
                chrono::Utc::now(),
                drp_core::runner::Upkeep::None,
                drp_core::progress::silent(),
            )
            .await?;
            let r = &outcome.report;
            let committed = r.committed().count();
            if committed == 0 {
                return Err(ActionError::failed(format!(
                    "backup {} of `{}` committed on no target",
                    r.id, self.export
                )));
            }
            Ok(format!(
                "backup {} of `{}` on {committed} of {} targets in {:.1}s",
                r.id,
                self.export,
                r.targets.len(),
                r.seconds
            ))
        })
    }
}
