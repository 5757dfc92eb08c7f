//! `kind: promote`: a warm standby of the step's host (`standby:` in its
//! policy) ends its recovery and becomes a primary, once it has replayed
//! everything the primary's archive holds. A host that declares the standby
//! consents to its promotion; the runbook fences the old primary first.
//!
//! What the promoted server holds counts as restored for the RPO: every
//! transaction committed up to the last one it replayed.

use std::time::Duration;

use drp_core::config::{HumanDuration, Policy};
use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Action, ActionError, Context, Invalid, RestoredPoint};

/// How long a promotion waits for the standby to catch up, by default.
const CATCH_UP: Duration = Duration::from_secs(60);
/// What PostgreSQL is given to end its recovery (`pg_promote`'s wait).
const PROMOTION: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promote {
    /// The standby, as the host's policy names it under `standby:`.
    pub standby: String,
    /// How long to wait for it to replay what the archive holds (60s).
    pub catch_up: Option<HumanDuration>,
    /// Promote even when it could not replay everything in time.
    #[serde(default)]
    pub behind_ok: bool,
}

impl Promote {
    fn catch_up(&self) -> Duration {
        self.catch_up.map_or(CATCH_UP, |d| d.as_duration())
    }
}

impl Action for Promote {
    fn describe(&self) -> String {
        format!(
            "promote standby `{}` once it has replayed the archive",
            self.standby
        )
    }

    fn destructive(&self) -> bool {
        true
    }

    fn validate(&self, policy: &Policy) -> Result<(), Invalid> {
        if !policy.standby.contains_key(&self.standby) {
            return Err(Invalid::UnknownStandby {
                name: self.standby.clone(),
                host: policy.host.clone(),
                known: policy.standby.keys().cloned().collect(),
            });
        }
        Ok(())
    }

    fn waits(&self) -> Option<Duration> {
        Some(self.catch_up() + PROMOTION)
    }

    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<String, ActionError>> {
        Box::pin(async move {
            let policy = &ctx.policy;
            let standby = &policy.standby[&self.standby];
            let p =
                drp_core::standby::promote(policy, &self.standby, self.catch_up(), self.behind_ok)
                    .await?;
            if let Some(reached) = p.reached {
                ctx.restored
                    .lock()
                    .expect("restored lock")
                    .push(RestoredPoint {
                        export: self.standby.clone(),
                        id: format!("standby of {}/{}", standby.of.host, standby.of.export),
                        target: "archive".into(),
                        consistency_time: reached,
                    });
            }
            Ok(if p.already {
                format!("standby `{}` was already promoted", self.standby)
            } else {
                format!(
                    "promoted standby `{}` in {:.1}s; it holds every transaction of {}/{} committed up to {}",
                    self.standby,
                    p.seconds,
                    standby.of.host,
                    standby.of.export,
                    p.reached.map_or("-".into(), |t| t.to_rfc3339())
                )
            })
        })
    }
}
