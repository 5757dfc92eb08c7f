//! Credentials referenced by a policy. A policy never holds a secret itself:
//! it names an environment variable or a file, read when the secret is needed.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum SecretRef {
    /// The value of an environment variable.
    Env(String),
    /// The content of a file (trailing newline removed); relative to the policy.
    File(PathBuf),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(v) => write!(f, "env:{v}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// A resolved secret. Its `Debug` and `Display` never show the value.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl SecretRef {
    /// Reads the secret. The error names where it was looked for, never a value.
    pub fn resolve(&self, base: &std::path::Path) -> Result<Secret, String> {
        match self {
            SecretRef::Env(name) => std::env::var(name)
                .map(Secret)
                .map_err(|_| format!("environment variable `{name}` is not set")),
            SecretRef::File(path) => {
                let path = super::resolve_relative(base, path);
                std::fs::read_to_string(&path)
                    .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_string()))
                    .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))
            }
        }
    }
}
