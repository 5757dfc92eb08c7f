//! The first stage: a policy as written. The YAML is parsed and `${VAR}`
//! expanded; then each top-level section, each target and each key of each
//! export is deserialised on its own into its serde type, so that one
//! mistake does not hide the next. A serde error is located here (file,
//! line, column, key) and reported by the checks, in its place among theirs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

use super::{
    Compression, EXPORT_KEYS, Metrics, Notify, Objectives, PruneSettings, RestoreSettings,
    Retention, ServeSettings,
};
use crate::backend::TargetConfig;
use crate::config::{Diagnostic, Diagnostics, PolicyError, RestoreTestConfig};
use crate::keys::KeysConfig;
use crate::notify::ping::PingConfig;
use crate::snapshot::SnapshotConfig;
use crate::source::SourceConfig;

/// A part as deserialised, or its problem, located but not yet reported.
pub(super) type Read<T> = Result<T, Diagnostic>;

/// A top-level section as written.
pub(super) enum Section {
    /// Checked as a name, not deserialised.
    Host(Value),
    Objectives(Read<Objectives>),
    Targets(Read<RawTargets>),
    Exports(Read<Vec<RawExport>>),
    /// Checked as an IANA name, not deserialised.
    Timezone(Value),
    StateDir(Read<PathBuf>),
    Metrics(Read<Metrics>),
    Notify(Read<Notify>),
    Restore(Read<RestoreSettings>),
    Serve(Read<ServeSettings>),
    Fencing(Read<crate::config::fencing::Fencing>),
    Standby(Read<BTreeMap<String, crate::config::standby::Standby>>),
    Watch(Read<BTreeMap<String, crate::config::watch::WatchedService>>),
    Keys(Read<KeysConfig>),
    Prune(Read<PruneSettings>),
    SnapshotRetention(Read<Retention>),
    SnapshotHooks(Read<crate::config::hooks::Hooks>),
    /// Each snapshot by name, in the order written.
    Snapshots(Read<Vec<(String, Read<SnapshotConfig>)>>),
    /// A key no policy has.
    Unknown(String),
}

/// The `targets:` section.
#[derive(Default)]
pub(super) struct RawTargets {
    /// The names written as text: what an export may refer to.
    pub declared: Vec<String>,
    pub each: Vec<RawTarget>,
}

/// One target: its own options taken out of its node, the rest read as
/// its kind's settings.
pub(super) struct RawTarget {
    pub name: String,
    pub limit: Option<Value>,
    pub encryption: Option<Value>,
    pub config: Read<TargetConfig>,
}

/// One export: its keys, or the problem that it is not a mapping.
pub(super) struct RawExport {
    pub name: String,
    pub fields: Read<RawExportFields>,
}

/// An export's keys, each read on its own; `None` when not written.
pub(super) struct RawExportFields {
    /// Keys no export has, in the order written.
    pub unknown: Vec<String>,
    pub source: Option<Read<SourceConfig>>,
    pub schedule: Option<Read<String>>,
    pub targets: Option<Read<Vec<String>>>,
    pub compression: Option<Read<Compression>>,
    pub restore_test: Option<Read<RestoreTestConfig>>,
    pub ping: Option<Read<PingConfig>>,
    pub objectives: Option<Read<Objectives>>,
    pub retention: Option<Read<Retention>>,
    pub hooks: Option<Read<crate::config::hooks::Hooks>>,
}

/// Records the problem `read` holds, if any, and gives its value otherwise:
/// what a check does first with a part this stage read.
pub(super) fn report<T>(d: &mut Diagnostics, read: Read<T>) -> Option<T> {
    read.map_err(|problem| d.items.push(problem)).ok()
}

