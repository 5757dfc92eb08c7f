//! A drill's own names (`drill.records`): during `drp drill`, a
//! `dns_switch` of a production name switches that name's drill record
//! instead (same provider, addresses and TTL), and an `http` check of that
//! name is sent to the address of the drill record, still naming the
//! production host. `drp run` and `drp failback` never read them, so a
//! drill leaves production's names where they are.
//!
//! Checked when the runbook is read: both names fully qualified and
//! different, the production name moved by a `dns_switch` a drill runs, the
//! drill record in that switch's zone and no other step's name.

use std::collections::BTreeMap;
use std::fmt;

use drp_core::config::Diagnostics;
use hickory_proto::rr::Name;

use super::steps::Section;
use super::{Runbook, Step};
use crate::action::ActionConfig;
use crate::action::http::HttpCheck;

/// A production name and the name a drill moves instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillRecord {
    pub production: Name,
    pub drill: Name,
    /// The production name as written, the key of its diagnostics.
    written: String,
}

impl fmt::Display for DrillRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} → {}", self.production, self.drill)
    }
}

impl DrillRecord {
    /// Where it is in the file.
    fn key(&self) -> String {
        format!("drill.records.{}", self.written)
    }
}

/// The records as written, each name fully qualified; a located problem for
/// each that is not.
pub(super) fn read(d: &mut Diagnostics, raw: BTreeMap<String, String>) -> Vec<DrillRecord> {
    let mut out = Vec::new();
    for (production, drill) in raw {
        let key = format!("drill.records.{production}");
        let names = fully_qualified(&production).and_then(|p| Ok((p, fully_qualified(&drill)?)));
        match names {
            Ok((p, dr)) => out.push(DrillRecord {
                production: p,
                drill: dr,
                written: production,
            }),
            Err(why) => d.push(
                &key,
                why,
                Some("write each name whole, ending in a dot: `www.shop.example.: drill.shop.example.`".into()),
            ),
        }
    }
    out
}

/// `text` as a fully qualified DNS name: ending in a dot, not the root.
fn fully_qualified(text: &str) -> Result<Name, String> {
    let name = Name::from_ascii(text).map_err(|e| format!("`{text}` is not a domain name: {e}"))?;
    if !text.ends_with('.') || name.is_root() {
        return Err(format!("`{text}` is not a fully qualified name"));
    }
    Ok(name)
}

/// What the drill records must be among the steps a drill runs (all lists
/// but `failback`): each one's production name moved by a `dns_switch`, its
/// drill record another name of that switch's zone that no step moves and no
/// other record uses, and no check of it on another host (whose agent
/// would ask for production's address).
pub(super) fn check(
    d: &mut Diagnostics,
    records: &[DrillRecord],
    sections: &[(Section, Vec<&Step>); 5],
) {
    let drilled = || {
        sections
            .iter()
            .filter(|(section, _)| *section != Section::Failback)
            .flat_map(|(section, steps)| {
                steps
                    .iter()
                    .enumerate()
                    .map(move |(i, s)| (*section, i, *s))
            })
    };
    for (n, r) in records.iter().enumerate() {
        let key = r.key();
        if r.drill == r.production {
            d.push(
                &key,
                format!(
                    "the drill record of {} is the production name itself: a drill would move production",
                    r.production
                ),
                Some(format!(
                    "name a record of the same zone kept for drills, e.g. `drill.{}`",
                    r.production.base_name()
                )),
            );
            continue;
        }
        let mut moved = false;
        for (section, i, step) in drilled() {
            let ActionConfig::DnsSwitch(switch) = &step.action else {
                continue;
            };
            if switch.record.name == r.production {
                moved = true;
                if !switch.record.zone.zone_of(&r.drill) {
                    d.push(
                        &key,
                        format!(
                            "drill record {} is not within zone {} of `{}[{i}]` (`{}`), which moves {}",
                            r.drill,
                            switch.record.zone,
                            section.key(),
                            step.name,
                            r.production
                        ),
                        Some("a drill record is switched like its production name: give a name of the same zone".into()),
                    );
                }
            } else if switch.record.name == r.drill {
                d.push(
                    &key,
                    format!(
                        "drill record {} is the name `{}[{i}]` (`{}`) moves: a drill would move it as production",
                        r.drill,
                        section.key(),
                        step.name
                    ),
                    Some("name a record kept for drills only".into()),
                );
            }
        }
        if !moved {
            d.push(
                &key,
                format!("no `dns_switch` step a drill runs moves {}", r.production),
                Some("map a name that a `dns_switch` step of `steps`, `fallbacks`, `cleanup` or `drill.inject` moves, written whole".into()),
            );
        }
        for other in &records[..n] {
            if other.drill == r.drill {
                d.push(
                    &key,
                    format!(
                        "{} is already the drill record of {}",
                        r.drill, other.production
                    ),
                    Some("give each production name a drill record of its own".into()),
                );
            }
        }
        if records.iter().any(|other| other.production == r.drill) {
            d.push(
                &key,
                format!(
                    "drill record {} is a production name of `drill.records` too",
                    r.drill
                ),
                Some("name a record kept for drills only".into()),
            );
        }
        for (section, i, step) in drilled() {
            if let Some(host) = &step.host
                && http_checks(&step.action).any(|h| h.host_name().as_ref() == Some(&r.production))
            {
                d.push(
                    &format!("{}[{i}].host", section.key()),
                    format!(
                        "this step checks {} on host `{host}`, whose agent would ask for production's address: a drill checks it through drill record {} only where drp runs",
                        r.production, r.drill
                    ),
                    Some("check the name from here (no `host:`)".into()),
                );
            }
        }
    }
}

