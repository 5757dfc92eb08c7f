//! The policy file: what a host protects, where, when, for how long, and the
//! objectives it must meet.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::{Diagnostic, Diagnostics, HumanDuration, PolicyError, Schedule, is_safe_name};
use crate::backend::TargetConfig;
use crate::source::SourceConfig;

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
    /// What a restore does with the data it replaced.
    pub restore: RestoreSettings,
    /// Encryption recipients, the signing key, trusted keys, identities.
    pub keys: crate::keys::KeysConfig,
    /// Per target: its encryption and bandwidth limit.
    pub target_options: BTreeMap<String, TargetOptions>,
    /// What a coordinator may ask of this host over `drp-agent serve`.
    pub serve: ServeSettings,
    /// What is accepted but unwise (a webhook URL written in the policy):
    /// located like errors, for `drp check` and the logs to show.
    pub warnings: Vec<Diagnostic>,
}

/// The `restore:` section: how restores treat what they replace.
///
/// `drop_replaced` (default `false`): drop the copy a restore replaced once
/// the restore has succeeded; by default it is kept (next to the restored
/// data, as the restore left it), so a restore of the wrong point can be
/// undone.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RestoreSettings {
    #[serde(default)]
    pub drop_replaced: bool,
}

/// The `serve:` section: what this host lets a coordinator run here
/// through `drp-agent serve --stdio`. Checks and restores of declared
/// exports are typed and always allowed; the rest is opt-in.
///
/// `allow_destructive` (default `false`): steps that change something
/// (a restore over live data, a rollback, a restart, a command declared
/// `destructive`) are refused unless it is `true`. `units`: the systemd
/// units a `restart` step may name. `commands`: the only commands a
/// coordinator may run here, by name; nothing else is ever executed.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServeSettings {
    #[serde(default)]
    pub allow_destructive: bool,
    #[serde(default)]
    pub units: Vec<String>,
    #[serde(default)]
    pub commands: BTreeMap<String, NamedCommand>,
}

/// A command a coordinator may run on this host by its name.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NamedCommand {
    /// The argument vector, run without a shell.
    pub run: Vec<String>,
    /// Whether it changes something: then only with `allow_destructive`.
    #[serde(default)]
    pub destructive: bool,
}

/// What a policy says of a target beside where it is: whom its points are
/// encrypted to and how fast backups upload to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetOptions {
    /// Names in `keys.recipients`; empty: not encrypted.
    pub recipients: Vec<String>,
    /// Bytes per second (`limit: 20MiB/s`).
    pub limit: Option<u64>,
}

/// Where the agent publishes Prometheus metrics.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// A node-exporter textfile-collector file, rewritten after each run.
    pub textfile: Option<PathBuf>,
    /// Address the daemon serves `/metrics` on (default 127.0.0.1:9464).
    pub listen: Option<std::net::SocketAddr>,
}

/// Who hears about runs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// When to notify: `failure` (default) and/or `success`.
    #[serde(default = "Notify::default_on")]
    pub on: Vec<NotifyWhen>,
    pub webhook: Option<crate::notify::webhook::WebhookConfig>,
    pub email: Option<crate::notify::email::EmailConfig>,
}

impl Notify {
    fn default_on() -> Vec<NotifyWhen> {
        vec![NotifyWhen::Failure]
    }

