//! Round trips against the real services: export, store, list, verify,
//! restore, and compare the restored data with the original.

use std::time::Duration;

use crate::harness::{Scratch, mariadb, pg_table_digest, psql, scratch, tree_digest};

fn pg_fixture(db: &str) {
    psql("postgres", &format!("create database {db}"));
    psql(
        db,
        "create table orders (id bigserial primary key, customer text not null, total numeric(12,2), \
           placed_at timestamptz not null default now(), details jsonb);
         insert into orders (customer, total, placed_at, details)
           select 'customer ' || (i % 311), (i * 37 % 100000) / 100.0, now() - i * interval '1 minute',
                  jsonb_build_object('items', i % 7, 'note', repeat(md5(i::text), 1 + i % 3))
           from generate_series(1, 20000) i;
         create view big_orders as select * from orders where total > 900;
         create function order_count() returns bigint language sql as 'select count(*) from orders';",
    );
}

fn pg_round_trip(target: &str) {
    let s = scratch(&format!("pg_{target}"));
    let db = s.id.clone();
    pg_fixture(&db);
    let before = pg_table_digest(&db, "orders");
    let policy = s.write(
        "policy.yaml",
        &format!(
            "host: db-1\n{}exports:\n  shop:\n    source: {}\n    targets: [{target}]\n",
            s.targets_yaml(),
            s.pg_source_yaml(&db)
        ),
    );
    let p = policy.to_str().unwrap();
    let backup = s.agent(&["--json", "backup", "--policy", p]);
    backup.ok();
    let report = backup.json();
    let manifest = &report["backups"][0]["targets"][0]["manifest"];
    assert_eq!(manifest["kind"], "postgres");
    assert!(
        manifest["tools"]["pg_dump"]
            .as_str()
            .unwrap()
            .contains("PostgreSQL"),
        "{manifest}"
    );
    assert!(
        manifest["stored"]["size"].as_u64().unwrap() < manifest["raw"]["size"].as_u64().unwrap()
    );

    let listed = s.agent(&["--json", "list", "--policy", p]);
    listed.ok();
    assert_eq!(listed.json()["points"].as_array().unwrap().len(), 1);
    s.agent(&["verify", "--policy", p]).ok();

    // Disaster: the database is gone. `drp restore` brings it back.
    psql("postgres", &format!("drop database {db}"));
    let restored = s.drp(&["restore", "--policy", p, "--export", "shop"]);
    restored.ok();
    assert!(
        restored.stdout.contains("digests verified"),
        "{}",
        restored.stdout
    );
    assert_eq!(pg_table_digest(&db, "orders"), before);
    assert_eq!(psql(&db, "select order_count()"), "20000");
    assert_eq!(psql(&db, "select count(*) > 0 from big_orders"), "t");
    psql("postgres", &format!("drop database {db}"));
}

#[test]
fn postgres_to_local_nas() {
    pg_round_trip("nas");
}

#[test]
fn postgres_to_s3() {
    pg_round_trip("s3");
}

#[test]
fn postgres_to_sftp() {
    pg_round_trip("sftp");
}

#[test]
fn one_export_to_three_targets_restores_from_each_into_a_new_database() {
    let s = scratch("pg_multi");
    let db = s.id.clone();
    pg_fixture(&db);
    let before = pg_table_digest(&db, "orders");
    let policy = s.write(
        "policy.yaml",
        &format!(
            "host: db-1\n{}exports:\n  shop:\n    source: {}\n    targets: [nas, s3, sftp]\n",
            s.targets_yaml(),
            s.pg_source_yaml(&db)
        ),
    );
    let p = policy.to_str().unwrap();
    let run = s.agent(&["backup", "--policy", p]);
    run.ok();
    assert_eq!(run.stdout.matches("committed").count(), 3, "{}", run.stdout);
    for target in ["nas", "s3", "sftp"] {
        let copy = format!("{db}_{target}");
        s.drp(&[
            "restore", "--policy", p, "--export", "shop", "--from", target, "--to", &copy,
        ])
        .ok();
        assert_eq!(
            pg_table_digest(&copy, "orders"),
            before,
            "restored from {target}"
        );
        psql("postgres", &format!("drop database {copy}"));
    }
    psql("postgres", &format!("drop database {db}"));
}

