//! Drills on a schedule: `drp drill --due` drills the runbooks whose
//! `drill.every` says a drill is due (never passed, changed since, or
//! `every` gone by) and says when the others are next due; `drp units`
//! runs it daily from systemd or cron. SQLite sources and a local NAS keep
//! these fast.

use chrono::{DateTime, Duration, Utc};

use crate::harness::{Scratch, scratch};

/// A policy over a SQLite app and a NAS, and `runbooks/` with `every` (a
/// drill every 90 days) and `manual` (no `every`).
fn setup(s: &Scratch) {
    let c = rusqlite::Connection::open(s.path("app.db")).unwrap();
    c.execute_batch(
        "create table orders (id integer primary key, item text);
         insert into orders (item) values ('a'), ('b'), ('c');",
    )
    .unwrap();
    s.write(
        "policy.yaml",
        "host: sched\nobjectives: {rto: 5m, rpo: 30m}\ntargets:\n  nas: {kind: local, path: nas}\nexports:\n  app:\n    source: {kind: sqlite, path: app.db}\n    targets: [nas]\n",
    );
    s.write(
        "runbooks/every.yaml",
        &runbook("every", "  every: 90d\n", 3),
    );
    s.write("runbooks/manual.yaml", &runbook("manual", "", 3));
    s.agent(&["backup", "--policy", "policy.yaml", "--export", "app"])
        .ok();
}

/// A runbook that deletes the orders, restores them and expects `rows`.
fn runbook(name: &str, every: &str, rows: u32) -> String {
    format!(
        "name: {name}\npolicy: ../policy.yaml\ndrill:\n{every}  settle: 0s\n  inject:\n    - name: break\n      action: {{kind: sql, export: app, query: \"delete from orders\"}}\nsteps:\n  - name: restore\n    phase: restore\n    action: {{kind: restore_backup, export: app}}\n  - name: orders are back\n    phase: verify\n    action: {{kind: sql, export: app, query: \"select count(*) from orders\", expect: {{value: \"{rows}\"}}}}\n"
    )
}