    /// Records what cannot work (refused) and what is unwise (warned).
    /// Never repeats a webhook URL: it carries a token.
    fn validate(&self, diags: &mut Diagnostics, warnings: &mut Vec<Diagnostic>) {
        use crate::notify::webhook::WebhookUrl;
        if let Some(w) = &self.webhook {
            if let Err(msg) = w.url.check_inline() {
                diags.push(
                    "notify.webhook.url",
                    msg,
                    Some("e.g. `url: {env: SLACK_WEBHOOK_URL}`".into()),
                );
            } else if matches!(w.url, WebhookUrl::Inline(_)) {
                let w = diags.at(
                    "notify.webhook.url",
                    "the webhook URL is written in the policy: its token is readable by anyone who reads the file",
                    Some("reference it instead: `url: {env: SLACK_WEBHOOK_URL}` or `url: {file: /etc/drp/webhook-url}`".into()),
                );
                tracing::warn!("{w}");
                warnings.push(w);
            }
        }
        if let Some(e) = &self.email {
            for p in e.problems() {
                diags.push(&format!("notify.email.{}", p.key), p.message, p.hint);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyWhen {
    Failure,
    Success,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneSettings {
    /// Data objects without a manifest younger than this are left alone:
    /// they may belong to a backup still running on another host.
    #[serde(default = "PruneSettings::default_grace")]
    pub grace: HumanDuration,
    /// Whether the agent prunes after each backup (default `true`). Off on
    /// hosts whose S3 keys may not delete: prune then runs from a machine
    /// holding a key that may.
    #[serde(default = "PruneSettings::default_after_backup")]
    pub after_backup: bool,
}

impl PruneSettings {
    fn default_after_backup() -> bool {
        true
    }

    fn default_grace() -> HumanDuration {
        HumanDuration(std::time::Duration::from_secs(24 * 3600))
    }
}

impl Default for PruneSettings {
    fn default() -> Self {
        PruneSettings {
            grace: PruneSettings::default_grace(),
            after_backup: true,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objectives {
    pub rto: Option<HumanDuration>,
    pub rpo: Option<HumanDuration>,
}

#[derive(Debug, Clone)]
pub struct Export {
    pub name: String,
    pub source: SourceConfig,
    pub schedule: Schedule,
    pub targets: Vec<String>,
    pub compression: Compression,
    pub retention: Retention,
    /// How restore tests treat the export (`drp-agent test-restore`).
    pub restore_test: Option<crate::config::RestoreTestConfig>,
    /// A dead man's switch pinged at the start and end of each run.
    pub ping: Option<crate::notify::ping::PingConfig>,
    /// The export's own RTO and RPO, each one replacing the host's.
    pub objectives: Objectives,
}

impl Export {
    /// The objectives this export is held to: its own, and the host's for
    /// what it does not set.
    pub fn objectives(&self, host: &Objectives) -> Objectives {
        Objectives {
            rto: self.objectives.rto.or(host.rto),
            rpo: self.objectives.rpo.or(host.rpo),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    /// zstd level, 1 (fastest) to 19 (smallest).
    #[serde(default = "Compression::default_level")]
    pub level: i32,
    /// Compression threads; 0 uses every core.
    #[serde(default)]
    pub threads: u32,
}

impl Compression {
    fn default_level() -> i32 {
        3
    }
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            level: Compression::default_level(),
            threads: 0,
        }
    }
}

/// How many recovery points to keep (grandfather-father-son). No keep rule
/// at all keeps everything; rules that keep nothing (every count 0) are
/// refused. `min_verified` is 1 when not written, and at least 1.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    /// Never delete below this many verified recovery points. Always
    /// `Some` in a validated policy (default 1).
    pub min_verified: Option<u32>,
}

impl Retention {
    /// Fills in the default and records what would let prune delete every
    /// point, at `key` (`exports.db.retention`).
    fn validate(&mut self, diags: &mut Diagnostics, key: &str) {
        let rules = [
            ("keep_last", self.keep_last),
            ("keep_hourly", self.keep_hourly),
            ("keep_daily", self.keep_daily),
            ("keep_weekly", self.keep_weekly),
            ("keep_monthly", self.keep_monthly),
            ("keep_yearly", self.keep_yearly),
        ];
        let written: Vec<&str> = rules
            .iter()
            .filter(|(_, n)| n.is_some())
            .map(|(k, _)| *k)
            .collect();
        if !written.is_empty() && rules.iter().all(|(_, n)| n.unwrap_or(0) == 0) {
            diags.push(
                &format!("{key}.{}", written[0]),
                format!(
                    "these retention rules keep nothing: prune would delete every recovery point ({} = 0)",
                    written.join(", ")
                ),
                Some(
                    "keep at least one point, e.g. `keep_last: 1`; leave every `keep_*` out to keep all"
                        .into(),
                ),
            );
        }
        match self.min_verified {
            Some(0) => diags.push(
                &format!("{key}.min_verified"),
                "`min_verified: 0` lets prune delete the last verified recovery point",
                Some("use 1 or more, or leave it out (default 1)".into()),
            ),
            Some(_) => {}
            None => self.min_verified = Some(1),
        }
    }
}

const EXPORT_KEYS: [&str; 8] = [
    "ping",
    "objectives",
    "source",
    "schedule",
    "targets",
    "compression",
    "retention",
    "restore_test",
];

const TOP_LEVEL_KEYS: [&str; 14] = [
    "serve",
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

/// Takes a target's own options (`encryption`, `limit`) out of its node,
/// so that what is left is its kind's settings. By default a target
/// encrypts to every key in `keys.recipients`; `encryption: none` opts out,
/// a list names some of them.
fn target_options(
    key: &str,
    node: &mut Value,
    keys: &crate::keys::KeysConfig,
    diags: &mut Diagnostics,
) -> TargetOptions {
    let mut options = TargetOptions {
        recipients: keys.recipients.keys().cloned().collect(),
        limit: None,
    };
    let Value::Mapping(m) = node else {
        return options;
    };
    if let Some(v) = m.remove("limit") {
        match v.as_str().map(super::units::parse_rate) {
            Some(Ok(rate)) => options.limit = Some(rate),
            Some(Err(e)) => diags.push(&format!("{key}.limit"), e, None),
            None => diags.push(
                &format!("{key}.limit"),
                "`limit` is a rate such as `20MiB/s`",
                None,
            ),
        }
    }
    if let Some(v) = m.remove("encryption") {
        let ekey = format!("{key}.encryption");
        match v {
            Value::String(s) if s == "none" => options.recipients.clear(),
            Value::Sequence(names) => {
                options.recipients.clear();
                for (i, n) in names.iter().enumerate() {
                    let name = n.as_str().unwrap_or_default();
                    if keys.recipients.contains_key(name) {
                        options.recipients.push(name.to_string());
                    } else {
                        let known: Vec<&str> = keys.recipients.keys().map(String::as_str).collect();
                        diags.push(
                            &format!("{ekey}[{i}]"),
                            format!("no recipient `{name}` in `keys.recipients`"),
                            super::did_you_mean(name, &known).or_else(|| {
                                Some("add its public key under `keys.recipients`".into())
                            }),
                        );
                    }
                }
                if options.recipients.is_empty()
                    && diags.items.iter().all(|d| !d.key.starts_with(&ekey))
                {
                    diags.push(
                        &ekey,
                        "an empty recipient list encrypts to nobody",
                        Some("write `encryption: none` to store this target unencrypted".into()),
                    );
                }
            }
            _ => diags.push(
                &ekey,
                "`encryption` is `none` or a list of names from `keys.recipients`",
                None,
            ),
        }
    }
    options
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy, crate::Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| crate::Error::io_path("cannot read policy", path, e))?;
        Ok(Policy::parse(path, &text)?)
    }

    /// Validates policy text; `path` names it in diagnostics.
    pub fn parse(path: &Path, text: &str) -> Result<Policy, PolicyError> {
        let mut diags = Diagnostics::new(path, text);
        let mut root: Value = match serde_yaml_ng::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((1, 1));
                return Err(PolicyError {
                    diagnostics: vec![super::Diagnostic {
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

        let mut host = String::new();
        let mut objectives = Objectives::default();
        let mut target_nodes = serde_yaml_ng::Mapping::new();
        let mut export_nodes = serde_yaml_ng::Mapping::new();
        let mut timezone = chrono_tz::UTC;
        let mut state_dir = None;
        let mut metrics = Metrics::default();
        let mut notify = Notify::default();
        let mut prune = PruneSettings::default();
        let mut snapshots = BTreeMap::new();
        let mut snapshot_retention = Retention::default();
        let mut restore = RestoreSettings::default();
        let mut serve = ServeSettings::default();
        let mut keys = crate::keys::KeysConfig::default();
        let mut warnings = Vec::new();
        for (k, v) in root {
            let key = k.as_str().unwrap_or_default().to_string();
            match key.as_str() {
                "host" => match v.as_str() {
                    Some(h) if is_safe_name(h) => host = h.to_string(),
                    _ => diags.push(
                        "host",
                        "`host` must be a name made of letters, digits, `-`, `_` and `.`",
                        Some("use the host's short name, e.g. `db-1`".into()),
                    ),
                },
                "objectives" => match serde_path_to_error::deserialize(v) {
                    Ok(o) => objectives = o,
                    Err(e) => diags.push_serde("objectives", e),
                },
                "targets" => match v {
                    Value::Mapping(m) => target_nodes = m,
                    _ => diags.push(
                        "targets",
                        "`targets` must map target names to their settings",
                        None,
                    ),
                },
                "exports" => match v {
                    Value::Mapping(m) => export_nodes = m,
                    _ => diags.push(
                        "exports",
                        "`exports` must map export names to their settings",
                        None,
                    ),
                },
                "timezone" => match v.as_str().map(str::parse::<chrono_tz::Tz>) {
                    Some(Ok(tz)) => timezone = tz,
                    _ => diags.push(
                        "timezone",
                        format!("unknown time zone `{}`", v.as_str().unwrap_or("?")),
                        Some("use an IANA name such as `Europe/Paris` or `UTC`".into()),
                    ),
                },
                "state_dir" => match serde_path_to_error::deserialize::<_, PathBuf>(v) {
                    Ok(p) => state_dir = Some(p),
                    Err(e) => diags.push_serde("state_dir", e),
                },
                "metrics" => match serde_path_to_error::deserialize(v) {
                    Ok(m) => metrics = m,
                    Err(e) => diags.push_serde("metrics", e),
                },
                "notify" => match serde_path_to_error::deserialize::<_, Notify>(v) {
                    Ok(n) => {
                        n.validate(&mut diags, &mut warnings);
                        notify = n;
                    }
                    Err(e) => diags.push_serde("notify", e),
                },
                "restore" => match serde_path_to_error::deserialize(v) {
                    Ok(r) => restore = r,
                    Err(e) => diags.push_serde("restore", e),
                },
                "serve" => match serde_path_to_error::deserialize::<_, ServeSettings>(v) {
                    Ok(s) => {
                        for (name, c) in &s.commands {
                            if !is_safe_name(name) || c.run.first().is_none_or(|p| p.is_empty()) {
                                diags.push(
                                    &format!("serve.commands.{name}"),
                                    "a named command has a safe name (letters, digits, `-`, `_`, `.`) and a non-empty `run` list",
                                    Some("e.g. `stop-db: {run: [systemctl, stop, postgresql], destructive: true}`".into()),
                                );
                            }
                        }
                        serve = s;
                    }
                    Err(e) => diags.push_serde("serve", e),
                },
                "keys" => match serde_path_to_error::deserialize::<_, crate::keys::KeysConfig>(v) {
                    Ok(k) => {
                        for (key, message) in k.problems() {
                            diags.push(&key, message, None);
                        }
                        keys = k;
                    }
                    Err(e) => diags.push_serde("keys", e),
                },
                "prune" => match serde_path_to_error::deserialize(v) {
                    Ok(p) => prune = p,
                    Err(e) => diags.push_serde("prune", e),
                },
                "snapshot_retention" => match serde_path_to_error::deserialize(v) {
                    Ok(r) => snapshot_retention = r,
                    Err(e) => diags.push_serde("snapshot_retention", e),
                },
                "snapshots" => match v {
                    Value::Mapping(m) => {
                        for (name, node) in m {
                            let name = name.as_str().unwrap_or_default().to_string();
                            let key = format!("snapshots.{name}");
                            if !is_safe_name(&name) {
                                diags.push(&key, format!("snapshot name `{name}` must be letters, digits, `-`, `_` or `.`"), None);
                            }
                            match serde_path_to_error::deserialize::<
                                _,
                                crate::snapshot::SnapshotConfig,
                            >(node)
                            {
                                Ok(c) => {
                                    snapshots.insert(name, c);
                                }
                                Err(e) => diags.push_serde(&key, e),
                            }
                        }
                    }
                    _ => diags.push(
                        "snapshots",
                        "`snapshots` must map snapshot names to their settings",
                        None,
                    ),
                },
                _ => {
                    let hint = super::did_you_mean(&key, &TOP_LEVEL_KEYS);
                    diags.push(&key, format!("unknown key `{key}`"), hint);
                }
            }
        }
        snapshot_retention.validate(&mut diags, "snapshot_retention");
        if !root_has(&diags, "host") && host.is_empty() {
            diags.push(
                "host",
                "missing `host`",
                Some("add `host: <name of this machine>`".into()),
            );
        }

        let declared: Vec<String> = target_nodes
            .keys()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect();
        let mut targets = BTreeMap::new();
        let mut target_options_out = BTreeMap::new();
        for (name, node) in target_nodes {
            let name = name.as_str().unwrap_or_default().to_string();
            let key = format!("targets.{name}");
            if !is_safe_name(&name) {
                diags.push(
                    &key,
                    format!("target name `{name}` must be letters, digits, `-`, `_` or `.`"),
                    None,
                );
            }
            let mut node = node;
            let options = target_options(&key, &mut node, &keys, &mut diags);
            match serde_path_to_error::deserialize::<_, TargetConfig>(node.clone()) {
                Ok(t) => {
                    if options.recipients.is_empty() && !matches!(t, TargetConfig::Local(_)) {
                        warnings.push(diags.at(
                            &key,
                            format!("target `{name}` is off-site and not encrypted: anyone holding its credentials reads every point"),
                            Some("add public keys under `keys.recipients` (`drp-agent keys generate`); targets then encrypt to them".into()),
                        ));
                    }
                    target_options_out.insert(name.clone(), options);
                    targets.insert(name, t);
                }
                Err(e) => diags.push_serde_in(&key, Some(&node), e),
            }
        }
        if targets.is_empty() && !diags.items.iter().any(|d| d.key.starts_with("targets")) {
            diags.push(
                "targets",
                "no target defined",
                Some("add a target, e.g. `nas: {kind: local, path: /mnt/nas/drp}`".into()),
            );
        }

        let mut exports = BTreeMap::new();
        for (name, node) in export_nodes {
            let name = name.as_str().unwrap_or_default().to_string();
            let key = format!("exports.{name}");
            if !is_safe_name(&name) {
                diags.push(
                    &key,
                    format!("export name `{name}` must be letters, digits, `-`, `_` or `.`"),
                    None,
                );
            }
            let Value::Mapping(node) = node else {
                diags.push(
                    &key,
                    "an export must be a mapping with `source` and `targets`",
                    None,
                );
                continue;
            };
            for k in node.keys() {
                let k = k.as_str().unwrap_or_default();
                if !EXPORT_KEYS.contains(&k) {
                    diags.push(
                        &format!("{key}.{k}"),
                        format!("unknown key `{k}`"),
                        super::did_you_mean(k, &EXPORT_KEYS),
                    );
                }
            }
            // Each key on its own, so that one mistake does not hide the next.
            let source: Option<SourceConfig> = field(&mut diags, &node, &key, "source", true);
            let schedule_text: Option<String> = field(&mut diags, &node, &key, "schedule", false);
            let export_targets: Option<Vec<String>> =
                field(&mut diags, &node, &key, "targets", true);
            let compression: Option<Compression> =
                field(&mut diags, &node, &key, "compression", false);
            let restore_test: Option<crate::config::RestoreTestConfig> =
                field(&mut diags, &node, &key, "restore_test", false);
            let ping: Option<crate::notify::ping::PingConfig> =
                field(&mut diags, &node, &key, "ping", false);
            let export_objectives: Objectives =
                field(&mut diags, &node, &key, "objectives", false).unwrap_or_default();
            if let Some(p) = &ping {
                use crate::notify::webhook::WebhookUrl;
                if let Err(msg) = p.url.check_inline() {
                    diags.push(&format!("{key}.ping.url"), msg, None);
                } else if matches!(p.url, WebhookUrl::Inline(_)) {
                    warnings.push(diags.at(
                        &format!("{key}.ping.url"),
                        "the ping URL is written in the policy: its token is readable by anyone who reads the file",
                        Some("reference it instead: `url: {file: /etc/drp/secrets/ping-<export>}`".into()),
                    ));
                }
            }
            let mut retention: Retention =
                field(&mut diags, &node, &key, "retention", false).unwrap_or_default();
            retention.validate(&mut diags, &format!("{key}.retention"));
            let schedule = match Schedule::parse(
                schedule_text.as_deref().unwrap_or(Schedule::DEFAULT),
                timezone,
            ) {
                Ok(s) => Some(s),
                Err(msg) => {
                    diags.push(
                        &format!("{key}.schedule"),
                        msg,
                        Some("e.g. `0 6,18 * * *` for 06:00 and 18:00, `*/15 * * * *` for every 15 minutes".into()),
                    );
                    None
                }
            };
            let export_targets = export_targets.unwrap_or_default();
            if export_targets.is_empty() && node.contains_key("targets") {
                diags.push(
                    &format!("{key}.targets"),
                    "an export needs at least one target",
                    None,
                );
            }
            for (i, t) in export_targets.iter().enumerate() {
                let known: Vec<&str> = declared.iter().map(String::as_str).collect();
                if !declared.contains(t) {
                    diags.push(
                        &format!("{key}.targets[{i}]"),
                        format!("unknown target `{t}`"),
                        super::did_you_mean(t, &known)
                            .or(Some(format!("defined targets: {}", known.join(", ")))),
                    );
                }
            }
            let compression = compression.unwrap_or_default();
            if !(1..=19).contains(&compression.level) {
                diags.push(
                    &format!("{key}.compression.level"),
                    format!("zstd level {} is out of range", compression.level),
                    Some("use 1 (fastest) to 19 (smallest); 3 is a good default".into()),
                );
            }
            if let (Some(source), Some(schedule)) = (source, schedule) {
                exports.insert(
                    name.clone(),
                    Export {
                        name,
                        source,
                        schedule,
                        targets: export_targets,
                        compression,
                        retention,
                        restore_test,
                        ping,
                        objectives: export_objectives,
                    },
                );
            }
        }
        if exports.is_empty()
            && snapshots.is_empty()
            && !diags.items.iter().any(|d| d.key.starts_with("exports"))
        {
            diags.push(
                "exports",
                "no export defined",
                Some("add an export with a `source` and its `targets`".into()),
            );
        }

        diags.into_result()?;
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
        let state_dir = match state_dir {
            Some(p) => super::resolve_relative(&base_dir, &p),
            None => default_state_dir(),
        };
        Ok(Policy {
            path: path.to_path_buf(),
            base_dir,
            host,
            objectives,
            targets,
            exports,
            timezone,
            state_dir,
            metrics,
            notify,
            prune,
            snapshots,
            snapshot_retention,
            restore,
            serve,
            keys,
            target_options: target_options_out,
            warnings,
        })
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

/// Deserialises `map[key]` on its own, recording any problem at its path.
fn field<T: serde::de::DeserializeOwned>(
    diags: &mut Diagnostics,
    map: &serde_yaml_ng::Mapping,
    base: &str,
    key: &str,
    required: bool,
) -> Option<T> {
    match map.get(key) {
        Some(node) => match serde_path_to_error::deserialize(node.clone()) {
            Ok(v) => Some(v),
            Err(e) => {
                diags.push_serde_in(&format!("{base}.{key}"), Some(node), e);
                None
            }
        },
        None => {
            if required {
                diags.push(
                    base,
                    format!("missing field `{key}`"),
                    Some(format!("add `{key}`")),
                );
            }
            None
        }
    }
}

fn root_has(diags: &Diagnostics, key: &str) -> bool {
    diags.items.iter().any(|d| d.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_targets_encryption_and_limit_are_read_and_their_mistakes_located() {
        let base = "host: h\nkeys:\n  recipients:\n    ops: age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\n";
        let ok = format!(
            "{base}targets:\n  nas: {{kind: local, path: /n, limit: 20MiB/s}}\n  s3: {{kind: s3, bucket: b, encryption: none}}\nexports:\n  e:\n    source: {{kind: directory, path: /d}}\n    targets: [nas, s3]\n"
        );
        let p = parse(&ok).unwrap();
        assert_eq!(p.recipients("nas").len(), 1);
        assert!(p.recipients("s3").is_empty());
        assert_eq!(p.target_options["nas"].limit, Some(20 << 20));
        // An off-site target without encryption is said.
        assert!(
            p.warnings
                .iter()
                .any(|w| w.to_string().contains("`s3` is off-site and not encrypted"))
        );

        let bad = format!(
            "{base}targets:\n  nas: {{kind: local, path: /n, limit: fast, encryption: [opz]}}\nexports:\n  e:\n    source: {{kind: directory, path: /d}}\n    targets: [nas]\n"
        );
        let err = parse(&bad).unwrap_err().to_string();
        assert!(
            err.contains("6:32: `targets.nas.limit`: invalid rate `fast`"),
            "{err}"
        );
        assert!(
            err.contains("6:58: `targets.nas.encryption[0]`: no recipient `opz`")
                && err.contains("did you mean `ops`"),
            "{err}"
        );
    }

    const TARGETS: &str = "host: a\ntargets:\n  nas: {kind: local, path: /srv/nas}\n";

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(Path::new("p.yaml"), text)
    }

    fn with_export(retention: &str) -> String {
        format!(
            "{TARGETS}exports:\n  db:\n    source: {{kind: sqlite, path: app.db}}\n    targets: [nas]\n{retention}"
        )
    }

    /// The one diagnostic of `text`, as `line:column: key: message`.
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
    fn a_misspelt_host_key_mode_is_refused_when_the_policy_is_read() {
        let text = "host: a\ntargets:\n  nas:\n    kind: sftp\n    host: nas.lan\n    path: /drp\n    known_hosts: stric\nexports:\n  db:\n    source: {kind: sqlite, path: app.db}\n    targets: [nas]\n";
        let found = problems(text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("7:5: targets.nas.known_hosts: unknown variant `stric`"),
            "{found:?}"
        );
        let hint = parse(text).unwrap_err().diagnostics[0].hint.clone();
        assert_eq!(hint.as_deref(), Some("did you mean `strict`?"));
        let text = text.replace("stric\n", "add\n");
        let TargetConfig::Sftp(sftp) = &parse(&text).unwrap().targets["nas"] else {
            panic!()
        };
        assert_eq!(sftp.known_hosts, crate::backend::sftp::KnownHosts::Add);
    }

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

    #[test]
    fn retention_that_keeps_nothing_is_refused() {
        let got = problems(&with_export("    retention: {keep_last: 0}\n"));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(
                "8:17: exports.db.retention.keep_last: these retention rules keep nothing"
            ),
            "{got:?}"
        );
        let got = problems(&with_export(
            "    retention:\n      keep_daily: 0\n      keep_weekly: 0\n",
        ));
        assert!(
            got[0].starts_with("9:7: exports.db.retention.keep_daily:"),
            "{got:?}"
        );
        assert!(got[0].contains("keep_daily, keep_weekly = 0"), "{got:?}");
        let got = problems(&format!(
            "{}snapshot_retention: {{keep_last: 0}}\n",
            with_export("")
        ));
        assert!(
            got[0].starts_with("8:22: snapshot_retention.keep_last:"),
            "{got:?}"
        );
        // One rule that keeps something is enough.
        assert!(
            parse(&with_export(
                "    retention: {keep_last: 0, keep_daily: 3}\n"
            ))
            .is_ok()
        );
    }

    #[test]
    fn min_verified_defaults_to_one_and_zero_is_refused() {
        let p = parse(&with_export("    retention: {keep_last: 3}\n")).unwrap();
        assert_eq!(p.exports["db"].retention.min_verified, Some(1));
        let p = parse(&with_export("")).unwrap();
        assert_eq!(p.exports["db"].retention.min_verified, Some(1));
        let got = problems(&with_export(
            "    retention: {keep_last: 3, min_verified: 0}\n",
        ));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("8:31: exports.db.retention.min_verified:"),
            "{got:?}"
        );
    }

    #[test]
    fn smtp_credentials_need_tls_unless_said_otherwise() {
        let email = |extra: &str| {
            format!(
                "{}notify:\n  email: {{server: mx, from: a@b.c, to: [d@e.f], username: u, password: {{env: PW}}{extra}}}\n",
                with_export("")
            )
        };
        let p = parse(&email("")).unwrap();
        let e = p.notify.email.unwrap();
        assert_eq!(e.security, crate::notify::email::Security::Starttls);
        let got = problems(&email(", security: none"));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("9:83: notify.email.security: `security: none` would send the SMTP password in clear"),
            "{got:?}"
        );
        assert!(parse(&email(", security: none, allow_plaintext_auth: true")).is_ok());
        let got = problems(&email(", allow_plaintext_auth: true"));
        assert!(
            got[0].contains("notify.email.allow_plaintext_auth"),
            "{got:?}"
        );
        // A local relay without credentials needs nothing more.
        let relay = format!(
            "{}notify:\n  email: {{server: 127.0.0.1, security: none, from: a@b.c, to: [d@e.f]}}\n",
            with_export("")
        );
        assert!(parse(&relay).is_ok());
    }

    #[test]
    fn a_webhook_url_in_the_policy_is_warned_about_and_never_repeated() {
        let token = "T0KEN-9f2e";
        let inline = format!(
            "{}notify:\n  webhook: {{url: \"https://hooks.example.com/services/{token}\"}}\n",
            with_export("")
        );
        let p = parse(&inline).unwrap();
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(p.warnings[0].key, "notify.webhook.url");
        assert!(!format!("{p:?}").contains(token));
        assert!(!p.warnings[0].to_string().contains(token));
        let referenced = format!(
            "{}notify:\n  webhook: {{url: {{env: HOOK}}}}\n",
            with_export("")
        );
        assert!(parse(&referenced).unwrap().warnings.is_empty());
        let bad = format!(
            "{}notify:\n  webhook: {{url: \"ftp:{token}\"}}\n",
            with_export("")
        );
        let got = problems(&bad);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].contains("notify.webhook.url") && !got[0].contains(token),
            "{got:?}"
        );
    }

    #[test]
    fn the_restore_section_keeps_replaced_data_by_default() {
        assert!(!parse(&with_export("")).unwrap().restore.drop_replaced);
        let p = parse(&format!(
            "{}restore: {{drop_replaced: true}}\n",
            with_export("")
        ))
        .unwrap();
        assert!(p.restore.drop_replaced);
        let got = problems(&format!(
            "{}restore: {{drop_replace: true}}\n",
            with_export("")
        ));
        assert!(got[0].contains("restore.drop_replace"), "{got:?}");
    }
}
