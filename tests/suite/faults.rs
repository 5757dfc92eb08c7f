//! Bad input and faults: each gives a clear message and a non-zero exit,
//! commits nothing half-done and overwrites nothing.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::harness::{Scratch, psql, scratch};

fn sqlite_app(s: &Scratch, rows: usize) -> std::path::PathBuf {
    let db = s.path("app.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("create table t (id integer primary key, v text);")
        .unwrap();
    for i in 0..rows {
        c.execute(
            "insert into t (v) values (?1)",
            [format!("row {i} {}", "x".repeat(i % 50))],
        )
        .unwrap();
    }
    db
}

fn file_digest(p: &std::path::Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

fn points(s: &Scratch, policy: &str) -> usize {
    let listed = s.agent(&["--json", "list", "--policy", policy]);
    listed.json()["points"].as_array().unwrap().len()
}

#[test]
fn one_unreachable_target_does_not_stop_the_other() {
    let s = scratch("partial");
    sqlite_app(&s, 100);
    let policy = s.write(
        "policy.yaml",
        "host: a\ntargets:\n  nas: {kind: local, path: nas}\n  gone:\n    kind: s3\n    bucket: b\n    endpoint: http://127.0.0.1:9\n    region: x\n    access_key_id: {env: TEST_S3_KEY_ID}\n    secret_access_key: {env: TEST_S3_SECRET}\nexports:\n  app:\n    source: {kind: sqlite, path: app.db}\n    targets: [gone, nas]\n",
    );
    let p = policy.to_str().unwrap();
    let run = s.agent(&["backup", "--policy", p]);
    run.code(3);
    assert!(
        run.stdout.contains("committed") && run.stdout.contains("to `nas`"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("target `gone` failed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("127.0.0.1:9"),
        "the message names where: {}",
        run.stderr
    );
    let listed = s.agent(&["--json", "list", "--policy", p, "--from", "nas"]);
    assert_eq!(listed.json()["points"].as_array().unwrap().len(), 1);
}

#[test]
fn wrong_database_credentials_commit_nothing() {
    let s = scratch("creds");
    let svc = crate::harness::services();
    let policy = s.write(
        "policy.yaml",
        &format!(
            "host: a\ntargets:\n  nas: {{kind: local, path: nas}}\nexports:\n  db:\n    source: {{kind: postgres, host: 127.0.0.1, port: {}, user: postgres, database: postgres, password: {{env: WRONG_PW}}}}\n    targets: [nas]\n",
            svc.get("DRP_TEST_PG_PORT")
        ),
    );
    let p = policy.to_str().unwrap();
    let mut cmd = s.agent_cmd(&["backup", "--policy", p]);
    cmd.env("WRONG_PW", "not-the-password");
    let run = crate::harness::Run::from(cmd.output().unwrap());
    run.code(1);
    assert!(
        run.stderr.contains("password authentication failed"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("nothing committed"), "{}", run.stderr);
    assert!(!run.all().contains("not-the-password"));
    assert_eq!(points(&s, p), 0);
}

/// A folder with the PostgreSQL tools, where `pg_dump` is replaced by `script`.
fn broken_pg_bin(s: &Scratch, script: &str) -> std::path::PathBuf {
    let bin = s.path("pgbin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["psql", "pg_dumpall", "pg_restore"] {
        std::os::unix::fs::symlink(format!("/usr/lib/postgresql/15/bin/{tool}"), bin.join(tool))
            .unwrap();
    }
    let dump = bin.join("pg_dump");
    let real = "/usr/lib/postgresql/15/bin/pg_dump";
    std::fs::write(
        &dump,
        format!("#!/bin/sh\n[ \"$1\" = --version ] && exec {real} --version\n{script}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&dump, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn pg_policy(s: &Scratch, db: &str, bin: Option<&std::path::Path>) -> String {
    let svc = crate::harness::services();
    let bin = bin
        .map(|b| format!(", bin_dir: {}", b.display()))
        .unwrap_or_default();
    let policy = s.write(
        "policy.yaml",
        &format!(
            "host: a\n{}exports:\n  db:\n    source: {{kind: postgres, host: 127.0.0.1, port: {}, user: postgres, database: {db}, password: {{env: TEST_PG_PASSWORD}}{bin}}}\n    targets: [nas, s3]\n",
            s.targets_yaml(),
            svc.get("DRP_TEST_PG_PORT")
        ),
    );
    policy.to_str().unwrap().to_string()
}

#[test]
fn a_dump_tool_dying_halfway_commits_nothing_and_keeps_older_points() {
    let s = scratch("dies");
    let db = s.id.clone();
    psql("postgres", &format!("create database {db}"));
    psql(
        &db,
        "create table t as select i, md5(i::text) from generate_series(1, 50000) i",
    );
    let good = pg_policy(&s, &db, None);
    s.agent(&["backup", "--policy", &good]).ok();

    let bin = broken_pg_bin(
        &s,
        "/usr/lib/postgresql/15/bin/pg_dump \"$@\" | head -c 100000\nexit 3",
    );
    let bad = pg_policy(&s, &db, Some(&bin));
    let run = s.agent(&["backup", "--policy", &bad]);
    run.code(1);
    assert!(
        run.stderr.contains("`pg_dump` failed (exit code 3)"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("nothing committed"), "{}", run.stderr);
    assert_eq!(
        points(&s, &bad),
        2,
        "only the earlier point, on both targets"
    );
    s.agent(&["verify", "--policy", &bad]).ok();
    psql("postgres", &format!("drop database {db}"));
}

#[test]
fn an_agent_killed_during_upload_leaves_nothing_visible() {
    let s = scratch("killed");
    let db = s.id.clone();
    psql("postgres", &format!("create database {db}"));
    psql(
        &db,
        "create table t as select i, md5(i::text) || md5((i * 7)::text) as v from generate_series(1, 300000) i",
    );
    // The dump streams its data, then hangs: the agent is mid-upload.
    let bin = broken_pg_bin(
        &s,
        "/usr/lib/postgresql/15/bin/pg_dump \"$@\"\nexec sleep 60",
    );
    let p = pg_policy(&s, &db, Some(&bin));
    let mut child = s
        .agent_cmd(&["-q", "backup", "--policy", &p])
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    // Wait until the data has reached the NAS target (its temporary file).
    while std::fs::read_dir(s.path("nas/.drp-tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
        == 0
    {
        // Generous: the whole suite shares two cores.
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the upload never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    // The orphaned dump tool goes too, as systemd would stop the unit's cgroup.
    let _ = std::process::Command::new("kill")
        .args(["-9", "--", &format!("-{}", child.id())])
        .status();
    assert_eq!(points(&s, &p), 0, "a killed backup must not be listed");
    let manifests = s.path("nas/a/db/manifests");
    assert!(!manifests.exists() || std::fs::read_dir(&manifests).unwrap().count() == 0);

    // The next backup works.
    let good = pg_policy(&s, &db, None);
    s.agent(&["backup", "--policy", &good]).ok();
    assert_eq!(points(&s, &good), 2);
    psql("postgres", &format!("drop database {db}"));
}

#[test]
fn a_corrupted_byte_is_detected_and_never_loaded() {
    let s = scratch("corrupt");
    let db = sqlite_app(&s, 2000);
    let policy = s.write(
        "policy.yaml",
        &format!("host: a\n{}exports:\n  app:\n    source: {{kind: sqlite, path: app.db}}\n    targets: [nas]\n", s.targets_yaml()),
    );
    let p = policy.to_str().unwrap();
    let run = s.agent(&["--json", "backup", "--policy", p]);
    run.ok();
    let manifest = run.json()["backups"][0]["targets"][0]["manifest"].clone();
    let object = manifest["stored"]["object"].as_str().unwrap().to_string();
    let data = s.path(&format!("nas/{object}"));
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&data, &bytes).unwrap();

    let verify = s.agent(&["verify", "--policy", p]);
    verify.code(4);
    assert!(
        verify.stdout.contains(&object),
        "verify names the object: {}",
        verify.stdout
    );
    assert!(verify.stdout.contains("1 failed"), "{}", verify.stdout);

    // The live database changes after the backup; a refused restore must not touch it.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("delete from t where id > 10", [])
        .unwrap();
    let live = file_digest(&db);
    let restore = s.drp(&["restore", "--policy", p, "--export", "app", "--yes"]);
    restore.code(4);
    assert!(restore.stderr.contains(&object), "{}", restore.stderr);
    assert!(
        restore
            .stderr
            .contains(manifest["stored"]["sha256"].as_str().unwrap()),
        "expected digest named: {}",
        restore.stderr
    );
    assert!(restore.stderr.contains("found"), "{}", restore.stderr);
    assert_eq!(
        file_digest(&db),
        live,
        "the destination was changed by a refused restore"
    );
}

#[test]
fn a_truncated_object_and_a_damaged_manifest_are_reported() {
    let s = scratch("truncate");
    sqlite_app(&s, 2000);
    let policy = s.write(
        "policy.yaml",
        &format!("host: a\n{}exports:\n  app:\n    source: {{kind: sqlite, path: app.db}}\n    targets: [nas]\n", s.targets_yaml()),
    );
    let p = policy.to_str().unwrap();
    s.agent(&["backup", "--policy", p]).ok();
    s.agent(&["backup", "--policy", p]).ok();
    let manifests: Vec<_> = std::fs::read_dir(s.path("nas/a/app/manifests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let mut sorted = manifests.clone();
    sorted.sort();
    // Truncate the newest data object, damage the oldest manifest.
    let newest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sorted[1]).unwrap()).unwrap();
    let data = s.path(&format!(
        "nas/{}",
        newest["stored"]["object"].as_str().unwrap()
    ));
    let f = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    f.set_len(f.metadata().unwrap().len() / 2).unwrap();
    std::fs::write(&sorted[0], b"{\"format\": 1, \"id\": ").unwrap();

    let verify = s.agent(&["verify", "--policy", p]);
    verify.code(4);
    assert!(verify.stdout.contains("size expected"), "{}", verify.stdout);
    assert!(
        verify
            .stdout
            .contains(&sorted[0].file_name().unwrap().to_string_lossy().to_string()),
        "{}",
        verify.stdout
    );
    let list = s.agent(&["list", "--policy", p]);
    list.code(4);
    assert!(list.stderr.contains("damaged manifest"), "{}", list.stderr);
}

#[test]
fn restore_never_replaces_without_confirmation() {
    let s = scratch("confirm");
    let db = sqlite_app(&s, 500);
    let policy = s.write(
        "policy.yaml",
        &format!("host: a\n{}exports:\n  app:\n    source: {{kind: sqlite, path: app.db}}\n    targets: [nas]\n", s.targets_yaml()),
    );
    let p = policy.to_str().unwrap();
    s.agent(&["backup", "--policy", p]).ok();
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("insert into t (v) values ('after the backup')", [])
        .unwrap();
    let live = file_digest(&db);
    let run = s.drp(&["restore", "--policy", p, "--export", "app"]);
    run.code(5);
    assert!(
        run.stderr.contains("replaces         SQLite database"),
        "the plan says what is replaced: {}",
        run.stderr
    );
    assert!(run.stderr.contains("data-loss window"), "{}", run.stderr);
    assert_eq!(file_digest(&db), live);
    // With --yes the row written after the backup is gone: the point was restored.
    s.drp(&["restore", "--policy", p, "--export", "app", "--yes"])
        .ok();
    let n: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row(
            "select count(*) from t where v = 'after the backup'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn unknown_export_point_and_missing_repository_are_not_found() {
    let s = scratch("notfound");
    sqlite_app(&s, 10);
    let policy = s.write(
        "policy.yaml",
        &format!("host: a\n{}exports:\n  app:\n    source: {{kind: sqlite, path: app.db}}\n    targets: [nas]\n", s.targets_yaml()),
    );
    let p = policy.to_str().unwrap();
    let run = s.drp(&["restore", "--policy", p, "--export", "app", "--yes"]);
    run.code(6);
    s.agent(&["backup", "--policy", p]).ok();
    let run = s.drp(&["restore", "--policy", p, "--export", "nope"]);
    run.code(6);
    assert!(
        run.stderr.contains("no export `nope`") && run.stderr.contains("app"),
        "{}",
        run.stderr
    );
    let run = s.drp(&[
        "restore",
        "--policy",
        p,
        "--export",
        "app",
        "--point",
        "20200101T000000Z-deadbeef",
    ]);
    run.code(6);
    assert!(
        run.stderr
            .contains("no recovery point `20200101T000000Z-deadbeef`"),
        "{}",
        run.stderr
    );
}

/// Runs a backup of a small SQLite app to the one target `yaml` defines.
fn backup_to(s: &Scratch, target_yaml: &str) -> crate::harness::Run {
    let c = rusqlite::Connection::open(s.path("app.db")).unwrap();
    c.execute_batch("create table if not exists t (v text); insert into t values ('x');")
        .unwrap();
    let p = s.write(
        "policy.yaml",
        &format!(
            "host: a\ntargets:\n  off: {target_yaml}\nexports:\n  app:\n    source: {{kind: sqlite, path: app.db}}\n    targets: [off]\n"
        ),
    );
    s.agent(&["backup", "--policy", p.to_str().unwrap()])
}

#[test]
fn wrong_s3_credentials_are_named_and_commit_nothing() {
    let mut s = scratch("s3creds");
    s.set_env("BAD_SECRET", "definitely-not-the-secret");
    let svc = crate::harness::services();
    let run = backup_to(
        &s,
        &format!(
            "{{kind: s3, bucket: {}, prefix: {}, endpoint: {}, region: garage, access_key_id: {{env: TEST_S3_KEY_ID}}, secret_access_key: {{env: BAD_SECRET}}}}",
            svc.get("DRP_TEST_S3_BUCKET"),
            s.id,
            svc.get("DRP_TEST_S3_ENDPOINT")
        ),
    );
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("target `off`"), "{}", run.stderr);
    assert!(run.stderr.contains("credentials"), "{}", run.stderr);
    assert!(!run.all().contains("definitely-not-the-secret"));
}

#[test]
fn a_missing_secret_variable_is_named_and_nothing_runs() {
    let s = scratch("nosecret");
    let run = backup_to(
        &s,
        "{kind: s3, bucket: b, endpoint: \"http://127.0.0.1:1\", region: r, access_key_id: {env: DRP_NO_SUCH_KEY_ID}, secret_access_key: {env: DRP_NO_SUCH_SECRET}}",
    );
    assert_ne!(run.code, 0, "{}", run.all());
    assert!(run.stderr.contains("DRP_NO_SUCH_KEY_ID"), "{}", run.stderr);
}
