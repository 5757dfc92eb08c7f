//! What a runbook's parts must be together: steps in phase order with the
//! fallbacks they name, actions and heartbeat that fit the policy, and
//! objectives given here or in the policy.

use std::collections::BTreeMap;

use drp_core::config::units::format_duration;
use drp_core::config::{Diagnostics, HumanDuration, Objectives, Policy};

use super::steps::Section;
use super::{Drill, Heartbeat, OnFailure, Phase, Step};
use crate::fleet::inventory::Inventory;

/// Main steps in phase order, each with a phase and fallbacks that exist,
/// and at least one verify step.
pub(super) fn step_order(
    d: &mut Diagnostics,
    list: &str,
    steps: &[Step],
    fallbacks: &BTreeMap<String, Step>,
) {
    let mut last = None;
    for (i, s) in steps.iter().enumerate() {
        let key = format!("{list}[{i}].phase");
        match s.phase {
            None => d.push(
                &format!("{list}[{i}]"),
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
            for n in names.iter().filter(|n| !fallbacks.contains_key(*n)) {
                d.push(
                    &format!("{list}[{i}].on_failure"),
                    format!("no fallback step named `{n}`"),
                    Some("define it under `fallbacks`".into()),
                );
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
}

/// Every step with a `host` names one of the inventory's.
pub(super) fn hosts(
    d: &mut Diagnostics,
    inventory: Option<&Inventory>,
    sections: &[(Section, Vec<&Step>); 5],
) {
    for (section, steps) in sections {
        for (i, s) in steps.iter().enumerate() {
            let named = s.action.action().hosts();
            let hosts = s
                .host
                .iter()
                .map(|h| (format!("{}[{i}].host", section.key()), h.as_str()))
                .chain(
                    named
                        .into_iter()
                        .map(|h| (format!("{}[{i}].action", section.key()), h)),
                );
            for (at, host) in hosts {
                match inventory {
                    None => d.push(
                        &at,
                        format!("step on host `{host}`, and the runbook names no `inventory`"),
                        Some("add `inventory: fleet.yaml` (an Ansible YAML inventory)".into()),
                    ),
                    Some(inv) if inv.host(host).is_none() => {
                        let known: Vec<&str> = inv.hosts.keys().map(String::as_str).collect();
                        d.push(
                            &at,
                            format!(
                                "host `{host}` is not in the inventory {}",
                                inv.path.display()
                            ),
                            drp_core::config::did_you_mean(host, &known),
                        );
                    }
                    Some(_) => {}
                }
            }
        }
    }
}

/// Every step's action on this host, in every list, against the policy.
/// A step on another host is checked by that host (`drp check`, the
/// drill's preflight, and the agent before it runs anything).
pub(super) fn actions(d: &mut Diagnostics, policy: &Policy, sections: [(Section, Vec<&Step>); 5]) {
    for (section, steps) in sections {
        for (i, s) in steps.into_iter().enumerate() {
            if s.host.is_some() {
                continue;
            }
            if let Err(invalid) = s.action.validate(policy) {
                d.push(
                    &format!("{}[{i}].action", section.key()),
                    invalid.to_string(),
                    None,
                );
            }
            if let Some(waits) = s.action.action().waits()
                && s.timeout <= waits
            {
                d.push(
                    &format!("{}[{i}].timeout", section.key()),
                    format!(
                        "the step's timeout ({}) is not longer than its action's own wait ({}): the step would end before the action could say what it waited for",
                        format_duration(s.timeout),
                        format_duration(waits)
                    ),
                    Some("give the step a longer `timeout:`, or the action a shorter wait".into()),
                );
            }
        }
    }
}

/// The lists of steps in the order their actions are checked, each in file
/// order (so a diagnostic's index is the step's place in its list).
pub(super) fn sections<'a>(
    steps: &'a [Step],
    cleanup: &'a [Step],
    fallbacks: &'a [Step],
    drill: Option<&'a Drill>,
    failback: &'a [Step],
) -> [(Section, Vec<&'a Step>); 5] {
    [
        (Section::Steps, steps.iter().collect()),
        (Section::Cleanup, cleanup.iter().collect()),
        (Section::Fallbacks, fallbacks.iter().collect()),
        (
            Section::Inject,
            drill.iter().flat_map(|dr| dr.inject.iter()).collect(),
        ),
        (Section::Failback, failback.iter().collect()),
    ]
}

/// The heartbeat goes into a database export of the policy, in a table
/// named plainly.
pub(super) fn heartbeat(d: &mut Diagnostics, policy: &Policy, hb: &Heartbeat) {
    let exports = [
        ("heartbeat.export", Some(&hb.export)),
        ("heartbeat.read_from", hb.read_from.as_ref()),
    ];
    for (key, export) in exports {
        let Some(export) = export else { continue };
        match policy.exports.get(export) {
            None => d.push(key, format!("unknown export `{export}`"), None),
            Some(e) if !e.source.kind().is_database() => {
                d.push(key, "a heartbeat needs a database export", None)
            }
            _ => {}
        }
    }
    if !hb
        .table
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        d.push("heartbeat.table", "use letters, digits and `_`", None);
    }
}

/// The RTO and RPO: the runbook's, or else the policy's. Both are needed
/// once the policy loads.
pub(super) fn objectives(
    d: &mut Diagnostics,
    here: Option<Objectives>,
    policy: Option<&Policy>,
) -> (Option<HumanDuration>, Option<HumanDuration>) {
    let rto = here
        .and_then(|o| o.rto)
        .or(policy.and_then(|p| p.objectives.rto));
    let rpo = here
        .and_then(|o| o.rpo)
        .or(policy.and_then(|p| p.objectives.rpo));
    if policy.is_some() && (rto.is_none() || rpo.is_none()) {
        d.push(
            "objectives",
            "no RTO/RPO objective here or in the policy",
            Some("add `objectives: {rto: 5m, rpo: 30m}`".into()),
        );
    }
    (rto, rpo)
}
