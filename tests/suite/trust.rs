//! Restores that never make things worse: a load that fails leaves the live
//! data exactly as it was, a load that succeeds keeps what it replaced, owners
//! and modes come back, a target without a repository is an error, and a
//! restore abandoned by its timeout stops.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::harness::{Scratch, mariadb, pg_table_digest, psql, scratch};

fn pg_policy(s: &Scratch, db: &str) -> String {
    s.write(
        "policy.yaml",
        &format!(
            "host: db-1\n{}exports:\n  shop:\n    source: {}\n    targets: [nas]\n",
            s.targets_yaml(),
            s.pg_source_yaml(db)
        ),
    )
    .display()
    .to_string()
}

fn pg_databases_like(pattern: &str) -> Vec<String> {
    psql(
        "postgres",
        &format!("select datname from pg_database where datname like '{pattern}' order by 1"),
    )
    .lines()
    .map(str::to_string)
    .collect()
}

fn drop_pg(db: &str) {
    for d in pg_databases_like(&format!("{db}%")) {
        psql("postgres", &format!("drop database \"{d}\" with (force)"));
    }
}

#[test]
fn a_postgres_load_that_fails_leaves_the_live_database_untouched() {
    let s = scratch("pgfail");
    let db = s.id.clone();
    psql("postgres", &format!("create database {db}"));
    // An index over a function that reads a table by its unqualified name:
    // it works live, and fails in pg_restore (which runs with an empty
    // search_path) — a load failure real databases meet.
    psql(
        &db,
        "create table buckets (n int); insert into buckets values (1), (2), (3);
         create function bucket(i int) returns int language sql immutable
           as 'select i % (select count(*)::int from buckets)';
         create table items (id int primary key, name text);
         insert into items select i, 'item ' || i from generate_series(1, 1001) i;
         create index items_bucket on items (bucket(id));",
    );
    let p = pg_policy(&s, &db);
    s.agent(&["backup", "--policy", &p]).ok();
    psql(
        &db,
        "insert into items values (5000, 'written after the point')",
    );
    let before = pg_table_digest(&db, "items");

    let r = s.drp(&["restore", "--policy", &p, "--export", "shop", "--yes"]);
    r.code(1);
    assert!(
        r.stderr
            .contains(&format!("database `{db}` was not touched")),
        "{}",
        r.stderr
    );
    assert_eq!(
        pg_table_digest(&db, "items"),
        before,
        "the live data changed"
    );
    assert_eq!(
        pg_databases_like(&format!("{db}_drp_%")),
        Vec::<String>::new(),
        "the partial copy was left behind"
    );
    drop_pg(&db);
}

