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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
}

#[derive(Debug, Clone)]
pub struct Inventory {
    pub path: PathBuf,
    pub hosts: BTreeMap<String, HostEntry>,
}

const DRP_VARS: [&str; 3] = ["drp_policy", "drp_agent", "drp_known_hosts"];

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
        let hosts = found
            .into_iter()
            .filter_map(|(name, vars)| host_entry(&mut d, base, name, &vars))
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
fn host_entry(d: &mut Diagnostics, base: &Path, name: String, vars: &Vars) -> Option<HostEntry> {
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
    })
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
}