/// The `http` checks of an action: itself, or what a `restart` waits for.
fn http_checks(action: &ActionConfig) -> Box<dyn Iterator<Item = &HttpCheck> + '_> {
    match action {
        ActionConfig::Http(h) => Box::new(std::iter::once(h)),
        ActionConfig::Restart(r) => match r.until.as_deref() {
            Some(until) => http_checks(until),
            None => Box::new(std::iter::empty()),
        },
        _ => Box::new(std::iter::empty()),
    }
}

/// Points what `action` names at the drill records: a switch of a
/// production name switches its drill record, a check of it is sent to
/// the drill record's address. `written` is the action as the step's host
/// reads it.
fn point_at_drill_records(
    action: &mut ActionConfig,
    written: Option<&mut serde_json::Value>,
    records: &[DrillRecord],
) {
    let drill_of = |name: &Name| records.iter().find(|r| r.production == *name);
    match action {
        ActionConfig::DnsSwitch(switch) => {
            if let Some(r) = drill_of(&switch.record.name) {
                switch.stands_in_for = Some(switch.record.name.clone());
                switch.record.name = r.drill.clone();
                if let Some(serde_json::Value::Object(map)) = written {
                    map.insert("name".into(), r.drill.to_ascii().into());
                }
            }
        }
        ActionConfig::Http(check) => {
            if let Some(r) = check.host_name().as_ref().and_then(drill_of) {
                check.resolve_as = Some(r.drill.clone());
            }
        }
        ActionConfig::Restart(restart) => {
            if let Some(until) = restart.until.as_deref_mut() {
                let until_written = match written {
                    Some(serde_json::Value::Object(map)) => map.get_mut("until"),
                    _ => None,
                };
                point_at_drill_records(until, until_written, records);
            }
        }
        _ => {}
    }
}

/// The step that sets a drill record back where `step` found it: the same
/// switch, from its `to` back to its `from` (left alone when the drill
/// never moved it).
fn set_back(step: &Step) -> Option<Step> {
    let ActionConfig::DnsSwitch(switch) = &step.action else {
        return None;
    };
    switch.stands_in_for.as_ref()?;
    let mut back = step.clone();
    back.name = format!(
        "set drill record {} back to {}",
        switch.record.name, switch.from
    );
    back.phase = None;
    if let ActionConfig::DnsSwitch(b) = &mut back.action {
        (b.from, b.to) = (switch.to, switch.from);
    }
    if let serde_json::Value::Object(map) = &mut back.action_value {
        map.insert("from".into(), switch.to.to_string().into());
        map.insert("to".into(), switch.from.to_string().into());
    }
    Some(back)
}

impl Runbook {
    /// The names its drill moves instead of production's.
    pub fn drill_records(&self) -> &[DrillRecord] {
        self.drill.as_ref().map_or(&[], |d| &d.records)
    }

