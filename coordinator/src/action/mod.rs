//! Runbook actions: one trait, one file per action. Checks (`http`, `tcp`,
//! `command`, `sql`) can also wait until they pass — or until they fail, to
//! detect an outage — polling at an interval inside the step's timeout.
//!
//! To add an action:
//! 1. write `action/<name>.rs`: a config struct (`#[serde(deny_unknown_fields)]`)
//!    implementing [`Action`], failing with an [`ActionError`] and refusing
//!    configurations with an [`Invalid`];
//! 2. declare it here with `pub mod <name>;` and one line in the `actions!`
//!    list below: its `kind:` (the variant, in snake case) and its type.
//!
//! The enum [`ActionConfig`] and its dispatch to the trait are generated from
//! that list, so the compiler checks every `match` on the kinds.

pub mod backup;
pub mod command;
pub mod dns;
pub mod dns_switch;
mod error;
pub mod fence;
pub mod http;
pub mod notify;
pub mod promote;
pub mod restart;
pub mod restore_backup;
pub mod restore_snapshot;
pub mod snapshot;
pub mod sql;
pub mod stand_down;
pub mod tcp;
pub mod wait;

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use drp_core::config::{HumanDuration, Policy};
use futures::future::BoxFuture;
use serde::Deserialize;

pub use error::{ActionError, Invalid};

/// What a step's action can see and leave behind.
pub struct Context {
    pub policy: Policy,
    pub runbook: String,
    /// When the failure happened (injected, given, or the start of the run).
    pub t_fail: DateTime<Utc>,
    /// Recovery points restored so far, for the RPO.
    pub restored: Mutex<Vec<RestoredPoint>>,
    pub workdir: Option<std::path::PathBuf>,
    /// The hosts of the runbook's inventory, for steps with `host:`.
    pub fleet: Option<std::sync::Arc<crate::fleet::Fleet>>,
    /// The operator said `--force`: a fence may go ahead without a
    /// witness's agreement (the report records it).
    pub force: bool,
}

impl Context {
    /// A context of `runbook` outside a run (its policy, its inventory's
    /// hosts), for a command that acts as one of its steps would.
    pub fn for_runbook(runbook: &crate::runbook::Runbook) -> Context {
        Context {
            policy: runbook.policy.clone(),
            runbook: runbook.name.clone(),
            t_fail: Utc::now(),
            restored: Mutex::new(Vec::new()),
            workdir: None,
            fleet: runbook
                .inventory
                .clone()
                .map(|i| std::sync::Arc::new(crate::fleet::Fleet::new(i))),
            force: false,
        }
    }
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
    fn validate(&self, _policy: &Policy) -> Result<(), Invalid> {
        Ok(())
    }
    /// How long it may wait by its own settings (a verification window):
    /// its step's timeout must be longer, or the step would end before the
    /// action can say what it waited for.
    fn waits(&self) -> Option<Duration> {
        None
    }
    /// Inventory hosts the action itself talks to (beside its step's `host:`).
    fn hosts(&self) -> Vec<&str> {
        Vec::new()
    }
    /// Runs once; the engine applies timeout and retries. `Ok` carries a
    /// short account of what happened, `Err` why it failed.
    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<String, ActionError>>;
}

/// Declares [`ActionConfig`], one variant per action, and its dispatch.
macro_rules! actions {
    ($($(#[$doc:meta])* $kind:ident($action:ty),)*) => {
        /// Which action a step runs, chosen by `kind`.
        #[derive(Debug, Clone, Deserialize)]
        #[serde(tag = "kind", rename_all = "snake_case")]
        pub enum ActionConfig {
            $($(#[$doc])* $kind($action),)*
        }

        impl ActionConfig {
            pub fn action(&self) -> &dyn Action {
                match self {
                    $(ActionConfig::$kind(a) => a,)*
                }
            }
        }
    };
}

actions! {
    /// `kind: http`: a status code and text in the body.
    Http(http::HttpCheck),
    /// `kind: tcp`: a connection is accepted.
    Tcp(tcp::TcpCheck),
    /// `kind: command`: a program's exit code and output, or a change.
    Command(command::CommandAction),
    /// `kind: sql`: a query and what its result must be.
    Sql(sql::SqlCheck),
    /// `kind: backup`: a recovery point of an export taken now.
    Backup(backup::Backup),
    /// `kind: restore_backup`: an export's recovery point restored.
    RestoreBackup(restore_backup::RestoreBackup),
    /// `kind: restore_snapshot`: a rollback to a change's snapshot set.
    RestoreSnapshot(restore_snapshot::RestoreSnapshot),
    /// `kind: snapshot`: a snapshot set taken before a change.
    Snapshot(snapshot::TakeSnapshot),
    /// `kind: restart`: a service restarted, then checked.
    Restart(restart::Restart),
    /// `kind: wait`: a fixed pause.
    Wait(wait::Wait),
    /// `kind: notify`: a message through the policy's channels.
    Notify(notify::NotifyAction),
    /// `kind: dns_switch`: a DNS name moved to a new address.
    DnsSwitch(dns_switch::DnsSwitch),
    /// `kind: fence`: the old primary fenced before its name moves.
    Fence(fence::FenceHost),
    /// `kind: stand_down`: this host fenced, by a coordinator's `fence`.
    StandDown(stand_down::StandDown),
    /// `kind: unfence`: a host's fence lifted (failback).
    Unfence(fence::Unfence),
    /// `kind: promote`: a warm standby of this host made a primary.
    Promote(promote::Promote),
}

impl ActionConfig {
    pub fn validate(&self, policy: &Policy) -> Result<(), Invalid> {
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
pub async fn poll<F, Fut>(poll: Poll, mut check: F) -> Result<String, ActionError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<String, ActionError>>,
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
