//! A NAS reached over SFTP, through the system's OpenSSH client.

use std::path::{Path, PathBuf};

use opendal::{Operator, services::Sftp};
use serde::Deserialize;

use super::Backend;
use crate::config::resolve_relative;

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
    /// Host key checking: `strict` (default: the key must be in known_hosts),
    /// `add` (trust on first use) or `accept` (no checking).
    #[serde(default = "default_known_hosts")]
    pub known_hosts: String,
}

fn default_known_hosts() -> String {
    "strict".into()
}

impl Backend for SftpConfig {
    fn operator(&self, base_dir: &Path) -> Result<Operator, String> {
        let strategy = match self.known_hosts.as_str() {
            "strict" => "Strict",
            "add" => "Add",
            "accept" => "Accept",
            other => {
                return Err(format!(
                    "unknown known_hosts `{other}`: use strict, add or accept"
                ));
            }
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
        Operator::new(builder).map_err(|e| e.to_string())
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
