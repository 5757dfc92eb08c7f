//! Tell people, through the policy's notification channels.

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Action, ActionError, Context};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyAction {
    pub message: String,
}

impl Action for NotifyAction {
    fn describe(&self) -> String {
        format!("notify: {}", self.message)
    }

    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<String, ActionError>> {
        Box::pin(async move {
            let policy = &ctx.policy;
            let message = drp_core::notify::Message {
                host: policy.host.clone(),
                export: ctx.runbook.clone(),
                result: drp_core::state::RunResult::Ok,
                point: None,
                committed: Vec::new(),
                failed: Vec::new(),
                errors: Vec::new(),
                seconds: 0.0,
                at: chrono::Utc::now(),
                title: Some(format!(
                    "drp: runbook {} on {}: {}",
                    ctx.runbook, policy.host, self.message
                )),
            };
            let channels = drp_core::notify::channels(&policy.notify, &policy.base_dir);
            if channels.is_empty() {
                return Err(ActionError::failed(
                    "the policy configures no notification channel",
                ));
            }
            let mut failed = Vec::new();
            for c in channels {
                if let Err(e) = c.send(&message).await {
                    failed.push(format!("{}: {e}", c.name()));
                }
            }
            if !failed.is_empty() {
                return Err(ActionError::Partial { failed });
            }
            Ok("notified".into())
        })
    }
}
