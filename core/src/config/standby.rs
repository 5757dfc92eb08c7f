//! `standby:` of a host's policy: PostgreSQL clusters this host keeps warm
//! for another host's `postgres-cluster` export, replaying that export's
//! WAL archive as it grows, so that a failover is a promotion.

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
    /// The standby's data directory on this host.
    pub data_directory: PathBuf,
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

impl Standby {
    /// The standby server as a cluster drp connects to and restores into.
    pub fn cluster(&self) -> ClusterConfig {
        ClusterConfig {
            url: self.url.clone(),
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            password: self.password.clone(),
            bin_dir: self.bin_dir.clone(),
            ..ClusterConfig::bare(&self.data_directory.to_string_lossy())
        }
    }

    pub fn lag_alert(&self) -> Duration {
        self.lag_alert
            .as_ref()
            .map(|d| d.as_duration())
            .unwrap_or(DEFAULT_LAG_ALERT)
    }
}
