//! Runbooks: declarative recovery procedures. Ordered steps in the phases
//! detect → restore → restart → verify, each with a timeout, retries with
//! backoff and what to do on failure; a `drill` section that injects the
//! failure on purpose; a `cleanup` section that always runs.
//!
//! Parsed like policies: every problem at once, located, with a hint.
//! [`Runbook::parse`] reads the YAML (`yaml`), the step lists and the drill
//! (`steps`), then checks them together and against the policy (`checks`);
//! `drill_records` checks a drill's own names and gives a drill the runbook
//! with them in place of production's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use drp_core::config::{Diagnostics, HumanDuration, Objectives, Policy};
use serde::Deserialize;

use crate::action::ActionConfig;
use crate::fleet::inventory::Inventory;
use steps::Section;

mod checks;
mod drill_records;
mod steps;
mod yaml;

pub use drill_records::DrillRecord;

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
    /// The inventory host it runs on; `None`: where `drp` runs.
    pub host: Option<String>,
    pub action: ActionConfig,
    /// The action as written, for the host that runs it to read again.
    pub action_value: serde_json::Value,
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
    pub on_failure: OnFailure,
}

/// Rows the drill writes regularly into a live database before the failure,
/// to measure the RPO from the data itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The export whose database gets the heartbeat table.
    pub export: String,
    /// The export whose database is read after the recovery (default:
    /// `export`): a standby's, when the runbook moves the service to it.
    pub read_from: Option<String>,
    #[serde(default = "default_heartbeat_table")]
    pub table: String,
    #[serde(default = "default_heartbeat_interval")]
    pub interval: HumanDuration,
}

impl Heartbeat {
    /// The export read back after the recovery.
    pub fn read_export(&self) -> &str {
        self.read_from.as_deref().unwrap_or(&self.export)
    }
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
    /// How often it must be drilled: `drp report` flags it overdue after.
    pub every: Option<Duration>,
    /// Names a drill moves instead of production's (`drp run` and
    /// `drp failback` never read them).
    pub records: Vec<DrillRecord>,
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
    /// The way back after a failover, run by `drp failback` only.
    pub failback: Vec<Step>,
    /// The hosts steps with `host:` run on.
    pub inventory: Option<Inventory>,
    /// Phases whose steps run at the same time.
    pub parallel: BTreeSet<Phase>,
    /// SHA-256 of the runbook and the policy and inventory it names, as
    /// read: a drill proves the runbook whose digest its report holds.
    pub digest: String,
}

/// `phases: {verify: {parallel: true}}`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PhaseSettings {
    #[serde(default)]
    parallel: bool,
}

const KEYS: [&str; 12] = [
    "inventory",
    "phases",
    "name",
    "description",
    "policy",
    "objectives",
    "heartbeat",
    "drill",
    "steps",
    "fallbacks",
    "cleanup",
    "failback",
];

