//! Runbooks: declarative recovery procedures. Ordered steps in the phases
//! detect → restore → restart → verify, each with a timeout, retries with
//! backoff and what to do on failure; a `drill` section that injects the
//! failure on purpose; a `cleanup` section that always runs.
//!
//! Parsed like policies: every problem at once, located, with a hint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use drp_core::config::{Diagnostics, HumanDuration, Policy, PolicyError};
use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use crate::action::ActionConfig;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize, Hash,
)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Detect,
    Restore,
    Restart,
    Verify,
}

impl Phase {
    pub const ALL: [Phase; 4] = [Phase::Detect, Phase::Restore, Phase::Restart, Phase::Verify];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Detect => "detect",
            Phase::Restore => "restore",
            Phase::Restart => "restart",
            Phase::Verify => "verify",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawOnFailure")]
pub enum OnFailure {
    /// Stop the procedure (cleanup still runs).
    Abort,
    /// Note the failure and go on.
    Continue,
    /// Run these steps from `fallbacks`; go on if they pass, stop if not.
    Fallback(Vec<String>),
}

/// `abort`, `continue`, or `{fallback: [step, …]}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawOnFailure {
    Word(String),
    Fallback { fallback: Vec<String> },
}

impl TryFrom<RawOnFailure> for OnFailure {
    type Error = String;

    fn try_from(raw: RawOnFailure) -> Result<Self, String> {
        match raw {
            RawOnFailure::Word(w) if w == "abort" => Ok(OnFailure::Abort),
            RawOnFailure::Word(w) if w == "continue" => Ok(OnFailure::Continue),
            RawOnFailure::Word(w) => Err(format!(
                "unknown on_failure `{w}`: use abort, continue or {{fallback: [step names]}}"
            )),
            RawOnFailure::Fallback { fallback } => Ok(OnFailure::Fallback(fallback)),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub phase: Option<Phase>,
    pub action: ActionConfig,
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
    pub on_failure: OnFailure,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: String,
    phase: Option<Phase>,
    /// Where the step runs; only this host for now.
    host: Option<String>,
    action: ActionConfig,
    timeout: Option<HumanDuration>,
    #[serde(default)]
    retries: u32,
    backoff: Option<HumanDuration>,
    #[serde(default = "default_on_failure")]
    on_failure: OnFailure,
}

fn default_on_failure() -> OnFailure {
    OnFailure::Abort
}

/// Rows the drill writes regularly into a live database before the failure,
/// to measure the RPO from the data itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The export whose database gets the heartbeat table.
    pub export: String,
    #[serde(default = "default_heartbeat_table")]
    pub table: String,
    #[serde(default = "default_heartbeat_interval")]
    pub interval: HumanDuration,
}

fn default_heartbeat_table() -> String {
    "drp_heartbeat".into()
}

fn default_heartbeat_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}

