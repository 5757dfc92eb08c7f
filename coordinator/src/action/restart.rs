//! Restart a service (a systemd unit or a command), then wait until a check
//! passes. Nothing goes through a shell.

use std::fmt;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::command::Argv;
use super::{Action, ActionConfig, ActionError, Context, Invalid};
use drp_core::config::Policy;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    /// `systemctl restart -- UNIT`.
    pub unit: Option<UnitName>,
    /// Or any command, run without a shell (a list, or words: see [`Argv`]).
    pub command: Option<Argv>,
    /// A check polled until it passes (inside the step's timeout).
    pub until: Option<Box<ActionConfig>>,
}

/// A systemd unit name (`shop.service`, `app@2`, `postgresql`), checked when
/// the runbook is read: letters, digits and `:_.@\-`, not starting with `-`
/// (so it can never read as an option), at most 255 characters.
#[derive(Clone, PartialEq, Eq)]
pub struct UnitName(String);

impl UnitName {
    pub fn parse(name: &str) -> Result<UnitName, String> {
        const WHAT: &str = "a systemd unit name is letters, digits and `:_.@\\-`, does not start with `-` or `.`, and has at most 255 characters";
        let valid = !name.is_empty()
            && name.len() <= 255
            && !name.starts_with(['-', '.'])
            && name.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '@' | '\\' | '-')
            });
        if valid {
            Ok(UnitName(name.to_string()))
        } else {
            Err(format!("invalid unit `{}`: {WHAT}", name.escape_debug()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl<'de> Deserialize<'de> for UnitName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        UnitName::parse(&name).map_err(serde::de::Error::custom)
    }
}

impl Restart {
    fn argv(&self) -> Argv {
        match (&self.unit, &self.command) {
            (Some(u), _) => Argv::new(vec![
                "systemctl".into(),
                "restart".into(),
                "--".into(),
                u.as_str().into(),
            ])
            .expect("a program"),
            (None, Some(c)) => c.clone(),
            _ => unreachable!("validated"),
        }
    }
}

impl Action for Restart {
    fn describe(&self) -> String {
        match (&self.unit, &self.command) {
            (Some(u), _) => format!("restart unit {u}"),
            (None, Some(c)) => format!("restart with `{c}`"),
            _ => "restart".into(),
        }
    }

    fn destructive(&self) -> bool {
        true
    }

    fn validate(&self, policy: &Policy) -> Result<(), Invalid> {
        if self.unit.is_some() == self.command.is_some() {
            return Err(Invalid::UnitOrCommand);
        }
        match &self.until {
            Some(check) => check.validate(policy),
            None => Ok(()),
        }
    }

    fn run<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Result<String, ActionError>> {
        Box::pin(async move {
            let cmd = self.argv();
            let (code, out) = super::command::exec(&cmd, ctx).await?;
            if code != 0 {
                return Err(ActionError::failed(format!(
                    "`{cmd}` exited {code}: {}",
                    out.trim()
                )));
            }
            let Some(check) = &self.until else {
                return Ok(format!("`{cmd}` done"));
            };
            let interval = std::time::Duration::from_millis(500);
            loop {
                match check.action().run(ctx).await {
                    Ok(msg) => return Ok(format!("`{cmd}` done; {msg}")),
                    Err(_) => tokio::time::sleep(interval).await,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_are_systemd_names_and_never_options() {
        for ok in [
            "shop.service",
            "app@2.service",
            "postgresql",
            "dev-sda1.mount",
            "a\\x2db",
        ] {
            assert!(UnitName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-H",
            "--host=evil",
            ".hidden",
            "shop; reboot",
            "a b",
            "x$(id)",
            "*",
            "ü",
        ] {
            assert!(UnitName::parse(bad).is_err(), "{bad}");
        }
        let r = Restart {
            unit: Some(UnitName::parse("shop.service").unwrap()),
            command: None,
            until: None,
        };
        assert_eq!(
            r.argv().words(),
            ["systemctl", "restart", "--", "shop.service"]
        );
    }
}