impl Runbook {
    pub fn load(path: &Path) -> Result<Runbook, drp_core::Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| drp_core::Error::io_path("cannot read runbook", path, e))?;
        Runbook::parse(path, &text)
    }

    /// Reads a runbook from its text, with every problem found at once,
    /// located in `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Runbook, drp_core::Error> {
        let (mut d, root) = yaml::read_root(path, text)?;
        yaml::unknown_keys(&mut d, &root, &KEYS);
        let name: Option<String> = yaml::field(&mut d, &root, "", "name", true);
        let description: Option<String> = yaml::field(&mut d, &root, "", "description", false);
        let policy_path: Option<PathBuf> = yaml::field(&mut d, &root, "", "policy", true);
        let objectives: Option<Objectives> = yaml::field(&mut d, &root, "", "objectives", false);
        let heartbeat: Option<Heartbeat> = yaml::field(&mut d, &root, "", "heartbeat", false);
        let mut read = vec![text.as_bytes().to_vec()];
        let policy = policy_path.and_then(|p| {
            load_beside(&mut d, path, "policy", &p, |f| {
                read.push(std::fs::read(f).unwrap_or_default());
                Policy::load(f)
            })
        });
        let inventory_path: Option<PathBuf> = yaml::field(&mut d, &root, "", "inventory", false);
        let inventory = inventory_path.and_then(|p| {
            load_beside(&mut d, path, "inventory", &p, |f| {
                read.push(std::fs::read(f).unwrap_or_default());
                Inventory::load(f)
            })
        });
        let phases: Option<BTreeMap<Phase, PhaseSettings>> =
            yaml::field(&mut d, &root, "", "phases", false);
        let parallel = phases
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, s)| s.parallel)
            .map(|(p, _)| p)
            .collect();
        let steps = steps::main_steps(&mut d, &root);
        let cleanup = steps::optional_steps(&mut d, &root, Section::Cleanup);
        let fallback_list = steps::fallbacks(&mut d, &root);
        let fallbacks: BTreeMap<String, Step> = fallback_list
            .iter()
            .map(|s| (s.name.clone(), s.clone()))
            .collect();
        let drill = steps::drill(&mut d, &root);
        let failback = steps::optional_steps(&mut d, &root, Section::Failback);

        checks::step_order(&mut d, "steps", &steps, &fallbacks);
        checks::step_order(&mut d, "failback", &failback, &fallbacks);
        let sections =
            checks::sections(&steps, &cleanup, &fallback_list, drill.as_ref(), &failback);
        checks::hosts(&mut d, inventory.as_ref(), &sections);
        if let Some(drill) = &drill {
            drill_records::check(&mut d, &drill.records, &sections);
        }
        if let Some(policy) = &policy {
            checks::actions(&mut d, policy, sections);
            if let Some(hb) = &heartbeat {
                checks::heartbeat(&mut d, policy, hb);
            }
        }
        let (rto, rpo) = checks::objectives(&mut d, objectives, policy.as_ref());
        if let Some(rto) = rto {
            let budget = worst_case(&steps);
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
            failback,
            inventory,
            parallel,
            digest: digest(&read),
        })
    }

    /// Every step of every list, in the order the lists run.
    pub fn all_steps(&self) -> impl Iterator<Item = &Step> {
        let inject = self.drill.iter().flat_map(|d| d.inject.iter());
        inject
            .chain(&self.steps)
            .chain(self.fallbacks.values())
            .chain(&self.cleanup)
            .chain(&self.failback)
    }

    /// The runbook of its way back (`drp failback`): the `failback` steps
    /// as its steps, no drill, the same objectives, cleanup and inventory.
    pub fn failback(&self) -> Option<Runbook> {
        if self.failback.is_empty() {
            return None;
        }
        Some(Runbook {
            name: format!("{}-failback", self.name),
            steps: self.failback.clone(),
            drill: None,
            heartbeat: None,
            failback: Vec::new(),
            ..self.clone()
        })
    }

    /// The hosts its steps run on or talk to, each once, sorted.
    pub fn remote_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .all_steps()
            .flat_map(|s| {
                let named = s.action.action().hosts().into_iter().map(str::to_string);
                s.host.clone().into_iter().chain(named)
            })
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// The sum of the step timeouts, retries included: the longest the
    /// procedure may take before it gives up.
    pub fn worst_case_duration(&self) -> Duration {
        worst_case(&self.steps)
    }

    /// The exports of this host's policy the main steps restore, each once,
    /// in step order (another host's restores are that host's to check).
    pub fn restored_exports(&self) -> Vec<String> {
        let mut exports: Vec<String> = Vec::new();
        for s in self.steps.iter().filter(|s| s.host.is_none()) {
            if let ActionConfig::RestoreBackup(r) = &s.action
                && !exports.contains(&r.export)
            {
                exports.push(r.export.clone());
            }
        }
        exports
    }
}

/// SHA-256 over the files read, each with its length first.
fn digest(files: &[Vec<u8>]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for f in files {
        h.update((f.len() as u64).to_be_bytes());
        h.update(f);
    }
    format!("{:x}", h.finalize())
}

/// The file at `key` of the runbook (relative to its folder), loaded; or a
/// diagnostic at `key` saying why it does not load.
fn load_beside<T>(
    d: &mut Diagnostics,
    runbook: &Path,
    key: &str,
    file: &Path,
    load: impl FnOnce(&Path) -> Result<T, drp_core::Error>,
) -> Option<T> {
    let base = runbook
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match load(&drp_core::config::resolve_relative(base, file)) {
        Ok(v) => Some(v),
        Err(e) => {
            d.push(key, format!("the {key} does not load: {e}"), None);
            None
        }
    }
}

/// The longest `steps` may take: each step's timeout for every attempt,
/// and the backoff between attempts.
fn worst_case(steps: &[Step]) -> Duration {
    steps
        .iter()
        .map(|s| s.timeout * (s.retries + 1) + s.backoff * s.retries)
        .sum()
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

#[cfg(test)]
mod fallback_tests {
    use super::*;

    #[test]
    fn a_bad_fallback_is_located_by_its_place_in_the_file() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runbooks/postgres-lost.yaml");
        let text = std::fs::read_to_string(&path).unwrap()
            + "fallbacks:\n  - name: zeta\n    action: {kind: command, run: [\"true\"]}\n  - name: alpha\n    action: {kind: sql, export: nope, query: \"select 1\"}\n";
        let Err(drp_core::Error::Policy(e)) = Runbook::parse(&path, &text) else {
            panic!("the unknown export is refused")
        };
        let keys: Vec<&str> = e.diagnostics.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, ["fallbacks[1].action"], "{:?}", e.diagnostics);
    }
}
