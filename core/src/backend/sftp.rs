//! A NAS reached over SFTP, through the system's OpenSSH client.

use std::path::{Path, PathBuf};

use opendal::{Operator, services::Sftp};
use serde::Deserialize;

use super::{Backend, BackendError};
use crate::paths::resolve_relative;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftpConfig {
    pub host: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    /// Private key file; relative to the policy's folder.
    pub key: Option<PathBuf>,
    /// The repository folder on the server.
    pub path: String,
    /// Host key checking (default: strict).
    #[serde(default)]
    pub known_hosts: KnownHosts,
}

/// How the server's host key is checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KnownHosts {
    /// The key must already be in the user's known_hosts.
    #[default]
    Strict,
    /// Trust on first use: an unknown key is added, a changed one refused.
    Add,
    /// No checking.
    Accept,
}

impl std::str::FromStr for KnownHosts {
    type Err = crate::Error;

    fn from_str(text: &str) -> crate::Result<Self> {
        match text {
            "strict" => Ok(KnownHosts::Strict),
            "add" => Ok(KnownHosts::Add),
            "accept" => Ok(KnownHosts::Accept),
            other => Err(crate::Error::Usage(format!(
                "unknown known_hosts `{other}`: use strict, add or accept"
            ))),
        }
    }
}

impl Backend for SftpConfig {
    /// An SFTP write creates the file, then fills it.
    fn atomic_writes(&self) -> bool {
        false
    }

    fn operator(&self, base_dir: &Path) -> Result<Operator, BackendError> {
        let strategy = match self.known_hosts {
            KnownHosts::Strict => "Strict",
            KnownHosts::Add => "Add",
            KnownHosts::Accept => "Accept",
        };
        let endpoint = match (&self.user, self.port) {
            (Some(u), Some(p)) => format!("ssh://{u}@{}:{p}", self.host),
            (Some(u), None) => format!("ssh://{u}@{}", self.host),
            (None, Some(p)) => format!("ssh://{}:{p}", self.host),
            (None, None) => format!("ssh://{}", self.host),
        };
        let mut builder = Sftp::default()
            .endpoint(&endpoint)
            .root(&self.path)
            .known_hosts_strategy(strategy);
        if let Some(user) = &self.user {
            builder = builder.user(user);
        }
        if let Some(key) = &self.key {
            builder = builder.key(&resolve_relative(base_dir, key).to_string_lossy());
        }
        Ok(Operator::new(builder)?)
    }

    fn location(&self) -> String {
        let user = self
            .user
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("sftp://{user}{}{port}{}", self.host, self.path)
    }
}
