//! Drill verdicts: what makes a drill pass, miss its objectives or fail, the
//! exit code that says so, and the stored record when a drill stops early.
//! SQLite sources and a local NAS keep these fast.

use chrono::{DateTime, Utc};

use crate::harness::{Scratch, scratch};

fn app(s: &Scratch) {
    let c = rusqlite::Connection::open(s.path("app.db")).unwrap();
    c.execute_batch(
        "create table orders (id integer primary key, item text);
         insert into orders (item) values ('a'), ('b'), ('c');",
    )
    .unwrap();
}

/// A policy with these objectives over the app and a NAS, and a runbook with
/// these `drill` settings and steps.
fn setup(s: &Scratch, objectives: &str, drill: &str, steps: &str) -> String {
    app(s);
    s.write(
        "policy.yaml",
        &format!(
            "host: v\nobjectives: {{{objectives}}}\ntargets:\n  nas: {{kind: local, path: nas}}\nexports:\n  app:\n    source: {{kind: sqlite, path: app.db}}\n    targets: [nas]\n  beats:\n    source: {{kind: sqlite, path: missing-folder/beats.db}}\n    targets: [nas]\n"
        ),
    );
    s.write(
        "runbook.yaml",
        &format!("name: verdict\npolicy: policy.yaml\n{drill}steps:\n{steps}"),
    )
    .display()
    .to_string()
}

const RESTORE_AND_VERIFY: &str = "  - name: restore\n    phase: restore\n    action: {kind: restore_backup, export: app}\n  - name: orders are back\n    phase: verify\n    action: {kind: sql, export: app, query: \"select count(*) from orders\", expect: {value: \"3\"}}\n";

