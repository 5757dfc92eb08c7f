//! The README's first command and the command-line contract.

use crate::harness::scratch;

#[test]
fn the_demo_backs_up_verifies_and_restores_the_embedded_default() {
    let s = scratch("demo");
    let run = s.drp(&["demo", "--dir", "demo"]);
    run.ok();
    assert!(
        run.stdout.contains("drill demo-app: PASSED"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("against 5m 0s (met); RPO"),
        "{}",
        run.stdout
    );
    let html = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("HTML report: "))
        .expect("the report path is printed");
    assert!(s.path(html).is_file(), "{html}");
    let n: i64 = rusqlite::Connection::open(s.path("demo/app.db"))
        .unwrap()
        .query_row("select count(*) from orders", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 5000, "the orders the drill deleted are back");
    // The demo leaves a working policy behind.
    let listed = s.agent(&["--json", "list", "--policy", "demo/policy.yaml"]);
    listed.ok();
    let points = listed.json()["points"].as_array().unwrap().clone();
    assert_eq!(points.len(), 1);
    assert_eq!(points[0]["manifest"]["kind"], "sqlite");
}

#[test]
fn json_output_and_exit_codes_for_scripts() {
    let s = scratch("json");
    let run = s.agent(&["--json", "list", "--policy", "missing.yaml"]);
    run.code(1);
    assert!(
        run.json()["error"]
            .as_str()
            .unwrap()
            .contains("missing.yaml")
    );
    let run = s.agent(&["backup"]);
    run.code(2);
    let run = s.drp(&[
        "restore", "--target", "nowhere", "--host", "a", "--export", "x", "--to", "y",
    ]);
    run.code(6);
    assert!(run.stderr.contains("no drp repository"), "{}", run.stderr);
}
