//! Runbook actions: one trait, one file per action. Checks (`http`, `tcp`,
//! `command`, `sql`) can also wait until they pass — or until they fail, to
//! detect an outage — polling at an interval inside the step's timeout.

pub mod command;
pub mod http;
pub mod notify;
pub mod restart;
pub mod restore_backup;
pub mod sql;
pub mod tcp;
pub mod wait;

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use drp_core::config::{HumanDuration, Policy};
use futures::future::BoxFuture;
use serde::Deserialize;

/// What a step's action can see and leave behind.
pub struct Context {
    pub policy: Policy,
    pub runbook: String,
    /// When the failure happened (injected, given, or the start of the run).
    pub t_fail: DateTime<Utc>,
    /// Recovery points restored so far, for the RPO.
    pub restored: Mutex<Vec<RestoredPoint>>,
    pub workdir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RestoredPoint {
    pub export: String,
    pub id: String,
    pub target: String,
    pub consistency_time: DateTime<Utc>,
}

pub trait Action: Send + Sync {
    /// One line for the plan and the report.
    fn describe(&self) -> String;
    /// Whether it changes something (asked for before the first such step).
    fn destructive(&self) -> bool {
        false
    }
    /// Checks references against the policy, before anything runs.
    fn validate(&self, _policy: &Policy) -> Result<(), String> {
        Ok(())
    }
    /// Runs once; the engine applies timeout and retries. `Ok` carries a
    /// short account of what happened, `Err` why it failed.
    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<String, String>>;
}

/// Which action a step runs, chosen by `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActionConfig {
    Http(http::HttpCheck),
    Tcp(tcp::TcpCheck),
    Command(command::CommandAction),
    Sql(sql::SqlCheck),
    RestoreBackup(restore_backup::RestoreBackup),
    RestoreSnapshot(RestoreSnapshot),
    Snapshot(TakeSnapshot),
    Restart(restart::Restart),
    Wait(wait::Wait),
    Notify(notify::NotifyAction),
}

/// Taking a snapshot set for a change (the step before a change).
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
    fn validate(&self, policy: &Policy) -> Result<(), String> {
        if policy.snapshots.is_empty() {
            return Err("the policy declares no `snapshots`".into());
        }
        match self
            .only
            .iter()
            .find(|n| !policy.snapshots.contains_key(*n))
        {
            Some(n) => Err(format!("no snapshot `{n}` in the policy")),
            None => Ok(()),
        }
    }
    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let set =
                drp_core::snapshot::create(&ctx.policy, &self.change, &self.reason, &self.only)
                    .await
                    .map_err(|e| e.to_string())?;
            if set.status != drp_core::snapshot::SetStatus::Complete {
                let why: Vec<String> = set
                    .members
                    .iter()
                    .filter_map(|m| m.error.as_ref().map(|e| format!("{}: {e}", m.name)))
                    .collect();
                return Err(format!(
                    "snapshot set {} incomplete: {}",
                    set.id,
                    why.join("; ")
                ));
            }
            Ok(format!(
                "snapshot set {} taken ({} snapshots)",
                set.id,
                set.members.len()
            ))
        })
    }
}

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
    fn validate(&self, policy: &Policy) -> Result<(), String> {
        if policy.snapshots.is_empty() {
            return Err("the policy declares no `snapshots` to roll back".into());
        }
        Ok(())
    }
    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let mut set = drp_core::snapshot::find(&ctx.policy, &self.change)
                .await
                .map_err(|e| e.to_string())?;
            let results = drp_core::snapshot::rollback(&ctx.policy, &mut set)
                .await
                .map_err(|e| e.to_string())?;
            let failed: Vec<String> = results
                .iter()
                .filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}")))
                .collect();
            if failed.is_empty() {
                Ok(format!(
                    "rolled back to snapshot set {} of change `{}`",
                    set.id, self.change
                ))
            } else {
                Err(failed.join("; "))
            }
        })
    }
}

impl ActionConfig {
    pub fn action(&self) -> &dyn Action {
        match self {
            ActionConfig::Http(a) => a,
            ActionConfig::Tcp(a) => a,
            ActionConfig::Command(a) => a,
            ActionConfig::Sql(a) => a,
            ActionConfig::RestoreBackup(a) => a,
            ActionConfig::RestoreSnapshot(a) => a,
            ActionConfig::Snapshot(a) => a,
            ActionConfig::Restart(a) => a,
            ActionConfig::Wait(a) => a,
            ActionConfig::Notify(a) => a,
        }
    }

    pub fn validate(&self, policy: &Policy) -> Result<(), String> {
        self.action().validate(policy)
    }
}

/// What a check waits for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Until {
    /// Check once (the step's retries apply).
    #[default]
    Once,
    /// Poll until the check passes.
    Passes,
    /// Poll until the check fails: detects an outage.
    Fails,
}

/// Polling settings shared by the checks.
#[derive(Debug, Clone, Copy, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Poll {
    #[serde(default)]
    pub until: Until,
    pub interval: Option<HumanDuration>,
}

/// Runs `check` according to `poll`: once, or until it passes or fails.
pub async fn poll<F, Fut>(poll: Poll, mut check: F) -> Result<String, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let interval = poll
        .interval
        .map(|i| i.as_duration())
        .unwrap_or(Duration::from_secs(1));
    match poll.until {
        Until::Once => check().await,
        Until::Passes => loop {
            if let Ok(msg) = check().await {
                return Ok(msg);
            }
            tokio::time::sleep(interval).await;
        },
        Until::Fails => loop {
            if let Err(why) = check().await {
                return Ok(format!("failure detected: {why}"));
            }
            tokio::time::sleep(interval).await;
        },
    }
}
