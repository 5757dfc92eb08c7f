//! `fencing:` of a host's policy: what stops when a coordinator fences this
//! host after moving its service elsewhere, and stays stopped until the
//! fence is lifted. The host declares it; a fence record read from a
//! repository only says *that* the host is fenced, never what to run.

use std::time::Duration;

use serde::Deserialize;

use super::HumanDuration;

/// How often a daemon reads the fence records when none is given.
pub const DEFAULT_CHECK_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fencing {
    /// The services that make this host a primary.
    pub services: Vec<FencedService>,
    /// How often the daemon reads the fence records (30 s when not given).
    pub check_every: Option<HumanDuration>,
}

impl Fencing {
    pub fn check_every(&self) -> Duration {
        self.check_every
            .as_ref()
            .map(|d| d.as_duration())
            .unwrap_or(DEFAULT_CHECK_EVERY)
    }
}

/// One service: how to stop it and how to tell that it runs, each an
/// argument vector run without a shell.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawService")]
pub struct FencedService {
    pub name: String,
    pub stop: Vec<String>,
    /// Exits 0 while the service runs.
    pub running: Vec<String>,
}

/// `{unit: shop}` (systemd), or `{name: …, stop: […], running: […]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    unit: Option<String>,
    name: Option<String>,
    stop: Option<Vec<String>>,
    running: Option<Vec<String>>,
}

impl TryFrom<RawService> for FencedService {
    type Error = String;

    fn try_from(raw: RawService) -> Result<Self, String> {
        match raw {
            RawService {
                unit: Some(unit),
                name: None,
                stop: None,
                running: None,
            } => {
                let valid = !unit.is_empty()
                    && unit.len() <= 255
                    && !unit.starts_with(['-', '.'])
                    && unit.chars().all(|c| {
                        c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '@' | '\\' | '-')
                    });
                if !valid {
                    return Err(format!(
                        "invalid unit `{}`: a systemd unit name is letters, digits and `:_.@\\-`, not starting with `-` or `.`",
                        unit.escape_debug()
                    ));
                }
                Ok(FencedService {
                    stop: vec!["systemctl".into(), "stop".into(), "--".into(), unit.clone()],
                    running: vec![
                        "systemctl".into(),
                        "is-active".into(),
                        "--quiet".into(),
                        "--".into(),
                        unit.clone(),
                    ],
                    name: unit,
                })
            }
            RawService { unit: Some(_), .. } => {
                Err("give either `unit`, or `name`, `stop` and `running`, not both".into())
            }
            RawService {
                unit: None,
                name: Some(name),
                stop: Some(stop),
                running: Some(running),
            } if !stop.is_empty() && !running.is_empty() => Ok(FencedService {
                name,
                stop,
                running,
            }),
            _ => Err(
                "a fenced service is `{unit: NAME}` (systemd) or `{name: …, stop: [program, args…], running: [program, args…]}`"
                    .into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Fencing, String> {
        serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn a_unit_means_systemctl_and_commands_are_argument_vectors() {
        let f = parse("services:\n  - unit: shop.service\n  - {name: app, stop: [pkill, -f, app], running: [pgrep, -f, app]}\ncheck_every: 10s\n").unwrap();
        assert_eq!(f.services[0].name, "shop.service");
        assert_eq!(
            f.services[0].stop,
            ["systemctl", "stop", "--", "shop.service"]
        );
        assert_eq!(
            f.services[0].running,
            ["systemctl", "is-active", "--quiet", "--", "shop.service"]
        );
        assert_eq!(f.services[1].stop, ["pkill", "-f", "app"]);
        assert_eq!(f.check_every(), Duration::from_secs(10));
        assert_eq!(
            parse("services: []").unwrap().check_every(),
            DEFAULT_CHECK_EVERY
        );
    }

    #[test]
    fn half_declared_services_are_refused() {
        for bad in [
            "services: [{unit: -x}]",
            "services: [{unit: a, stop: [x]}]",
            "services: [{name: a, stop: [x]}]",
            "services: [{name: a, stop: [], running: [y]}]",
            "services: [{name: a, stop: [x], running: [y], extra: 1}]",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
