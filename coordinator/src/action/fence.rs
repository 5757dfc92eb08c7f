//! `kind: fence`: before a name moves to a standby, make sure the old
//! primary cannot take writes again, so there is never a second primary.
//!
//! When the coordinator reaches the old primary, its agent stands down
//! (`stand_down`: records the fence, stops what its policy lists). When it
//! cannot, that alone proves nothing — the coordinator may be the one cut
//! off — so each witness (another host of the inventory) is asked whether
//! *it* reaches the old primary: one that does stops the failover; when
//! at least one witness answers and none reaches it, the fence is written
//! to the repositories, where the old primary's agent reads it as soon as
//! it runs again. With no witness answering, only `--force` fences, and
//! the record says so.
//!
//! The witnesses' rule ([`ask_witnesses`], [`verdict`]) is shared with the
//! coordinator's watch (`drp watch`), which decides by it whether a host it
//! cannot reach is down or only cut from the coordinator.

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Action, ActionError, Context};
use crate::fleet::Fleet;
use crate::fleet::protocol::StepRequest;
use drp_core::records::{Fence, Witnessed};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceHost {
    /// The inventory host to fence (the old primary).
    pub host: String,
    /// Inventory hosts asked whether they reach `host` when the
    /// coordinator cannot.
    #[serde(default)]
    pub witnesses: Vec<String>,
    /// The host taking its place, for the record.
    pub successor: Option<String>,
}

impl FenceHost {
    async fn fence(&self, ctx: &Context) -> Result<String, ActionError> {
        let fleet = ctx
            .fleet
            .as_deref()
            .ok_or_else(|| ActionError::failed("a fence step needs the runbook's `inventory`"))?;
        let by = format!("drp on {}", ctx.policy.host);
        let reason = format!("failover by runbook {}", ctx.runbook);
        // Reached: the host itself stands down, and says what it stopped.
        if fleet.link(&self.host).await.is_ok() {
            let step = StepRequest {
                name: format!("stand down for runbook {}", ctx.runbook),
                action: serde_json::json!({
                    "kind": "stand_down",
                    "by": by,
                    "reason": reason,
                    "successor": self.successor,
                }),
            };
            let done = fleet.run(&self.host, step, ctx).await?;
            let record = self.record(ctx, by, reason);
            let kept = self.keep(ctx, &record).await;
            return Ok(format!("{done}{kept}"));
        }
        let seen = ask_witnesses(fleet, &self.host, &self.witnesses, &ctx.runbook).await;
        let answered = match verdict(&seen) {
            Verdict::Reached(w) => {
                return Err(ActionError::failed(format!(
                    "`{}` does not answer this coordinator, but witness `{}` reaches it ({}): the link from here is cut, not the host; not fencing it",
                    self.host, w.witness, w.detail
                )));
            }
            Verdict::Unanswered => false,
            Verdict::Down => true,
        };
        if !answered && !ctx.force {
            let why = if self.witnesses.is_empty() {
                "and the step names no witness to agree it is down".to_string()
            } else {
                format!(
                    "and no witness answered ({})",
                    seen.iter()
                        .map(|w| format!("{}: {}", w.witness, w.detail))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            };
            return Err(ActionError::failed(format!(
                "`{}` does not answer this coordinator, {why}: not fencing it (run with --force to fence it anyway; the report records it)",
                self.host
            )));
        }
        let mut record = self.record(ctx, by, reason);
        record.forced = !answered;
        record.witnesses = seen;
        let kept = self.keep(ctx, &record).await;
        let agreed = if record.forced {
            "forced: no witness answered".to_string()
        } else {
            let names: Vec<&str> = record
                .witnesses
                .iter()
                .filter(|w| w.detail != UNANSWERED)
                .map(|w| w.witness.as_str())
                .collect();
            format!("nor from {}", names.join(", "))
        };
        Ok(format!(
            "`{}` does not answer here, {agreed}: fenced by record; its agent stops its services when it runs again{kept}",
            self.host
        ))
    }

    fn record(&self, ctx: &Context, by: String, reason: String) -> Fence {
        let mut f = drp_core::fence::now(&self.host, true, by, reason);
        f.runbook = Some(ctx.runbook.clone());
        f.successor = self.successor.clone();
        f
    }

    /// Stores the record on every target of the runbook's policy, where
    /// the old primary reads it; an error when none took it.
    async fn keep(&self, ctx: &Context, record: &Fence) -> String {
        let targets: Vec<String> = ctx.policy.targets.keys().cloned().collect();
        let failed = drp_core::fence::save(&ctx.policy, &targets, record).await;
        if failed.is_empty() {
            format!(" (recorded on {})", targets.join(", "))
        } else {
            format!(" (not recorded on: {})", failed.join("; "))
        }
    }
}

/// Each witness's view of `host`: whether it opens a connection to the
/// host's SSH address, as the inventory gives it (asked all at once).
pub async fn ask_witnesses(
    fleet: &Fleet,
    host: &str,
    witnesses: &[String],
    runbook: &str,
) -> Vec<Witnessed> {
    let Some(entry) = fleet.inventory.host(host) else {
        return Vec::new();
    };
    let address = format!("{}:{}", entry.address, entry.port);
    let asks = witnesses.iter().map(|w| {
        let address = address.clone();
        async move {
            let probe = StepRequest {
                name: format!("can {w} reach {host}"),
                action: serde_json::json!({"kind": "tcp", "address": address}),
            };
            let (reached, detail) = match fleet.link(w).await {
                Err(_) => (false, UNANSWERED.to_string()),
                Ok(remote) => match remote.run(probe, chrono::Utc::now(), runbook).await {
                    Ok(ran) => (true, ran.message),
                    Err(crate::fleet::remote::RemoteError::Lost(_)) => {
                        (false, UNANSWERED.to_string())
                    }
                    Err(e) => (false, e.to_string()),
                },
            };
            Witnessed {
                witness: w.clone(),
                reached,
                detail,
            }
        }
    });
    futures::future::join_all(asks).await
}

/// What the witnesses' views say of a host the coordinator cannot reach.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// This witness reaches it: the link from the coordinator is cut, not
    /// the host. Nothing may act on it as if it were down.
    Reached(Witnessed),
    /// No witness answered (or none was named): no second vantage point.
    Unanswered,
    /// At least one witness answered and none reaches it: it is down.
    Down,
}