/// Reads `text` into its top-level sections, in the order written, with
/// the diagnostics that locate their keys. A document that is not YAML,
/// names an unset variable or is not a mapping is refused here, whole.
pub(super) fn read(path: &Path, text: &str) -> Result<(Diagnostics, Vec<Section>), PolicyError> {
    let mut diags = Diagnostics::new(path, text);
    let mut root: Value = match serde_yaml_ng::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            return Err(PolicyError {
                diagnostics: vec![Diagnostic {
                    file: path.to_path_buf(),
                    line,
                    column,
                    key: String::new(),
                    message: format!("not valid YAML: {e}"),
                    hint: None,
                }],
            });
        }
    };
    // `${VAR}` on parsed values: a variable's content is one value, never YAML.
    diags.expand_env(&mut root);
    if !diags.items.is_empty() {
        return Err(PolicyError {
            diagnostics: diags.items,
        });
    }
    let Value::Mapping(root) = root else {
        diags.push(
            "",
            "a policy must be a mapping with `host`, `targets` and `exports`",
            None,
        );
        return Err(PolicyError {
            diagnostics: diags.items,
        });
    };
    let sections = root
        .into_iter()
        .map(|(k, v)| section(&diags, k.as_str().unwrap_or_default(), v))
        .collect();
    Ok((diags, sections))
}

fn section(d: &Diagnostics, key: &str, v: Value) -> Section {
    match key {
        "host" => Section::Host(v),
        "objectives" => Section::Objectives(de(d, key, v)),
        "targets" => Section::Targets(targets(d, v)),
        "exports" => Section::Exports(exports(d, v)),
        "timezone" => Section::Timezone(v),
        "state_dir" => Section::StateDir(de(d, key, v)),
        "metrics" => Section::Metrics(de(d, key, v)),
        "notify" => Section::Notify(de(d, key, v)),
        "restore" => Section::Restore(de(d, key, v)),
        "serve" => Section::Serve(de(d, key, v)),
        "fencing" => Section::Fencing(de(d, key, v)),
        "standby" => Section::Standby(de(d, key, v)),
        "watch" => Section::Watch(de(d, key, v)),
        "keys" => Section::Keys(de(d, key, v)),
        "prune" => Section::Prune(de(d, key, v)),
        "snapshot_retention" => Section::SnapshotRetention(de(d, key, v)),
        "snapshot_hooks" => Section::SnapshotHooks(de(d, key, v)),
        "snapshots" => Section::Snapshots(snapshots(d, v)),
        _ => Section::Unknown(key.to_string()),
    }
}

/// Deserialises `node`, the value at `key`.
fn de<T: DeserializeOwned>(d: &Diagnostics, key: &str, node: Value) -> Read<T> {
    serde_path_to_error::deserialize(node).map_err(|e| d.serde_at(key, None, e))
}

fn snapshots(d: &Diagnostics, node: Value) -> Read<Vec<(String, Read<SnapshotConfig>)>> {
    let Value::Mapping(m) = node else {
        return Err(d.at(
            "snapshots",
            "`snapshots` must map snapshot names to their settings",
            None,
        ));
    };
    Ok(m.into_iter()
        .map(|(name, node)| {
            let name = name.as_str().unwrap_or_default().to_string();
            let config = de(d, &format!("snapshots.{name}"), node);
            (name, config)
        })
        .collect())
}

fn targets(d: &Diagnostics, node: Value) -> Read<RawTargets> {
    let Value::Mapping(m) = node else {
        return Err(d.at(
            "targets",
            "`targets` must map target names to their settings",
            None,
        ));
    };
    let declared = m
        .keys()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect();
    let each = m
        .into_iter()
        .map(|(name, node)| target(d, name.as_str().unwrap_or_default(), node))
        .collect();
    Ok(RawTargets { declared, each })
}

fn target(d: &Diagnostics, name: &str, mut node: Value) -> RawTarget {
    let (limit, encryption) = match &mut node {
        Value::Mapping(m) => (m.remove("limit"), m.remove("encryption")),
        _ => (None, None),
    };
    let config = serde_path_to_error::deserialize(node.clone())
        .map_err(|e| d.serde_at(&format!("targets.{name}"), Some(&node), e));
    RawTarget {
        name: name.to_string(),
        limit,
        encryption,
        config,
    }
}

fn exports(d: &Diagnostics, node: Value) -> Read<Vec<RawExport>> {
    let Value::Mapping(m) = node else {
        return Err(d.at(
            "exports",
            "`exports` must map export names to their settings",
            None,
        ));
    };
    Ok(m.into_iter()
        .map(|(name, node)| {
            let name = name.as_str().unwrap_or_default().to_string();
            let base = format!("exports.{name}");
            let fields = match node {
                Value::Mapping(m) => Ok(export_fields(d, &base, &m)),
                _ => Err(d.at(
                    &base,
                    "an export must be a mapping with `source` and `targets`",
                    None,
                )),
            };
            RawExport { name, fields }
        })
        .collect())
}

