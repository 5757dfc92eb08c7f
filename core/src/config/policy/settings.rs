//! The sections of a validated policy besides its targets: each a serde
//! struct read as written (`deny_unknown_fields`, defaults filled in) and,
//! once checked, the form the rest of the core uses.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{HumanDuration, Schedule};
use crate::source::SourceConfig;

/// The `restore:` section: how restores treat what they replace.
///
/// `drop_replaced` (default `false`): drop the copy a restore replaced once
/// the restore has succeeded; by default it is kept (next to the restored
/// data, as the restore left it), so a restore of the wrong point can be
/// undone.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RestoreSettings {
    #[serde(default)]
    pub drop_replaced: bool,
}

/// The `serve:` section: what this host lets a coordinator run here
/// through `drp-agent serve --stdio`. Checks and restores of declared
/// exports are typed and always allowed; the rest is opt-in.
///
/// `allow_destructive` (default `false`): steps that change something
/// (a restore over live data, a rollback, a restart, a command declared
/// `destructive`) are refused unless it is `true`. `units`: the systemd
/// units a `restart` step may name. `commands`: the only commands a
/// coordinator may run here, by name; nothing else is ever executed.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServeSettings {
    #[serde(default)]
    pub allow_destructive: bool,
    #[serde(default)]
    pub units: Vec<String>,
    #[serde(default)]
    pub commands: BTreeMap<String, NamedCommand>,
}

/// A command a coordinator may run on this host by its name.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NamedCommand {
    /// The argument vector, run without a shell.
    pub run: Vec<String>,
    /// Whether it changes something: then only with `allow_destructive`.
    #[serde(default)]
    pub destructive: bool,
}

/// What a policy says of a target beside where it is: whom its points are
/// encrypted to and how fast backups upload to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetOptions {
    /// Names in `keys.recipients`; empty: not encrypted.
    pub recipients: Vec<String>,
    /// Bytes per second (`limit: 20MiB/s`).
    pub limit: Option<u64>,
}

/// Where the agent publishes Prometheus metrics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// A node-exporter textfile-collector file, rewritten after each run.
    pub textfile: Option<PathBuf>,
    /// Address the daemon serves `/metrics` on (default 127.0.0.1:9464).
    pub listen: Option<std::net::SocketAddr>,
}

/// Who hears about runs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// When to notify: `failure` (default) and/or `success`.
    #[serde(default = "Notify::default_on")]
    pub on: Vec<NotifyWhen>,
    pub webhook: Option<crate::notify::webhook::WebhookConfig>,
    pub email: Option<crate::notify::email::EmailConfig>,
}

impl Notify {
    fn default_on() -> Vec<NotifyWhen> {
        vec![NotifyWhen::Failure]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyWhen {
    Failure,
    Success,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneSettings {
    /// Data objects without a manifest younger than this are left alone:
    /// they may belong to a backup still running on another host.
    #[serde(default = "PruneSettings::default_grace")]
    pub grace: HumanDuration,
    /// Whether the agent prunes after each backup (default `true`). Off on
    /// hosts whose S3 keys may not delete: prune then runs from a machine
    /// holding a key that may.
    #[serde(default = "PruneSettings::default_after_backup")]
    pub after_backup: bool,
}

impl PruneSettings {
    fn default_after_backup() -> bool {
        true
    }

    fn default_grace() -> HumanDuration {
        HumanDuration(std::time::Duration::from_secs(24 * 3600))
    }
}

impl Default for PruneSettings {
    fn default() -> Self {
        PruneSettings {
            grace: PruneSettings::default_grace(),
            after_backup: true,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objectives {
    pub rto: Option<HumanDuration>,
    pub rpo: Option<HumanDuration>,
}

#[derive(Debug, Clone)]
pub struct Export {
    pub name: String,
    pub source: SourceConfig,
    pub schedule: Schedule,
    pub targets: Vec<String>,
    pub compression: Compression,
    pub retention: Retention,
    /// How restore tests treat the export (`drp-agent test-restore`).
    pub restore_test: Option<crate::config::RestoreTestConfig>,
    /// A dead man's switch pinged at the start and end of each run.
    pub ping: Option<crate::notify::ping::PingConfig>,
    /// The export's own RTO and RPO, each one replacing the host's.
    pub objectives: Objectives,
    /// Commands run before, after and on the failure of each backup.
    pub hooks: Option<crate::config::hooks::Hooks>,
}

impl Export {
    /// The objectives this export is held to: its own, and the host's for
    /// what it does not set.
    pub fn objectives(&self, host: &Objectives) -> Objectives {
        Objectives {
            rto: self.objectives.rto.or(host.rto),
            rpo: self.objectives.rpo.or(host.rpo),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    /// zstd level, 1 (fastest) to 19 (smallest).
    #[serde(default = "Compression::default_level")]
    pub level: i32,
    /// Compression threads; 0 uses every core.
    #[serde(default)]
    pub threads: u32,
}

impl Compression {
    fn default_level() -> i32 {
        3
    }
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            level: Compression::default_level(),
            threads: 0,
        }
    }
}

/// How many recovery points to keep (grandfather-father-son). No keep rule
/// at all keeps everything; rules that keep nothing (every count 0) are
/// refused. `min_verified` is 1 when not written, and at least 1.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// Never delete below this many verified recovery points. Always
    /// `Some` in a validated policy (default 1).
    pub min_verified: Option<u32>,
}
