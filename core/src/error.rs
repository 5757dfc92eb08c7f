//! The error type of the core library and the exit codes the binaries map it to.

use crate::config::PolicyError;
use crate::source::SourceError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Process exit codes shared by `drp-agent` and `drp`; documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    Ok = 0,
    /// An operation failed (source, target, restore); nothing was committed.
    Failed = 1,
    /// The command line, a policy or a runbook is invalid.
    Usage = 2,
    /// Some targets committed the recovery point, others failed (or it was
    /// committed and an `after` or `on_error` hook failed).
    Partial = 3,
    /// A recovery point failed verification: corruption was detected.
    Integrity = 4,
    /// A restore would replace data and was not confirmed.
    NotConfirmed = 5,
    /// No recovery point (or export, or target) matches the request.
    NotFound = 6,
    /// The export is already running (its lock is held).
    Busy = 7,
    /// The objectives cannot be met (posture check) or were missed (drill).
    ObjectivesMissed = 8,
    /// The run succeeded but its report could not be stored on every target
    /// (it was kept locally).
    ReportNotStored = 9,
    /// This host is fenced after a failover: its services must not run.
    Fenced = 10,
}

impl ExitCode {
    /// The worse of two outcomes (the higher code), for commands doing
    /// several things.
    pub fn worse(self, other: ExitCode) -> ExitCode {
        if other as u8 > self as u8 {
            other
        } else {
            self
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Policy(#[from] PolicyError),

    #[error("{0}")]
    Usage(String),

    #[error(transparent)]
    Source(#[from] SourceError),

    #[error("target `{target}`: {message}")]
    Target { target: String, message: String },

    #[error(
        "integrity check failed for `{object}` on target `{target}`: {what} expected {expected}, found {actual}; the recovery point is corrupt and was not loaded"
    )]
    Integrity {
        target: String,
        object: String,
        what: &'static str,
        expected: String,
        actual: String,
    },

    #[error("restore not confirmed: nothing was changed (pass --yes to replace {destination})")]
    NotConfirmed { destination: String },

    #[error("{0}")]
    NotFound(String),

    #[error("{0}")]
    Busy(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("manifest `{object}` on target `{target}` is unreadable: {message}")]
    Manifest {
        target: String,
        object: String,
        message: String,
    },

    /// A name already stored with other content: never overwritten.
    #[error("{0}")]
    Conflict(String),

    #[error("{0}")]
    Failed(String),

    /// This host is fenced: what it was asked to start must stay stopped.
    #[error("{0}")]
    Fenced(String),
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Policy(_) | Error::Usage(_) => ExitCode::Usage,
            Error::Integrity { .. } | Error::Manifest { .. } | Error::Conflict(_) => {
                ExitCode::Integrity
            }
            Error::NotConfirmed { .. } => ExitCode::NotConfirmed,
            Error::NotFound(_) => ExitCode::NotFound,
            Error::Busy(_) => ExitCode::Busy,
            Error::Fenced(_) => ExitCode::Fenced,
            Error::Source(_) | Error::Target { .. } | Error::Io { .. } | Error::Failed(_) => {
                ExitCode::Failed
            }
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn io_path(action: &str, path: &std::path::Path, source: std::io::Error) -> Self {
        Error::io(format!("{action} {}", path.display()), source)
    }

    pub fn target(target: &str, err: impl std::fmt::Display) -> Self {
        Error::Target {
            target: target.to_string(),
            message: err.to_string(),
        }
    }
}

/// An error with its whole chain of causes, `: `-separated (an SDK's
/// errors carry the service's code and message in their sources).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    message
}