fn export_fields(d: &Diagnostics, base: &str, map: &Mapping) -> RawExportFields {
    // Each key on its own, so that one mistake does not hide the next.
    RawExportFields {
        unknown: map
            .keys()
            .map(|k| k.as_str().unwrap_or_default())
            .filter(|k| !EXPORT_KEYS.contains(k))
            .map(str::to_string)
            .collect(),
        source: field(d, map, base, "source"),
        schedule: field(d, map, base, "schedule"),
        targets: field(d, map, base, "targets"),
        compression: field(d, map, base, "compression"),
        restore_test: field(d, map, base, "restore_test"),
        ping: field(d, map, base, "ping"),
        objectives: field(d, map, base, "objectives"),
        retention: field(d, map, base, "retention"),
        hooks: field(d, map, base, "hooks"),
    }
}

/// Deserialises `map[key]` on its own, when written.
fn field<T: DeserializeOwned>(
    d: &Diagnostics,
    map: &Mapping,
    base: &str,
    key: &str,
) -> Option<Read<T>> {
    let node = map.get(key)?;
    Some(
        serde_path_to_error::deserialize(node.clone())
            .map_err(|e| d.serde_at(&format!("{base}.{key}"), Some(node), e)),
    )
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::testing::{TARGETS, parse, problems, with_export};
    use crate::source::SourceConfig;

    #[test]
    fn an_environment_value_is_one_value_and_never_yaml() {
        let hostile = "/srv/x\" y: z #not a comment\nexports: {}\n{env: X}";
        // SAFETY: nextest runs every test in a process of its own.
        unsafe { std::env::set_var("DRP_TEST_HOSTILE_DIR", hostile) };
        let text = format!("{}state_dir: ${{DRP_TEST_HOSTILE_DIR}}\n", with_export(""));
        let p = parse(&text).unwrap();
        assert_eq!(p.state_dir, PathBuf::from(hostile));
        assert_eq!(p.exports.len(), 1, "no key was added");
        let quoted = format!(
            "{}state_dir: \"${{DRP_TEST_HOSTILE_DIR}}\"\n",
            with_export("")
        );
        assert_eq!(parse(&quoted).unwrap().state_dir, PathBuf::from(hostile));
    }

    #[test]
    fn plain_expanded_numbers_read_as_numbers_and_quoted_ones_as_text() {
        // SAFETY: nextest runs every test in a process of its own.
        unsafe { std::env::set_var("DRP_TEST_LEVEL", "7") };
        let text = with_export("    compression:\n      level: ${DRP_TEST_LEVEL}\n");
        assert_eq!(parse(&text).unwrap().exports["db"].compression.level, 7);
        let text = format!(
            "{TARGETS}exports:\n  \"1\":\n    source: {{kind: sqlite, path: \"${{DRP_TEST_LEVEL}}\"}}\n    targets: [nas]\n"
        );
        let p = parse(&text).unwrap();
        let SourceConfig::Sqlite(s) = &p.exports["1"].source else {
            panic!()
        };
        assert_eq!(s.path, PathBuf::from("7"));
    }

    #[test]
    fn an_unset_variable_is_located_at_its_key() {
        let text = format!(
            "{}state_dir: /var/${{DRP_TEST_SURELY_UNSET}}/drp\n",
            with_export("")
        );
        assert_eq!(
            problems(&text),
            ["8:1: state_dir: environment variable `DRP_TEST_SURELY_UNSET` is not set"]
        );
        let text = format!(
            "{TARGETS}exports:\n  db:\n    source: {{kind: sqlite, path: app.db}}\n    targets: [nas, \"${{DRP_TEST_SURELY_UNSET}}\"]\n"
        );
        assert_eq!(
            problems(&text),
            [
                "7:20: exports.db.targets[1]: environment variable `DRP_TEST_SURELY_UNSET` is not set"
            ]
        );
    }
}
