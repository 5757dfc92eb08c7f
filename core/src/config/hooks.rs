//! The `hooks:` of an export, and `snapshot_hooks:` around a snapshot set:
//! commands run before, after and on the failure of a backup or a set, to
//! quiesce an application and bring it back. Data only: the core's `hooks`
//! module runs them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{Diagnostics, HumanDuration, SecretRef};

/// The hooks around one backup (an export's `hooks:`) or one snapshot set
/// (`snapshot_hooks:`). Each command is an argument vector, run without a
/// shell.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Runs first; when it fails or times out, the backup (or the set) is
    /// not taken.
    pub before: Option<Vec<String>>,
    /// Runs last, whatever happened (even when `before` failed).
    pub after: Option<Vec<String>>,
    /// Runs when `before`, the backup or a snapshot failed, before `after`.
    pub on_error: Option<Vec<String>>,
    /// How long each hook may run before its process group is killed.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Variables added to each hook's environment: a plain value or a
    /// secret reference, read when the hook runs.
    #[serde(default)]
    pub env: BTreeMap<String, HookEnv>,
}

/// One variable of a hook's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookEnv {
    /// Written in the policy: not a secret.
    Plain(String),
    /// `{env: VAR}` or `{file: /path}`: read when the hook runs.
    Secret(SecretRef),
}

impl<'de> Deserialize<'de> for HookEnv {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = serde_yaml_ng::Value::deserialize(d)?;
        match value {
            serde_yaml_ng::Value::String(s) => Ok(HookEnv::Plain(s)),
            serde_yaml_ng::Value::Number(n) => Ok(HookEnv::Plain(n.to_string())),
            serde_yaml_ng::Value::Bool(b) => Ok(HookEnv::Plain(b.to_string())),
            v if v.is_mapping() => serde_yaml_ng::from_value::<SecretRef>(v)
                .map(HookEnv::Secret)
                .map_err(D::Error::custom),
            _ => Err(D::Error::custom(
                "a hook's variable is a plain value or a secret reference (`{env: VARIABLE}`, `{file: /path}`)",
            )),
        }
    }
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5 * 60))
}

/// What `key` (`exports.<name>.hooks` or `snapshot_hooks`) must hold beyond
/// its types: at least one command, no empty one, a timeout, variable names
/// a shell could read and none in drp's own `DRP_` space.
pub(crate) fn check(d: &mut Diagnostics, key: &str, hooks: &Hooks) {
    let commands = [
        ("before", &hooks.before),
        ("after", &hooks.after),
        ("on_error", &hooks.on_error),
    ];
    if commands.iter().all(|(_, c)| c.is_none()) {
        d.push(
            key,
            "hooks declare no command",
            Some("give `before`, `after` or `on_error`, each an argument list such as `[systemctl, stop, app]`".into()),
        );
    }
    for (name, argv) in commands {
        let Some(argv) = argv else { continue };
        if argv.first().is_none_or(|p| p.trim().is_empty()) {
            d.push(
                &format!("{key}.{name}"),
                format!("the `{name}` hook has no program"),
                Some("an argument list whose first item is the program, e.g. `[systemctl, stop, app]`; no shell runs it".into()),
            );
        }
    }
    if hooks.timeout.0.is_zero() {
        d.push(
            &format!("{key}.timeout"),
            "a hook's timeout must be longer than zero",
            Some("e.g. `timeout: 5m` (the default)".into()),
        );
    }
    for name in hooks.env.keys() {
        let well_formed = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !well_formed {
            d.push(
                &format!("{key}.env.{name}"),
                format!("`{name}` is not a variable name"),
                Some("letters, digits and `_`, not starting with a digit".into()),
            );
        } else if name.starts_with("DRP_") {
            d.push(
                &format!("{key}.env.{name}"),
                format!("`{name}` is in drp's own space: drp sets the `DRP_` variables of a hook"),
                Some("choose another name".into()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Policy, PolicyError};

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(std::path::Path::new("p.yaml"), text)
    }

    fn with_export(more: &str) -> String {
        format!(
            "host: a\ntargets:\n  nas: {{kind: local, path: /srv/nas}}\nexports:\n  db:\n    source: {{kind: sqlite, path: app.db}}\n    targets: [nas]\n{more}"
        )
    }

    /// Every diagnostic of `text`, as `line:column: key: message`.
    fn problems(text: &str) -> Vec<String> {
        parse(text)
            .err()
            .map(|e| {
                e.diagnostics
                    .iter()
                    .map(|d| format!("{}:{}: {}: {}", d.line, d.column, d.key, d.message))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn hooks_read_with_their_defaults() {
        let p = parse(&with_export(
            "    hooks:\n      before: [systemctl, stop, app]\n      after: [systemctl, start, app]\n      env: {APP_TOKEN: {env: APP_TOKEN}, MODE: quiet}\n",
        ))
        .unwrap();
        let h = p.exports["db"].hooks.as_ref().unwrap();
        assert_eq!(h.before.as_deref().unwrap(), ["systemctl", "stop", "app"]);
        assert_eq!(h.on_error, None);
        assert_eq!(h.timeout.0, std::time::Duration::from_secs(300));
        assert_eq!(
            h.env["APP_TOKEN"],
            super::HookEnv::Secret(crate::config::SecretRef::Env("APP_TOKEN".into()))
        );
        assert_eq!(h.env["MODE"], super::HookEnv::Plain("quiet".into()));
    }

    #[test]
    fn every_bad_hook_is_located_at_its_key() {
        let got = problems(&with_export(
            "    hooks:\n      before: []\n      after: [\"\"]\n      timeout: 0s\n      env: {DRP_EXPORT: x, 1X: y}\n",
        ));
        assert_eq!(
            got.iter()
                .map(|p| p.split(": ").take(2).collect::<Vec<_>>().join(": "))
                .collect::<Vec<_>>(),
            [
                "9:7: exports.db.hooks.before",
                "10:7: exports.db.hooks.after",
                "11:7: exports.db.hooks.timeout",
                "12:28: exports.db.hooks.env.1X",
                "12:13: exports.db.hooks.env.DRP_EXPORT",
            ],
            "{got:#?}"
        );
    }

    #[test]
    fn a_typo_and_an_empty_section_are_refused() {
        let got = problems(&with_export("    hooks: {befor: [true]}\n"));
        assert!(
            got[0].starts_with("8:13: exports.db.hooks.befor"),
            "{got:?}"
        );
        assert!(got[0].contains("unknown field `befor`"), "{got:?}");
        let got = problems(&format!(
            "{}snapshot_hooks: {{timeout: 1m}}\n",
            with_export("")
        ));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("8:1: snapshot_hooks: hooks declare no command"),
            "{got:?}"
        );
        let got = problems(&with_export("    hooks: {before: [x], env: {A: [1, 2]}}\n"));
        assert!(got[0].contains("exports.db.hooks.env.A"), "{got:?}");
    }
}