#[test]
fn mariadb_with_routines_and_triggers() {
    let s = scratch("my");
    let db = s.id.clone();
    mariadb(None, &format!("create database {db}"));
    mariadb(
        Some(&db),
        "create table accounts (id int primary key auto_increment, name varchar(100), balance decimal(12,2), updated_at datetime(6));
         create table audit (id int primary key auto_increment, account_id int, at datetime(6));
         create trigger accounts_audit after update on accounts for each row insert into audit (account_id, at) values (new.id, now(6));
         create procedure total_balance(out t decimal(14,2)) select sum(balance) into t from accounts;
         insert into accounts (name, balance, updated_at) select concat('acct-', seq), seq * 3.25, now(6) from seq_1_to_5000;
         update accounts set balance = balance + 1 where id % 10 = 0;",
    );
    let digest = |db: &str| {
        mariadb(
            Some(db),
            "select count(*), md5(group_concat(concat_ws(',', id, name, balance, updated_at) order by id separator '|')) from accounts",
        )
    };
    let before = digest(&db);
    let audit_rows = mariadb(Some(&db), "select count(*) from audit");
    assert_eq!(audit_rows, "500");
    let policy = s.write(
        "policy.yaml",
        &format!(
            "host: db-1\n{}exports:\n  crm:\n    source: {}\n    targets: [nas]\n",
            s.targets_yaml(),
            s.my_source_yaml(&db)
        ),
    );
    let p = policy.to_str().unwrap();
    let backup = s.agent(&["--json", "backup", "--policy", p]);
    backup.ok();
    assert!(
        backup.json()["backups"][0]["targets"][0]["manifest"]["tools"]["server"]
            .as_str()
            .unwrap()
            .contains("MariaDB")
    );

    mariadb(None, &format!("drop database {db}"));
    s.drp(&["restore", "--policy", p, "--export", "crm"]).ok();
    assert_eq!(digest(&db), before);
    assert_eq!(mariadb(Some(&db), "select count(*) from audit"), audit_rows);
    // The trigger and the procedure came back too.
    mariadb(Some(&db), "update accounts set balance = 0 where id = 1");
    assert_eq!(mariadb(Some(&db), "select count(*) from audit"), "501");
    assert_eq!(
        mariadb(Some(&db), "call total_balance(@t); select @t is not null"),
        "1"
    );
    mariadb(None, &format!("drop database {db}"));
}

