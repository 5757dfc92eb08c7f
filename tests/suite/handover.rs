//! The handover page: it opens in a browser, names where secrets are kept
//! without their values, and its commands, run literally on a clean folder,
//! restore the export from S3.

use crate::harness::{pg_table_digest, psql, scratch, services};

#[test]
fn the_handover_page_opens_in_chromium_and_its_commands_restore_postgres_from_s3() {
    let s = scratch("handover");
    let db = s.id.clone();
    psql("postgres", &format!("create database {db}"));
    psql(
        &db,
        "create table orders (id int primary key, customer text);
         insert into orders select i, 'Zoé ' || i from generate_series(1, 3000) i;",
    );
    let before = pg_table_digest(&db, "orders");
    let made = s.agent(&[
        "--json",
        "keys",
        "generate",
        "--out",
        s.path("ops.age").to_str().unwrap(),
    ]);
    made.ok();
    let public = made.json()["public"].as_str().unwrap().to_string();
    let p = s.write(
        "policy.yaml",
        &format!(
            "host: db-1\nobjectives: {{rto: 5m, rpo: 30m}}\nkeys: {{recipients: {{ops: {public}}}}}\n{}exports:\n  shop:\n    source: {}\n    targets: [s3, nas]\n    restore_test: {{random_within: 0s}}\n",
            s.targets_yaml(),
            s.pg_source_yaml(&db)
        ),
    );
    let p = p.to_str().unwrap();
    s.agent(&["backup", "--policy", p]).ok();
    s.agent(&[
        "test-restore",
        "--policy",
        p,
        "--identity",
        s.path("ops.age").to_str().unwrap(),
    ])
    .ok();
    let out = s.path("handover");
    s.drp(&["handover", "--policy", p, "--out", out.to_str().unwrap()])
        .ok();
    let md = std::fs::read_to_string(out.join("handover.md")).unwrap();
    // Secrets are named, never written.
    let svc = services();
    for secret in [
        svc.get("DRP_TEST_S3_SECRET"),
        svc.get("DRP_TEST_PG_PASSWORD"),
    ] {
        assert!(!md.contains(secret), "a secret is in the handover page");
    }
    assert!(md.contains("environment variable `TEST_S3_SECRET`"), "{md}");
    assert!(md.contains("| shop |") && md.contains("passed"), "{md}");
    // Stored in the repositories too.
    assert!(s.path("nas/handover/db-1.md").is_file());
    assert!(s.path("nas/handover/db-1.html").is_file());

    // The page opens in a browser.
    let profile = tempfile::tempdir().unwrap();
    let dom = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", out.join("handover.html").display()))
        .output()
        .expect("chromium runs (tests/services/setup.sh installs it)");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("<h3>Restoring `shop` of `db-1` from a bare machine</h3>"),
        "{dom}"
    );

    // Disaster: the database is gone. The page's commands, as written, on a
    // clean folder holding only the identity file, bring it back.
    psql("postgres", &format!("drop database {db} with (force)"));
    let heading = md.find("### Restoring `shop` of `db-1`").unwrap();
    let block = &md[heading..];
    let start = block.find("```sh\n").unwrap() + 6;
    let commands = &block[start..start + block[start..].find("```").unwrap()];
    let clean = tempfile::tempdir().unwrap();
    std::fs::copy(s.path("ops.age"), clean.path().join("ops.age")).unwrap();
    let drp_dir = std::path::Path::new(env!("CARGO_BIN_EXE_drp"))
        .parent()
        .unwrap();
    let run = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", commands])
        .current_dir(clean.path())
        .env(
            "PATH",
            format!("{}:{}", drp_dir.display(), std::env::var("PATH").unwrap()),
        )
        .env("TEST_S3_KEY_ID", svc.get("DRP_TEST_S3_KEY_ID"))
        .env("TEST_S3_SECRET", svc.get("DRP_TEST_S3_SECRET"))
        .env("TEST_PG_PASSWORD", svc.get("DRP_TEST_PG_PASSWORD"))
        .env("DRP_STATE_DIR", clean.path().join("state"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{commands}\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(pg_table_digest(&db, "orders"), before);
    psql("postgres", &format!("drop database {db} with (force)"));
}
