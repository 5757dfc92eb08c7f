//! The README's first command and the command-line contract.

use crate::harness::scratch;

#[test]
fn the_demo_backs_up_verifies_and_restores_the_embedded_default() {
    let s = scratch("demo");
    let run = s.drp(&["demo", "--dir", "demo"]);
    run.ok();
    assert!(
        run.stdout.contains("5000 orders back (expected 5000)"),
        "{}",
        run.stdout
    );
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
