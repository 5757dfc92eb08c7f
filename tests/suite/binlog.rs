//! MariaDB binary-log shipping against real MariaDB servers each test
//! starts with binary logging on: point-in-time restores that replay the
//! shipped logs into the staged copy, the create-only rule, `drp check`, and
//! the RPO of a server lost mid-write.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::harness::{Scratch, scratch};

/// A MariaDB server of one test: socket only, binary logs on.
struct Server {
    dir: PathBuf,
    child: Option<Child>,
}

impl Server {
    fn start(s: &Scratch) -> Server {
        let dir = s.path("my");
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Server { dir, child: None };
        server.install();
        server.run();
        server
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// The server's own temporary folder: servers of tests running at once
    /// never share one.
    fn tmpdir(&self) -> String {
        let tmp = self.dir.join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        format!("--tmpdir={}", tmp.display())
    }

    fn install(&self) {
        let out = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--user=root", "--skip-test-db"])
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(self.tmpdir())
            .output()
            .expect("mariadb-install-db runs");
        assert!(
            out.status.success(),
            "mariadb-install-db failed (tests/services/setup.sh installs MariaDB): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn run(&mut self) {
        self.run_with(true);
    }

    fn run_with(&mut self, binary_logs: bool) {
        let mut cmd = Command::new("mariadbd");
        cmd.args(["--no-defaults", "--user=root", "--skip-networking"])
            .arg(format!("--datadir={}", self.dir.join("data").display()))
            .arg(self.tmpdir())
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", self.dir.join("pid").display()))
            .arg(format!("--log-error={}", self.dir.join("log").display()));
        if binary_logs {
            cmd.arg(format!(
                "--log-bin={}",
                self.dir.join("data/mysql-bin").display()
            ))
            .args(["--binlog-format=ROW", "--server-id=1"]);
        }
        let child = cmd.spawn().expect("mariadbd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.try_sql("select 1").is_err() {
            assert!(
                Instant::now() < deadline,
                "MariaDB did not start: {}",
                std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn try_sql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "--batch", "--skip-column-names", "-uroot"])
            .arg(format!("--socket={}", self.socket().display()))
            .arg("-e")
            .arg(sql)
            .output()
            .expect("mariadb runs");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    #[track_caller]
    fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("`{sql}` failed: {e}"))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The host is lost: the server killed, its data directory gone; then a
    /// new, empty server on the same socket, as a rebuilt machine has.
    fn lose_and_rebuild(&mut self) {
        self.kill();
        std::fs::remove_dir_all(self.dir.join("data")).unwrap();
        self.install();
        self.run();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn policy(s: &Scratch, server: &Server, rotate: &str) -> String {
    s.write(
        "policy.yaml",
        &format!(
            "host: db2\nobjectives: {{rto: 5m, rpo: 30m}}\nstate_dir: state\nmetrics: {{listen: \"127.0.0.1:0\"}}\n\
             targets:\n  nas: {{kind: local, path: nas}}\n\
             exports:\n  shop:\n    source:\n      kind: mariadb\n      socket: {}\n      user: root\n      database: shop\n      \
             binlog: {{rotate_every: {rotate}}}\n    schedule: \"0 3 * * *\"\n    targets: [nas]\n",
            server.socket().display()
        ),
    );
    "policy.yaml".into()
}

fn rows(server: &Server, db: &str) -> Vec<i64> {
    server
        .sql(&format!("select id from {db}.orders order by id"))
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

fn shop(server: &Server) {
    server.sql(
        "create database shop; \
         create table shop.orders (id int primary key, note varchar(100) character set utf8mb4, at datetime(6) not null default now(6)); \
         use shop; create trigger stamp before insert on orders for each row set new.note = concat(new.note, ' ✓');",
    );
}

#[test]
fn a_restore_to_a_time_replays_the_shipped_binary_logs_up_to_it_and_no_further() {
    let s = scratch("binlog_pitr");
    let server = Server::start(&s);
    shop(&server);
    server.sql("insert into shop.orders (id, note) values (1, 'before the dump')");
    let p = policy(&s, &server, "60s");
    s.agent(&["-q", "backup", "--policy", &p]).ok();
    server.sql("insert into shop.orders (id, note) values (2, 'Zürich → 東京')");
    std::thread::sleep(Duration::from_millis(1500));
    let target = Utc::now();
    std::thread::sleep(Duration::from_millis(1500));
    server.sql("insert into shop.orders (id, note) values (3, 'after the target')");
    let shipped = s.agent(&["--json", "wal", "ship", "--policy", &p]);
    shipped.ok();
    assert_eq!(
        shipped.json()["shipped"].as_array().unwrap().len(),
        1,
        "{}",
        shipped.stdout
    );

    let r = s.agent(&[
        "--json",
        "-q",
        "restore",
        "--policy",
        &p,
        "--export",
        "shop",
        "--to-time",
        &target.to_rfc3339(),
        "--to",
        "shop_copy",
        "--yes",
    ]);
    r.ok();
    assert_eq!(
        rows(&server, "shop_copy"),
        vec![1, 2],
        "rows up to the target, none after"
    );
    assert_eq!(
        server.sql("select note from shop_copy.orders where id = 2"),
        "Zürich → 東京 ✓",
        "the replayed row is the one written, its trigger's work included"
    );
    let reached: DateTime<Utc> = r.json()["reached"].as_str().unwrap().parse().unwrap();
    assert!(
        reached <= target,
        "reached {reached}, past the target {target}"
    );
    assert_eq!(
        rows(&server, "shop"),
        vec![1, 2, 3],
        "the source database is untouched"
    );

    // Past the newest shipped instant: refused before anything is loaded.
    let late = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let refused = s.agent(&[
        "restore",
        "--policy",
        &p,
        "--export",
        "shop",
        "--to-time",
        &late,
        "--to",
        "shop_late",
        "--yes",
    ]);
    refused.code(6);
    assert!(
        refused
            .stderr
            .contains("later than the newest instant the archive reaches"),
        "{}",
        refused.stderr
    );
    assert_eq!(server.sql("show databases like 'shop_late%'"), "");
}

#[test]
fn shipping_never_overwrites_a_binary_log_of_the_same_name() {
    let s = scratch("binlog_conflict");
    let server = Server::start(&s);
    shop(&server);
    let p = policy(&s, &server, "60s");
    s.agent(&["-q", "backup", "--policy", &p]).ok();
    server.sql("insert into shop.orders (id, note) values (1, 'a')");
    s.agent(&["wal", "ship", "--policy", &p]).ok();
    let dir = s.path("nas/db2/shop/binlog");
    let before = crate::harness::tree_digest(&dir);
    // Shipping again finds everything there: success, nothing rewritten.
    s.agent(&["wal", "ship", "--policy", &p]).ok();
    // The server's logs are reset: a new mysql-bin.000001 with other events.
    server.sql("reset master");
    std::fs::remove_dir_all(s.path("state/db2/wal-spool")).unwrap();
    server.sql("insert into shop.orders (id, note) values (2, 'b')");
    let r = s.agent(&["wal", "ship", "--policy", &p]);
    r.code(4);
    assert!(
        r.stderr
            .contains("already holds a different mysql-bin.000001"),
        "{}",
        r.stderr
    );
    let after = crate::harness::tree_digest(&dir);
    let kept: Vec<&String> = after.iter().filter(|l| before.contains(l)).collect();
    assert_eq!(
        kept.len(),
        before.len(),
        "every object shipped before is unchanged"
    );
}

#[test]
fn drp_check_judges_binary_log_shipping_by_its_rotation_and_the_servers_settings() {
    let s = scratch("binlog_check");
    let mut server = Server::start(&s);
    let p = policy(&s, &server, "60s");
    let ok = s.drp(&["--json", "check", &p]);
    ok.ok();
    let export = &ok.json()["policies"][0]["exports"][0];
    assert_eq!(export["meets_rpo"], true, "{}", ok.stdout);
    assert!(
        export["worst_case_rpo_seconds"].as_u64().unwrap() <= 70,
        "{}",
        ok.stdout
    );

    // The same server restarted without binary logs: the objective cannot be met.
    server.kill();
    server.run_with(false);
    let missed = s.drp(&["check", &p]);
    missed.code(8);
    assert!(missed.all().contains("--log-bin"), "{}", missed.all());
}

/// Writes a heartbeat row every second until stopped; the time of the last one.
fn heartbeat(
    server: &Server,
) -> (
    Arc<AtomicBool>,
    std::thread::JoinHandle<Option<DateTime<Utc>>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let socket = server.socket();
    let flag = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut last = None;
        while !flag.load(Ordering::SeqCst) {
            let now = Utc::now();
            let ok = Command::new("mariadb")
                .args(["--no-defaults", "-uroot"])
                .arg(format!("--socket={}", socket.display()))
                .arg("-e")
                .arg(format!(
                    "insert into shop.heartbeat (beat_at) values ('{}'); insert into shop.orders (id, note) values ({}, 'load')",
                    now.format("%Y-%m-%d %H:%M:%S%.6f"),
                    now.timestamp_micros()
                ))
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                last = Some(now);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        last
    });
    (stop, writer)
}

#[test]
fn the_rpo_drill_a_server_lost_mid_write_comes_back_within_its_rotation() {
    let s = scratch("binlog_rpo");
    let mut server = Server::start(&s);
    server.sql(
        "create database shop; create table shop.orders (id bigint primary key, note varchar(20)); \
         create table shop.heartbeat (id int auto_increment primary key, beat_at datetime(6) not null)",
    );
    let p = policy(&s, &server, "3s");
    s.agent(&["-q", "backup", "--policy", &p]).ok();
    let mut daemon = s
        .agent_cmd(&["-q", "run", "--policy", &p])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (stop, writer) = heartbeat(&server);
    std::thread::sleep(Duration::from_secs(15));
    let lost_at = Utc::now();
    server.lose_and_rebuild();
    stop.store(true, Ordering::SeqCst);
    let last_written = writer.join().unwrap().expect("heartbeats were written");
    // The daemon's last turn has nothing new to ship from the rebuilt server.
    std::thread::sleep(Duration::from_secs(4));
    let _ = daemon.kill();
    let _ = daemon.wait();

    let started = Instant::now();
    let r = s.agent(&[
        "--json", "-q", "restore", "--policy", &p, "--export", "shop", "--latest", "--yes",
    ]);
    r.ok();
    let restore_seconds = started.elapsed().as_secs_f64();
    let newest: DateTime<Utc> = server
        .sql("select date_format(max(beat_at), '%Y-%m-%dT%H:%i:%s.%fZ') from shop.heartbeat")
        .parse()
        .unwrap();
    let rpo = (lost_at - newest).as_seconds_f64();
    eprintln!(
        "MariaDB RPO drill: last heartbeat written {last_written}, newest restored {newest}, RPO {rpo:.1}s, restore {restore_seconds:.1}s"
    );
    assert!(
        rpo <= 20.0,
        "the heartbeat RPO is {rpo:.1}s, more than the 3 s rotation allows"
    );
    assert!(
        rows(&server, "shop").len() >= 8,
        "the orders written under load came back"
    );
}

#[test]
fn a_replay_holding_a_statement_that_names_the_live_database_is_refused_untouched() {
    let s = scratch("binlog_qualified");
    let server = Server::start(&s);
    shop(&server);
    server.sql("insert into shop.orders (id, note) values (1, 'a')");
    let p = policy(&s, &server, "60s");
    s.agent(&["-q", "backup", "--policy", &p]).ok();
    // Statement-logged DDL that names its table with the database: renaming
    // the default database would not redirect it to the staged copy.
    server.sql("use shop; alter table shop.orders add column extra int");
    s.agent(&["wal", "ship", "--policy", &p]).ok();
    let live_before = server.sql("show create table shop.orders");
    let r = s.agent(&[
        "restore",
        "--policy",
        &p,
        "--export",
        "shop",
        "--latest",
        "--to",
        "shop_copy",
        "--yes",
    ]);
    r.code(1);
    assert!(
        r.stderr.contains("names database `shop` itself"),
        "{}",
        r.stderr
    );
    assert_eq!(server.sql("show create table shop.orders"), live_before);
    assert_eq!(
        server.sql("show databases like 'shop\\_%'"),
        "",
        "no copy is left behind"
    );
}

#[test]
fn a_drill_restores_to_just_before_the_failure_by_replaying_the_shipped_logs() {
    let s = scratch("binlog_drill");
    let server = Server::start(&s);
    shop(&server);
    server.sql("insert into shop.orders (id, note) values (1, 'a'), (2, 'b')");
    let p = policy(&s, &server, "2s");
    s.write(
        "crm-pitr.yaml",
        "name: crm-pitr\npolicy: policy.yaml\nheartbeat: {export: shop, interval: 1s}\n\
         drill:\n  backup_first: true\n  settle: 10s\n  inject:\n    - name: drop the orders\n      \
         action: {kind: sql, export: shop, destructive: true, query: \"drop table orders\"}\n\
         steps:\n  - name: restore to just before the failure\n    phase: restore\n    \
         action: {kind: restore_backup, export: shop, point: before_failure}\n    timeout: 2m\n  \
         - name: the orders are back\n    phase: verify\n    \
         action: {kind: sql, export: shop, query: \"select count(*) from orders\", expect: {value: \"2\"}}\n",
    );
    // The agent's daemon ships the logs while the drill's heartbeat writes.
    let mut daemon = s
        .agent_cmd(&["-q", "run", "--policy", &p])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let r = s.drp(&[
        "--json",
        "drill",
        "crm-pitr.yaml",
        "--yes",
        "--out",
        "reports",
    ]);
    let _ = daemon.kill();
    let _ = daemon.wait();
    r.ok();
    let report = r.json();
    assert_eq!(report["status"], "passed", "{report:#}");
    let rpo = report["rpo"]["heartbeat_seconds"].as_f64().unwrap();
    eprintln!("MariaDB drill with shipped logs: heartbeat RPO {rpo:.1}s after a 10 s settle");
    // The export was taken before the 10 s settle; the logs carry the
    // heartbeats written during it, up to a rotation (2 s) before the failure.
    assert!(
        rpo < 6.0,
        "heartbeat RPO {rpo:.1}s: the shipped logs were not replayed {report:#}"
    );
    assert_eq!(rows(&server, "shop"), vec![1, 2]);
}

/// What a user compares after a restore that must not have happened: the
/// live database's tables, their definitions and rows.
fn live_state(server: &Server) -> String {
    server.sql(
        "show create table shop.orders; checksum table shop.orders extended; \
         select group_concat(schema_name) from information_schema.schemata where schema_name like 'shop%'",
    )
}

#[test]
fn over_the_live_database_a_failed_replay_or_a_corrupt_log_changes_nothing_and_the_plan_says_what_it_would_do()
 {
    let s = scratch("binlog_live");
    let server = Server::start(&s);
    shop(&server);
    server.sql("insert into shop.orders (id, note) values (1, 'a'), (2, 'b')");
    let p = policy(&s, &server, "60s");
    s.agent(&["-q", "backup", "--policy", &p]).ok();
    server.sql("insert into shop.orders (id, note) values (3, 'c')");
    // Fails halfway: the export loads into the staged copy, then the replay
    // meets a statement that would act on the live database.
    server.sql("use shop; alter table shop.orders add column extra int");
    s.agent(&["wal", "ship", "--policy", &p]).ok();
    let before = live_state(&server);

    // The plan, without a yes: what is replaced, where it is kept, how far
    // the logs replay; then nothing.
    let plan = s.agent(&["restore", "--policy", &p, "--export", "shop", "--latest"]);
    plan.code(5);
    for shown in [
        "replaces         MariaDB database `shop`",
        "shop_drp_replaced_<time>_<id>",
        "replays logs to  the newest archived instant",
    ] {
        assert!(
            plan.stderr.contains(shown),
            "the plan does not show `{shown}`:\n{}",
            plan.stderr
        );
    }
    assert_eq!(live_state(&server), before);

    let failed = s.agent(&[
        "restore", "--policy", &p, "--export", "shop", "--latest", "--yes",
    ]);
    failed.code(1);
    assert!(
        failed.stderr.contains("was not touched"),
        "{}",
        failed.stderr
    );
    assert_eq!(live_state(&server), before, "the live database changed");

    // A shipped log damaged on the target: exit 4 before anything is loaded.
    let log = std::fs::read_dir(s.path("nas/db2/shop/binlog"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "zst"))
        .unwrap();
    let mut bytes = std::fs::read(&log).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&log, &bytes).unwrap();
    let corrupt = s.agent(&[
        "restore", "--policy", &p, "--export", "shop", "--latest", "--yes",
    ]);
    corrupt.code(4);
    assert!(
        corrupt.stderr.contains("integrity check failed"),
        "{}",
        corrupt.stderr
    );
    assert_eq!(live_state(&server), before, "the live database changed");
}
