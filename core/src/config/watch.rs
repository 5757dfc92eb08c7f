//! `watch:` of a host's policy: the services the host's watchdog checks on
//! its own, and what it tries, in order, when one stays down (the ladder).
//! The check is a runbook check (`http`, `tcp`, `sql`, `command`), kept here
//! as the JSON the runbook reader takes: the core does not know runbook
//! actions, the agent reads it as one when it loads the policy.

use std::time::Duration;

use serde::Deserialize;

use super::HumanDuration;

/// The runbook checks a watched service may use.
pub const CHECK_KINDS: [&str; 4] = ["http", "tcp", "sql", "command"];

/// One watched service.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchedService {
    /// A runbook check, `{kind: http, url: …}` and so on.
    pub check: Check,
    /// Time between two checks (10 s when not given).
    pub interval: Option<HumanDuration>,
    /// Consecutive failed checks before the next rung is tried (3).
    pub fall: Option<u32>,
    /// Consecutive passed checks after a rung before the service counts
    /// as recovered (2).
    pub rise: Option<u32>,
    /// After each rung, how long checks do not count (60 s): a slow
    /// starter is not hit again while it starts.
    pub grace: Option<HumanDuration>,
    /// What is tried, in order, each only when the one before did not
    /// bring the check back.
    pub ladder: Vec<Rung>,
    /// At most this many rungs tried per window (3 per hour): past it the
    /// watchdog alerts and stops acting on the service until `resume`.
    pub limit: Option<Limit>,
}

impl WatchedService {
    pub fn interval(&self) -> Duration {
        self.interval
            .map_or(Duration::from_secs(10), |d| d.as_duration())
    }
    pub fn fall(&self) -> u32 {
        self.fall.unwrap_or(3).max(1)
    }
    pub fn rise(&self) -> u32 {
        self.rise.unwrap_or(2).max(1)
    }
    pub fn grace(&self) -> Duration {
        self.grace
            .map_or(Duration::from_secs(60), |d| d.as_duration())
    }
    pub fn limit(&self) -> Limit {
        self.limit.unwrap_or(Limit {
            escalations: 3,
            per: HumanDuration(Duration::from_secs(3600)),
        })
    }
}

/// A runbook check as JSON (`kind` one of [`CHECK_KINDS`]); its settings
/// are read by the agent with the runbook's own reader.
#[derive(Debug, Clone, PartialEq)]
pub struct Check(pub serde_json::Value);

impl<'de> Deserialize<'de> for Check {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        match v.get("kind").and_then(|k| k.as_str()) {
            Some(k) if CHECK_KINDS.contains(&k) => Ok(Check(v)),
            Some(k) => Err(serde::de::Error::custom(format!(
                "`{k}` is not a check: a watched service's check is one of {}",
                CHECK_KINDS.join(", ")
            ))),
            None => Err(serde::de::Error::custom(format!(
                "a check is a runbook check with a `kind`: one of {}",
                CHECK_KINDS.join(", ")
            ))),
        }
    }
}

/// One rung of the ladder, written as a one-key map.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawRung")]
pub enum Rung {
    /// `{restart: {unit: X}}` or `{restart: {command: [argv]}}`.
    Restart(RestartRung),
    /// `{rollback: {}}`: the newest complete snapshot set taken before the
    /// failure began, rolled back.
    Rollback(Empty),
    /// `{restore: {export: NAME}}`: the export's newest point consistent
    /// before the failure began, restored.
    Restore(RestoreRung),
    /// `{handover: {}}`: the host asks its coordinator for help (an
    /// incident record that says so).
    Handover(Empty),
}

/// A rung as written: exactly one of its keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRung {
    restart: Option<RestartRung>,
    rollback: Option<Empty>,
    restore: Option<RestoreRung>,
    handover: Option<Empty>,
}

impl TryFrom<RawRung> for Rung {
    type Error = String;

    fn try_from(raw: RawRung) -> Result<Self, String> {
        let mut given = Vec::new();
        if let Some(r) = raw.restart {
            given.push(Rung::Restart(r));
        }
        if let Some(r) = raw.rollback {
            given.push(Rung::Rollback(r));
        }
        if let Some(r) = raw.restore {
            given.push(Rung::Restore(r));
        }
        if let Some(r) = raw.handover {
            given.push(Rung::Handover(r));
        }
        match given.len() {
            1 => Ok(given.pop().expect("one")),
            _ => Err(
                "a rung is one of `restart: {unit: NAME}` (or `{command: [...]}`), `rollback: {}`, `restore: {export: NAME}`, `handover: {}`"
                    .into(),
            ),
        }
    }
}

impl Rung {
    /// Its name in records, metrics and alerts.
    pub fn name(&self) -> &'static str {
        match self {
            Rung::Restart(_) => "restart",
            Rung::Rollback(_) => "rollback",
            Rung::Restore(_) => "restore",
            Rung::Handover(_) => "handover",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartRung {
    pub unit: Option<String>,
    pub command: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreRung {
    pub export: String,
}

/// A rung without settings (`{}`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// Flap protection: at most `escalations` rungs tried per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub escalations: u32,
    pub per: HumanDuration,
}

/// What is wrong with a watched service beyond its shape: a restart with
/// neither or both of `unit` and `command`, a restore of an export the
/// policy does not declare, an empty ladder.
pub fn problems(service: &WatchedService, exports: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    if service.ladder.is_empty() {
        out.push("the ladder is empty: give at least one rung".to_string());
    }
    for rung in &service.ladder {
        match rung {
            Rung::Restart(r) => match (&r.unit, &r.command) {
                (Some(_), None) => {}
                (None, Some(c)) if !c.is_empty() => {}
                _ => out.push(
                    "a restart rung is `{unit: NAME}` or `{command: [program, args…]}`".into(),
                ),
            },
            Rung::Restore(r) if !exports.contains(&r.export.as_str()) => out.push(format!(
                "the restore rung names export `{}`, which this policy does not declare",
                r.export
            )),
            _ => {}
        }
    }
    if service.limit().escalations == 0 {
        out.push("`limit.escalations` must be at least 1".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn parse(yaml: &str) -> Result<BTreeMap<String, WatchedService>, String> {
        serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn a_service_reads_with_its_defaults_and_its_ladder_in_order() {
        let w = parse(
            "web:\n  check: {kind: http, url: 'http://127.0.0.1:1/'}\n  ladder:\n    - restart: {unit: web.service}\n    - rollback: {}\n    - restore: {export: site}\n    - handover: {}\n",
        )
        .unwrap();
        let s = &w["web"];
        assert_eq!(s.interval(), Duration::from_secs(10));
        assert_eq!((s.fall(), s.rise()), (3, 2));
        assert_eq!(s.grace(), Duration::from_secs(60));
        assert_eq!(s.limit().escalations, 3);
        let names: Vec<_> = s.ladder.iter().map(Rung::name).collect();
        assert_eq!(names, ["restart", "rollback", "restore", "handover"]);
        assert!(problems(s, &["site"]).is_empty());
        assert_eq!(problems(s, &[]).len(), 1);
    }

    #[test]
    fn a_non_check_or_an_unknown_rung_is_refused() {
        for bad in [
            "web: {check: {kind: restart, unit: x}, ladder: []}",
            "web: {check: {url: x}, ladder: []}",
            "web: {check: {kind: tcp, address: 'a:1'}, ladder: [{reboot: {}}]}",
            "web: {check: {kind: tcp, address: 'a:1'}, ladder: [], fal: 3}",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
