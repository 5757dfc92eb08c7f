//! The Ansible role `deploy/ansible/roles/drp_agent`, run by ansible-core
//! against this machine (`connection: local`) with its paths under a
//! scratch folder: it converges, a second run changes nothing, secrets from
//! Ansible Vault land in 0600 files the policy references and never in its
//! output, the repositories exist (created as the drp user) before the
//! timer's first run, which backs up as the unit says, and a repository it
//! cannot create fails the play with the agent's reason. The example fleet
//! inventory is one that Ansible and drp both read.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{Run, scratch};

fn ansible(dir: &Path, program: &str, args: &[&str]) -> Run {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env(
            "ANSIBLE_ROLES_PATH",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/ansible/roles"),
        )
        .env("ANSIBLE_HOME", dir.join(".ansible"))
        .env("ANSIBLE_LOCAL_TEMP", dir.join(".ansible/tmp"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} (ansible-core; tests/services/setup.sh installs it): {e}")
        });
    Run::from(out)
}

/// `changed=N` of the play recap.
fn changed(run: &Run) -> u32 {
    let recap = run
        .stdout
        .lines()
        .find(|l| l.starts_with("localhost") && l.contains("changed="))
        .unwrap_or_else(|| panic!("no recap:\n{}", run.stdout));
    recap
        .split_whitespace()
        .find_map(|w| w.strip_prefix("changed="))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn the_role_converges_and_a_second_run_changes_nothing() {
    let s = scratch("ansible");
    let dir = s.path("play");
    let host = s.path("host");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(s.path("site")).unwrap();
    std::fs::write(s.path("site/index.html"), "<h1>shop</h1>").unwrap();
    let agent = PathBuf::from(env!("CARGO_BIN_EXE_drp")).with_file_name("drp-agent");
    let secret = format!("https://hooks.invalid/T0/{}", s.id);

    // The webhook's URL as Ansible Vault keeps it.
    std::fs::write(dir.join("vault-pass"), "correct horse battery staple\n").unwrap();
    std::fs::write(
        dir.join("secrets.yml"),
        format!("drp_secrets:\n  webhook-url: \"{secret}\"\n"),
    )
    .unwrap();
    ansible(
        &dir,
        "ansible-vault",
        &[
            "encrypt",
            "--vault-password-file",
            "vault-pass",
            "secrets.yml",
        ],
    )
    .ok();
    assert!(
        std::fs::read_to_string(dir.join("secrets.yml"))
            .unwrap()
            .starts_with("$ANSIBLE_VAULT")
    );

    std::fs::write(dir.join("inventory.yml"), "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n      ansible_python_interpreter: python3\n").unwrap();
    std::fs::write(
        dir.join("play.yml"),
        format!(
            r#"- hosts: localhost
  vars_files: [secrets.yml]
  vars:
    drp_agent_binary_src: {agent}
    drp_agent_bin: {host}/usr/bin/drp-agent
    drp_config_dir: {host}/etc/drp
    drp_state_dir: {host}/var/lib/drp
    drp_systemd_dir: {host}/etc/systemd/system
    drp_policy_data:
      host: ansible-1
      state_dir: {host}/var/lib/drp
      notify:
        webhook: {{url: {{file: "{host}/etc/drp/secrets/webhook-url"}}}}
      targets:
        nas: {{kind: local, path: {host}/var/lib/drp/nas}}
      exports:
        site:
          source: {{kind: directory, path: {site}}}
          schedule: "0 * * * *"
          targets: [nas]
  roles: [drp_agent]
"#,
            agent = agent.display(),
            host = host.display(),
            site = s.path("site").display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(host.join("usr/bin")).unwrap();
    let play = [
        "-i",
        "inventory.yml",
        "--vault-password-file",
        "vault-pass",
        "play.yml",
    ];
    let first = ansible(&dir, "ansible-playbook", &play);
    first.ok();
    assert!(changed(&first) >= 6, "{}", first.stdout);
    let second = ansible(&dir, "ansible-playbook", &play);
    second.ok();
    assert_eq!(
        changed(&second),
        0,
        "a second run changes nothing:\n{}",
        second.stdout
    );
    for run in [&first, &second] {
        assert!(
            !run.all().contains(&secret),
            "the secret is in Ansible's output"
        );
    }

    let secret_file = host.join("etc/drp/secrets/webhook-url");
    assert_eq!(std::fs::read_to_string(&secret_file).unwrap(), secret);
    assert_eq!(
        std::fs::metadata(&secret_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let policy = host.join("etc/drp/policy.yaml");
    assert!(
        !std::fs::read_to_string(&policy).unwrap().contains(&secret),
        "the policy references the secret"
    );
    assert!(
        host.join("etc/systemd/system/timers.target.wants/drp-agent.timer")
            .is_symlink()
    );
    let unit = std::fs::read_to_string(host.join("etc/systemd/system/drp-agent.service")).unwrap();
    assert!(
        unit.contains(&format!(
            "ExecStart={}/usr/bin/drp-agent run --due",
            host.display()
        )),
        "{unit}"
    );

    // The timer's first run: the unit's command, as the unit's user.
    let exec: Vec<&str> = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .split_whitespace()
        .collect();
    let user = unit.lines().find_map(|l| l.strip_prefix("User=")).unwrap();
    assert_eq!(user, "drp");
    // tempfile made the scratch folder 0700: let drp reach what the role
    // installed under it, as it reaches / on a real host.
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_drp = |argv: &[&str]| {
        Run::from(
            Command::new("runuser")
                .args(["-u", user, "--"])
                .args(argv)
                .current_dir("/")
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .output()
                .unwrap(),
        )
    };
    let run = as_drp(&exec);
    run.ok();
    let p = policy.to_str().unwrap();
    let installed = host.join("usr/bin/drp-agent");
    let listed = as_drp(&[installed.to_str().unwrap(), "--json", "list", "--policy", p]);
    listed.ok();
    let points = listed.json()["points"].as_array().unwrap().clone();
    assert_eq!(points.len(), 1, "{points:#?}");
    assert_eq!(points[0]["manifest"]["export"], "site", "{points:#?}");

    // A repository drp cannot create (/etc/drp is root's): the play stops
    // before the timer, with the agent's reason.
    std::fs::write(
        dir.join("unwritable.yml"),
        format!(
            "drp_policy_data:\n  host: ansible-1\n  state_dir: {host}/var/lib/drp\n  targets:\n    vault: {{kind: local, path: {host}/etc/drp/vault}}\n  exports:\n    site:\n      source: {{kind: directory, path: {site}}}\n      schedule: \"0 * * * *\"\n      targets: [vault]\n",
            host = host.display(),
            site = s.path("site").display()
        ),
    )
    .unwrap();
    let refused = ansible(
        &dir,
        "ansible-playbook",
        &[&play[..], &["-e", "@unwritable.yml"]].concat(),
    );
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused.stdout.contains("drp-agent init, as drp, exited ")
            && refused.stdout.contains("target `vault`: "),
        "{}",
        refused.stdout
    );
    assert!(
        !host.join("etc/drp/vault").exists(),
        "nothing was created as root"
    );
}

/// The hosts of `group` in `ansible-inventory --list`, through its children.
fn members(listed: &serde_json::Value, group: &str) -> Vec<String> {
    let g = &listed[group];
    let mut found: Vec<String> = g["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| h.as_str().unwrap().to_string())
        .collect();
    for child in g["children"].as_array().into_iter().flatten() {
        found.extend(members(listed, child.as_str().unwrap()));
    }
    found.sort();
    found
}

#[test]
fn the_example_fleet_inventory_is_read_alike_by_ansible_and_drp() {
    let s = scratch("inventory");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/fleet/inventory.yaml");
    let listed = ansible(
        s.dir.path(),
        "ansible-inventory",
        &["-i", path.to_str().unwrap(), "--list"],
    );
    listed.ok();
    let listed = listed.json();
    // deploy/ansible/site.yml deploys the `drp_agents` group.
    assert_eq!(
        members(&listed, "drp_agents"),
        ["db-1", "web-1"],
        "{listed:#}"
    );

    let inventory = drp_coordinator::fleet::inventory::Inventory::load(&path).unwrap();
    assert_eq!(
        inventory.hosts.keys().collect::<Vec<_>>(),
        ["db-1", "web-1"]
    );
    let addresses: Vec<(&str, &str)> = inventory
        .hosts
        .values()
        .map(|h| (h.name.as_str(), h.address.as_str()))
        .collect();
    assert_eq!(addresses, [("db-1", "192.0.2.20"), ("web-1", "192.0.2.10")]);
    for h in inventory.hosts.values() {
        let vars = &listed["_meta"]["hostvars"][&h.name];
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        assert_eq!(
            (
                vars["ansible_host"].as_str(),
                vars["ansible_port"].as_u64().unwrap_or(22),
                vars["ansible_user"].as_str(),
                vars["ansible_ssh_private_key_file"]
                    .as_str()
                    .map(str::to_string),
                vars["drp_known_hosts"].as_str().map(str::to_string),
                vars["drp_policy"].as_str(),
                vars["drp_agent"].as_str(),
            ),
            (
                Some(h.address.as_str()),
                u64::from(h.port),
                Some(h.user.as_str()),
                path(&h.identity),
                path(&h.known_hosts),
                Some(h.policy.as_str()),
                Some(h.agent.as_str()),
            ),
            "{}: {vars:#}",
            h.name
        );
    }
}