#[test]
fn sqlite_stays_consistent_while_another_process_writes() {
    let s = scratch("sqlite");
    let db = s.path("app.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "pragma journal_mode = wal;
             create table items (id integer primary key, payload text not null);
             create table totals (n integer not null);
             insert into totals values (0);",
        )
        .unwrap();
    }
    // A writer that keeps committing: each transaction adds one item and
    // bumps the total, so a consistent copy always has total = count(items).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut c = rusqlite::Connection::open(&db).unwrap();
            c.busy_timeout(Duration::from_secs(10)).unwrap();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let tx = c.transaction().unwrap();
                tx.execute(
                    "insert into items (payload) values (?1)",
                    [format!("{n:0>200}")],
                )
                .unwrap();
                tx.execute("update totals set n = n + 1", []).unwrap();
                tx.commit().unwrap();
                n += 1;
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let policy = s.write(
        "policy.yaml",
        &format!("host: app-1\n{}exports:\n  app:\n    source: {{kind: sqlite, path: app.db}}\n    targets: [nas, s3]\n", s.targets_yaml()),
    );
    let p = policy.to_str().unwrap();
    for _ in 0..3 {
        s.agent(&["backup", "--policy", p]).ok();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 0);

    let listed = s.agent(&["--json", "list", "--policy", p, "--from", "s3"]);
    let points = listed.json()["points"].as_array().unwrap().clone();
    assert_eq!(points.len(), 3);
    for point in points {
        let id = point["manifest"]["id"].as_str().unwrap();
        let copy = s.path(&format!("restored-{id}.db"));
        s.drp(&[
            "restore",
            "--policy",
            p,
            "--export",
            "app",
            "--from",
            "s3",
            "--point",
            id,
            "--to",
            copy.to_str().unwrap(),
        ])
        .ok();
        let c = rusqlite::Connection::open(&copy).unwrap();
        let check: String = c
            .query_row("pragma integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let (count, max, total): (i64, i64, i64) = c
            .query_row(
                "select count(*), coalesce(max(id), 0), (select n from totals) from items",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(count, total, "point {id}: the copy mixes two moments");
        assert_eq!(count, max, "point {id}: rows missing inside the copy");
    }
}

fn make_tree(s: &Scratch) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let root = s.path("site");
    std::fs::create_dir_all(root.join("uploads/2026/11")).unwrap();
    std::fs::write(root.join("index.html"), "<h1>hello</h1>\n").unwrap();
    std::fs::write(
        root.join("uploads/2026/11/photo.bin"),
        (0..200_000u32)
            .map(|i| (i * 31 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(root.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::write(root.join("secret.conf"), "token=abc\n").unwrap();
    std::fs::set_permissions(
        root.join("secret.conf"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("uploads/2026/11/photo.bin", root.join("latest.bin")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("hostname-link")).unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    std::fs::File::options()
        .write(true)
        .open(root.join("index.html"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    root
}

#[test]
fn directory_tree_keeps_modes_links_and_times() {
    let s = scratch("dir");
    let root = make_tree(&s);
    let before = tree_digest(&root);
    let policy = s.write(
        "policy.yaml",
        &format!("host: web-1\n{}exports:\n  site:\n    source: {{kind: directory, path: site, allow_external_symlinks: true}}\n    targets: [sftp]\n", s.targets_yaml()),
    );
    let p = policy.to_str().unwrap();
    s.agent(&["backup", "--policy", p]).ok();

    let copy = s.path("copy");
    s.drp(&[
        "restore",
        "--policy",
        p,
        "--export",
        "site",
        "--to",
        copy.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(tree_digest(&copy), before);

    // Restoring over the live tree needs confirmation; with it, the tree is replaced.
    std::fs::write(root.join("index.html"), "defaced").unwrap();
    std::fs::write(root.join("new-file"), "x").unwrap();
    let refused = s.drp(&["restore", "--policy", p, "--export", "site"]);
    refused.code(5);
    assert!(
        refused.stderr.contains("not confirmed"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        std::fs::read_to_string(root.join("index.html")).unwrap(),
        "defaced"
    );
    s.drp(&["restore", "--policy", p, "--export", "site", "--yes"])
        .ok();
    assert_eq!(tree_digest(&root), before);
    let leftovers: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".drp-"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}

#[test]
fn a_bare_machine_lists_and_restores_with_only_the_target_address() {
    let s = scratch("bare");
    let root = make_tree(&s);
    // Without a policy, links out of the tree are refused: keep to in-tree ones.
    std::fs::remove_file(root.join("hostname-link")).unwrap();
    let before = tree_digest(&root);
    let policy = s.write(
        "policy.yaml",
        &format!("host: web-1\n{}exports:\n  site:\n    source: {{kind: directory, path: site}}\n    targets: [s3]\n", s.targets_yaml()),
    );
    s.agent(&["backup", "--policy", policy.to_str().unwrap()])
        .ok();

    let svc = crate::harness::services();
    let address = format!(
        "s3://{}/{}?endpoint={}&region=garage",
        svc.get("DRP_TEST_S3_BUCKET"),
        s.id,
        svc.get("DRP_TEST_S3_ENDPOINT")
    );
    let mut list = s.agent_cmd(&["--json", "list", "--target", &address]);
    list.env("AWS_ACCESS_KEY_ID", svc.get("DRP_TEST_S3_KEY_ID"))
        .env("AWS_SECRET_ACCESS_KEY", svc.get("DRP_TEST_S3_SECRET"));
    let listed = crate::harness::Run::from(list.output().unwrap());
    listed.ok();
    let points = listed.json()["points"].as_array().unwrap().clone();
    assert_eq!(points.len(), 1);
    assert_eq!(points[0]["manifest"]["host"], "web-1");

    let copy = s.path("on-new-machine");
    let mut restore = s.agent_cmd(&[
        "restore",
        "--target",
        &address,
        "--host",
        "web-1",
        "--export",
        "site",
        "--to",
        copy.to_str().unwrap(),
    ]);
    restore
        .env("AWS_ACCESS_KEY_ID", svc.get("DRP_TEST_S3_KEY_ID"))
        .env("AWS_SECRET_ACCESS_KEY", svc.get("DRP_TEST_S3_SECRET"));
    crate::harness::Run::from(restore.output().unwrap()).ok();
    assert_eq!(tree_digest(&copy), before);
}

#[test]
fn restore_before_a_time_picks_the_older_point() {
    let s = scratch("before");
    let db = s.path("app.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("create table t (v text); insert into t values ('first');")
        .unwrap();
    let policy = s.write(
        "policy.yaml",
        &format!("host: a\n{}exports:\n  app:\n    source: {{kind: sqlite, path: app.db}}\n    targets: [nas]\n", s.targets_yaml()),
    );
    let p = policy.to_str().unwrap();
    s.agent(&["backup", "--policy", p]).ok();
    std::thread::sleep(Duration::from_millis(1100));
    let between = chrono::Utc::now().to_rfc3339();
    std::thread::sleep(Duration::from_millis(1100));
    c.execute_batch("update t set v = 'second';").unwrap();
    s.agent(&["backup", "--policy", p]).ok();
    drop(c);

    let copy = s.path("old.db");
    s.drp(&[
        "restore",
        "--policy",
        p,
        "--export",
        "app",
        "--before",
        &between,
        "--to",
        copy.to_str().unwrap(),
    ])
    .ok();
    let v: String = rusqlite::Connection::open(&copy)
        .unwrap()
        .query_row("select v from t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, "first");
    let latest = s.path("latest.db");
    s.drp(&[
        "restore",
        "--policy",
        p,
        "--export",
        "app",
        "--to",
        latest.to_str().unwrap(),
    ])
    .ok();
    let v: String = rusqlite::Connection::open(&latest)
        .unwrap()
        .query_row("select v from t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, "second");
}

#[test]
fn a_large_incompressible_tree_goes_to_s3_in_several_parts() {
    let s = scratch("large");
    let root = s.path("media");
    std::fs::create_dir_all(&root).unwrap();
    // 24 MiB that zstd cannot shrink: three multipart parts of 8 MiB and more.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for f in 0..3 {
        let bytes: Vec<u8> = (0..8 << 20)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        std::fs::write(root.join(format!("clip-{f}.bin")), bytes).unwrap();
    }
    let before = tree_digest(&root);
    let policy = s.write(
        "policy.yaml",
        &format!("host: media-1\n{}exports:\n  media:\n    source: {{kind: directory, path: media}}\n    targets: [s3]\n    compression: {{level: 1}}\n", s.targets_yaml()),
    );
    let p = policy.to_str().unwrap();
    let run = s.agent(&["--json", "backup", "--policy", p]);
    run.ok();
    let stored = run.json()["backups"][0]["targets"][0]["manifest"]["stored"]["size"]
        .as_u64()
        .unwrap();
    assert!(stored > 24 << 20, "random data does not compress: {stored}");
    s.agent(&["verify", "--policy", p]).ok();
    let copy = s.path("copy");
    s.drp(&[
        "restore",
        "--policy",
        p,
        "--export",
        "media",
        "--to",
        copy.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(tree_digest(&copy), before);
}
