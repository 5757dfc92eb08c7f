//! `standby:` of a host's policy: what this host keeps ready for another
//! host's export. A PostgreSQL cluster (`data_directory`) follows a
//! `postgres-cluster` export by replaying its WAL archive as it grows, so
//! that a failover is a promotion; any other export is restored into one of
//! this policy's exports (`into`) every `every`, its archived logs replayed
//! up to the newest.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{HumanDuration, SecretRef};
use crate::source::postgres::cluster::ClusterConfig;

/// When the replay lag alerts, if the policy does not say.
pub const DEFAULT_LAG_ALERT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Standby {
    /// The primary's export this standby follows.
    pub of: Primary,
    /// The targets holding the primary's base backups and WAL archive (by
    /// this policy's names; default: every target of the policy).
    pub targets: Option<Vec<String>>,
    /// A warm PostgreSQL standby: its data directory on this host.
    pub data_directory: Option<PathBuf>,
    /// A restored standby: the export of this policy whose source receives
    /// the primary's newest point every `every`.
    pub into: Option<String>,
    /// How often a restored standby is brought to the primary's newest
    /// point (default 1h).
    pub every: Option<HumanDuration>,
    /// How drp reaches the standby server (for its lag and its promotion).
    pub url: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<SecretRef>,
    /// Folder of `postgres`, `pg_verifybackup` and `psql` of the primary's
    /// major version (Debian: `/usr/lib/postgresql/15/bin`).
    pub bin_dir: Option<PathBuf>,
    /// Once promoted, the server archives its WAL into this export of this
    /// policy (a `postgres-cluster` export of the same data directory);
    /// without it, a promoted standby does not archive.
    pub archive_into: Option<String>,
    /// Alert when the oldest archived change not yet replayed is older than
    /// this (default 5m).
    pub lag_alert: Option<HumanDuration>,
}

/// `of: {host: db1, export: main}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Primary {
    pub host: String,
    pub export: String,
}

/// How often a restored standby is refreshed when the policy does not say.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(3600);

/// What kind of standby an entry is.
pub enum Keeps<'a> {
    /// A PostgreSQL cluster replaying the archive, in this data directory.
    Cluster(&'a std::path::Path),
    /// The primary's newest point restored into this export, this often.
    Restored { into: &'a str, every: Duration },
}

impl Standby {
    /// What this entry keeps (checked when the policy is read: exactly one
    /// of `data_directory` and `into`).
    pub fn keeps(&self) -> Keeps<'_> {
        match (&self.data_directory, &self.into) {
            (Some(dir), _) => Keeps::Cluster(dir),
            (None, into) => Keeps::Restored {
                into: into.as_deref().unwrap_or_default(),
                every: self
                    .every
                    .as_ref()
                    .map(|d| d.as_duration())
                    .unwrap_or(DEFAULT_EVERY),
            },
        }
    }

    /// The standby server as a cluster drp connects to and restores into.
    pub fn cluster(&self) -> ClusterConfig {
        ClusterConfig {
            url: self.url.clone(),
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            password: self.password.clone(),
            bin_dir: self.bin_dir.clone(),
            ..ClusterConfig::bare(
                &self
                    .data_directory
                    .as_deref()
                    .unwrap_or(std::path::Path::new(""))
                    .to_string_lossy(),
            )
        }
    }

    pub fn lag_alert(&self) -> Duration {
        self.lag_alert
            .as_ref()
            .map(|d| d.as_duration())
            .unwrap_or(DEFAULT_LAG_ALERT)
    }
}
