//! Notifications about runs: one trait, one file per channel. A channel that
//! fails or hangs is bounded by its timeout and reported; it never changes the
//! outcome of the backup it reports on.

pub mod email;
mod error;
pub mod ping;
pub mod webhook;

use std::path::Path;

use serde::Serialize;

use crate::config::{Notify, NotifyWhen};

pub use error::NotifyError;

use crate::state::RunResult;

/// What happened, as every channel tells it. Holds no secret: errors come
/// from the library's messages, which never include one.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub host: String,
    pub export: String,
    pub result: RunResult,
    pub point: Option<String>,
    pub committed: Vec<String>,
    pub failed: Vec<String>,
    pub errors: Vec<String>,
    pub seconds: f64,
    pub at: chrono::DateTime<chrono::Utc>,
    /// A subject of its own (runbook notifications), instead of the backup's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

impl Message {
    pub fn is_failure(&self) -> bool {
        self.result != RunResult::Ok
    }

    pub fn subject(&self) -> String {
        if let Some(t) = &self.title {
            return t.clone();
        }
        match self.result {
            RunResult::Ok => format!("drp: backup of {}/{} succeeded", self.host, self.export),
            RunResult::Partial => format!(
                "drp: backup of {}/{} PARTIALLY failed",
                self.host, self.export
            ),
            RunResult::Failed => format!("drp: backup of {}/{} FAILED", self.host, self.export),
        }
    }

    pub fn text(&self) -> String {
        let mut t = format!(
            "{}\n\nhost: {}\nexport: {}\nresult: {}\nduration: {:.1}s\nat: {}\n",
            self.subject(),
            self.host,
            self.export,
            self.result,
            self.seconds,
            self.at.to_rfc3339()
        );
        if let Some(p) = &self.point {
            t += &format!("recovery point: {p}\n");
        }
        if !self.committed.is_empty() {
            t += &format!("committed to: {}\n", self.committed.join(", "));
        }
        if !self.failed.is_empty() {
            t += &format!("failed targets: {}\n", self.failed.join(", "));
        }
        for e in &self.errors {
            t += &format!("error: {e}\n");
        }
        t
    }
}

pub trait Notifier: Send + Sync {
    fn name(&self) -> &'static str;
    fn send<'a>(
        &'a self,
        message: &'a Message,
    ) -> futures::future::BoxFuture<'a, Result<(), NotifyError>>;
}

/// The channels a policy configures.
pub fn channels(config: &Notify, base_dir: &Path) -> Vec<Box<dyn Notifier>> {
    let mut out: Vec<Box<dyn Notifier>> = Vec::new();
    if let Some(w) = &config.webhook {
        out.push(Box::new(webhook::Webhook::new(w.clone(), base_dir)));
    }
    if let Some(e) = &config.email {
        out.push(Box::new(email::Email::new(e.clone(), base_dir)));
    }
    out
}

/// Sends `message` where the policy asks; returns one error line per channel that failed.
pub async fn send(config: &Notify, base_dir: &Path, message: &Message) -> Vec<String> {
    let wanted = if message.is_failure() {
        config.on.contains(&NotifyWhen::Failure)
    } else {
        config.on.contains(&NotifyWhen::Success)
    };
    if !wanted {
        return Vec::new();
    }
    let mut errors = Vec::new();
    for channel in channels(config, base_dir) {
        if let Err(e) = channel.send(message).await {
            tracing::warn!(channel = channel.name(), error = %e, "notification failed");
            errors.push(format!("{} notification failed: {e}", channel.name()));
        }
    }
    errors
}

/// Logs and notifies a problem of an export's archiving (a conflict, a
/// backlog): the policy's notification channels, whatever they are set to
/// report.
pub(crate) async fn archive_alert(
    policy: &crate::config::Policy,
    export: &str,
    targets: &[String],
    title: &str,
    text: &str,
) {
    tracing::error!(export = %export, "{title}: {text}");
    let title = format!("drp: {title} for {}/{export}", policy.host);
    alert(policy, export, targets, title, text).await;
}

/// Notifies a failure on this host that is not a backup's (`about` stands
/// in the export's place), through the policy's channels.
pub(crate) async fn alert(
    policy: &crate::config::Policy,
    about: &str,
    targets: &[String],
    title: String,
    text: &str,
) {
    let message = Message {
        host: policy.host.clone(),
        export: about.to_string(),
        result: crate::state::RunResult::Failed,
        point: None,
        committed: Vec::new(),
        failed: targets.to_vec(),
        errors: vec![text.to_string()],
        seconds: 0.0,
        at: chrono::Utc::now(),
        title: Some(title),
    };
    for e in send(&policy.notify, &policy.base_dir, &message).await {
        tracing::warn!("the alert was not delivered: {e}");
    }
}