#[derive(Debug, Clone)]
pub struct Drill {
    /// Take a fresh backup of the restored exports before the failure
    /// (default: drill against the newest existing recovery point).
    pub backup_first: bool,
    /// How long the heartbeat keeps writing after that backup, before the failure.
    pub settle: Duration,
    /// Steps that cause the failure.
    pub inject: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrill {
    #[serde(default)]
    backup_first: bool,
    settle: Option<HumanDuration>,
    inject: Vec<Value>,
}

#[derive(Debug, Clone)]
pub struct Runbook {
    pub path: PathBuf,
    pub name: String,
    pub description: Option<String>,
    pub policy: Policy,
    pub rto: Duration,
    pub rpo: Duration,
    pub heartbeat: Option<Heartbeat>,
    pub drill: Option<Drill>,
    pub steps: Vec<Step>,
    pub fallbacks: BTreeMap<String, Step>,
    pub cleanup: Vec<Step>,
}

const KEYS: [&str; 9] = [
    "name",
    "description",
    "policy",
    "objectives",
    "heartbeat",
    "drill",
    "steps",
    "fallbacks",
    "cleanup",
];

impl Runbook {
    pub fn load(path: &Path) -> Result<Runbook, drp_core::Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| drp_core::Error::io_path("cannot read runbook", path, e))?;
        Runbook::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Runbook, drp_core::Error> {
        let fail = |line: usize, key: &str, message: String, hint: Option<String>| {
            drp_core::Error::Policy(PolicyError {
                diagnostics: vec![drp_core::config::Diagnostic {
                    file: path.to_path_buf(),
                    line,
                    column: 1,
                    key: key.to_string(),
                    message,
                    hint,
                }],
            })
        };
        let mut root: Value = serde_yaml_ng::from_str(text).map_err(|e| {
            let line = e.location().map(|l| l.line()).unwrap_or(1);
            fail(line, "", format!("not valid YAML: {e}"), None)
        })?;
        let mut d = Diagnostics::new(path, text);
        // `${VAR}` on parsed values: a variable's content is one value, never YAML.
        d.expand_env(&mut root);
        if !d.items.is_empty() {
            return Err(drp_core::Error::Policy(PolicyError {
                diagnostics: d.items,
            }));
        }
        let Value::Mapping(root) = root else {
            return Err(fail(
                1,
                "",
                "a runbook must be a mapping with `name`, `policy` and `steps`".into(),
                None,
            ));
        };
        for k in root.keys().filter_map(Value::as_str) {
            if !KEYS.contains(&k) {
                let hint = KEYS
                    .iter()
                    .map(|c| (strsim::jaro_winkler(k, c), *c))
                    .filter(|(s, _)| *s > 0.8)
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(_, c)| format!("did you mean `{c}`?"));
                d.push(k, format!("unknown key `{k}`"), hint);
            }
        }
        let name: Option<String> = field(&mut d, &root, "", "name", true);
        let description: Option<String> = field(&mut d, &root, "", "description", false);
        let policy_path: Option<PathBuf> = field(&mut d, &root, "", "policy", true);
        let objectives: Option<drp_core::config::Objectives> =
            field(&mut d, &root, "", "objectives", false);
        let heartbeat: Option<Heartbeat> = field(&mut d, &root, "", "heartbeat", false);
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let policy = match &policy_path {
            Some(p) => match Policy::load(&drp_core::config::resolve_relative(base, p)) {
                Ok(p) => Some(p),
                Err(e) => {
                    d.push("policy", format!("the policy does not load: {e}"), None);
                    None
                }
            },
            None => None,
        };
        let steps = steps(&mut d, &root, "steps", true);
        let cleanup = steps_of(&mut d, &root, "cleanup");
        let fallbacks: BTreeMap<String, Step> = steps_of(&mut d, &root, "fallbacks")
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let drill = match root.get("drill") {
            None => None,
            Some(node) => match serde_path_to_error::deserialize::<_, RawDrill>(node.clone()) {
                Ok(raw) => {
                    let mut m = Mapping::new();
                    m.insert("inject".into(), Value::Sequence(raw.inject));
                    let inject = parse_steps(&mut d, &m, "drill.inject", false);
                    Some(Drill {
                        backup_first: raw.backup_first,
                        settle: raw
                            .settle
                            .map(|s| s.as_duration())
                            .unwrap_or(Duration::from_secs(2)),
                        inject,
                    })
                }
                Err(e) => {
                    d.push_serde("drill", e);
                    None
                }
            },
        };

