//! Credentials referenced by a policy. A policy never holds a secret itself:
//! it names an environment variable or a file, read when the secret is needed.
//!
//! A leaf: the policy, the backends and the keys all read secrets, so this
//! module imports none of them.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Clone, PartialEq, Eq)]
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

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            env: Option<String>,
            file: Option<PathBuf>,
        }
        // Never echo what was written: it may be the secret itself.
        const HOW: &str = "a secret is never written in a policy: reference it as `{env: VARIABLE}` or `{file: /path/to/file}`";
        let value = serde_yaml_ng::Value::deserialize(d)?;
        if !value.is_mapping() {
            return Err(D::Error::custom(HOW));
        }
        match serde_yaml_ng::from_value::<Raw>(value) {
            Ok(Raw {
                env: Some(v),
                file: None,
            }) => Ok(SecretRef::Env(v)),
            Ok(Raw {
                env: None,
                file: Some(p),
            }) => Ok(SecretRef::File(p)),
            _ => Err(D::Error::custom(HOW)),
        }
    }
}

/// A resolved secret. Its `Debug` and `Display` never show the value.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value read from somewhere else (a URL written in a policy).
    pub(crate) fn new(value: String) -> Secret {
        Secret(value)
    }

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
                let path = crate::paths::resolve_relative(base, path);
                std::fs::read_to_string(&path)
                    .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_string()))
                    .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))
            }
        }
    }
}
