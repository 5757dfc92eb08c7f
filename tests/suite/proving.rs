//! Restore tests: points restored into throwaway instances drp starts and
//! removes (never the live service), checked, recorded; a corrupt point
//! fails its test, exits 4 and notifies.

use std::path::Path;

use crate::harness::{Run, Scratch, pg_table_digest, psql, scratch};

/// `test-restore --json` with its temporary files in `tmp`.
fn test_restore(s: &Scratch, policy: &str, tmp: &Path) -> Run {
    let mut cmd = s.agent_cmd(&["--json", "test-restore", "--policy", policy]);
    cmd.env("TMPDIR", tmp);
    Run::from(cmd.output().unwrap())
}

/// What is left in `dir` (the agent's temporary folder).
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Processes whose command line names `dir`: scratch servers still running.
fn processes_in(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&dir))
        .collect()
}

fn databases(like: &str) -> String {
    psql(
        "postgres",
        &format!(
            "select string_agg(datname, ',' order by datname) from pg_database where datname like '{like}%'"
        ),
    )
}

#[test]
fn a_restore_test_loads_a_private_server_checks_it_and_never_touches_the_live_database() {
    let s = scratch("provepg");
    let db = s.id.clone();
    let owner = format!("{db}_owner");
    psql("postgres", &format!("create database {db}"));
    psql(
        &db,
        &format!(
            "do $$ begin create role {owner}; exception when duplicate_object then null; end $$;
             create table orders (id int primary key, customer text not null, total numeric(10,2));
             alter table orders owner to {owner};
             insert into orders select i, 'Zoé ' || i || ' 日本', i * 1.5 from generate_series(1, 5000) i;
             create table audit (at timestamptz default now(), what text);
             create function log_order() returns trigger language plpgsql as $f$ begin insert into audit (what) values ('order ' || new.id); return new; end $f$;
             create trigger orders_audit after insert on orders for each row execute function log_order();
             select lo_from_bytea(0, 'a large object');"
        ),
    );
    let before = pg_table_digest(&db, "orders");
    let p = s.write(
        "policy.yaml",
        &format!(
            "host: db-1\n{}exports:\n  shop:\n    source: {}\n    targets: [nas, s3]\n    restore_test:\n      checks:\n        - {{sql: \"select count(*) >= 5000 from orders\", expect: \"t\"}}\n        - {{sql: \"select tableowner from pg_tables where tablename = 'orders'\", expect: \"{owner}\"}}\n        - {{sql: \"select count(*) from pg_trigger where tgname = 'orders_audit'\", expect: \"1\"}}\n        - {{sql: \"select count(*) from pg_largeobject_metadata\", expect: \"1\"}}\n",
            s.targets_yaml(),
            s.pg_source_yaml(&db)
        ),
    );
    let p = p.to_str().unwrap();
    s.agent(&["backup", "--policy", p]).ok();
    // Rows written after the point, and a second point: the test takes both.
    psql(&db, "insert into orders values (5001, 'after', 1)");
    s.agent(&["backup", "--policy", p]).ok();
    let live = pg_table_digest(&db, "orders");
    assert_ne!(live, before);

    let tmp = s.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let run = test_restore(&s, p, &tmp);
    run.ok();
    let tests = run.json()["tests"].as_array().unwrap().clone();
    assert_eq!(tests.len(), 2, "the newest and one at random: {tests:#?}");
    let newest = &tests[0];
    assert_eq!(newest["passed"], true, "{newest:#}");
    let checks = newest["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 5, "{checks:#?}");
    assert!(checks.iter().all(|c| c["passed"] == true), "{checks:#?}");
    let older = &tests[1];
    assert_eq!(older["passed"], true, "{older:#}");
    assert!(newest["restore_bytes_per_second"].as_f64().unwrap() > 0.0);
    assert!(newest["load_seconds"].as_f64().unwrap() > 0.0);

    // Recorded on both targets; the live database, untouched and alone.
    let id = newest["id"].as_str().unwrap();
    assert!(s.path(&format!("nas/db-1/shop/tested/{id}.json")).is_file());
    assert_eq!(pg_table_digest(&db, "orders"), live);
    assert_eq!(
        databases(&db),
        db,
        "a database was created on the live server"
    );
    assert_eq!(
        leftovers(&tmp),
        Vec::<String>::new(),
        "the scratch folders are left"
    );

    // status predicts the newest point's restore from the measured rate.
    let status = s.agent(&["--json", "status", "--policy", p]);
    let tested = status.json()["exports"][0].clone();
    assert_eq!(tested["last_restore_test"]["passed"], true, "{tested:#}");
    // The rate of the most recent test (the older point, tested second).
    let rate = older["raw_bytes"].as_f64().unwrap()
        / (older["receive_seconds"].as_f64().unwrap() + older["load_seconds"].as_f64().unwrap());
    let predicted = tested["predicted_restore"]["seconds"].as_f64().unwrap();
    let newest_raw = tested["predicted_restore"]["raw_bytes"].as_f64().unwrap();
    assert!(
        (predicted - newest_raw / rate).abs() < 1e-6 * predicted.max(1.0),
        "{tested:#}"
    );
    assert_eq!(tested["restore_test_overdue"], false);

    // drp report shows it per export, as stored in the repositories.
    let report = s.drp(&["--json", "report", "--policy", p]);
    report.ok();
    let e = report.json()["exposure"][0].clone();
    assert_eq!(e["last_restore_test"]["passed"], true, "{e:#}");
    assert!(e["last_restore_test"]["at"].is_string(), "{e:#}");
    let reported = e["predicted_restore"]["seconds"].as_f64().unwrap();
    assert!(
        (reported - predicted).abs() < 1e-6 * predicted.max(1.0),
        "{e:#} vs {predicted}"
    );
    let md = s.drp(&["report", "--policy", p]);
    assert!(md.stdout.contains("## Per export"), "{}", md.stdout);
    // drp check predicts the same from the repositories.
    let check = s.drp(&["--json", "check", p]);
    let checked = check.json()["policies"][0]["predicted_restore"][0]["prediction"]["seconds"]
        .as_f64()
        .unwrap();
    assert!(
        (checked - predicted).abs() < 1e-6 * predicted.max(1.0),
        "{} vs {predicted}",
        check.stdout
    );
    assert_eq!(
        processes_in(&tmp),
        Vec::<String>::new(),
        "a scratch server is still running"
    );
}

#[test]
fn a_corrupt_point_fails_its_restore_test_with_exit_4_is_recorded_and_notified() {
    let s = scratch("provecorrupt");
    let hook = crate::receivers::http_sink(false);
    let db = s.path("app.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "create table t (v text);
         with recursive n(i) as (select 1 union all select i + 1 from n where i < 2000)
         insert into t select 'row ' || i from n;",
    )
    .unwrap();
    drop(c);
    let p = s.write(
        "policy.yaml",
        &format!(
            "host: app-1\nmetrics: {{textfile: drp.prom}}\nnotify: {{webhook: {{url: \"{}\"}}}}\ntargets:\n  nas: {{kind: local, path: nas}}\nexports:\n  app:\n    source: {{kind: sqlite, path: app.db}}\n    targets: [nas]\n    restore_test:\n      random_within: 0s\n      checks:\n        - {{sql: \"select count(*) from t\", expect: \"2000\"}}\n",
            hook.url
        ),
    );
    let p = p.to_str().unwrap();
    let point = s.agent(&["--json", "backup", "--policy", p]);
    point.ok();
    let manifest = point.json()["backups"][0]["targets"][0]["manifest"].clone();
    // The schedule runs it (never tested: due), once.
    let scheduled = s.agent(&["run", "--due", "--policy", p]);
    scheduled.ok();
    let line = format!(
        "app: restore test of {} passed",
        manifest["id"].as_str().unwrap()
    );
    assert!(scheduled.stdout.contains(&line), "{}", scheduled.stdout);
    let again = s.agent(&["run", "--due", "--policy", p]);
    assert!(!again.stdout.contains("restore test"), "{}", again.stdout);
    assert!(
        hook.bodies.lock().unwrap().is_empty(),
        "a passing test notified"
    );
    let prom = std::fs::read_to_string(s.path("drp.prom")).unwrap_or_default();
    assert!(
        prom.contains("drp_export_last_restore_test_result{host=\"app-1\",export=\"app\"} 1"),
        "{prom}"
    );

    // One byte of the stored point flipped.
    let object = s
        .path("nas")
        .join(manifest["stored"]["object"].as_str().unwrap());
    let mut bytes = std::fs::read(&object).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&object, bytes).unwrap();
    let run = s.agent(&["--json", "test-restore", "--policy", p]);
    run.code(4);
    let t = &run.json()["tests"][0];
    assert_eq!(t["passed"], false);
    assert!(
        t["error"]
            .as_str()
            .unwrap()
            .contains("integrity check failed"),
        "{t:#}"
    );
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(s.path(&format!(
            "nas/app-1/app/tested/{}.json",
            manifest["id"].as_str().unwrap()
        )))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(record["passed"], false);
    let prom = std::fs::read_to_string(s.path("drp.prom")).unwrap();
    assert!(
        prom.contains("drp_export_last_restore_test_result{host=\"app-1\",export=\"app\"} 0"),
        "{prom}"
    );
    let bodies = hook.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert!(
        bodies[0].contains("restore test") && bodies[0].contains("integrity check failed"),
        "{}",
        bodies[0]
    );
}

#[test]
fn a_restore_test_killed_midway_is_cleaned_up_by_the_next_one() {
    let s = scratch("provekill");
    let db = s.id.clone();
    psql("postgres", &format!("create database {db}"));
    psql(
        &db,
        "create table big (id bigint primary key, payload text);
         insert into big select i, md5(i::text) || md5((i * 7)::text) from generate_series(1, 600000) i;",
    );
    let p = s.write(
        "policy.yaml",
        &format!(
            "host: db-1\n{}exports:\n  big:\n    source: {}\n    targets: [nas]\n    restore_test: {{random_within: 0s}}\n",
            s.targets_yaml(),
            s.pg_source_yaml(&db)
        ),
    );
    let p = p.to_str().unwrap();
    s.agent(&["backup", "--policy", p]).ok();
    let tmp = s.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();

    // Killed once its private server runs and the load has begun.
    let mut cmd = s.agent_cmd(&["test-restore", "--policy", p]);
    cmd.env("TMPDIR", &tmp)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let started = std::time::Instant::now();
    while !processes_in(&tmp).iter().any(|c| c.contains("pg_restore")) {
        assert!(started.elapsed().as_secs() < 60, "the load never started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the test ended before it was killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        leftovers(&tmp).len(),
        1,
        "the killed test left nothing to clean"
    );

    // The next test stops the server left behind and removes its folder.
    let again = test_restore(&s, p, &tmp);
    again.ok();
    assert_eq!(again.json()["tests"][0]["passed"], true);
    let started = std::time::Instant::now();
    while !processes_in(&tmp).is_empty() && started.elapsed().as_secs() < 10 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(leftovers(&tmp), Vec::<String>::new());
    assert_eq!(processes_in(&tmp), Vec::<String>::new());
}

#[test]
fn a_mariadb_restore_test_loads_a_private_server_and_never_touches_the_live_database() {
    let s = scratch("provemy");
    let db = s.id.clone();
    crate::harness::mariadb(None, &format!("create database {db} character set utf8mb4"));
    crate::harness::mariadb(
        Some(&db),
        "create table accounts (id int primary key auto_increment, name varchar(100), balance decimal(12,2));
         create table audit (id int primary key auto_increment, account_id int);
         create trigger accounts_audit after update on accounts for each row insert into audit (account_id) values (new.id);
         create view rich as select id, name from accounts where balance > 1000;
         insert into accounts (name, balance) select concat('kōnto-', seq), seq * 3.25 from seq_1_to_1001;",
    );
    let live = || crate::harness::mariadb(Some(&db), "select count(*), sum(balance) from accounts");
    let before = live();
    let p = s.write(
        "policy.yaml",
        &format!(
            "host: db-1\n{}exports:\n  crm:\n    source: {}\n    targets: [nas]\n    restore_test:\n      random_within: 0s\n      checks:\n        - {{sql: \"select count(*) from accounts where name like 'kōnto-%'\", expect: \"1001\"}}\n        - {{sql: \"select count(*) from information_schema.triggers where trigger_schema = database()\", expect: \"1\"}}\n",
            s.targets_yaml(),
            s.my_source_yaml(&db)
        ),
    );
    let p = p.to_str().unwrap();
    s.agent(&["backup", "--policy", p]).ok();
    let tmp = s.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let run = test_restore(&s, p, &tmp);
    run.ok();
    let t = &run.json()["tests"][0];
    assert_eq!(t["passed"], true, "{t:#}");
    assert_eq!(t["checks"].as_array().unwrap().len(), 3, "{t:#}");
    assert_eq!(live(), before);
    let copies = crate::harness::mariadb(
        None,
        &format!("select count(*) from information_schema.schemata where schema_name like '{db}%'"),
    );
    assert_eq!(copies, "1", "a database was added to the live server");
    assert_eq!(leftovers(&tmp), Vec::<String>::new());
    assert_eq!(processes_in(&tmp), Vec::<String>::new());
}

/// Two policies on one machine (one state folder) whose exports are both
/// named `db`: each keeps its own restore tests, run state and metrics.
#[test]
fn two_policies_with_exports_of_the_same_name_keep_their_own_state() {
    let s = scratch("samename");
    let mut policies = Vec::new();
    for host in ["shop-1", "blog-1"] {
        let db = s.path(&format!("{host}.db"));
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("create table t (x text); insert into t values ('été');")
            .unwrap();
        let p = s.write(
            &format!("{host}.yaml"),
            &format!(
                "host: {host}\nobjectives: {{rpo: 30m}}\nmetrics: {{textfile: {host}.prom}}\ntargets:\n  nas: {{kind: local, path: nas}}\nexports:\n  db:\n    source: {{kind: sqlite, path: {}}}\n    targets: [nas]\n    restore_test: {{every: 7d, random_within: 0s, checks: [{{sql: \"select count(*) from t\", expect: \"1\"}}]}}\n",
                db.display()
            ),
        );
        policies.push(p.display().to_string());
    }
    // Each host's first run backs up (a restore test waits for a first
    // point), its second tests; the shop's first, then the blog's.
    for p in &policies {
        let first = s.agent(&["run", "--due", "--policy", p]);
        first.ok();
        assert!(!first.stdout.contains("restore test"), "{}", first.stdout);
        s.agent(&["run", "--due", "--policy", p]).ok();
    }
    for (host, p) in ["shop-1", "blog-1"].iter().zip(&policies) {
        let status = s.agent(&["--json", "status", "--policy", p]);
        status.ok();
        let e = &status.json()["exports"][0];
        assert_eq!(
            e["last_restore_test"]["passed"], true,
            "{host}'s own restore test ran: {e:#}"
        );
        let prom = std::fs::read_to_string(s.path(&format!("{host}.prom"))).unwrap();
        assert!(
            prom.contains(&format!(
                "drp_export_last_restore_test_result{{host=\"{host}\",export=\"db\"}} 1"
            )),
            "{prom}"
        );
    }
    assert!(
        s.path("state/shop-1/restore-tests/db.json").is_file()
            && s.path("state/blog-1/restore-tests/db.json").is_file(),
        "one record per host and export"
    );
}