#[test]
fn a_postgres_restore_keeps_the_replaced_database_and_recreates_a_dropped_owner() {
    let s = scratch("pgswap");
    let db = s.id.clone();
    let owner = format!("owner_{db}");
    let reader = format!("reader_{db}");
    psql("postgres", &format!("create database {db}"));
    psql(
        "postgres",
        &format!("create role {owner} login; create role {reader}; grant {reader} to {owner}"),
    );
    psql(
        &db,
        &format!(
            "create table orders (id int primary key, customer text, note text);
             insert into orders select i, 'klient ' || i, 'Grüße, 東京 ' || i from generate_series(1, 1001) i;
             create table audit (n int);
             create function log_order() returns trigger language plpgsql as $$ begin insert into audit values (new.id); return new; end $$;
             create trigger orders_audit after insert on orders for each row execute function log_order();
             select lo_from_bytea(0, 'a large object');
             alter table orders owner to {owner}; alter table audit owner to {owner};
             grant select on orders to {reader};"
        ),
    );
    let before = pg_table_digest(&db, "orders");
    let p = pg_policy(&s, &db);
    s.agent(&["backup", "--policy", &p]).ok();

    // After the point: rows deleted, and both roles dropped from the server.
    psql(&db, "delete from orders where id > 500");
    psql(
        &db,
        &format!(
            "reassign owned by {owner}, {reader} to postgres; drop owned by {owner}, {reader}"
        ),
    );
    psql(
        "postgres",
        &format!("drop role {owner}; drop role {reader}"),
    );

    // What the user reads before saying yes: what is replaced, where it is
    // kept, and the data lost; a plan changes nothing.
    let plan = s.drp(&["restore", "--policy", &p, "--export", "shop", "--dry-run"]);
    plan.ok();
    for expected in [
        format!("replaces         PostgreSQL database `{db}`"),
        format!(
            "keeps            the replaced database is kept, renamed to `{db}_drp_replaced_<time>_<id>`"
        ),
        "data-loss window".to_string(),
    ] {
        assert!(
            plan.stderr.contains(&expected),
            "the plan lacks `{expected}`:\n{}",
            plan.stderr
        );
    }
    assert_eq!(
        psql(&db, "select count(*) from orders"),
        "500",
        "a plan changed the data"
    );
    // Without --yes and without a terminal, nothing is replaced.
    s.drp(&["restore", "--policy", &p, "--export", "shop"])
        .code(5);
    assert_eq!(psql(&db, "select count(*) from orders"), "500");
    let r = s.drp(&["restore", "--policy", &p, "--export", "shop", "--yes"]);
    r.ok();
    assert_eq!(pg_table_digest(&db, "orders"), before);
    assert_eq!(
        psql(
            &db,
            "select tableowner from pg_tables where tablename = 'orders'"
        ),
        owner,
        "the owner role was recreated from the point's globals"
    );
    assert_eq!(
        psql(
            "postgres",
            &format!("select pg_has_role('{owner}', '{reader}', 'member')")
        ),
        "t"
    );
    assert_eq!(
        psql(&db, "select count(*) from pg_largeobject_metadata"),
        "1"
    );
    psql(&db, "insert into orders values (9999, 'x', 'y')");
    assert_eq!(psql(&db, "select count(*) from audit where n = 9999"), "1");

    let kept = pg_databases_like(&format!("{db}_drp_replaced_%"));
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(r.stdout.contains(&kept[0]), "{}", r.stdout);
    assert_eq!(psql(&kept[0], "select count(*) from orders"), "500");
    drop_pg(&db);
    psql(
        "postgres",
        &format!("drop role {owner}; drop role {reader}"),
    );
}

