//! The step lists of a runbook (`steps`, `fallbacks`, `cleanup`,
//! `drill.inject`, `failback`) and the `drill` section, from their YAML.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use drp_core::config::{Diagnostics, HumanDuration};
use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use super::{Drill, OnFailure, Phase, Step};
use crate::action::ActionConfig;

/// A list of steps in a runbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
    /// The recovery procedure, in phases.
    Steps,
    /// Steps run when a step fails with `on_failure: {fallback: […]}`.
    Fallbacks,
    /// Steps that always run at the end.
    Cleanup,
    /// The drill's steps that cause the failure.
    Inject,
    /// The way back after a failover, run only by `drp failback`, in phases.
    Failback,
}

impl Section {
    /// Where the list is in the file.
    pub(super) fn key(self) -> &'static str {
        match self {
            Section::Steps => "steps",
            Section::Fallbacks => "fallbacks",
            Section::Cleanup => "cleanup",
            Section::Inject => "drill.inject",
            Section::Failback => "failback",
        }
    }

    /// Whether its steps may name a phase.
    fn phased(self) -> bool {
        match self {
            Section::Steps | Section::Fallbacks | Section::Failback => true,
            Section::Cleanup | Section::Inject => false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: String,
    phase: Option<Phase>,
    /// The inventory host it runs on (default: this host).
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrill {
    #[serde(default)]
    backup_first: bool,
    settle: Option<HumanDuration>,
    inject: Vec<Value>,
    every: Option<HumanDuration>,
    /// Production name → the name a drill moves instead.
    #[serde(default)]
    records: BTreeMap<String, String>,
}

/// The main steps; they are required.
pub(super) fn main_steps(d: &mut Diagnostics, root: &Mapping) -> Vec<Step> {
    let Some(node) = root.get("steps") else {
        d.push(
            "",
            "missing `steps`",
            Some("list the recovery steps".into()),
        );
        return Vec::new();
    };
    parse_steps(d, node, Section::Steps)
}

/// The steps of an optional `section` of the root.
pub(super) fn optional_steps(d: &mut Diagnostics, root: &Mapping, section: Section) -> Vec<Step> {
    match root.get(section.key()) {
        Some(node) => parse_steps(d, node, section),
        None => Vec::new(),
    }
}

/// The `fallbacks` list, in file order.
pub(super) fn fallbacks(d: &mut Diagnostics, root: &Mapping) -> Vec<Step> {
    optional_steps(d, root, Section::Fallbacks)
}

/// The `drill` section, if there is one.
pub(super) fn drill(d: &mut Diagnostics, root: &Mapping) -> Option<Drill> {
    let node = root.get("drill")?;
    match serde_path_to_error::deserialize::<_, RawDrill>(node.clone()) {
        Ok(raw) => Some(Drill {
            backup_first: raw.backup_first,
            settle: raw
                .settle
                .map(|s| s.as_duration())
                .unwrap_or(Duration::from_secs(2)),
            inject: parse_steps(d, &Value::Sequence(raw.inject), Section::Inject),
            every: raw.every.map(|e| e.as_duration()),
            records: super::drill_records::read(d, raw.records),
        }),
        Err(e) => {
            d.push_serde("drill", e);
            None
        }
    }
}

/// The steps of a list: each deserialised, with defaults for timeout and
/// backoff, named once, with a phase only where one belongs.
fn parse_steps(d: &mut Diagnostics, node: &Value, section: Section) -> Vec<Step> {
    let key = section.key();
    let Value::Sequence(items) = node else {
        d.push(key, format!("`{key}` must be a list of steps"), None);
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{key}[{i}]");
        match serde_path_to_error::deserialize::<_, RawStep>(item.clone()) {
            Ok(raw) => {
                check_raw_step(d, &at, &raw, section, &mut names);
                let written = item.get("action").cloned().unwrap_or_default();
                out.push(step(raw, written));
            }
            Err(e) => d.push_serde(&at, e),
        }
    }
    out
}

/// What a step cannot be, found on its own and among its list (`names`
/// holds the names seen so far).
fn check_raw_step(
    d: &mut Diagnostics,
    at: &str,
    raw: &RawStep,
    section: Section,
    names: &mut HashSet<String>,
) {
    if !names.insert(raw.name.clone()) {
        d.push(
            &format!("{at}.name"),
            format!("two steps are named `{}`", raw.name),
            None,
        );
    }
    if !section.phased() && raw.phase.is_some() {
        d.push(
            &format!("{at}.phase"),
            "only main steps and fallbacks have a phase",
            None,
        );
    }
}

fn step(raw: RawStep, action_written: Value) -> Step {
    Step {
        name: raw.name,
        phase: raw.phase,
        host: raw
            .host
            .filter(|h| !matches!(h.as_str(), "local" | "localhost")),
        action: raw.action,
        action_value: serde_json::to_value(&action_written).unwrap_or_default(),
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
    }
}
