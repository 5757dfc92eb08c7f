//! The inventory: which hosts a coordinator reaches, and how. It is an
//! Ansible YAML inventory, so the file a company already deploys with can
//! serve both: groups with `hosts`, `children` and `vars`, a host's
//! variables overriding its groups', inner groups overriding outer ones.
//!
//! drp reads `ansible_host` (the address, default the host's name),
//! `ansible_port` (22), `ansible_user` (`drp`) and
//! `ansible_ssh_private_key_file`, and its own `drp_policy` (the policy file
//! on that host, default `/etc/drp/policy.yaml`), `drp_agent` (the agent's
//! path there, default `drp-agent`) and `drp_known_hosts` (the known-hosts
//! file that pins the host keys, default the user's). Other variables are
//! Ansible's business; an unknown `drp_` variable is an error.
//!
//! The coordinator's watch (`drp watch --inventory`) reads three more:
//! `drp_failover` (the runbook run when the host is down, relative to the
//! inventory's folder; a host without it is not watched), `drp_witnesses`
//! (the hosts asked whether they reach it when the coordinator cannot) and
//! `drp_watch` (its check from the coordinator and its hysteresis:
//! `check`, `interval`, `fall`, `rise`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use drp_core::config::{Diagnostics, resolve_relative};
use serde_yaml_ng::Value;

/// How to reach one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    pub identity: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    /// The policy file the agent serves there.
    pub policy: String,
    /// The agent's program there.
    pub agent: String,
    /// What the coordinator's watch does about the host; `None`: not watched.
    pub watch: Option<WatchEntry>,
}

/// A watched host (`drp_failover`, `drp_witnesses`, `drp_watch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEntry {
    /// The failover runbook run when the host is down.
    pub failover: PathBuf,
    /// Inventory hosts asked whether they reach it.
    pub witnesses: Vec<String>,
    /// A runbook check (`http`, `tcp`, `sql`, `command`) run from the
    /// coordinator; `None`: the check is whether its agent answers over SSH.
    pub check: Option<serde_json::Value>,
    pub interval: Duration,
    /// Consecutive failed checks before the host counts as down.
    pub fall: u32,
    /// Consecutive passed checks before an open incident closes.
    pub rise: u32,
}

/// The keys of `drp_watch`.
const WATCH_KEYS: [&str; 4] = ["check", "interval", "fall", "rise"];

#[derive(Debug, Clone)]
pub struct Inventory {
    pub path: PathBuf,
    pub hosts: BTreeMap<String, HostEntry>,
}

const DRP_VARS: [&str; 6] = [
    "drp_policy",
    "drp_agent",
    "drp_known_hosts",
    "drp_failover",
    "drp_witnesses",
    "drp_watch",
];

/// A host's variables so far, and where each was set (for diagnostics).
type Vars = BTreeMap<String, (Value, String)>;

impl Inventory {
    pub fn load(path: &Path) -> Result<Inventory, drp_core::Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| drp_core::Error::io_path("cannot read inventory", path, e))?;
        Inventory::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Inventory, drp_core::Error> {
        let mut d = Diagnostics::new(path, text);
        let mut root: Value = match serde_yaml_ng::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                d.push("", format!("not valid YAML: {e}"), None);
                return Err(drp_core::Error::Policy(d.into_result().unwrap_err()));
            }
        };
        // `${VAR}` on parsed values, as in policies and runbooks.
        d.expand_env(&mut root);
        let mut found: BTreeMap<String, Vars> = BTreeMap::new();
        match root {
            Value::Mapping(groups) => {
                for (name, group) in groups {
                    let name = name.as_str().unwrap_or_default().to_string();
                    read_group(&mut d, &name, &group, &Vars::new(), &mut found);
                }
            }
            _ => d.push(
                "",
                "an inventory is a mapping of groups (`all: {hosts: {db-1: {ansible_host: …}}}`)",
                None,
            ),
        }
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let names: BTreeSet<String> = found.keys().cloned().collect();
        let hosts = found
            .into_iter()
            .filter_map(|(name, vars)| host_entry(&mut d, base, &names, name, &vars))
            .map(|h| (h.name.clone(), h))
            .collect::<BTreeMap<_, _>>();
        if hosts.is_empty() && d.items.is_empty() {
            d.push("", "the inventory lists no host", None);
        }
        d.into_result()?;
        Ok(Inventory {
            path: path.to_path_buf(),
            hosts,
        })
    }

    pub fn host(&self, name: &str) -> Option<&HostEntry> {
        self.hosts.get(name)
    }
}

