//! Restart a service (a systemd unit or a command), then wait until a check passes.

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Action, ActionConfig, Context};
use drp_agent::config::Policy;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    /// `systemctl restart UNIT`.
    pub unit: Option<String>,
    /// Or any command.
    pub command: Option<String>,
    /// A check polled until it passes (inside the step's timeout).
    pub until: Option<Box<ActionConfig>>,
}

impl Action for Restart {
    fn describe(&self) -> String {
        match (&self.unit, &self.command) {
            (Some(u), _) => format!("restart unit {u}"),
            (None, Some(c)) => format!("restart with `{c}`"),
            _ => "restart".into(),
        }
    }

    fn destructive(&self) -> bool {
        true
    }

    fn validate(&self, policy: &Policy) -> Result<(), String> {
        if self.unit.is_some() == self.command.is_some() {
            return Err("give exactly one of `unit` or `command`".into());
        }
        match &self.until {
            Some(check) => check.validate(policy),
            None => Ok(()),
        }
    }

    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let cmd = match (&self.unit, &self.command) {
                (Some(u), _) => format!("systemctl restart {u}"),
                (None, Some(c)) => c.clone(),
                _ => unreachable!("validated"),
            };
            let (code, out) = super::command::shell(&cmd, ctx).await?;
            if code != 0 {
                return Err(format!("`{cmd}` exited {code}: {}", out.trim()));
            }
            let Some(check) = &self.until else {
                return Ok(format!("`{cmd}` done"));
            };
            let interval = std::time::Duration::from_millis(500);
            loop {
                match check.action().run(ctx).await {
                    Ok(msg) => return Ok(format!("`{cmd}` done; {msg}")),
                    Err(_) => tokio::time::sleep(interval).await,
                }
            }
        })
    }
}
