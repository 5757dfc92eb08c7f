//! What can go wrong taking, rolling back, checking or deleting a snapshot.
//! Each message is what the user reads in a set's record and in
//! `snapshot` output: it names the resource and, where there is one, what
//! to do next.

use std::time::Duration;

/// A provider's failure, typed by what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A tool (`btrfs`, `qemu-img`) could not be started.
    #[error("cannot run `{program}`: {source} (is it installed?)")]
    ToolMissing {
        program: String,
        #[source]
        source: std::io::Error,
    },

    /// A tool ran and failed; its stderr explains why.
    #[error("`{program} {}` failed: {stderr}", args.join(" "))]
    Tool {
        program: String,
        args: Vec<String>,
        stderr: String,
    },

    /// A cloud API call failed: its codes and messages, with their causes.
    #[error("{op} failed: {message}")]
    Api { op: &'static str, message: String },

    /// A cloud API call succeeded without naming what it created.
    #[error("{op} returned no id")]
    NoId { op: &'static str },

    /// A snapshot or restore did not reach the wanted state in time.
    #[error("{what} after {}", crate::config::units::format_duration(*timeout))]
    TimedOut { what: String, timeout: Duration },

    /// The path is not a btrfs subvolume, or btrfs-progs cannot say.
    #[error("{path} is not a btrfs subvolume (or btrfs-progs is missing): {source}")]
    NotASubvolume {
        path: String,
        #[source]
        source: Box<SnapshotError>,
    },

    /// The snapshot to roll back to no longer exists.
    #[error("snapshot {snapshot} is gone: {source}")]
    Gone {
        snapshot: String,
        #[source]
        source: Box<SnapshotError>,
    },

    /// The resource or snapshot the provider looked up does not exist.
    #[error("{0}")]
    NotFound(String),

    /// A set's member has no reference: its snapshot was never taken.
    #[error("snapshot `{name}` has no reference: it was never taken")]
    NeverTaken { name: String },

    /// A reference read from a set record does not name a snapshot this
    /// provider took of the declared resource for that set.
    #[error("{0}")]
    NotOwned(String),

    /// The resource is held by something running (a VM's image lock).
    #[error(
        "image {image} is in use (a running VM holds its lock): stop the VM, or snapshot it through libvirt; nothing was changed"
    )]
    InUse { image: String },

    /// drp refuses to act on the resource in its current state; the message
    /// says what to do first.
    #[error("{0}")]
    Refused(String),

    /// The provider of `kind` is not compiled into this binary.
    #[error("this drp-agent was built without the `aws` feature")]
    Unavailable { kind: &'static str },

    /// A core operation the provider relies on (backup, restore, repository)
    /// failed.
    #[error(transparent)]
    Core(Box<crate::Error>),

    /// Anything else; the message says what.
    #[error("{0}")]
    Failed(String),
}

impl From<crate::Error> for SnapshotError {
    fn from(e: crate::Error) -> Self {
        SnapshotError::Core(Box::new(e))
    }
}

impl SnapshotError {
    pub(crate) fn failed(message: impl Into<String>) -> Self {
        SnapshotError::Failed(message.into())
    }
}