/// Reads a group at `at`: its vars over `inherited`, then its hosts, then
/// its children with both.
fn read_group(
    d: &mut Diagnostics,
    at: &str,
    group: &Value,
    inherited: &Vars,
    found: &mut BTreeMap<String, Vars>,
) {
    let group = match group {
        Value::Null => return,
        Value::Mapping(m) => m,
        _ => {
            d.push(
                at,
                "a group is a mapping with `hosts`, `children` or `vars`",
                None,
            );
            return;
        }
    };
    let mut vars = inherited.clone();
    for (k, v) in group {
        match k.as_str().unwrap_or_default() {
            "vars" => merge(d, &format!("{at}.vars"), v, &mut vars),
            "hosts" | "children" => {}
            other => d.push(
                &format!("{at}.{other}"),
                format!("unknown key `{other}` in a group"),
                drp_core::config::did_you_mean(other, &["hosts", "children", "vars"]),
            ),
        }
    }
    match group.get("hosts") {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(hosts)) => {
            for (name, host_vars) in hosts {
                let name = name.as_str().unwrap_or_default().to_string();
                let mut own = found.remove(&name).unwrap_or_else(|| vars.clone());
                for (k, v) in &vars {
                    own.entry(k.clone()).or_insert_with(|| v.clone());
                }
                merge(d, &format!("{at}.hosts.{name}"), host_vars, &mut own);
                found.insert(name, own);
            }
        }
        Some(_) => d.push(
            &format!("{at}.hosts"),
            "`hosts` maps host names to their variables",
            None,
        ),
    }
    match group.get("children") {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(children)) => {
            for (name, child) in children {
                let name = name.as_str().unwrap_or_default();
                read_group(d, &format!("{at}.children.{name}"), child, &vars, found);
            }
        }
        Some(_) => d.push(
            &format!("{at}.children"),
            "`children` maps group names to groups",
            None,
        ),
    }
}

/// Adds the variables of `node` (at `at`) over `vars`.
fn merge(d: &mut Diagnostics, at: &str, node: &Value, vars: &mut Vars) {
    match node {
        Value::Null => {}
        Value::Mapping(m) => {
            for (k, v) in m {
                let k = k.as_str().unwrap_or_default().to_string();
                if k.starts_with("drp_") && !DRP_VARS.contains(&k.as_str()) {
                    d.push(
                        &format!("{at}.{k}"),
                        format!("unknown variable `{k}`"),
                        drp_core::config::did_you_mean(&k, &DRP_VARS),
                    );
                }
                vars.insert(k.clone(), (v.clone(), format!("{at}.{k}")));
            }
        }
        _ => d.push(at, "variables are a mapping", None),
    }
}

/// The host's entry from its variables; `None` (with diagnostics) when one
/// is not usable.
fn host_entry(
    d: &mut Diagnostics,
    base: &Path,
    names: &BTreeSet<String>,
    name: String,
    vars: &Vars,
) -> Option<HostEntry> {
    let before = d.items.len();
    let text = |d: &mut Diagnostics, key: &str| -> Option<String> {
        let (v, at) = vars.get(key)?;
        match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => {
                d.push(at, format!("`{key}` must be a non-empty string"), None);
                None
            }
        }
    };
    let address = text(d, "ansible_host").unwrap_or_else(|| name.clone());
    let port = match text(d, "ansible_port") {
        None => 22,
        Some(p) => p.parse::<u16>().unwrap_or_else(|_| {
            d.push(
                &vars["ansible_port"].1,
                format!("`{p}` is not a port number"),
                None,
            );
            22
        }),
    };
    let user = text(d, "ansible_user").unwrap_or_else(|| "drp".into());
    let policy = text(d, "drp_policy").unwrap_or_else(|| "/etc/drp/policy.yaml".into());
    let agent = text(d, "drp_agent").unwrap_or_else(|| "drp-agent".into());
    let file = |d: &mut Diagnostics, key: &str| {
        text(d, key).map(|p| resolve_relative(base, Path::new(&p)))
    };
    let identity = file(d, "ansible_ssh_private_key_file");
    let known_hosts = file(d, "drp_known_hosts");
    let failover = file(d, "drp_failover");
    let watch = watch_entry(d, names, &name, failover, vars);
    // Sent as the remote command: words a remote shell reads as they are.
    for (key, value) in [
        ("drp_policy", &policy),
        ("drp_agent", &agent),
        ("ansible_user", &user),
    ] {
        if !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-@+".contains(c))
            || value.starts_with('-')
        {
            let at = vars.get(key).map(|(_, at)| at.clone()).unwrap_or_default();
            d.push(
                &at,
                format!("`{key}` may hold only letters, digits and `/._-@+`: it is sent as a word of the SSH command"),
                None,
            );
        }
    }
    if address.starts_with('-') {
        d.push(
            &format!("{name}.ansible_host"),
            "an address cannot start with `-`",
            None,
        );
    }
    (d.items.len() == before).then_some(HostEntry {
        name,
        address,
        port,
        user,
        identity,
        known_hosts,
        policy,
        agent,
        watch,
    })
}