/// The records stored for the runbook on the NAS.
fn stored_reports(s: &Scratch) -> Vec<serde_json::Value> {
    let dir = s.path("nas/reports/verdict");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no report stored in {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

#[test]
fn a_stale_point_misses_the_rpo() {
    let s = scratch("stale_point");
    let rb = setup(
        &s,
        "rto: 5m, rpo: 1s",
        "drill:\n  settle: 3s\n  inject:\n    - name: break\n      action: {kind: sql, export: app, query: \"delete from orders\"}\n",
        RESTORE_AND_VERIFY,
    );
    // The point is older than the objective by the time the failure comes.
    s.agent(&["backup", "--policy", "policy.yaml", "--export", "app"])
        .ok();
    let r = s.drp(&["--json", "drill", &rb, "--yes"]);
    r.code(8);
    let report = r.json();
    assert_eq!(report["status"], "failed", "{report:#}");
    assert_eq!(report["failure_kind"], "rpo_missed", "{report:#}");
    assert_eq!(report["rpo"]["met"], false);
    assert_eq!(report["rto"]["met"], true);
    assert!(report["rpo"]["measured_seconds"].as_f64().unwrap() > 1.0);
    let why = report["failure"].as_str().unwrap();
    assert!(why.starts_with("RPO objective missed: "), "{why}");
    let md = s.drp(&["drill", &rb, "--yes"]);
    md.code(8);
    assert!(
        md.stdout.contains("(MISSED)") && md.stdout.contains("why: RPO objective missed"),
        "{}",
        md.stdout
    );
}

#[test]
fn a_slow_step_misses_the_rto() {
    let s = scratch("slow_step");
    let rb = setup(
        &s,
        "rto: 1s, rpo: 30m",
        "drill:\n  backup_first: true\n  settle: 0s\n  inject:\n    - name: break\n      action: {kind: sql, export: app, query: \"delete from orders\"}\n",
        &format!(
            "{RESTORE_AND_VERIFY}  - name: the app takes its time\n    phase: verify\n    action: {{kind: wait, duration: 2s}}\n"
        ),
    );
    let r = s.drp(&["--json", "drill", &rb, "--yes"]);
    r.code(8);
    let report = r.json();
    assert_eq!(report["failure_kind"], "rto_missed", "{report:#}");
    assert_eq!(report["rto"]["met"], false);
    assert_eq!(report["rpo"]["met"], true, "{report:#}");
    let why = report["failure"].as_str().unwrap();
    assert!(
        why.starts_with("RTO objective missed: recovered after "),
        "{why}"
    );
    let stored = stored_reports(&s);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["failure_kind"], "rto_missed");
}

#[test]
fn a_drill_that_restores_nothing_does_not_meet_the_rpo() {
    let s = scratch("nothing_restored");
    let rb = setup(
        &s,
        "rto: 5m, rpo: 30m",
        "drill:\n  settle: 0s\n  inject:\n    - name: nothing breaks\n      action: {kind: command, run: \"true\"}\n",
        "  - name: the app answers\n    phase: verify\n    action: {kind: sql, export: app, query: \"select count(*) from orders\", expect: {value: \"3\"}}\n",
    );
    let r = s.drp(&["--json", "drill", &rb, "--yes"]);
    r.code(8);
    let report = r.json();
    assert_eq!(report["status"], "failed", "{report:#}");
    assert_eq!(report["failure_kind"], "nothing_restored", "{report:#}");
    assert_eq!(report["rpo"]["met"], false);
    assert_eq!(report["rpo"]["measured_seconds"], serde_json::Value::Null);
    assert!(
        report["failure"]
            .as_str()
            .unwrap()
            .contains("nothing was restored"),
        "{report:#}"
    );
}

#[test]
fn an_error_before_the_steps_leaves_a_final_failed_record() {
    let s = scratch("early_error");
    // The heartbeat's database cannot be opened: its folder does not exist.
    let rb = setup(
        &s,
        "rto: 5m, rpo: 30m",
        "heartbeat:\n  export: beats\n  interval: 1s\ndrill:\n  settle: 0s\n  inject:\n    - name: break\n      action: {kind: sql, export: app, query: \"delete from orders\"}\n",
        RESTORE_AND_VERIFY,
    );
    s.agent(&["backup", "--policy", "policy.yaml", "--export", "app"])
        .ok();
    let r = s.drp(&["drill", &rb, "--yes"]);
    r.code(1);
    let stored = stored_reports(&s);
    assert_eq!(stored.len(), 1, "{stored:#?}");
    let report = &stored[0];
    assert_eq!(report["status"], "failed", "{report:#}");
    assert_eq!(report["failure_kind"], "setup");
    assert!(report["ended_at"].is_string());
    assert!(
        report["failure"]
            .as_str()
            .unwrap()
            .starts_with("the run stopped before its steps: "),
        "{report:#}"
    );
    // Nothing was injected: the orders are still there.
    let n: i64 = rusqlite::Connection::open(s.path("app.db"))
        .unwrap()
        .query_row("select count(*) from orders", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 3);
    // And the compliance report counts it as a failed drill, not interrupted.
    let c = s
        .drp(&["--json", "report", "--policy", "policy.yaml"])
        .json();
    assert_eq!(c["runbooks"][0]["interrupted"], 0, "{c:#}");
}

#[test]
fn restore_before_an_instant_excludes_a_point_consistent_exactly_then() {
    let s = scratch("before_boundary");
    setup(&s, "rto: 5m, rpo: 30m", "", RESTORE_AND_VERIFY);
    s.agent(&["backup", "--policy", "policy.yaml", "--export", "app"])
        .ok();
    let listed = s
        .agent(&["--json", "list", "--policy", "policy.yaml"])
        .json();
    let point = &listed["points"][0]["manifest"];
    let at: DateTime<Utc> = point["consistency_time"].as_str().unwrap().parse().unwrap();
    let restore = |before: DateTime<Utc>| {
        s.agent(&[
            "--json",
            "restore",
            "--policy",
            "policy.yaml",
            "--export",
            "app",
            "--to",
            "copy.db",
            "--dry-run",
            "--before",
            &before.to_rfc3339(),
        ])
    };
    restore(at).code(6);
    let later = restore(at + chrono::Duration::microseconds(1));
    later.ok();
    assert_eq!(later.json()["plan"]["point"], point["id"]);
}

/// A drill proves the runbook it ran: once the runbook changes, `drp
/// report` says so and exits 8 until a drill of the new version passes. A
/// runbook with `drill.every` that has never passed a drill is overdue.
#[test]
fn a_changed_runbook_shows_changed_since_its_last_drill_and_an_undrilled_one_is_overdue() {
    let s = scratch("changed_since");
    let drill = "drill:\n  every: 90d\n  settle: 0s\n  inject:\n    - name: break\n      action: {kind: sql, export: app, query: \"delete from orders\"}\n";
    let rb = setup(&s, "rto: 5m, rpo: 30m", drill, RESTORE_AND_VERIFY);
    // Only the app: the report's exit then speaks of the drills alone.
    let policy = std::fs::read_to_string(s.path("policy.yaml")).unwrap();
    s.write("policy.yaml", policy.split("  beats:").next().unwrap());
    s.agent(&["backup", "--policy", "policy.yaml", "--export", "app"])
        .ok();
    s.drp(&["drill", &rb, "--yes"]).ok();
    let report = || {
        s.drp(&[
            "--json",
            "report",
            "--policy",
            "policy.yaml",
            "--runbooks",
            s.path("").to_str().unwrap(),
        ])
    };
    let r = report();
    r.ok();
    let c = r.json();
    assert!(c.get("changed_since_drill").is_none(), "{c:#}");
    assert!(c.get("overdue").is_none(), "{c:#}");

    // The runbook changes (a step's timeout): its pass no longer counts.
    let text = std::fs::read_to_string(&rb).unwrap();
    std::fs::write(&rb, format!("{text}    timeout: 45s\n")).unwrap();
    let r = report();
    r.code(8);
    assert_eq!(
        r.json()["changed_since_drill"],
        serde_json::json!(["verdict"])
    );
    let md = s.drp(&[
        "report",
        "--policy",
        "policy.yaml",
        "--runbooks",
        s.path("").to_str().unwrap(),
    ]);
    assert!(
        md.stdout
            .contains("**Changed since its last drill** (the runbook, its policy or its inventory; that pass no longer counts): verdict"),
        "{}",
        md.stdout
    );
    let check = s.drp(&["check", &rb]);
    assert!(
        check.stdout.contains("changed since its last drill ("),
        "{}",
        check.stdout
    );
    // A drill of the new version proves it again.
    s.agent(&["backup", "--policy", "policy.yaml", "--export", "app"])
        .ok();
    s.drp(&["drill", &rb, "--yes"]).ok();
    report().ok();
    let check = s.drp(&["check", &rb]);
    assert!(!check.stdout.contains("changed since"), "{}", check.stdout);

    // A runbook that must be drilled every 30 days and never was.
    s.write(
        "never.yaml",
        &std::fs::read_to_string(&rb)
            .unwrap()
            .replace("name: verdict", "name: never")
            .replace("every: 90d", "every: 30d"),
    );
    let r = report();
    r.code(8);
    let c = r.json();
    assert_eq!(c["not_drilled"], serde_json::json!(["never"]), "{c:#}");
    assert_eq!(
        c["overdue"],
        serde_json::json!(["never (every 30d; last passed never)"]),
        "{c:#}"
    );
}
