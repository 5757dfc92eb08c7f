//! The policy file: what a host protects, where, when, for how long, and the
//! objectives it must meet.
//!
//! Read in two stages. `raw.rs` parses the YAML, expands `${VAR}` and
//! deserialises each part on its own (each top-level section, each target,
//! each key of each export), locating every serde error without reporting
//! it yet. Then one check per section, `check_settings.rs` (the top-level
//! sections, in the order written), `check_targets.rs` and
//! `check_exports.rs`, reports every problem located and converts what it
//! was given into the [`Policy`] the rest of the core uses.

mod check_exports;
mod check_settings;
mod check_targets;
mod raw;
mod settings;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use settings::{
    Compression, Export, Metrics, NamedCommand, Notify, NotifyWhen, Objectives, PruneSettings,
    RestoreSettings, Retention, ServeSettings, TargetOptions,
};

use super::{Diagnostic, PolicyError};
use crate::backend::TargetConfig;

/// A validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The file it was read from.
    pub path: PathBuf,
    /// Folder that relative paths in the policy are resolved against.
    pub base_dir: PathBuf,
    pub host: String,
    pub objectives: Objectives,
    pub targets: BTreeMap<String, TargetConfig>,
    pub exports: BTreeMap<String, Export>,
    /// Time zone of schedules and retention buckets.
    pub timezone: chrono_tz::Tz,
    /// Where the agent keeps its run state and locks.
    pub state_dir: PathBuf,
    pub metrics: Metrics,
    pub notify: Notify,
    pub prune: PruneSettings,
    /// Snapshots taken before changes, by name.
    pub snapshots: BTreeMap<String, crate::snapshot::SnapshotConfig>,
    /// How many snapshot sets to keep (same rules as exports).
    pub snapshot_retention: Retention,
    /// Commands run around taking each snapshot set.
    pub snapshot_hooks: Option<super::hooks::Hooks>,
    /// What a restore does with the data it replaced.
    pub restore: RestoreSettings,
    /// Encryption recipients, the signing key, trusted keys, identities.
    pub keys: crate::keys::KeysConfig,
    /// Per target: its encryption and bandwidth limit.
    pub target_options: BTreeMap<String, TargetOptions>,
    /// What a coordinator may ask of this host over `drp-agent serve`.
    pub serve: ServeSettings,
    /// What stops here when a coordinator fences this host.
    pub fencing: Option<super::fencing::Fencing>,
    /// Clusters this host keeps warm for another host's export, by name.
    pub standby: BTreeMap<String, super::standby::Standby>,
    /// The services this host's watchdog checks and repairs, by name.
    pub watch: BTreeMap<String, super::watch::WatchedService>,
    /// What is accepted but unwise (a webhook URL written in the policy):
    /// located like errors, for `drp check` and the logs to show.
    pub warnings: Vec<Diagnostic>,
}

/// The keys of an export; any other is refused with the nearest of these.
/// `tests/suite/docs.rs` reads this list and the next from this file and
/// holds `docs/policy.md` to them.
const EXPORT_KEYS: [&str; 9] = [
    "hooks",
    "ping",
    "objectives",
    "source",
    "schedule",
    "targets",
    "compression",
    "retention",
    "restore_test",
];