    /// The runbook as `drp drill` runs it: every step a drill runs (the
    /// injection, the steps, fallbacks and cleanup) with the drill records
    /// in place of production's names. The same runbook when it has none;
    /// `failback` is never changed.
    pub fn for_drill(&self) -> Runbook {
        let records = self.drill_records().to_vec();
        let mut drilled = self.clone();
        if records.is_empty() {
            return drilled;
        }
        let point = |step: &mut Step| {
            point_at_drill_records(&mut step.action, Some(&mut step.action_value), &records)
        };
        if let Some(drill) = &mut drilled.drill {
            drill.inject.iter_mut().for_each(point);
        }
        drilled.steps.iter_mut().for_each(point);
        drilled.fallbacks.values_mut().for_each(point);
        drilled.cleanup.iter_mut().for_each(point);
        // Every drill record a drill moves is set back after it, so that
        // the next drill moves it again (a switch finding its record
        // already moved would change, and prove, nothing).
        let resets: Vec<Step> = drilled
            .steps
            .iter()
            .chain(drilled.fallbacks.values())
            .filter_map(set_back)
            .collect();
        drilled.cleanup.extend(resets);
        drilled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runbook switching www.shop.example. in its steps and in its
    /// failback, checking it through a `restart`'s `until`, with `records`.
    fn parse(records: &str) -> Result<Runbook, drp_core::Error> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("policy.yaml"),
            "host: h\nobjectives: {rto: 5m, rpo: 30m}\ntargets:\n  t: {kind: local, path: repo}\nexports:\n  e:\n    source: {kind: sqlite, path: app.db}\n    targets: [t]\n",
        )
        .unwrap();
        let switch = |from: &str, to: &str| {
            format!(
                "{{kind: dns_switch, provider: rfc2136, server: \"127.0.0.1:53\", zone: shop.example., name: www, from: {from}, to: {to}, tsig: {{name: k, secret: {{file: k}}}}}}"
            )
        };
        let text = format!(
            "name: rb\npolicy: policy.yaml\ndrill:\n  records: {records}\n  inject:\n    - {{name: down, action: {{kind: command, run: [\"true\"]}}}}\nsteps:\n  - {{name: move, phase: restart, action: {}}}\n  - {{name: up, phase: verify, action: {{kind: restart, command: [\"true\"], until: {{kind: http, url: \"https://WWW.shop.example/\"}}}}}}\nfailback:\n  - {{name: back, phase: restart, action: {}}}\n  - {{name: ok, phase: verify, action: {{kind: http, url: \"https://www.shop.example/\"}}}}\n",
            switch("192.0.2.1", "192.0.2.2"),
            switch("192.0.2.2", "192.0.2.1"),
        );
        let path = dir.path().join("rb.yaml");
        Runbook::parse(&path, &text)
    }

    fn switched(step: &Step) -> (String, Option<String>) {
        let ActionConfig::DnsSwitch(s) = &step.action else {
            panic!("a switch")
        };
        (
            s.record.name.to_ascii(),
            step.action_value["name"].as_str().map(str::to_string),
        )
    }

    #[test]
    fn a_drill_moves_its_records_and_the_failback_keeps_production() {
        let rb = parse("{www.shop.example.: drill.shop.example.}").unwrap();
        assert_eq!(
            switched(&rb.steps[0]),
            ("www.shop.example.".into(), Some("www".into())),
            "as written"
        );
        let drilled = rb.for_drill();
        assert_eq!(
            switched(&drilled.steps[0]),
            (
                "drill.shop.example.".into(),
                Some("drill.shop.example.".into())
            ),
            "what the step's host reads is the drill record too"
        );
        let ActionConfig::Restart(restart) = &drilled.steps[1].action else {
            panic!("a restart")
        };
        let Some(ActionConfig::Http(check)) = restart.until.as_deref() else {
            panic!("an http check")
        };
        assert_eq!(
            check.resolve_as.as_ref().map(Name::to_ascii).as_deref(),
            Some("drill.shop.example."),
            "a check of the name, in any case, goes to the drill record"
        );
        assert_eq!(check.url, "https://WWW.shop.example/", "the URL is kept");
        assert_eq!(switched(&drilled.failback[0]).0, "www.shop.example.");
        let ActionConfig::Http(back) = &drilled.failback[1].action else {
            panic!("an http check")
        };
        assert!(
            back.resolve_as.is_none(),
            "failback never uses drill records"
        );
        assert_eq!(
            switched(&drilled.for_drill().steps[0]).0,
            "drill.shop.example.",
            "applied twice, the same"
        );
        assert!(rb.failback().unwrap().drill_records().is_empty());
    }

    #[test]
    fn bad_drill_records_are_each_refused_at_their_key() {
        let Err(drp_core::Error::Policy(e)) = parse(
            "{www.shop.example.: www.shop.example., api.shop.example.: x.shop.example., db.example.: www.shop}",
        ) else {
            panic!("refused")
        };
        let found: Vec<(&str, &str)> = e
            .diagnostics
            .iter()
            .map(|d| (d.key.as_str(), d.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "drill.records.db.example.",
                    "`www.shop` is not a fully qualified name"
                ),
                (
                    "drill.records.api.shop.example.",
                    "no `dns_switch` step a drill runs moves api.shop.example."
                ),
                (
                    "drill.records.www.shop.example.",
                    "the drill record of www.shop.example. is the production name itself: a drill would move production"
                ),
            ],
            "{e}"
        );
        assert!(e.diagnostics.iter().all(|d| d.line == 4), "{e}");
    }
}
