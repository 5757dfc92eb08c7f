//! The handover page: it opens in a browser, names where secrets are kept
//! without their values, and its commands, run literally on a clean folder,
//! restore the export from S3.

use crate::harness::{pg_table_digest, psql, rendered_dom, scratch, services};

/// The shell block under `heading`.
fn commands_of(md: &str, heading: &str) -> String {
    let block = &md[md
        .find(heading)
        .unwrap_or_else(|| panic!("no `{heading}` in {md}"))..];
    let start = block.find("```sh\n").unwrap() + 6;
    block[start..start + block[start..].find("```").unwrap()].to_string()
}

/// Runs `commands` with bash on a clean folder (holding `files`), `drp` on
/// the PATH and `env` set, as a newcomer would on a bare machine.
fn run_on_a_clean_folder(commands: &str, files: &[&std::path::Path], env: &[(&str, &str)]) {
    let clean = tempfile::tempdir().unwrap();
    for f in files {
        std::fs::copy(f, clean.path().join(f.file_name().unwrap())).unwrap();
    }
    let drp_dir = std::path::Path::new(env!("CARGO_BIN_EXE_drp"))
        .parent()
        .unwrap();
    let mut cmd = std::process::Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", commands])
        .current_dir(clean.path())
        .env(
            "PATH",
            format!("{}:{}", drp_dir.display(), std::env::var("PATH").unwrap()),
        )
        .env("DRP_STATE_DIR", clean.path().join("state"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let run = cmd.output().unwrap();
    assert!(
        run.status.success(),
        "{commands}\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}

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
    let dom = rendered_dom(&out.join("handover.html"));
    assert!(
        dom.contains("<h3>Restoring `shop` of `db-1` from `s3`</h3>"),
        "{dom}"
    );

    // Disaster: the database is gone. The page's commands, as written, on a
    // clean folder holding only the identity file, bring it back.
    psql("postgres", &format!("drop database {db} with (force)"));
    let commands = commands_of(&md, "### Restoring `shop` of `db-1` from `s3`");
    run_on_a_clean_folder(
        &commands,
        &[&s.path("ops.age")],
        &[
            ("TEST_S3_KEY_ID", svc.get("DRP_TEST_S3_KEY_ID")),
            ("TEST_S3_SECRET", svc.get("DRP_TEST_S3_SECRET")),
            ("TEST_PG_PASSWORD", svc.get("DRP_TEST_PG_PASSWORD")),
        ],
    );
    assert_eq!(pg_table_digest(&db, "orders"), before);
    psql("postgres", &format!("drop database {db} with (force)"));
}

#[test]
fn the_handover_of_the_readme_example_policy_restores_its_postgres_database_from_s3() {
    let mut s = scratch("handshop");
    s.shop_env();
    let db = s.id.clone();
    psql("postgres", &format!("create database {db}"));
    psql(
        &db,
        "create table orders (id int primary key, total numeric(10,2));
         insert into orders select i, i * 2.5 from generate_series(1, 2000) i;",
    );
    let before = pg_table_digest(&db, "orders");
    let policy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/shop.yaml");
    let p = policy.to_str().unwrap();
    s.agent(&["backup", "--policy", p, "--export", "shop-db"])
        .ok();
    let out = s.path("handover");
    s.drp(&["handover", "--policy", p, "--out", out.to_str().unwrap()]);
    let md = std::fs::read_to_string(out.join("handover.md")).unwrap();
    assert!(
        md.contains("environment variable `DRP_S3_SECRET_ACCESS_KEY`"),
        "{md}"
    );
    let svc = services();
    assert!(!md.contains(svc.get("DRP_TEST_S3_SECRET")));
    psql("postgres", &format!("drop database {db} with (force)"));
    run_on_a_clean_folder(
        &commands_of(&md, "### Restoring `shop-db` of `shop-1` from `offsite`"),
        &[],
        &[
            ("DRP_S3_ACCESS_KEY_ID", svc.get("DRP_TEST_S3_KEY_ID")),
            ("DRP_S3_SECRET_ACCESS_KEY", svc.get("DRP_TEST_S3_SECRET")),
            ("SHOP_PG_PASSWORD", svc.get("DRP_TEST_PG_PASSWORD")),
        ],
    );
    assert_eq!(pg_table_digest(&db, "orders"), before);
    psql("postgres", &format!("drop database {db} with (force)"));
}

/// An incremental tree's section gives the restic CLI's commands (drp's own
/// restore reads such a point only through its policy), and they bring the
/// tree back on a bare machine with nothing but restic and the key.
#[test]
fn the_handover_of_an_incremental_tree_restores_it_with_the_restic_cli_alone() {
    let s = scratch("handinc");
    let tree = s.path("site");
    std::fs::create_dir_all(tree.join("uploads/2026")).unwrap();
    for i in 0..40 {
        std::fs::write(
            tree.join(format!("uploads/2026/photo-{i}.jpg")),
            format!("photo {i} ").repeat(200 + i),
        )
        .unwrap();
    }
    std::fs::write(tree.join("index.html"), "<h1>café</h1>").unwrap();
    std::os::unix::fs::symlink("index.html", tree.join("home.html")).unwrap();
    let key = s.write("restic.key", "correct horse battery staple\n");
    let policy = s.write(
        "policy.yaml",
        &format!(
            "host: web-1\ntargets:\n  nas: {{kind: local, path: {}}}\nexports:\n  site:\n    source:\n      kind: directory\n      path: {}\n      mode: incremental\n      key: {{file: restic.key}}\n    schedule: '0 3 * * *'\n    targets: [nas]\n",
            s.path("nas").display(),
            tree.display()
        ),
    );
    let p = policy.to_str().unwrap();
    s.agent(&["backup", "--policy", p, "--export", "site"]).ok();
    let before = crate::harness::tree_digest(&tree);
    let out = s.path("handover");
    s.drp(&["handover", "--policy", p, "--out", out.to_str().unwrap()]);
    let md = std::fs::read_to_string(out.join("handover.md")).unwrap();
    let commands = commands_of(&md, "### Restoring `site` of `web-1` from `nas`");
    assert!(commands.contains("restic -r"), "{commands}");
    assert!(!commands.contains("drp restore"), "{commands}");
    assert!(
        !md.contains("correct horse"),
        "the key's value is on the page"
    );
    std::fs::remove_dir_all(&tree).unwrap();
    // The key file, as the page says: copied from where the host keeps it.
    run_on_a_clean_folder(&commands, &[&key], &[]);
    let restored = std::path::PathBuf::from(format!("{}.restored", tree.display()));
    assert_eq!(crate::harness::tree_digest(&restored), before);
}
