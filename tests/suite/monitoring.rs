//! The monitoring kit in `deploy/monitoring`: alert rules that Prometheus's
//! own tool accepts and whose unit tests pass, and a dashboard and rules
//! that name only metrics the agent really exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::scratch;

fn kit(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/monitoring")
        .join(rel)
}

/// An SQLite database with one row.
fn sqlite_db(path: &Path) {
    let out = Command::new("sqlite3")
        .arg(path)
        .arg("create table t (x); insert into t values (1);")
        .status()
        .unwrap();
    assert!(out.success());
}

/// The families only an archiving cluster exports.
pub fn is_archive_metric(name: &str) -> bool {
    name.starts_with("drp_wal_") || name == "drp_export_recoverable_until_timestamp_seconds"
}

/// Every metric name the kit's dashboard and rules use.
pub fn kit_metrics() -> BTreeSet<String> {
    [
        "grafana-dashboard.json",
        "drp-alerts.yml",
        "drp-alerts.test.yml",
    ]
    .iter()
    .flat_map(|f| metric_names(&std::fs::read_to_string(kit(f)).unwrap()))
    .collect()
}

/// Every `drp_…` metric name in `text`.
pub fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("drp_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        out.insert(name);
    }
    out
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    for args in [
        vec!["check", "rules", "drp-alerts.yml"],
        vec!["test", "rules", "drp-alerts.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(kit(""))
            .output()
            .expect("promtool (Debian's prometheus package; tests/services/setup.sh installs it)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_dashboard_and_the_alerts_use_only_metrics_the_agent_exports() {
    let s = scratch("monitoring");
    // An export backed up and restore-tested, a snapshot taken and one that
    // failed, a restored standby looked at. (The WAL families need a live
    // archiving cluster: `archiving::an_archiving_cluster_exports_every_wal_metric_the_monitoring_kit_uses`.)
    std::fs::create_dir_all(s.path("site")).unwrap();
    std::fs::write(s.path("site/index.html"), "ok").unwrap();
    sqlite_db(&s.path("app.db"));
    let p = s.write(
        "policy.yaml",
        "host: mon-1\nobjectives: {rpo: 30m}\nmetrics: {textfile: drp.prom}\ntargets:\n  nas: {kind: local, path: nas}\nexports:\n  app:\n    source: {kind: sqlite, path: app.db}\n    targets: [nas]\n    restore_test: {random_within: 0s, checks: [{sql: \"select count(*) from t\", expect: \"1\"}]}\n  copy:\n    source: {kind: sqlite, path: copy.db}\n    targets: [nas]\nstandby:\n  app-copy: {of: {host: mon-0, export: app}, into: copy}\nsnapshots:\n  site: {kind: directory, path: site, targets: [nas]}\n  gone: {kind: directory, path: no-such-folder, targets: [nas]}\nwatch:\n  web:\n    check: {kind: tcp, address: '127.0.0.1:1'}\n    fall: 1\n    ladder: [{restart: {command: [sh, -c, 'exit 3']}}]\n",
    );
    let p = p.to_str().unwrap();
    s.agent(&["backup", "--policy", p, "--export", "app"]).ok();
    s.agent(&["test-restore", "--policy", p, "--export", "app"])
        .ok();
    s.agent(&[
        "snapshot", "create", "--policy", p, "--change", "CHG-1", "--reason", "deploy",
    ]);
    // The standby never refreshed yet: looked at, it says how old its point is.
    s.agent(&["standby", "status", "--policy", p, "app-copy"]);
    // A watched service that is down: the watchdog tries its restart once.
    s.agent(&["watch", "--policy", p, "--once"]).ok();
    let exported = metric_names(&std::fs::read_to_string(s.path("drp.prom")).unwrap());
    for family in [
        "drp_watch_check_up",
        "drp_watch_stopped",
        "drp_watch_paused",
        "drp_watch_escalations_total",
        "drp_standby_",
        "drp_export_",
        "drp_snapshot_last_success",
        "drp_snapshot_last_failure",
    ] {
        assert!(
            exported.iter().any(|n| n.starts_with(family)),
            "the run exported no {family} metric: {exported:?}"
        );
    }
    for file in [
        "grafana-dashboard.json",
        "drp-alerts.yml",
        "drp-alerts.test.yml",
    ] {
        let text = std::fs::read_to_string(kit(file)).unwrap();
        let used: BTreeSet<String> = metric_names(&text)
            .into_iter()
            .filter(|n| !is_archive_metric(n))
            .collect();
        assert!(!used.is_empty(), "{file} names no metric");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} names metrics the agent does not export: {unknown:?} (it exports {exported:?})"
        );
    }
    // The dashboard is JSON Grafana can import: panels with PromQL targets.
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(kit("grafana-dashboard.json")).unwrap())
            .unwrap();
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for panel in panels {
        assert!(
            !panel["targets"][0]["expr"].as_str().unwrap().is_empty(),
            "{panel}"
        );
    }
}

#[test]
fn each_run_pings_its_dead_mans_switch_at_start_and_with_its_outcome() {
    let s = scratch("ping");
    let hc = crate::receivers::http_sink(false);
    let check = format!("{}/b7e1c9-check", hc.url);
    s.write("ping-url", &check);
    sqlite_db(&s.path("app.db"));
    let p = s.write(
        "policy.yaml",
        "host: hc-1\ntargets:\n  nas: {kind: local, path: nas}\nexports:\n  app:\n    source: {kind: sqlite, path: app.db}\n    targets: [nas]\n    ping: {url: {file: ping-url}}\n",
    );
    let p = p.to_str().unwrap();
    let ok = s.agent(&["backup", "--policy", p]);
    ok.ok();
    // The source gone: the run fails, and says so.
    std::fs::remove_file(s.path("app.db")).unwrap();
    let failed = s.agent(&["backup", "--policy", p]);
    failed.code(1);
    // The NAS not mounted (no repository there): the run stops before it
    // starts a backup, and still tells the switch.
    sqlite_db(&s.path("app.db"));
    std::fs::remove_file(s.path("nas/drp-repository.json")).unwrap();
    let unmounted = s.agent(&["backup", "--policy", p]);
    unmounted.code(6);
    let path = check
        .split_once("127.0.0.1")
        .unwrap()
        .1
        .split_once('/')
        .unwrap()
        .1;
    let requests = hc.requests.lock().unwrap().clone();
    assert_eq!(
        requests,
        [
            format!("POST /{path}/start"),
            format!("POST /{path}"),
            format!("POST /{path}/start"),
            format!("POST /{path}/fail"),
            format!("POST /{path}/start"),
            format!("POST /{path}/fail"),
        ]
    );
    let bodies = hc.bodies.lock().unwrap().clone();
    assert!(
        bodies[1].contains("app"),
        "the success ping says what ran: {bodies:?}"
    );
    assert!(
        bodies[3].contains("app.db") || bodies[3].to_lowercase().contains("fail"),
        "{bodies:?}"
    );
    assert!(bodies[5].contains("repository"), "{bodies:?}");
    for run in [&ok, &failed, &unmounted] {
        assert!(
            !run.all().contains("b7e1c9"),
            "the check's token is never shown"
        );
    }
}