/// The host's watch settings; `None` when it names no failover runbook
/// (then `drp_witnesses` and `drp_watch` are errors).
fn watch_entry(
    d: &mut Diagnostics,
    names: &BTreeSet<String>,
    host: &str,
    failover: Option<PathBuf>,
    vars: &Vars,
) -> Option<WatchEntry> {
    let Some(failover) = failover else {
        // A group's values are defaults for its watched hosts; given to
        // the host itself, they say it should be watched.
        for key in ["drp_witnesses", "drp_watch"] {
            if let Some((_, at)) = vars.get(key)
                && at.ends_with(&format!(".hosts.{host}.{key}"))
            {
                d.push(
                    at,
                    format!("`{key}` needs `drp_failover`: the runbook the coordinator's watch runs when `{host}` is down"),
                    None,
                );
            }
        }
        return None;
    };
    let mut witnesses = Vec::new();
    if let Some((v, at)) = vars.get("drp_witnesses") {
        match v {
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    let here = format!("{at}[{i}]");
                    match item.as_str() {
                        Some(w) if w == host => d.push(
                            &here,
                            format!(
                                "`{host}` cannot witness itself: name another host of the inventory"
                            ),
                            None,
                        ),
                        Some(w) if names.contains(w) => witnesses.push(w.to_string()),
                        Some(w) => {
                            let known: Vec<&str> = names.iter().map(String::as_str).collect();
                            d.push(
                                &here,
                                format!("`{w}` is not a host of this inventory: a witness is one the coordinator reaches over SSH"),
                                drp_core::config::did_you_mean(w, &known),
                            )
                        }
                        None => d.push(&here, "a witness is a host name", None),
                    }
                }
            }
            _ => d.push(
                at,
                "`drp_witnesses` is a list of host names (`[db-2, web-1]`)",
                None,
            ),
        }
    }
    let mut entry = WatchEntry {
        failover,
        witnesses,
        check: None,
        interval: Duration::from_secs(10),
        fall: 3,
        rise: 2,
    };
    let Some((v, at)) = vars.get("drp_watch") else {
        return Some(entry);
    };
    let settings = match v {
        Value::Null => return Some(entry),
        Value::Mapping(m) => m,
        _ => {
            d.push(at, "`drp_watch` is a mapping: `{check: {kind: http, url: …}, interval: 10s, fall: 3, rise: 2}`", None);
            return Some(entry);
        }
    };
    for (k, v) in settings {
        let key = k.as_str().unwrap_or_default();
        let here = format!("{at}.{key}");
        match key {
            "check" => match check(v) {
                Ok(c) => entry.check = Some(c),
                Err(e) => d.push(&here, e, None),
            },
            "interval" => match v.as_str().map(drp_core::config::HumanDuration::parse) {
                Some(Ok(i)) if !i.as_duration().is_zero() => entry.interval = i.as_duration(),
                Some(Err(e)) => d.push(&here, e, None),
                _ => d.push(&here, "`interval` is a duration, like 10s or 1m", None),
            },
            "fall" | "rise" => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if n >= 1 => {
                    if key == "fall" {
                        entry.fall = n
                    } else {
                        entry.rise = n
                    }
                }
                _ => d.push(
                    &here,
                    format!("`{key}` is a count of consecutive checks, at least 1"),
                    None,
                ),
            },
            other => d.push(
                &here,
                format!("unknown key `{other}` in `drp_watch`"),
                drp_core::config::did_you_mean(other, &WATCH_KEYS),
            ),
        }
    }
    Some(entry)
}