/// The top-level keys; any other is refused with the nearest of these.
const TOP_LEVEL_KEYS: [&str; 18] = [
    "snapshot_hooks",
    "serve",
    "fencing",
    "standby",
    "watch",
    "keys",
    "snapshots",
    "snapshot_retention",
    "host",
    "objectives",
    "targets",
    "exports",
    "timezone",
    "state_dir",
    "metrics",
    "notify",
    "prune",
    "restore",
];

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy, crate::Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| crate::Error::io_path("cannot read policy", path, e))?;
        Ok(Policy::parse(path, &text)?)
    }

    /// Validates policy text; `path` names it in diagnostics.
    pub fn parse(path: &Path, text: &str) -> Result<Policy, PolicyError> {
        let (mut d, written) = raw::read(path, text)?;
        let mut warnings = Vec::new();
        let s = check_settings::check_sections(&mut d, written, &mut warnings);
        let declared = s.targets.declared.clone();
        let targets = check_targets::check_targets(&mut d, s.targets, &s.keys, &mut warnings);
        let exports = check_exports::check_exports(
            &mut d,
            s.exports,
            &declared,
            s.timezone,
            !s.snapshots.is_empty(),
            &mut warnings,
        );
        check_exports::check_standby(&mut d, &s.standby, &declared, &exports);
        check_exports::check_incremental(&mut d, &exports, &targets.configs, &mut warnings);
        check_settings::check_watch(&mut d, &s.watch, &exports);
        d.into_result()?;

        let base_dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let state_dir = match s.state_dir {
            Some(p) => super::resolve_relative(&base_dir, &p),
            None => default_state_dir(),
        };
        Ok(Policy {
            path: path.to_path_buf(),
            base_dir,
            host: s.host,
            objectives: s.objectives,
            targets: targets.configs,
            exports,
            timezone: s.timezone,
            state_dir,
            metrics: s.metrics,
            notify: s.notify,
            prune: s.prune,
            snapshots: s.snapshots,
            snapshot_retention: s.snapshot_retention,
            snapshot_hooks: s.snapshot_hooks,
            restore: s.restore,
            serve: s.serve,
            fencing: s.fencing,
            standby: s.standby,
            watch: s.watch,
            keys: s.keys,
            target_options: targets.options,
            warnings,
        })
    }

    /// The keys this policy names, its secrets read now (see
    /// [`Keys::from_config`](crate::keys::Keys::from_config)).
    pub fn read_keys(&self) -> Result<crate::keys::Keys, crate::Error> {
        crate::keys::Keys::from_config(&self.keys, &self.host, &self.base_dir)
    }

    /// The recipients points written to `target` are encrypted to.
    pub fn recipients(&self, target: &str) -> Vec<crate::keys::Recipient> {
        let names = self
            .target_options
            .get(target)
            .map(|o| o.recipients.clone())
            .unwrap_or_default();
        names
            .into_iter()
            .filter_map(|name| {
                let key = self.keys.recipients.get(&name)?.parse().ok()?;
                Some(crate::keys::Recipient { name, key })
            })
            .collect()
    }

    /// The exports a command names (`--export`), each checked to exist; all
    /// of them when it names none.
    pub fn exports_named(&self, only: &[String]) -> Result<Vec<String>, crate::Error> {
        if only.is_empty() {
            return Ok(self.exports.keys().cloned().collect());
        }
        for n in only {
            self.export(n)?;
        }
        Ok(only.to_vec())
    }

    pub fn export(&self, name: &str) -> Result<&Export, crate::Error> {
        self.exports.get(name).ok_or_else(|| {
            crate::Error::NotFound(format!(
                "no export `{name}` in {}; defined: {}",
                self.path.display(),
                self.exports.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

/// `/var/lib/drp` for root, `$XDG_STATE_HOME/drp` (or `~/.local/state/drp`) otherwise.
fn default_state_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("DRP_STATE_DIR") {
        return PathBuf::from(dir);
    }
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    if is_root {
        return PathBuf::from("/var/lib/drp");
    }
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir)
        .join("drp")
}

/// What the tests of each stage share: a policy read from text, and its
/// problems as `line:column: key: message`.
#[cfg(test)]
mod testing {
    use std::path::Path;

    use super::{Policy, PolicyError};

    pub(super) const TARGETS: &str = "host: a\ntargets:\n  nas: {kind: local, path: /srv/nas}\n";

    pub(super) fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(Path::new("p.yaml"), text)
    }

    pub(super) fn with_export(retention: &str) -> String {
        format!(
            "{TARGETS}exports:\n  db:\n    source: {{kind: sqlite, path: app.db}}\n    targets: [nas]\n{retention}"
        )
    }

    /// Every diagnostic of `text`, as `line:column: key: message`.
    pub(super) fn problems(text: &str) -> Vec<String> {
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
}