/// The one rule: a witness that reaches the host vetoes; otherwise the
/// host is down only when at least one witness answered.
pub fn verdict(seen: &[Witnessed]) -> Verdict {
    if let Some(w) = seen.iter().find(|w| w.reached) {
        return Verdict::Reached(w.clone());
    }
    if seen.iter().any(|w| w.detail != UNANSWERED) {
        Verdict::Down
    } else {
        Verdict::Unanswered
    }
}

/// A witness's detail when the coordinator could not reach the witness either.
pub const UNANSWERED: &str = "the witness did not answer this coordinator";

impl Action for FenceHost {
    fn describe(&self) -> String {
        let witnesses = if self.witnesses.is_empty() {
            String::new()
        } else {
            format!(" (witnesses: {})", self.witnesses.join(", "))
        };
        format!("fence `{}`{witnesses}", self.host)
    }

    fn destructive(&self) -> bool {
        true
    }

    fn hosts(&self) -> Vec<&str> {
        std::iter::once(self.host.as_str())
            .chain(self.witnesses.iter().map(String::as_str))
            .collect()
    }

    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<String, ActionError>> {
        Box::pin(self.fence(ctx))
    }
}

/// `kind: unfence`: lifts a host's fence, in a runbook's `failback`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unfence {
    /// The inventory host whose fence is lifted.
    pub host: String,
}

impl Action for Unfence {
    fn describe(&self) -> String {
        format!("lift the fence of `{}`", self.host)
    }

    fn destructive(&self) -> bool {
        true
    }

    fn hosts(&self) -> Vec<&str> {
        vec![self.host.as_str()]
    }

    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<String, ActionError>> {
        Box::pin(async move {
            let reason = format!("failback by runbook {}", ctx.runbook);
            Ok(lift(ctx, &self.host, &reason).await?)
        })
    }
}

/// Lifts `host`'s fence (`drp unfence`, `kind: unfence`): a record saying
/// so on every target of the policy, and, when the host answers, its agent
/// told at once. What was done, in words.
pub async fn lift(ctx: &Context, host: &str, reason: &str) -> drp_core::Result<String> {
    let policy = &ctx.policy;
    let by = format!("drp on {}", policy.host);
    let record = drp_core::fence::now(host, false, by.clone(), reason.to_string());
    let targets: Vec<String> = policy.targets.keys().cloned().collect();
    let failed = drp_core::fence::save(policy, &targets, &record).await;
    if failed.len() == targets.len() {
        return Err(drp_core::Error::Failed(format!(
            "the fence of `{host}` is not lifted: no target took the record ({})",
            failed.join("; ")
        )));
    }
    let said = format!(
        "fence of `{host}` lifted: recorded on {} of {} target(s)",
        targets.len() - failed.len(),
        targets.len()
    );
    let Some(fleet) = ctx
        .fleet
        .as_deref()
        .filter(|f| f.inventory.host(host).is_some())
    else {
        return Ok(format!(
            "{said}; its agent reads the record at its next turn"
        ));
    };
    let step = StepRequest {
        name: "lift the fence".into(),
        action: serde_json::json!({
            "kind": "stand_down", "by": by, "reason": reason, "lift": true,
        }),
    };
    Ok(match fleet.run(host, step, ctx).await {
        Ok(m) => format!("{said}; the host says: {m}"),
        Err(e) => format!(
            "{said}; the host was not told ({e}): its agent reads the record at its next turn"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(witness: &str, reached: bool, detail: &str) -> Witnessed {
        Witnessed {
            witness: witness.into(),
            reached,
            detail: detail.into(),
        }
    }

    #[test]
    fn a_witness_that_reaches_the_host_vetoes_and_silence_proves_nothing() {
        let reaches = seen("w2", true, "connected");
        assert_eq!(
            verdict(&[seen("w1", false, "no route to host"), reaches.clone()]),
            Verdict::Reached(reaches)
        );
        assert_eq!(
            verdict(&[
                seen("w1", false, "no route to host"),
                seen("w2", false, UNANSWERED)
            ]),
            Verdict::Down
        );
        assert_eq!(
            verdict(&[seen("w1", false, UNANSWERED)]),
            Verdict::Unanswered
        );
        assert_eq!(verdict(&[]), Verdict::Unanswered);
    }
}