        // Steps in phase order, fallbacks referenced exist, references valid.
        let mut last = None;
        for (i, s) in steps.iter().enumerate() {
            let key = format!("steps[{i}].phase");
            match s.phase {
                None => d.push(
                    &format!("steps[{i}]"),
                    "a step needs a `phase`",
                    Some("one of detect, restore, restart, verify".into()),
                ),
                Some(p) if last.is_some_and(|l| p < l) => d.push(
                    &key,
                    format!(
                        "phase `{}` comes after `{}`",
                        p.name(),
                        last.unwrap().name()
                    ),
                    Some("order steps detect → restore → restart → verify".into()),
                ),
                Some(p) => last = Some(p),
            }
            if let OnFailure::Fallback(names) = &s.on_failure {
                for n in names {
                    if !fallbacks.contains_key(n) {
                        d.push(
                            &format!("steps[{i}].on_failure"),
                            format!("no fallback step named `{n}`"),
                            Some("define it under `fallbacks`".into()),
                        );
                    }
                }
            }
        }
        if !steps.iter().any(|s| s.phase == Some(Phase::Verify)) && !steps.is_empty() {
            d.push(
                "steps",
                "no verify step: the RTO ends when every verify step passes",
                Some("add a step with `phase: verify`".into()),
            );
        }
        if let Some(policy) = &policy {
            let all = steps
                .iter()
                .map(|s| ("steps", s))
                .chain(cleanup.iter().map(|s| ("cleanup", s)))
                .chain(fallbacks.values().map(|s| ("fallbacks", s)))
                .chain(
                    drill
                        .iter()
                        .flat_map(|dr| dr.inject.iter().map(|s| ("drill.inject", s))),
                );
            let mut by_section: BTreeMap<&str, usize> = BTreeMap::new();
            for (section, s) in all {
                let i = by_section.entry(section).or_default();
                if let Err(msg) = s.action.validate(policy) {
                    d.push(&format!("{section}[{i}].action"), msg, None);
                }
                *i += 1;
            }
            if let Some(hb) = &heartbeat {
                match policy.exports.get(&hb.export) {
                    None => d.push(
                        "heartbeat.export",
                        format!("unknown export `{}`", hb.export),
                        None,
                    ),
                    Some(e) if e.source.kind() == "directory" => d.push(
                        "heartbeat.export",
                        "a heartbeat needs a database export",
                        None,
                    ),
                    _ => {}
                }
                if !hb
                    .table
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    d.push("heartbeat.table", "use letters, digits and `_`", None);
                }
            }
        }
        let rto = objectives
            .and_then(|o| o.rto)
            .or(policy.as_ref().and_then(|p| p.objectives.rto));
        let rpo = objectives
            .and_then(|o| o.rpo)
            .or(policy.as_ref().and_then(|p| p.objectives.rpo));
        if policy.is_some() && (rto.is_none() || rpo.is_none()) {
            d.push(
                "objectives",
                "no RTO/RPO objective here or in the policy",
                Some("add `objectives: {rto: 5m, rpo: 30m}`".into()),
            );
        }
        if let Some(rto) = rto {
            let budget: Duration = steps
                .iter()
                .map(|s| s.timeout * (s.retries + 1) + s.backoff * s.retries)
                .sum();
            if budget > rto.as_duration() {
                // Said, not refused: steps usually end well before their timeouts.
                tracing::info!(?budget, "step timeouts add up to more than the RTO");
            }
        }
        d.into_result()?;
        Ok(Runbook {
            path: path.to_path_buf(),
            name: name.unwrap_or_default(),
            description,
            policy: policy.expect("validated"),
            rto: rto.expect("validated").as_duration(),
            rpo: rpo.expect("validated").as_duration(),
            heartbeat,
            drill,
            steps,
            fallbacks,
            cleanup,
        })
    }

    /// The sum of the step timeouts, retries included: the longest the
    /// procedure may take before it gives up.
    pub fn worst_case_duration(&self) -> Duration {
        self.steps
            .iter()
            .map(|s| s.timeout * (s.retries + 1) + s.backoff * s.retries)
            .sum()
    }
}

