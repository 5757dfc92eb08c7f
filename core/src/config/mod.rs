//! Policies: parsed into a raw form, then validated into [`Policy`], the form
//! the rest of the core uses. Validation reports every problem at once, each
//! located by file, line, column and key, with a hint.

pub mod fencing;
pub mod hooks;
mod locate;
mod policy;
mod restore_test;
mod schedule;
pub mod standby;
pub mod units;
pub mod watch;

use std::fmt;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

pub use crate::backend::TargetConfig;
pub use crate::paths::resolve_relative;
pub use crate::secret::{Secret, SecretRef};
pub use crate::source::SourceConfig;
pub use locate::Locations;
pub use policy::{
    Compression, Export, Metrics, NamedCommand, Notify, NotifyWhen, Objectives, Policy,
    PruneSettings, RestoreSettings, Retention, ServeSettings,
};
pub use restore_test::{Check, RestoreTestConfig};
pub use schedule::{Calendar, Schedule};
pub use units::HumanDuration;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Dotted path of the offending key, e.g. `exports.app-db.retention.keep_daily`.
    pub key: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: `{}`: {}",
            self.file.display(),
            self.line,
            self.column,
            self.key,
            self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n    hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in one file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct PolicyError {
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.diagnostics.len();
        write!(f, "{n} problem{} found:", if n == 1 { "" } else { "s" })?;
        for d in &self.diagnostics {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics for one file, locating each key path in its text.
pub struct Diagnostics {
    file: PathBuf,
    locations: Locations,
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new(file: &Path, text: &str) -> Self {
        Diagnostics {
            file: file.to_path_buf(),
            locations: Locations::index(text),
            items: Vec::new(),
        }
    }

    pub fn push(&mut self, key: &str, message: impl Into<String>, hint: Option<String>) {
        let d = self.at(key, message, hint);
        self.items.push(d);
    }

    /// A diagnostic located at `key`, not recorded (a warning, say).
    pub fn at(&self, key: &str, message: impl Into<String>, hint: Option<String>) -> Diagnostic {
        let (line, column) = self.locations.find(key).unwrap_or((1, 1));
        Diagnostic {
            file: self.file.clone(),
            line,
            column,
            key: key.to_string(),
            message: message.into(),
            hint,
        }
    }

    /// Records a serde error met while deserialising the node at `base`.
    pub fn push_serde(
        &mut self,
        base: &str,
        err: serde_path_to_error::Error<serde_yaml_ng::Error>,
    ) {
        self.push_serde_in(base, None, err)
    }

    /// [`Diagnostics::push_serde`] for a `node` read as a tagged enum (a
    /// target, a source), whose errors carry no path: an unknown variant is
    /// then located at the key of `node` holding it.
    pub fn push_serde_in(
        &mut self,
        base: &str,
        node: Option<&Value>,
        err: serde_path_to_error::Error<serde_yaml_ng::Error>,
    ) {
        let d = self.serde_at(base, node, err);
        self.items.push(d);
    }

    /// The diagnostic [`Diagnostics::push_serde_in`] records, not recorded:
    /// a part read now, reported later in its place.
    pub fn serde_at(
        &self,
        base: &str,
        node: Option<&Value>,
        err: serde_path_to_error::Error<serde_yaml_ng::Error>,
    ) -> Diagnostic {
        let mut key = join_path(base, &err.path().to_string());
        if key == base
            && let Some(Value::Mapping(map)) = node
            && let Some(variant) = backticked(&err.inner().to_string(), "unknown variant `")
            && let Some(child) = map.iter().find_map(|(k, v)| {
                (v.as_str() == Some(variant.as_str()))
                    .then(|| k.as_str())
                    .flatten()
            })
        {
            key = join_path(base, child);
        }
        let inner = err.into_inner();
        let message = inner.to_string();
        let mut hint = None;
        if let Some(field) = backticked(&message, "unknown field `") {
            if !key.ends_with(&format!(".{field}")) {
                key = join_path(&key, &field);
            }
            hint = expected_hint(&message, &field);
        } else if let Some(variant) = backticked(&message, "unknown variant `") {
            hint = expected_hint(&message, &variant);
        } else if let Some(field) = backticked(&message, "missing field `") {
            hint = Some(format!("add `{field}`"));
        }
        self.at(&key, message, hint)
    }

    pub fn into_result(self) -> Result<(), PolicyError> {
        if self.items.is_empty() {
            Ok(())
        } else {
            Err(PolicyError {
                diagnostics: self.items,
            })
        }
    }
}

/// Joins `base` and a serde path (`.`, `a.b`, `[0].c`) into one key path.
pub fn join_path(base: &str, rest: &str) -> String {
    let rest = rest.trim_start_matches('.');
    if rest.is_empty() {
        base.to_string()
    } else if base.is_empty() {
        rest.to_string()
    } else if rest.starts_with('[') {
        format!("{base}{rest}")
    } else {
        format!("{base}.{rest}")
    }
}

fn backticked(message: &str, prefix: &str) -> Option<String> {
    let start = message.find(prefix)? + prefix.len();
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// "did you mean `keep_last`?" when one of `candidates` is close to `got`
/// (policies and runbooks give the same hint).
pub fn did_you_mean(got: &str, candidates: &[&str]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(got, c), *c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

/// [`did_you_mean`] over serde's "expected one of `a`, `b`" list, or the
/// list itself when nothing is close.
fn expected_hint(message: &str, got: &str) -> Option<String> {
    let list = &message[message.find("expected")?..];
    let candidates: Vec<&str> = list.split('`').skip(1).step_by(2).collect();
    match did_you_mean(got, &candidates) {
        Some(hint) => Some(hint),
        None if !candidates.is_empty() => Some(format!("valid here: {}", candidates.join(", "))),
        None => None,
    }
}

/// Expands `${NAME}` and `${NAME:-default}` from the environment in one
/// string; returns the names that are unset and have no default. An empty
/// variable counts as unset.
fn expand_str(text: &str, missing: &mut Vec<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let inner = &rest[start + 2..start + len];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match (std::env::var(name).ok().filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => missing.push(name.to_string()),
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

/// What an expanded plain scalar reads as: a number, a boolean or null when
/// it is exactly one (as if it had been written there), a string otherwise.
/// Never a mapping or a sequence: a value cannot add structure.
fn resolve_plain(text: String) -> Value {
    match text.as_str() {
        "" | "~" | "null" => return Value::Null,
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(n) = text.parse::<u64>() {
        return Value::Number(n.into());
    }
    if let Ok(n) = text.parse::<i64>() {
        return Value::Number(n.into());
    }
    let numeric = text
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && text.chars().any(|c| c.is_ascii_digit());
    if numeric && let Ok(f) = text.parse::<f64>() {
        return Value::Number(f.into());
    }
    Value::String(text)
}

impl Diagnostics {
    /// Expands `${NAME}` and `${NAME:-default}` from the environment in the
    /// string values of a parsed document, so one file serves several
    /// machines. Expansion happens after parsing: whatever a variable holds
    /// (quotes, `#`, `: `, newlines, `{env: X}`) ends up verbatim as that one
    /// value and cannot change the document. An expanded plain (unquoted)
    /// scalar that is exactly a number or a boolean reads as one, as if it
    /// had been written there (`port: ${PG_PORT:-5432}`). Keys are not
    /// expanded. An unset variable without a default is recorded at the key
    /// whose value holds it.
    pub fn expand_env(&mut self, root: &mut Value) {
        self.expand_at("", root);
    }

    fn expand_at(&mut self, path: &str, value: &mut Value) {
        match value {
            Value::String(s) if s.contains("${") => {
                let mut missing = Vec::new();
                let expanded = expand_str(s, &mut missing);
                for name in missing {
                    self.push(
                        path,
                        format!("environment variable `{name}` is not set"),
                        Some(format!("set it, or give a default: `${{{name}:-value}}`")),
                    );
                }
                *value = if self.locations.is_plain(path) {
                    resolve_plain(expanded)
                } else {
                    Value::String(expanded)
                };
            }
            Value::Sequence(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.expand_at(&format!("{path}[{i}]"), item);
                }
            }
            Value::Mapping(map) => {
                for (k, v) in map.iter_mut() {
                    let key = match k {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => String::new(),
                    };
                    self.expand_at(&join_path(path, &key), v);
                }
            }
            Value::Tagged(t) => self.expand_at(path, &mut t.value),
            _ => {}
        }
    }
}

/// Whether `name` can be used as one segment of a repository path.
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod fuzz;
