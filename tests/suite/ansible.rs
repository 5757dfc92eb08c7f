//! The Ansible role `deploy/ansible/roles/drp_agent`, run by ansible-core
//! against this machine (`connection: local`) with its paths under a
//! scratch folder: it converges, a second run changes nothing, secrets from
//! Ansible Vault land in 0600 files the policy references and never in its
//! output, and the policy it writes drives a backup.

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
    drp_policy:
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

    // The policy the role wrote, with the binary it installed.
    let installed = host.join("usr/bin/drp-agent");
    let p = policy.to_str().unwrap();
    for args in [vec!["init", "--policy", p], vec!["backup", "--policy", p]] {
        Run::from(Command::new(&installed).args(&args).output().unwrap()).ok();
    }
}