/// Replaces the raw content of the newest point of `export` on a NAS with
/// `edit(raw)`, keeping its manifest consistent: a point that verifies but
/// whose content does not load.
fn rewrite_newest_point(nas: &Path, host: &str, export: &str, edit: impl Fn(Vec<u8>) -> Vec<u8>) {
    use sha2::{Digest, Sha256};
    let dir = nas.join(host).join(export).join("manifests");
    let mut manifests: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    manifests.sort();
    let path = manifests.pop().expect("a point");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let data = nas.join(m["stored"]["object"].as_str().unwrap());
    let raw = edit(zstd::decode_all(&std::fs::read(&data).unwrap()[..]).unwrap());
    let stored = zstd::encode_all(&raw[..], 3).unwrap();
    m["raw"]["size"] = raw.len().into();
    m["raw"]["sha256"] = hex::encode(Sha256::digest(&raw)).into();
    m["stored"]["size"] = stored.len().into();
    m["stored"]["sha256"] = hex::encode(Sha256::digest(&stored)).into();
    std::fs::write(&data, stored).unwrap();
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

fn my_digest(db: &str) -> String {
    mariadb(
        Some(db),
        "select count(*), md5(group_concat(concat_ws(',', id, name, balance) order by id separator '|')) from accounts",
    )
}

fn my_schemas(pattern: &str) -> Vec<String> {
    mariadb(
        None,
        &format!(
            "select schema_name from information_schema.schemata where schema_name like '{pattern}' order by 1"
        ),
    )
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn a_mariadb_restore_moves_the_live_objects_aside_and_a_failed_load_changes_nothing() {
    let s = scratch("myswap");
    let db = s.id.clone();
    mariadb(None, &format!("create database {db} character set utf8mb4"));
    mariadb(
        Some(&db),
        "create table accounts (id int primary key auto_increment, name varchar(100), balance decimal(12,2));
         create table audit (id int primary key auto_increment, account_id int);
         create table entries (id int primary key, account_id int, foreign key (account_id) references accounts(id));
         create trigger accounts_audit after update on accounts for each row insert into audit (account_id) values (new.id);
         create procedure total_balance(out t decimal(14,2)) select sum(balance) into t from accounts;
         create function doubled(x int) returns int deterministic return x * 2;
         create view rich as select id, name from accounts where balance > 1000;
         create event nightly on schedule every 1 day disable do delete from audit;
         insert into accounts (name, balance) select concat('kōnto-', seq), seq * 3.25 from seq_1_to_1001;
         insert into entries select seq, seq from seq_1_to_100;",
    );
    let before = my_digest(&db);
    let policy = s.write(
        "policy.yaml",
        &format!(
            "host: db-1\n{}exports:\n  crm:\n    source: {}\n    targets: [nas]\n",
            s.targets_yaml(),
            s.my_source_yaml(&db)
        ),
    );
    let p = policy.to_str().unwrap();
    s.agent(&["backup", "--policy", p]).ok();
    mariadb(
        Some(&db),
        "delete from entries; delete from accounts where id > 10",
    );
    let changed = my_digest(&db);

    let r = s.drp(&["restore", "--policy", p, "--export", "crm", "--yes"]);
    r.ok();
    assert_eq!(my_digest(&db), before);
    // Triggers, routines, views and events came back with the tables.
    mariadb(Some(&db), "update accounts set balance = 0 where id = 1");
    assert_eq!(mariadb(Some(&db), "select count(*) from audit"), "1");
    assert_eq!(
        mariadb(Some(&db), "call total_balance(@t); select @t is not null"),
        "1"
    );
    assert_eq!(mariadb(Some(&db), "select doubled(21)"), "42");
    assert_eq!(mariadb(Some(&db), "select count(*) > 0 from rich"), "1");
    assert_eq!(
        mariadb(
            None,
            &format!("select count(*) from information_schema.events where event_schema = '{db}'")
        ),
        "1"
    );
    // The replaced objects are kept, whole, under another name.
    let kept = my_schemas(&format!("{db}_drp_replaced_%"));
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(my_digest(&kept[0]), changed);
    assert_eq!(mariadb(Some(&kept[0]), "select doubled(2)"), "4");
    assert_eq!(
        mariadb(
            None,
            &format!(
                "select count(*) from information_schema.triggers where trigger_schema = '{}'",
                kept[0]
            )
        ),
        "1"
    );
    assert_eq!(
        my_schemas(&format!("{db}_drp_restore_%")),
        Vec::<String>::new()
    );

    // A point whose dump fails at its very end: nothing changes.
    rewrite_newest_point(&s.path("nas"), "db-1", "crm", |mut raw| {
        raw.extend_from_slice(b"\ninsert into no_such_table values (1);\n");
        raw
    });
    mariadb(Some(&db), "delete from accounts where id > 900");
    let live = my_digest(&db);
    let r = s.drp(&["restore", "--policy", p, "--export", "crm", "--yes"]);
    r.code(1);
    assert!(r.stderr.contains("was not touched"), "{}", r.stderr);
    assert_eq!(my_digest(&db), live);
    assert_eq!(
        my_schemas(&format!("{db}_drp_restore_%")),
        Vec::<String>::new()
    );

    // A planted dump, without the sandbox line mariadb-dump now writes first,
    // holding a client command: the restore runs no command and changes nothing.
    let marker = s.path("pwned-by-dump");
    rewrite_newest_point(&s.path("nas"), "db-1", "crm", |raw| {
        let text = String::from_utf8(raw).unwrap();
        let body = match text.split_once('\n') {
            Some((first, rest)) if first.contains("sandbox") => rest.to_string(),
            _ => text,
        };
        format!("\\! touch {}\n{body}", marker.display()).into_bytes()
    });
    let r = s.drp(&["restore", "--policy", p, "--export", "crm", "--yes"]);
    r.code(1);
    assert!(!marker.exists(), "a dump ran a shell command: {}", r.all());
    assert!(r.stderr.contains("was not touched"), "{}", r.stderr);
    assert_eq!(my_digest(&db), live);
    for schema in my_schemas(&format!("{db}%")) {
        mariadb(None, &format!("drop database `{schema}`"));
    }
}

#[test]
fn a_directory_restored_as_root_keeps_owners_modes_and_the_replaced_tree() {
    let s = scratch("owners");
    let root = s.path("srv");
    std::fs::create_dir_all(root.join("shared")).unwrap();
    std::fs::write(root.join("tool"), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::chown(root.join("tool"), Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(root.join("tool"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::chown(root.join("shared"), Some(65534), Some(0)).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o750)).unwrap();
    let p = s
        .write(
            "policy.yaml",
            "host: web-1\ntargets:\n  nas: {kind: local, path: nas}\nexports:\n  srv:\n    source: {kind: directory, path: srv}\n    targets: [nas]\n",
        )
        .display()
        .to_string();
    s.agent(&["backup", "--policy", &p]).ok();

    let to = s.path("restored");
    s.drp(&[
        "restore",
        "--policy",
        &p,
        "--export",
        "srv",
        "--to",
        to.to_str().unwrap(),
    ])
    .ok();
    let tool = std::fs::metadata(to.join("tool")).unwrap();
    assert_eq!((tool.uid(), tool.gid()), (65534, 65534));
    assert_eq!(tool.mode() & 0o7777, 0o4755);
    let shared = std::fs::metadata(to.join("shared")).unwrap();
    assert_eq!((shared.uid(), shared.gid()), (65534, 0));
    assert_eq!(std::fs::metadata(&to).unwrap().mode() & 0o7777, 0o750);

    // Over the live tree: the tree it replaces is kept beside it.
    std::fs::write(root.join("written-after"), "new").unwrap();
    let r = s.drp(&["restore", "--policy", &p, "--export", "srv", "--yes"]);
    r.ok();
    assert!(!root.join("written-after").exists());
    let kept: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("srv.drp-replaced-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(s.path(&kept[0]).join("written-after").exists());
    assert!(r.stdout.contains(&kept[0]), "{}", r.stdout);
}

#[test]
fn a_target_without_a_repository_is_an_error_until_init_creates_one() {
    let mut s = scratch("unmounted");
    s.no_auto_init();
    std::fs::create_dir_all(s.path("mnt/nas")).unwrap();
    std::fs::write(s.path("app.txt"), "data").unwrap();
    std::fs::create_dir_all(s.path("app")).unwrap();
    let p = s
        .write(
            "policy.yaml",
            "host: h\ntargets:\n  nas: {kind: local, path: mnt/nas}\nexports:\n  app:\n    source: {kind: directory, path: app}\n    targets: [nas]\n",
        )
        .display()
        .to_string();
    let backup = s.agent(&["backup", "--policy", &p]);
    backup.code(6);
    assert!(
        backup.stderr.contains("may not be mounted"),
        "{}",
        backup.stderr
    );
    assert!(
        std::fs::read_dir(s.path("mnt/nas"))
            .unwrap()
            .next()
            .is_none(),
        "a backup wrote into the empty mount point"
    );
    s.agent(&["list", "--policy", &p]).code(6);
    s.drp(&["restore", "--policy", &p, "--export", "app", "--yes"])
        .code(6);

    let init = s.agent(&["init", "--policy", &p]);
    init.ok();
    assert!(
        init.stdout.contains("repository created"),
        "{}",
        init.stdout
    );
    assert!(s.path("mnt/nas/drp-repository.json").is_file());
    s.agent(&["init", "--policy", &p]).ok();
    s.agent(&["backup", "--policy", &p]).ok();
    s.agent(&["list", "--policy", &p]).ok();
}

#[test]
fn a_restore_step_that_times_out_stops_its_load_and_changes_nothing() {
    let s = scratch("pgtimeout");
    let db = s.id.clone();
    psql("postgres", &format!("create database {db}"));
    // Building this index takes about 10 s: pg_restore is still loading
    // when the step's 3 s run out.
    psql(
        &db,
        "create function slow(i int) returns int language plpgsql immutable
           as $$ begin perform pg_sleep(0.01); return i; end $$;
         create table items (id int primary key);
         insert into items select generate_series(1, 1000);
         create index items_slow on items (slow(id));",
    );
    let p = pg_policy(&s, &db);
    s.agent(&["backup", "--policy", &p]).ok();
    psql(&db, "delete from items where id > 10");
    let before = pg_table_digest(&db, "items");
    let rb = s.write(
        "runbook.yaml",
        "name: slow-restore\npolicy: policy.yaml\nsteps:\n  - name: restore\n    phase: restore\n    action: {kind: restore_backup, export: shop, point: latest}\n    timeout: 3s\n",
    );
    let r = s.drp(&["run", rb.to_str().unwrap(), "--yes"]);
    assert_ne!(r.code, 0, "{}", r.all());
    assert_eq!(pg_table_digest(&db, "items"), before);
    assert_eq!(
        pg_databases_like(&format!("{db}_drp_%")),
        Vec::<String>::new()
    );
    let loading = psql(
        "postgres",
        &format!("select count(*) from pg_stat_activity where datname like '{db}_drp_%'"),
    );
    assert_eq!(loading, "0", "a load still runs on the server");
    drop_pg(&db);
}

#[test]
fn a_tampered_snapshot_record_cannot_make_this_host_delete_or_roll_back_another_subvolume() {
    let s = scratch("tamper");
    let root =
        std::path::PathBuf::from(crate::harness::services().get("DRP_TEST_BTRFS")).join(&s.id);
    std::fs::create_dir_all(&root).unwrap();
    let run = |cmd: &str| {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let data = root.join("data");
    let victim = root.join("victim");
    run(&format!("btrfs subvolume create {}", data.display()));
    run(&format!("btrfs subvolume create {}", victim.display()));
    std::fs::write(victim.join("live.db"), "another service's data").unwrap();
    let p = s
        .write(
            "policy.yaml",
            &format!(
                "host: web-1\ntargets:\n  nas: {{kind: local, path: nas}}\nsnapshots:\n  data: {{kind: btrfs, subvolume: {}}}\nsnapshot_retention: {{keep_last: 1}}\n",
                data.display()
            ),
        )
        .display()
        .to_string();
    for change in ["CHG-1", "CHG-2"] {
        s.agent(&[
            "snapshot", "create", "--policy", &p, "--change", change, "--reason", "r",
        ])
        .ok();
    }
    // Someone with write access to the repository points the older record
    // at a subvolume the policy does not declare.
    let sets = s.path("nas/web-1/snapshot-sets");
    for entry in std::fs::read_dir(&sets).unwrap() {
        let path = entry.unwrap().path();
        let mut set: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        if set["change"] == "CHG-1" {
            set["members"][0]["reference"] = victim.display().to_string().into();
            std::fs::write(&path, serde_json::to_vec(&set).unwrap()).unwrap();
        }
    }
    let rollback = s.agent(&[
        "snapshot", "rollback", "--policy", &p, "--change", "CHG-1", "--yes",
    ]);
    assert_ne!(rollback.code, 0, "{}", rollback.all());
    assert!(rollback.all().contains("refused"), "{}", rollback.all());
    let expire = s.agent(&["snapshot", "expire", "--policy", &p]);
    assert!(expire.all().contains("refused"), "{}", expire.all());
    assert_eq!(
        std::fs::read_to_string(victim.join("live.db")).unwrap(),
        "another service's data",
        "the undeclared subvolume was touched"
    );
    assert!(
        !data.join("live.db").exists(),
        "the victim was rolled into the declared subvolume"
    );

    // A set id that climbs out of the snapshot folder, with the reference
    // the btrfs provider would compute from it, is refused as well.
    for entry in std::fs::read_dir(&sets).unwrap() {
        let path = entry.unwrap().path();
        let mut set: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        if set["change"] == "CHG-2" {
            let id = set["id"].as_str().unwrap().to_string();
            let reference = set["members"][0]["reference"].as_str().unwrap().to_string();
            set["id"] = format!("{id}/../../victim").into();
            set["members"][0]["reference"] = format!("{reference}/../../victim").into();
            std::fs::write(&path, serde_json::to_vec(&set).unwrap()).unwrap();
        }
    }
    let rollback = s.agent(&[
        "snapshot", "rollback", "--policy", &p, "--change", "CHG-2", "--yes",
    ]);
    assert_ne!(rollback.code, 0, "{}", rollback.all());
    assert!(
        rollback.all().contains("is not a set id"),
        "{}",
        rollback.all()
    );
    assert_eq!(
        std::fs::read_to_string(victim.join("live.db")).unwrap(),
        "another service's data"
    );
    assert!(
        !data.join("live.db").exists(),
        "the victim was rolled into the declared subvolume"
    );
}

#[test]
fn the_maintenance_database_is_never_swapped() {
    let s = scratch("pgmaint");
    let p = pg_policy(&s, "postgres");
    s.agent(&["backup", "--policy", &p]).ok();
    let r = s.drp(&["restore", "--policy", &p, "--export", "shop", "--yes"]);
    r.code(1);
    assert!(
        r.stderr.contains("maintenance database `postgres`"),
        "{}",
        r.stderr
    );
    assert_eq!(
        psql(
            "postgres",
            "select datallowconn from pg_database where datname = 'postgres'"
        ),
        "t"
    );
    assert_eq!(pg_databases_like("postgres_drp_%"), Vec::<String>::new());
}

fn sqlite_app_policy(s: &Scratch, export_extra: &str) -> String {
    let c = rusqlite::Connection::open(s.path("app.db")).unwrap();
    c.execute_batch("create table if not exists t (v text); insert into t values ('x');")
        .unwrap();
    s.write(
        "policy.yaml",
        &format!(
            "host: a\nprune: {{grace: 1m}}\ntargets:\n  nas: {{kind: local, path: nas}}\nexports:\n  app:\n    source: {{kind: sqlite, path: app.db}}\n    targets: [nas]\n{export_extra}"
        ),
    )
    .display()
    .to_string()
}

fn points(s: &Scratch, p: &str) -> usize {
    s.agent(&["--json", "list", "--policy", p]).json()["points"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn scheduled_runs_read_their_point_back_and_apply_retention() {
    let s = scratch("upkeep");
    let p = sqlite_app_policy(
        &s,
        "    schedule: \"*/10 * * * *\"\n    retention: {keep_last: 2}\n",
    );
    for minute in ["00", "10", "20", "30"] {
        s.agent(&[
            "run",
            "--due",
            "--policy",
            &p,
            "--now",
            &format!("2026-11-21T07:{minute}:01Z"),
        ])
        .ok();
    }
    assert_eq!(
        points(&s, &p),
        2,
        "retention was not applied after the runs"
    );
    let status = s.agent(&["--json", "status", "--policy", &p]);
    let m = &status.json()["exports"][0]["last_maintenance"];
    assert_eq!(m["verified"], serde_json::json!(["nas"]), "{m}");
    assert_eq!(m["kept"], 2, "{m}");
    assert_eq!(m["errors"], serde_json::json!([]), "{m}");
    // The two left are the newest, and they restore.
    s.drp(&[
        "restore", "--policy", &p, "--export", "app", "--to", "copy.db",
    ])
    .ok();
}

#[test]
fn prune_deletes_nothing_until_a_point_has_been_read_back() {
    let s = scratch("minverified");
    let p = sqlite_app_policy(&s, "    retention: {keep_last: 1}\n");
    for _ in 0..3 {
        s.agent(&["backup", "--policy", &p]).ok();
    }
    // Sizes are right, but no digest was ever checked: nothing goes.
    let r = s.agent(&["prune", "--policy", &p]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("only 0 verified (min_verified 1)"),
        "{}",
        r.all()
    );
    assert_eq!(points(&s, &p), 3);
    s.agent(&["verify", "--policy", &p, "--latest"]).ok();
    s.agent(&["prune", "--policy", &p]).ok();
    assert_eq!(points(&s, &p), 1);
}

#[test]
fn a_password_in_the_postgres_url_never_shows_in_the_process_list() {
    use std::os::unix::fs::PermissionsExt;
    let s = scratch("argv");
    let db = s.id.clone();
    psql("postgres", &format!("create database {db}"));
    psql(&db, "create table t (v text); insert into t values ('x')");
    let svc = crate::harness::services();
    let password = svc.get("DRP_TEST_PG_PASSWORD");
    // A pg_dump that waits before dumping, so the tools' argv can be read.
    let bin = s.path("pgbin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["psql", "pg_dumpall", "pg_restore"] {
        std::os::unix::fs::symlink(format!("/usr/lib/postgresql/15/bin/{tool}"), bin.join(tool))
            .unwrap();
    }
    let real = "/usr/lib/postgresql/15/bin/pg_dump";
    std::fs::write(
        bin.join("pg_dump"),
        format!("#!/bin/sh\n[ \"$1\" = --version ] && exec {real} --version\nsleep 2\nexec {real} \"$@\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(bin.join("pg_dump"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let p = s
        .write(
            "policy.yaml",
            &format!(
                "host: db-1\ntargets:\n  nas: {{kind: local, path: nas}}\nexports:\n  shop:\n    source: {{kind: postgres, url: \"postgresql://postgres:{password}@127.0.0.1:{}/{db}\", bin_dir: {}}}\n    targets: [nas]\n",
                svc.get("DRP_TEST_PG_PORT"),
                bin.display()
            ),
        )
        .display()
        .to_string();
    s.agent(&["init", "--policy", &p]).ok();
    let mut child = s
        .agent_cmd(&["backup", "--policy", &p])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let mut scans = 0;
    while child.try_wait().unwrap().is_none() {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
                let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if text.contains("127.0.0.1") || text.contains("pg_dump") {
                    seen.push(text.clone());
                }
                assert!(!text.contains(password), "the password is in argv: {text}");
            }
        }
        scans += 1;
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        scans > 10
            && seen
                .iter()
                .any(|c| c.contains("sleep") || c.contains("pg_dump")),
        "{seen:?}"
    );
    drop_pg(&db);
}

/// Flips a byte in the middle of every data object of `export` under `root`.
fn corrupt_all(root: &Path) {
    for file in crate::harness::walk(root.to_path_buf()) {
        if file.extension().is_some_and(|e| e == "zst") {
            let mut bytes = std::fs::read(&file).unwrap();
            let i = bytes.len() / 2;
            bytes[i] ^= 0x40;
            std::fs::write(&file, bytes).unwrap();
        }
    }
}

#[test]
fn a_point_corrupt_on_one_target_restores_from_the_other_and_corrupt_everywhere_touches_nothing() {
    let s = scratch("pgcopies");
    let db = s.id.clone();
    psql("postgres", &format!("create database {db}"));
    psql(
        &db,
        "create table t (id int primary key, v text); insert into t select i, md5(i::text) from generate_series(1, 5000) i",
    );
    let p = s
        .write(
            "policy.yaml",
            &format!(
                "host: db-1\n{}exports:\n  shop:\n    source: {}\n    targets: [nas, sftp]\n",
                s.targets_yaml(),
                s.pg_source_yaml(&db)
            ),
        )
        .display()
        .to_string();
    s.agent(&["backup", "--policy", &p]).ok();
    psql(&db, "delete from t where id > 100");
    let live = pg_table_digest(&db, "t");
    corrupt_all(&s.path("nas"));

    let r = s.drp(&[
        "--json", "restore", "--policy", &p, "--export", "shop", "--yes",
    ]);
    r.ok();
    assert_eq!(r.json()["target"], "sftp", "{}", r.stdout);
    assert_eq!(psql(&db, "select count(*) from t"), "5000");
    drop_pg(&db);

    // Corrupt everywhere: exit 4, the live database exactly as it was.
    psql("postgres", &format!("create database {db}"));
    psql(
        &db,
        "create table t (id int primary key, v text); insert into t select i, md5(i::text) from generate_series(1, 100) i",
    );
    assert_eq!(pg_table_digest(&db, "t"), live);
    let sftp_root = crate::harness::services().get("DRP_TEST_SFTP_ROOT");
    corrupt_all(&Path::new(sftp_root).join(&s.id));
    let r = s.drp(&["restore", "--policy", &p, "--export", "shop", "--yes"]);
    r.code(4);
    assert!(r.stderr.contains("integrity check failed"), "{}", r.stderr);
    assert_eq!(pg_table_digest(&db, "t"), live);
    assert_eq!(
        pg_databases_like(&format!("{db}_drp_%")),
        Vec::<String>::new()
    );
    drop_pg(&db);
}

#[test]
fn an_sqlite_restore_keeps_a_copy_of_the_file_it_replaces_unless_told_to_drop_it() {
    let s = scratch("sqlitekeep");
    let p = sqlite_app_policy(&s, "");
    s.agent(&["backup", "--policy", &p]).ok();
    let count = |path: &Path| -> i64 {
        rusqlite::Connection::open(path)
            .unwrap()
            .query_row("select count(*) from t", [], |r| r.get(0))
            .unwrap()
    };
    rusqlite::Connection::open(s.path("app.db"))
        .unwrap()
        .execute_batch("insert into t values ('after'), ('the point');")
        .unwrap();
    let r = s.drp(&["restore", "--policy", &p, "--export", "app", "--yes"]);
    r.ok();
    assert_eq!(count(&s.path("app.db")), 1);
    let kept: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("app.db.drp-replaced-")
        })
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(count(&kept[0]), 3, "the kept copy holds what was replaced");
    std::fs::remove_file(&kept[0]).unwrap();

    let r = s.drp(&[
        "restore",
        "--policy",
        &p,
        "--export",
        "app",
        "--yes",
        "--drop-replaced",
    ]);
    r.ok();
    assert!(r.stdout.contains("was dropped"), "{}", r.stdout);
    let left = std::fs::read_dir(s.dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("drp-replaced")
        })
        .count();
    assert_eq!(left, 0);
}