fn field<T: serde::de::DeserializeOwned>(
    d: &mut Diagnostics,
    map: &Mapping,
    base: &str,
    key: &str,
    required: bool,
) -> Option<T> {
    let path = if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    };
    match map.get(key) {
        Some(node) => match serde_path_to_error::deserialize(node.clone()) {
            Ok(v) => Some(v),
            Err(e) => {
                d.push_serde(&path, e);
                None
            }
        },
        None => {
            if required {
                d.push(
                    base,
                    format!("missing `{key}`"),
                    Some(format!("add `{key}`")),
                );
            }
            None
        }
    }
}

fn steps(d: &mut Diagnostics, root: &Mapping, key: &str, required: bool) -> Vec<Step> {
    if root.get(key).is_none() {
        if required {
            d.push(
                "",
                format!("missing `{key}`"),
                Some("list the recovery steps".into()),
            );
        }
        return Vec::new();
    }
    parse_steps(d, root, key, true)
}

fn steps_of(d: &mut Diagnostics, root: &Mapping, key: &str) -> Vec<Step> {
    if root.get(key).is_none() {
        return Vec::new();
    }
    parse_steps(d, root, key, false)
}

fn parse_steps(d: &mut Diagnostics, root: &Mapping, key: &str, main: bool) -> Vec<Step> {
    let section = key.rsplit('.').next().unwrap_or(key);
    let Some(Value::Sequence(items)) = root.get(section) else {
        d.push(key, format!("`{key}` must be a list of steps"), None);
        return Vec::new();
    };
    let base = if key.starts_with("drill.") {
        key.to_string()
    } else {
        section.to_string()
    };
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{base}[{i}]");
        match serde_path_to_error::deserialize::<_, RawStep>(item.clone()) {
            Ok(raw) => {
                if let Some(h) = raw
                    .host
                    .as_deref()
                    .filter(|h| !matches!(*h, "local" | "localhost"))
                {
                    d.push(
                        &format!("{at}.host"),
                        format!("step on host `{h}`: only the local host is supported"),
                        Some("run drp on that host, or drop `host`".into()),
                    );
                }
                if !names.insert(raw.name.clone()) {
                    d.push(
                        &format!("{at}.name"),
                        format!("two steps are named `{}`", raw.name),
                        None,
                    );
                }
                if !main && raw.phase.is_some() && key != "fallbacks" {
                    d.push(
                        &format!("{at}.phase"),
                        "only main steps and fallbacks have a phase",
                        None,
                    );
                }
                out.push(Step {
                    name: raw.name,
                    phase: raw.phase,
                    action: raw.action,
                    timeout: raw
                        .timeout
                        .map(|t| t.as_duration())
                        .unwrap_or(Duration::from_secs(60)),
                    retries: raw.retries,
                    backoff: raw
                        .backoff
                        .map(|t| t.as_duration())
                        .unwrap_or(Duration::from_secs(1)),
                    on_failure: raw.on_failure,
                });
            }
            Err(e) => d.push_serde(&at, e),
        }
    }
    out
}

#[cfg(test)]
mod fuzz {
    //! Mutated runbooks never panic the parser; its errors are located.
    use proptest::prelude::*;

    use super::Runbook;

    fn cases() -> u32 {
        std::env::var("DRP_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]
        #[test]
        fn mutated_runbooks_never_panic(cut in any::<usize>(), len in 0usize..40, insert in prop::sample::select(vec!["", ":", "\n  - ", "{", "phase: verify", "kind: nope", "on_failure: {fallback: [x]}", "timeout: 0s", "retries: -1", "\t"])) {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../runbooks");
            let path = dir.join("postgres-lost.yaml");
            let text = std::fs::read_to_string(&path).unwrap();
            let mut chars: Vec<char> = text.chars().collect();
            let at = cut % chars.len();
            let end = (at + len).min(chars.len());
            chars.splice(at..end, insert.chars());
            let mutated: String = chars.into_iter().collect();
            if let Err(drp_core::Error::Policy(e)) = Runbook::parse(&path, &mutated) {
                for d in &e.diagnostics {
                    prop_assert!(d.line >= 1 && !d.message.is_empty());
                }
            }
        }
    }
}
