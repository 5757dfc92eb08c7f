//! The `command` source: any dump tool's stdout is a point. Around the real
//! `redis-cli` (the README's policy), a point restores through its restore
//! command and is tested through its verify command; a tool that fails
//! halfway commits nothing and is named with its stderr; a secret passed by
//! reference never shows in the manifest, the logs or any process's argv.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::{Run, Scratch, files_containing, scratch};
use crate::redis::{TestRedis, redis_scratch};

/// A policy whose one export `dump` has `source` (YAML under `source:`).
fn policy(s: &Scratch, source: &str, extra: &str) -> String {
    s.write(
        "policy.yaml",
        &format!(
            "host: app-1\n{}exports:\n  dump:\n    source:\n{source}    targets: [nas]\n{extra}",
            s.targets_yaml()
        ),
    )
    .display()
    .to_string()
}

/// The README's ten lines, pointed at the test's server.
fn redis_cli_source(r: &TestRedis) -> String {
    format!(
        "      kind: command\n      \
         backup: [redis-cli, -s, {sock}, --no-auth-warning, --rdb, \"-\"]\n      \
         restore: [cp, /dev/stdin, restored.rdb]\n      \
         verify: [redis-check-rdb, /dev/stdin]\n      \
         env: {{REDISCLI_AUTH: {{env: TEST_REDIS_PASSWORD}}}}\n      \
         timeout: 10m\n",
        sock = r.sock.display()
    )
}

fn points(s: &Scratch, p: &str) -> usize {
    let listed = s.agent(&["--json", "list", "--policy", p]);
    listed.ok();
    listed.json()["points"].as_array().unwrap().len()
}

#[test]
fn a_command_source_around_redis_cli_restores_through_its_command_and_tests_through_verify() {
    let mut s = redis_scratch("cmd_redis");
    // Not the server's password in drp's own environment: only the policy's
    // reference carries it to the tool.
    s.set_env("REDISCLI_AUTH", "");
    let r = TestRedis::start(&s, false);
    for i in 0..500 {
        r.cli(&["SET", &format!("k:{i}"), &format!("v{i}")]);
    }
    let p = policy(&s, &redis_cli_source(&r), "    restore_test: {every: 1d}\n");
    s.drp(&["check", &p]).ok();
    let backup = s.agent(&["--json", "backup", "--policy", &p]);
    backup.ok();
    let m = &backup.json()["backups"][0]["targets"][0]["manifest"];
    assert_eq!(m["kind"], "command");
    assert!(
        m["source"]["backup"]
            .as_str()
            .unwrap()
            .starts_with("redis-cli -s ")
    );
    assert_eq!(points(&s, &p), 1);

    // The plan says, before asking, that nothing is staged or kept.
    let plan = s.agent(&["restore", "--policy", &p, "--export", "dump", "--dry-run"]);
    plan.ok();
    assert!(
        plan.stderr
            .contains("drp cannot stage or keep what a command source's restore replaces"),
        "{}",
        plan.stderr
    );
    assert!(
        plan.stderr.contains("`cp /dev/stdin restored.rdb`"),
        "{}",
        plan.stderr
    );
    // Without --yes it does not run.
    let refused = s.agent(&["--json", "restore", "--policy", &p, "--export", "dump"]);
    assert_ne!(refused.code, 0);
    assert!(!s.path("restored.rdb").exists());

    s.agent(&["restore", "--policy", &p, "--export", "dump", "--yes"])
        .ok();
    // The file the restore command wrote is the server's data: a second
    // server loads it with every key.
    let restored = s.path("restored.rdb");
    let check = Command::new("redis-check-rdb")
        .arg(&restored)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(text.contains("500 keys read"), "{text}");

    // The restore test runs the verify command on the point.
    let tmp = s.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut cmd = s.agent_cmd(&["--json", "test-restore", "--policy", &p]);
    cmd.env("TMPDIR", &tmp);
    let run = Run::from(cmd.output().unwrap());
    run.ok();
    let t = &run.json()["tests"][0];
    assert_eq!(t["passed"], true, "{t:#}");
    assert_eq!(
        t["checks"][0]["check"],
        "`redis-check-rdb /dev/stdin` accepts the point"
    );
    assert!(std::fs::read_dir(&tmp).unwrap().next().is_none());
}

#[test]
fn a_tool_that_fails_halfway_commits_nothing_and_is_named_with_its_stderr() {
    let s = scratch("cmd_fails");
    // Writes part of a dump, then fails as a real tool would.
    let tool = s.write(
        "export-tool.sh",
        "#!/bin/sh\nhead -c 300000 /dev/urandom\necho 'export-tool: reading table orders' >&2\n\
         echo 'export-tool: connection lost after 300000 bytes' >&2\nexit 3\n",
    );
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = policy(
        &s,
        &format!(
            "      kind: command\n      backup: [{}, --all]\n      restore: [cat]\n",
            tool.display()
        ),
        "",
    );
    let run = s.agent(&["backup", "--policy", &p]);
    assert_ne!(run.code, 0, "{run:?}");
    let said = run.all();
    assert!(
        said.contains(&format!("`{} --all` failed (exit code 3)", tool.display())),
        "{said}"
    );
    assert!(
        said.contains("connection lost after 300000 bytes"),
        "{said}"
    );
    assert_eq!(points(&s, &p), 0);
    // A tool that exits 0 without a byte commits nothing either.
    let p = policy(
        &s,
        "      kind: command\n      backup: [\"true\"]\n      restore: [cat]\n",
        "",
    );
    let run = s.agent(&["backup", "--policy", &p]);
    assert_ne!(run.code, 0);
    assert!(
        run.all().contains("wrote nothing on its stdout"),
        "{}",
        run.all()
    );
    assert_eq!(points(&s, &p), 0);
}

#[test]
fn a_secret_passed_by_reference_stays_out_of_the_manifest_the_logs_and_argv() {
    let mut s = redis_scratch("cmd_secret");
    s.set_env("REDISCLI_AUTH", "");
    s.set_env("RUST_LOG", "debug");
    let r = TestRedis::start(&s, false);
    // Enough data that the dump runs long enough to be seen in /proc.
    r.cli(&["DEBUG", "POPULATE", "400000", "bulk", "100"]);
    let p = policy(&s, &redis_cli_source(&r), "");
    let secret = "redis-Test-Pw-5b1e";

    // Every process's argv, read over and over while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                for e in std::fs::read_dir("/proc").unwrap().flatten() {
                    if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
                        let c = String::from_utf8_lossy(&c).replace('\0', " ");
                        if c.contains("--rdb") || c.contains(secret) {
                            seen.push(c);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            seen
        })
    };
    let backup = s.agent(&["--json", "backup", "--policy", &p]);
    stop.store(true, Ordering::SeqCst);
    let seen = watcher.join().unwrap();
    backup.ok();
    assert!(
        seen.iter().any(|c| c.starts_with("redis-cli -s ")),
        "the dump was not seen running: {seen:?}"
    );
    assert!(seen.iter().all(|c| !c.contains(secret)), "{seen:?}");
    assert!(
        !backup.all().contains(secret),
        "the secret is in drp's output"
    );
    // Nowhere in the repository (manifests, records) or the state.
    assert!(files_containing(&s.path("nas"), secret).is_empty());
    assert!(files_containing(&s.path("state"), secret).is_empty());
    let restore = s.agent(&["restore", "--policy", &p, "--export", "dump", "--yes"]);
    restore.ok();
    assert!(!restore.all().contains(secret));
}
