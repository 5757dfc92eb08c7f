//! The protocol between `drp` and `drp-agent serve --stdio`: one JSON
//! object per line each way, over the SSH channel's stdin and stdout.
//!
//! The coordinator sends requests, each with an `id` of its choosing and an
//! `op`; the agent answers every request with replies carrying the same
//! `id`: a `run` gets `running` beats while it runs, then one `done` or
//! `error`; every other request gets exactly one reply. A `cancel` names
//! the `id` of a running step; the agent stops it (its processes are
//! killed) and answers the step with an `error` of kind `cancelled`. The
//! agent's standard error carries its log, never replies.
//!
//! The first request is `hello`, with the coordinator's protocol version;
//! an agent speaking another version answers with an `error` of kind
//! `protocol` and closes. The coordinator pings every second; an agent
//! that hears nothing for five seconds stops what it runs and exits.
//! Everything a request carries is data the agent
//! checks against its own policy ([`super::allow`]); nothing in it is ever
//! run as a command.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::action::RestoredPoint;

/// The version both sides must speak.
pub const PROTOCOL: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    #[serde(flatten)]
    pub op: Op,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Opens the session; answered by [`Reply::Hello`].
    Hello { protocol: u32 },
    /// Would the host run this step? Answered by [`Reply::Allowed`] or a
    /// `refused` error; nothing runs.
    Validate { step: StepRequest },
    /// Runs the step: [`Reply::Running`] beats, then [`Reply::Done`] or an error.
    Run {
        step: StepRequest,
        /// When the failure happened, for `before_failure` restores and commands.
        t_fail: DateTime<Utc>,
        runbook: String,
    },
    /// Stops the running step whose request had this `id`.
    Cancel,
    /// The host's exports, newest points, exposure and tests, as
    /// `drp-agent status --json` prints them.
    Status,
    /// Sent every [`PING_EVERY`] by the coordinator, never answered: an
    /// agent that hears nothing for [`SILENCE`] takes the coordinator for
    /// gone (a cut link can leave the SSH session open for minutes) and
    /// stops every step it runs for it.
    Ping,
}

pub const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
pub const SILENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// A runbook step as the coordinator read it: its name and its action as
/// written (`kind` and settings), to be read by the agent again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRequest {
    pub name: String,
    pub action: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub id: u64,
    #[serde(flatten)]
    pub reply: Reply,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Hello(Hello),
    Allowed {
        describe: String,
        /// Whether the host counts the step as a change.
        destructive: bool,
    },
    /// The step is still running, `seconds` after it started.
    Running {
        seconds: f64,
    },
    Done {
        message: String,
        /// The recovery points it restored, for the RPO.
        #[serde(default)]
        restored: Vec<RestoredPoint>,
        seconds: f64,
    },
    Status {
        status: Box<drp_core::export_status::HostStatus>,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The host's policy does not allow the request.
    Refused,
    /// The step ran and failed.
    Failed,
    /// Stopped by a `cancel`, or because the coordinator went away.
    Cancelled,
    /// The request was not understood.
    BadRequest,
    /// The two sides speak different protocol versions.
    Protocol,
}

/// Who answers: the agent's side of the session.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Hello {
    pub protocol: u32,
    /// The policy's `host`.
    pub host: String,
    pub agent_version: String,
    /// The policy file the agent serves.
    pub policy: String,
    pub exports: Vec<String>,
    pub allow_destructive: bool,
    pub units: Vec<String>,
    pub commands: Vec<String>,
}

impl Request {
    pub fn line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("requests serialise");
        s.push('\n');
        s
    }
}

impl Response {
    pub fn line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("replies serialise");
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_are_one_json_object_per_line() {
        let r = Request {
            id: 7,
            op: Op::Run {
                step: StepRequest {
                    name: "restore".into(),
                    action: serde_json::json!({"kind": "restore_backup", "export": "shop"}),
                },
                t_fail: "2026-12-02T10:00:00Z".parse().unwrap(),
                runbook: "db lost".into(),
            },
        };
        let line = r.line();
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.starts_with(r#"{"id":7,"op":"run","#), "{line}");
        let back: Request = serde_json::from_str(&line).unwrap();
        assert!(matches!(back.op, Op::Run { .. }));
        let cancel: Request = serde_json::from_str(r#"{"id":7,"op":"cancel"}"#).unwrap();
        assert!(matches!(cancel.op, Op::Cancel));
        let reply: Response =
            serde_json::from_str(r#"{"id":7,"reply":"error","kind":"refused","message":"no"}"#)
                .unwrap();
        assert!(matches!(
            reply.reply,
            Reply::Error {
                kind: ErrorKind::Refused,
                ..
            }
        ));
    }
}