/// The reports stored for `runbook` on the NAS.
fn stored(s: &Scratch, runbook: &str) -> Vec<serde_json::Value> {
    let dir = s.path(&format!("nas/reports/{runbook}"));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

fn due(s: &Scratch, extra: &[&str]) -> crate::harness::Run {
    let mut args = vec![
        "drill",
        "--due",
        "--policy",
        "policy.yaml",
        "--runbooks",
        "runbooks",
    ];
    args.extend_from_slice(extra);
    s.drp(&args)
}

/// A runbook never drilled runs; then it is not due and says when it will
/// be; once changed, it runs again; one without `every` never runs.
#[test]
fn due_drills_run_what_is_due_and_say_when_the_rest_is() {
    let s = scratch("drill_due");
    setup(&s);

    let plan = due(&s, &["--dry-run"]);
    plan.ok();
    assert!(
        plan.stdout
            .contains("due: every (every 90d; never passed a drill)\n"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("not scheduled: manual (no `drill.every`"),
        "{}",
        plan.stdout
    );
    assert!(stored(&s, "every").is_empty(), "a dry run drills nothing");

    // Not interactive: without --yes the injection is not confirmed (exit 5).
    let refused = due(&s, &[]);
    refused.code(5);
    assert!(
        refused
            .stderr
            .contains("pass --yes to proceed without a terminal"),
        "{}",
        refused.stderr
    );

    let first = due(&s, &["--yes"]);
    first.ok();
    assert!(
        first.stdout.contains("drill every: PASSED"),
        "{}",
        first.stdout
    );
    let passed: Vec<_> = stored(&s, "every")
        .into_iter()
        .filter(|r| r["status"] == "passed")
        .collect();
    assert_eq!(passed.len(), 1, "{passed:#?}");
    assert!(
        stored(&s, "manual").is_empty(),
        "no `every`: never run by --due"
    );

    // Not due again for 90 days from the drill that passed.
    let second = due(&s, &["--yes"]);
    second.ok();
    let started: DateTime<Utc> = passed[0]["started_at"].as_str().unwrap().parse().unwrap();
    let next = (started + Duration::days(90)).format("%Y-%m-%d %H:%M:%S");
    assert!(
        second.stdout.contains(&format!(
            "not due: every, next due {next} UTC (every 90d; last passed "
        )),
        "{}",
        second.stdout
    );
    assert!(!second.stdout.contains("drill every:"), "{}", second.stdout);
    assert_eq!(stored(&s, "every").len(), 1, "not due: not drilled");
    let json = s.drp(&[
        "--json",
        "drill",
        "--due",
        "--runbooks",
        "runbooks",
        "--dry-run",
    ]);
    json.ok();
    let rows = json.json()["runbooks"].clone();
    assert_eq!(rows[0]["runbook"], "every", "{rows:#}");
    assert_eq!(rows[0]["due"]["state"], "not_due", "{rows:#}");
    assert_eq!(rows[1]["due"]["state"], "unscheduled", "{rows:#}");

    // Changed (a step's timeout): its pass no longer counts, so it runs again.
    let path = s.path("runbooks/every.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}    timeout: 45s\n")).unwrap();
    let third = due(&s, &["--yes"]);
    third.ok();
    assert!(
        third
            .stdout
            .contains("due: every (changed since its last passed drill, "),
        "{}",
        third.stdout
    );
    assert!(
        third.stdout.contains("drill every: PASSED"),
        "{}",
        third.stdout
    );
    assert_eq!(stored(&s, "every").len(), 2);
    let after = due(&s, &["--dry-run"]);
    assert!(
        after.ok().stdout.contains("not due: every, next due "),
        "{}",
        after.stdout
    );

    // The exit code is the worst of the drills run: a due drill that fails
    // (given as a file beside the folder) makes the batch fail as it does alone.
    s.write(
        "failing.yaml",
        &runbook("failing", "  every: 1d\n", 4).replace("../policy.yaml", "policy.yaml"),
    );
    let alone = s.drp(&["drill", "failing.yaml", "--yes"]);
    assert_ne!(alone.code, 0, "{}", alone.all());
    let batch = due(&s, &["--yes", "failing.yaml"]);
    batch.code(alone.code);
    assert!(batch.stdout.contains("not due: every"), "{}", batch.stdout);
    assert!(
        batch.stdout.contains("drill failing: FAILED"),
        "{}",
        batch.stdout
    );

    // Once `every` has gone by since its last passed drill, it is due again.
    s.write(
        "often.yaml",
        &runbook("often", "  every: 1s\n", 3).replace("../policy.yaml", "policy.yaml"),
    );
    s.drp(&["drill", "--due", "--yes", "often.yaml"]).ok();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let overdue = s.drp(&["drill", "--due", "--dry-run", "often.yaml"]);
    assert!(
        overdue
            .ok()
            .stdout
            .contains("due: often (every 1s; last passed "),
        "{}",
        overdue.stdout
    );
    assert!(
        overdue.stdout.contains(", due since "),
        "{}",
        overdue.stdout
    );
}

/// `drp units`: a service and a daily timer systemd accepts, and a crontab
/// line running the same command, with absolute paths.
#[test]
fn units_run_the_due_drills_daily() {
    let s = scratch("drill_units");
    setup(&s);
    let drp = env!("CARGO_BIN_EXE_drp");
    s.drp(&[
        "units",
        "--runbooks",
        "runbooks",
        "--policy",
        "policy.yaml",
        "--out",
        "units",
        "--bin",
        drp,
    ])
    .ok();
    let service = std::fs::read_to_string(s.path("units/drp-drills.service")).unwrap();
    let timer = std::fs::read_to_string(s.path("units/drp-drills.timer")).unwrap();
    let command = format!(
        "{drp} drill --due --yes --policy {} --runbooks {}",
        s.path("policy.yaml").display(),
        s.path("runbooks").display()
    );
    assert!(
        service.contains(&format!("\nExecStart={command}\n")),
        "{service}"
    );
    assert!(service.contains("\nType=oneshot\n"), "{service}");
    for key in [
        "\nOnCalendar=*-*-* 04:00:00 UTC\n",
        "\nPersistent=true\n",
        "\nRandomizedDelaySec=1h\n",
        "\nWantedBy=timers.target\n",
    ] {
        assert!(timer.contains(key), "{key} in\n{timer}");
    }
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(s.path("units/drp-drills.service"))
        .arg(s.path("units/drp-drills.timer"))
        .output()
        .expect("systemd-analyze (package systemd, installed by tests/services/setup.sh)");
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    let printed = s.drp(&[
        "units",
        "--runbooks",
        "runbooks",
        "--policy",
        "policy.yaml",
        "--bin",
        drp,
    ]);
    printed.ok();
    let line = printed
        .stdout
        .lines()
        .find(|l| !l.starts_with('#') && l.contains(" root "))
        .unwrap_or_else(|| panic!("no crontab line in\n{}", printed.stdout));
    let (when, cron_command) = line.split_once(" root ").unwrap();
    assert_eq!(when, "0 4 * * *");
    assert_eq!(cron_command, command);
    // The command runs as written: nothing is due yet but `every`, which it drills.
    let words: Vec<&str> = cron_command.split_whitespace().collect();
    let ran = crate::harness::Run::from(s.drp_cmd(&[]).args(&words[1..]).output().unwrap());
    ran.ok();
    assert!(ran.stdout.contains("drill every: PASSED"), "{}", ran.stdout);
}