/// A watch's check: a runbook check the runbook reader accepts, kept as
/// JSON (read again, against the failover runbook's policy, by `drp watch`).
fn check(node: &Value) -> Result<serde_json::Value, String> {
    let json: serde_json::Value =
        serde_json::to_value(node).map_err(|e| format!("the check cannot be read: {e}"))?;
    let kinds = drp_core::config::watch::CHECK_KINDS;
    match json.get("kind").and_then(|k| k.as_str()) {
        Some(k) if kinds.contains(&k) => {}
        Some(k) => {
            return Err(format!(
                "`{k}` is not a check: the coordinator's check is one of {}",
                kinds.join(", ")
            ));
        }
        None => {
            return Err(format!(
                "a check is a runbook check with a `kind`: one of {}",
                kinds.join(", ")
            ));
        }
    }
    serde_json::from_value::<crate::action::ActionConfig>(json.clone())
        .map_err(|e| format!("the check cannot be read: {e}"))?;
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ansible_inventory_gives_each_host_its_groups_variables() {
        let text = "\
all:
  vars:
    ansible_user: drp
    drp_known_hosts: keys/known_hosts
  hosts:
    web-1:
      ansible_host: 192.0.2.10
  children:
    databases:
      vars:
        drp_policy: /etc/drp/db.yaml
      hosts:
        db-1: {ansible_host: 192.0.2.20, ansible_port: 2222}
        db-2:
          ansible_host: 192.0.2.21
          drp_policy: /srv/drp/policy.yaml
";
        let inv = Inventory::parse(Path::new("/etc/drp/fleet.yaml"), text).unwrap();
        let db1 = inv.host("db-1").unwrap();
        assert_eq!((db1.address.as_str(), db1.port), ("192.0.2.20", 2222));
        assert_eq!(db1.policy, "/etc/drp/db.yaml");
        assert_eq!(db1.user, "drp");
        assert_eq!(
            db1.known_hosts.as_deref(),
            Some(Path::new("/etc/drp/keys/known_hosts"))
        );
        assert_eq!(inv.host("db-2").unwrap().policy, "/srv/drp/policy.yaml");
        let web = inv.host("web-1").unwrap();
        assert_eq!(
            (web.port, web.policy.as_str()),
            (22, "/etc/drp/policy.yaml")
        );
    }

    #[test]
    fn a_misspelt_drp_variable_and_a_shell_word_are_located() {
        let text = "all:\n  hosts:\n    db-1:\n      drp_polcy: /etc/drp/p.yaml\n      drp_agent: \"drp-agent; rm -rf /\"\n";
        let Err(drp_core::Error::Policy(e)) = Inventory::parse(Path::new("inv.yaml"), text) else {
            panic!("refused")
        };
        let found: Vec<(usize, &str)> = e
            .diagnostics
            .iter()
            .map(|d| (d.line, d.key.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (4, "all.hosts.db-1.drp_polcy"),
                (5, "all.hosts.db-1.drp_agent")
            ],
            "{e}"
        );
        assert!(e.to_string().contains("drp_policy"), "did you mean: {e}");
    }

    #[test]
    fn a_watched_host_reads_its_failover_witnesses_and_hysteresis() {
        let text = "\
all:
  vars:
    drp_watch: {interval: 5s}
  hosts:
    shop-a:
      drp_failover: runbooks/shop.yaml
      drp_witnesses: [witness]
      drp_watch: {check: {kind: http, url: 'http://192.0.2.10/health'}, fall: 2, interval: 2s}
    witness: {}
";
        let inv = Inventory::parse(Path::new("/etc/drp/fleet.yaml"), text).unwrap();
        let w = inv.host("shop-a").unwrap().watch.clone().unwrap();
        assert_eq!(w.failover, Path::new("/etc/drp/runbooks/shop.yaml"));
        assert_eq!(w.witnesses, ["witness"]);
        assert_eq!((w.fall, w.rise), (2, 2));
        assert_eq!(w.interval, Duration::from_secs(2));
        assert_eq!(w.check.unwrap()["kind"], "http");
        assert!(inv.host("witness").unwrap().watch.is_none());
    }

    #[test]
    fn bad_watch_variables_are_located() {
        let text = "all:\n  hosts:\n    shop-a:\n      drp_failover: shop.yaml\n      drp_witnesses: [witnes, shop-a]\n      drp_watch:\n        check: {kind: restart, unit: x}\n        fall: 0\n        intervall: 5s\n    witness:\n      drp_watch: {fall: 2}\n";
        let Err(drp_core::Error::Policy(e)) = Inventory::parse(Path::new("inv.yaml"), text) else {
            panic!("refused")
        };
        let found: Vec<(usize, &str)> = e
            .diagnostics
            .iter()
            .map(|d| (d.line, d.key.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                (5, "all.hosts.shop-a.drp_witnesses[0]"),
                (5, "all.hosts.shop-a.drp_witnesses[1]"),
                (7, "all.hosts.shop-a.drp_watch.check"),
                (8, "all.hosts.shop-a.drp_watch.fall"),
                (9, "all.hosts.shop-a.drp_watch.intervall"),
                (11, "all.hosts.witness.drp_watch"),
            ],
            "{e}"
        );
        let said = e.to_string();
        for part in [
            "did you mean",
            "cannot witness itself",
            "not a check",
            "needs `drp_failover`",
        ] {
            assert!(
                said.to_lowercase().contains(&part.to_lowercase()),
                "{part}: {said}"
            );
        }
    }
}
