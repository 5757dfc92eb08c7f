//! What can go wrong with an action: refused when the runbook is read
//! ([`Invalid`]), or failed when it runs ([`ActionError`]). The messages are
//! what the plan, the engine and the reports show, word for word.

use std::time::Duration;

use drp_core::config::units::format_duration;

use super::command::Argv;

/// Why a step's action does not fit the policy; found before anything runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("unknown export `{export}`; the policy defines: {}", known.join(", "))]
    UnknownExport { export: String, known: Vec<String> },

    #[error("export `{export}` is not stored on target `{target}`")]
    NotOnTarget { export: String, target: String },

    #[error("export `{0}` is a directory: it has no SQL")]
    NoSql(String),

    #[error("the policy declares no `snapshots`")]
    NoSnapshots,

    #[error("the policy declares no `snapshots` to roll back")]
    NoSnapshotsToRollBack,

    #[error("no snapshot `{0}` in the policy")]
    UnknownSnapshot(String),

    #[error(
        "the policy of host `{0}` declares no `fencing`: nothing says what stops when it is fenced"
    )]
    NoFencing(String),

    #[error("`into: {into}` must name another export of the same kind as `{export}`")]
    NotInto { export: String, into: String },

    #[error("the policy of host `{host}` declares no standby `{name}`; it declares: {}", if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    UnknownStandby {
        name: String,
        host: String,
        known: Vec<String>,
    },

    #[error(
        "`from_host: {0}` restores another host's point: name the export of this policy that receives it with `into:`"
    )]
    FromHostInto(String),

    #[error(
        "`from_host: {0}` cannot restore a whole PostgreSQL cluster: keep a warm standby of it (`standby:` in this host's policy) and `promote` it"
    )]
    FromHostCluster(String),

    #[error("`paths:` cannot restore part of `{export}`: {why}")]
    Paths { export: String, why: String },

    #[error("give exactly one of `unit` or `command`")]
    UnitOrCommand,

    #[error("give exactly one of `run` or `named`")]
    RunOrNamed,

    #[error("no command `{name}` under `serve.commands` in the policy of host `{host}`; it declares: {}", if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    UnknownCommand {
        name: String,
        host: String,
        known: Vec<String>,
    },
}

impl Invalid {
    /// `name` is not one of the policy's named commands.
    pub fn unknown_command(name: &str, policy: &drp_core::config::Policy) -> Invalid {
        Invalid::UnknownCommand {
            name: name.to_string(),
            host: policy.host.clone(),
            known: policy.serve.commands.keys().cloned().collect(),
        }
    }

    /// `export` is not one of the policy's exports.
    pub fn unknown_export(export: &str, policy: &drp_core::config::Policy) -> Invalid {
        Invalid::UnknownExport {
            export: export.to_string(),
            known: policy.exports.keys().cloned().collect(),
        }
    }
}

/// Why one attempt of an action did not pass.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The action ran and did not see what it expects (a status, an exit
    /// code, a value, a reachable target), in words.
    #[error("{what}")]
    Failed { what: String },

    /// Some parts failed (snapshot members rolled back, notification
    /// channels), each `name: why`.
    #[error("{}", failed.join("; "))]
    Partial { failed: Vec<String> },

    /// A snapshot set was taken with members missing.
    #[error("snapshot set {set} incomplete: {}", failed.join("; "))]
    SnapshotIncomplete { set: String, failed: Vec<String> },

    /// A program could not be started.
    #[error("cannot run `{argv}`: {source}")]
    Spawn {
        argv: Argv,
        #[source]
        source: std::io::Error,
    },

    /// A TCP connection was refused or failed.
    #[error("{address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },

    /// An HTTP request got no answer.
    #[error("GET {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// The HTTP client could not be set up.
    #[error(transparent)]
    Http(reqwest::Error),

    /// A query on an export's database failed.
    #[error(transparent)]
    Query(#[from] drp_core::source::SourceError),

    /// The core library failed: an export lookup, a restore, a snapshot.
    #[error(transparent)]
    Core(#[from] drp_core::Error),

    /// A blocking task (a query) panicked or was cancelled.
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),

    /// No result within the step's timeout; the engine gives up the attempt.
    #[error("no result within {}", format_duration(*.0))]
    TimedOut(Duration),
}

impl ActionError {
    /// A failure said in words.
    pub fn failed(what: impl Into<String>) -> ActionError {
        ActionError::Failed { what: what.into() }
    }
}
