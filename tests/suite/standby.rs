//! Warm standbys against real PostgreSQL 15 servers: a second host's
//! cluster set up from the primary's newest base backup, replaying the
//! primary's WAL archive as it grows, its lag watched, and promoted once it
//! has replayed everything archived. Everything runs as `postgres`, as in
//! production (see `archiving.rs`, whose clusters these are).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::archiving::{
    EVENTS, PG_BIN, PORT, PgCluster, Site, Sock, agent_bin, as_postgres, chown_postgres,
    socket_dir, wait_for,
};
use crate::harness::Run;

/// The standby host (`db2`) beside a primary's site: the same NAS, a
/// standby of `db1/main` in `<scratch>/standby`, and its own export of that
/// cluster, which a promoted standby archives into.
pub(crate) struct StandbyHost {
    policy: PathBuf,
    data: PathBuf,
    metrics: PathBuf,
    sock: Option<tempfile::TempDir>,
    dir: PathBuf,
}

impl StandbyHost {
    fn beside(site: &Site) -> StandbyHost {
        let sock = socket_dir();
        let data = site.s.path("standby");
        let metrics = site.s.path("db2.prom");
        let policy = site.s.write(
            "standby.yaml",
            &format!(
                "host: db2\nstate_dir: {state}\nmetrics: {{textfile: {metrics}}}\ntargets:\n  nas: {{kind: local, path: {nas}}}\n\
                 standby:\n  main:\n    of: {{host: db1, export: main}}\n    data_directory: {data}\n    host: {sock}\n    \
                 port: {PORT}\n    user: postgres\n    bin_dir: {PG_BIN}\n    archive_into: main\n    lag_alert: 1m\n\
                 exports:\n  main:\n    source: {{kind: postgres-cluster, host: {sock}, port: {PORT}, user: postgres, \
                 bin_dir: {PG_BIN}, data_directory: {data}}}\n    targets: [nas]\n",
                state = site.s.path("state-db2").display(),
                metrics = metrics.display(),
                nas = site.nas.display(),
                data = data.display(),
                sock = sock.path().display(),
            ),
        );
        chown_postgres(site.s.dir.path());
        StandbyHost {
            policy,
            data,
            metrics,
            sock: Some(sock),
            dir: site.s.dir.path().to_path_buf(),
        }
    }

    /// `drp-agent <verbs…> --policy standby.yaml <rest>`, as postgres; a
    /// leading `--json` stays in front.
    pub(crate) fn agent(&self, args: &[&str]) -> Run {
        let json = args.first() == Some(&"--json");
        let args = if json { &args[1..] } else { args };
        let verbs = match args.first() {
            Some(&"standby") | Some(&"wal") => 2,
            _ => 1,
        }
        .min(args.len());
        let mut c = as_postgres(&agent_bin(), &self.dir);
        if json {
            c.arg("--json");
        }
        c.args(&args[..verbs])
            .arg("--policy")
            .arg(&self.policy)
            .args(&args[verbs..]);
        Run::from(c.output().expect("drp-agent runs"))
    }

    /// The standby's server, on the policy's socket (started by the test,
    /// as its service manager would).
    fn server(&mut self) -> PgCluster {
        PgCluster::adopt(&self.data, Sock::Own(self.sock.take().expect("one server")))
    }

    fn status(&self) -> serde_json::Value {
        let r = self.agent(&["--json", "standby", "status"]);
        r.ok();
        r.json()["standbys"][0]["state"].clone()
    }

    pub(crate) fn caught_up(&self) -> bool {
        let s = self.status();
        s["in_recovery"] == true && s["behind_segments"] == 0 && s["lag_seconds"] == 0.0
    }
}

/// A primary archiving every second, with one event before its base backup.
pub(crate) fn primary(tag: &str) -> (Site, PgCluster) {
    let site = Site::new(tag);
    let pg = site.primary("archive_timeout = 1s\n");
    pg.start();
    pg.psql(EVENTS);
    pg.event("before the base backup");
    site.agent(&["backup"]).ok();
    (site, pg)
}

/// The standby set up from the primary's newest base backup and started.
pub(crate) fn standby_of(site: &Site) -> (StandbyHost, PgCluster) {
    let mut host = StandbyHost::beside(site);
    host.agent(&["standby", "init"]).ok();
    let server = host.server();
    server.start();
    (host, server)
}

#[test]
fn a_warm_standby_replays_the_primary_s_archive_and_its_promotion_keeps_every_archived_commit() {
    let (site, pg) = primary("standby");
    let host = StandbyHost::beside(&site);

    // The plan first: nothing is created by a dry run.
    let dry = host.agent(&["standby", "init", "--dry-run"]);
    dry.ok();
    assert!(
        dry.stderr.contains("Standby plan") && dry.stderr.contains("db1/main"),
        "{}",
        dry.stderr
    );
    assert!(!host.data.exists(), "a dry run creates nothing");
    drop(host);
    let (host, standby) = standby_of(&site);
    assert!(host.data.join("standby.signal").is_file());

    // It follows the primary's archive, read-only.
    pg.event("after the base backup");
    pg.switch_wal();
    wait_for(
        "the standby to replay the archive",
        Duration::from_secs(60),
        || standby.try_psql("select count(*) from events").as_deref() == Ok("2"),
    );
    wait_for(
        "the standby to report no lag",
        Duration::from_secs(30),
        || host.caught_up(),
    );
    let refused = standby
        .try_psql("insert into events (note) values ('on the standby')")
        .unwrap_err();
    assert!(refused.contains("read-only"), "{refused}");
    let metrics = std::fs::read_to_string(&host.metrics).expect("the metrics textfile");
    assert!(
        metrics.contains(
            "drp_standby_replay_lag_seconds{host=\"db2\",standby=\"main\",primary=\"db1/main\"} 0"
        ) && metrics.contains(
            "drp_standby_in_recovery{host=\"db2\",standby=\"main\",primary=\"db1/main\"} 1"
        ),
        "{metrics}"
    );

    // The primary's last commit is archived, then the host is lost.
    pg.event("the last commit before the crash");
    pg.switch_wal();
    pg.kill_9();
    let started = Instant::now();
    let promoted = host.agent(&["--json", "standby", "promote"]);
    promoted.ok();
    eprintln!(
        "standby promoted in {:.1}s after the primary was lost",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(promoted.json()["already"], false);
    assert_eq!(
        standby.notes(),
        [
            "before the base backup",
            "after the base backup",
            "the last commit before the crash"
        ]
    );
    assert_eq!(standby.psql("select pg_is_in_recovery()"), "f");

    // The new primary takes writes and archives them into its own export.
    standby.event("written on the new primary");
    let archived = standby.switch_wal();
    let db2_wal = site.nas.join("db2/main/wal");
    let found = walk(&db2_wal)
        .into_iter()
        .any(|p| p.to_string_lossy().contains(&archived));
    assert!(found, "{archived} is not under {}", db2_wal.display());
    // A second promotion is a no-op, not an error (a retried step).
    let again = host.agent(&["--json", "standby", "promote"]);
    again.ok();
    assert_eq!(again.json()["already"], true);
}

#[test]
fn a_standby_that_cannot_replay_a_damaged_segment_keeps_waiting_shows_its_lag_and_is_not_promoted_over_it()
 {
    let (site, pg) = primary("standbybad");
    let (host, standby) = standby_of(&site);
    wait_for("the standby to catch up", Duration::from_secs(60), || {
        host.caught_up()
    });

    // While the standby is stopped, a commit is archived and its copy on
    // the NAS is damaged.
    standby.stop();
    pg.event("in the damaged segment");
    let segment = pg.switch_wal();
    let objects = site.objects(&segment);
    assert_eq!(objects.len(), 1, "{objects:?}");
    let good = std::fs::read(&objects[0]).unwrap();
    let mut bad = good.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 0xff;
    std::fs::write(&objects[0], &bad).unwrap();
    standby.start();

    // It stays up, waiting, and its lag shows.
    wait_for(
        "the standby to report the unreplayed segment",
        Duration::from_secs(60),
        || {
            let s = host.status();
            s["behind_segments"].as_u64() >= Some(1) && s["lag_seconds"].as_f64() > Some(0.0)
        },
    );
    assert!(
        standby.log_text().contains("the standby tries again"),
        "{}",
        standby.log_tail()
    );
    assert_eq!(standby.psql("select pg_is_in_recovery()"), "t");
    let metrics = std::fs::read_to_string(&host.metrics).unwrap();
    assert!(
        metrics.contains(
            "drp_standby_behind_segments{host=\"db2\",standby=\"main\",primary=\"db1/main\"} 1"
        ),
        "{metrics}"
    );

    // A promotion would lose the commit: refused, nothing changed.
    let refused = host.agent(&["standby", "promote", "--catch-up", "3s"]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused
            .stderr
            .contains("has not replayed 1 archived WAL segment")
            && refused.stderr.contains("nothing was changed"),
        "{}",
        refused.stderr
    );
    assert_eq!(standby.psql("select pg_is_in_recovery()"), "t");

    // Once the copy is whole again, it catches up and is promoted with it.
    std::fs::write(&objects[0], &good).unwrap();
    host.agent(&["standby", "promote", "--catch-up", "30s"])
        .ok();
    assert_eq!(
        standby.notes(),
        ["before the base backup", "in the damaged segment"]
    );
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A failover drill of the standby's own runbook: the primary's server
/// killed while the drill's heartbeat writes into it, the standby promoted
/// once it has replayed the archive, the service's name moved on the real
/// BIND and the site checked through it; the RTO measured to that check,
/// the RPO from the heartbeat read on the promoted standby.
#[test]
fn a_failover_drill_promotes_the_warm_standby_and_measures_rto_and_rpo_from_the_heartbeat() {
    let (site, pg) = primary("standbydrill");
    let (host, standby) = standby_of(&site);
    wait_for("the standby to catch up", Duration::from_secs(60), || {
        host.caught_up()
    });
    let pg_ctl = crate::archiving::pg_tool("pg_ctl").display().to_string();
    // The service's name, on the primary's address, and a site on each.
    let name = crate::failover::label("db");
    crate::failover::set(&name, "127.0.0.2");
    let http_port = crate::harness::free_port();
    let _primary_site = crate::failover::host_echo("primary", "127.0.0.2", http_port);
    let _standby_site = crate::failover::host_echo("standby", "127.0.0.3", http_port);
    let secret = std::fs::read(crate::harness::services().get("DRP_TEST_DNS_TSIG_FILE")).unwrap();
    let tsig = site.s.path("tsig.key");
    std::fs::write(&tsig, secret).unwrap();
    let connection = |sock: &std::path::Path, data: &std::path::Path| {
        format!(
            "{{kind: postgres-cluster, host: {}, port: {PORT}, user: postgres, bin_dir: {PG_BIN}, data_directory: {}}}",
            sock.display(),
            data.display()
        )
    };
    // The drill's policy: the standby host's, with the primary's database
    // named too, for the heartbeat and the detection.
    let policy = std::fs::read_to_string(&host.policy).unwrap().replace(
        "exports:\n",
        &format!(
            "exports:\n  primary:\n    source: {}\n    targets: [nas]\n",
            connection(site.sock.path(), &site.data)
        ),
    );
    let drill_policy = site.s.write("drill-policy.yaml", &policy);
    let runbook = site.s.write(
        "failover.yaml",
        &format!(
            "name: standby-failover\npolicy: drill-policy.yaml\nobjectives: {{rto: 5m, rpo: 30m}}\n\
             heartbeat: {{export: primary, read_from: main, interval: 1s}}\n\
             drill:\n  settle: 5s\n  inject:\n    - name: the primary's server is lost\n      \
             action: {{kind: command, destructive: true, run: [{pg_ctl}, -D, {data}, -m, immediate, -w, stop]}}\n\
             steps:\n  - name: the primary is down\n    phase: detect\n    \
             action: {{kind: sql, export: primary, query: \"select 1\", until: fails, interval: 1s}}\n    timeout: 30s\n  \
             - name: promote the standby\n    phase: restore\n    timeout: 2m\n    \
             action: {{kind: promote, standby: main, catch_up: 30s}}\n  \
             - name: move the name\n    phase: restart\n    timeout: 90s\n    \
             action: {{kind: dns_switch, provider: rfc2136, server: \"127.0.0.1:{dns}\", zone: shop.example., name: {name}, \
             from: 127.0.0.2, to: 127.0.0.3, ttl: 60s, tsig: {{name: drp-test, secret: {{file: {tsig}}}}}}}\n  \
             - name: the events are on the new primary\n    phase: verify\n    \
             action: {{kind: sql, export: main, query: \"select count(*) from events\", expect: {{value: \"1\"}}}}\n    timeout: 30s\n  \
             - name: the site answers through its name\n    phase: verify\n    \
             action: {{kind: http, url: \"http://{name}.shop.example:{http_port}/\", resolve_with: \"127.0.0.1:{dns}\", \
             body_contains: \"site=standby\"}}\n",
            data = site.data.display(),
            dns = crate::failover::port(),
            tsig = tsig.display(),
        ),
    );
    chown_postgres(site.s.dir.path());
    let r = crate::archiving::drp_as_postgres(
        &site,
        &[
            "--json",
            "drill",
            &runbook.display().to_string(),
            "--yes",
            "--out",
            "reports",
        ],
    );
    r.ok();
    let report = r.json();
    assert_eq!(report["status"], "passed", "{report:#}");
    let rto = report["rto"]["measured_seconds"].as_f64().unwrap();
    let rpo = report["rpo"]["heartbeat_seconds"].as_f64().unwrap();
    eprintln!(
        "standby failover drill: RTO {rto:.1}s, heartbeat RPO {rpo:.1}s (archive_timeout 1s)"
    );
    // Everything archived before the loss was replayed: the heartbeat lost
    // at most the unarchived tail (archive_timeout 1s, a 1 s interval).
    assert!(rpo < 5.0, "heartbeat RPO {rpo:.1}s: {report:#}");
    assert!(rto < 60.0, "RTO {rto:.1}s: {report:#}");
    assert_eq!(
        crate::failover::dig(&format!("{name}.shop.example."), "A"),
        ["127.0.0.3"]
    );
    assert_eq!(standby.psql("select pg_is_in_recovery()"), "f");
    let _ = (drill_policy, pg);
}

/// A restored standby (`into:`): one of the standby host's exports brought
/// to the primary's newest point by `run --due` when `every` has gone by,
/// not before; `standby init` refreshes it at once, keeping what it
/// replaced; there is nothing to promote.
#[test]
fn a_restored_standby_is_brought_to_the_primary_s_newest_point_on_its_schedule() {
    let s = crate::harness::scratch("standby_restored");
    let orders = |db: &str| -> i64 {
        rusqlite::Connection::open(s.path(db))
            .unwrap()
            .query_row("select count(*) from orders", [], |r| r.get(0))
            .unwrap()
    };
    let c = rusqlite::Connection::open(s.path("app.db")).unwrap();
    c.execute_batch(
        "create table orders (id integer primary key, item text);
         with recursive n(i) as (select 1 union all select i + 1 from n where i < 1000) insert into orders (item) select 'o' || i from n;",
    )
    .unwrap();
    s.write(
        "primary.yaml",
        "host: shop-a\ntargets:\n  nas: {kind: local, path: nas}\nexports:\n  app:\n    source: {kind: sqlite, path: app.db}\n    targets: [nas]\n",
    );
    s.agent(&["init", "--policy", "primary.yaml"]).ok();
    s.agent(&["backup", "--policy", "primary.yaml"]).ok();
    s.write(
        "standby.yaml",
        "host: shop-b\ntargets:\n  nas: {kind: local, path: nas}\nexports:\n  app:\n    source: {kind: sqlite, path: standby.db}\n    targets: [nas]\n\
         standby:\n  shop:\n    of: {host: shop-a, export: app}\n    into: app\n    every: 1h\n",
    );
    s.agent(&["run", "--due", "--policy", "standby.yaml"]).ok();
    assert_eq!(orders("standby.db"), 1000);
    let status = s.agent(&["--json", "standby", "status", "--policy", "standby.yaml"]);
    status.ok();
    let state = &status.json()["standbys"][0]["state"];
    assert!(
        state["point"].as_str().is_some_and(|p| !p.is_empty()),
        "{state}"
    );
    assert!(state["lag_seconds"].as_f64().is_some(), "{state}");

    // A new point on the primary: not taken before `every` has gone by.
    c.execute("insert into orders (item) values ('late')", [])
        .unwrap();
    s.agent(&["backup", "--policy", "primary.yaml"]).ok();
    s.agent(&["run", "--due", "--policy", "standby.yaml"]).ok();
    assert_eq!(orders("standby.db"), 1000, "refreshed before its time");

    // At once on demand, keeping the copy it replaced.
    s.agent(&["standby", "init", "--policy", "standby.yaml", "--yes"])
        .ok();
    assert_eq!(orders("standby.db"), 1001);
    let kept = std::fs::read_dir(s.dir.path()).unwrap().flatten().any(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with("standby.db.drp-replaced-")
    });
    assert!(kept, "the replaced standby database is kept");
    let promote = s.agent(&["standby", "promote", "--policy", "standby.yaml"]);
    assert_ne!(promote.code, 0);
    assert!(
        promote.stderr.contains("nothing to promote"),
        "{}",
        promote.stderr
    );
}

/// Replacing a standby's data directory keeps the rules of every restore:
/// the plan says what it replaces before anything runs (and nothing runs
/// without --yes), a server still running on it stops the set-up with the
/// standby untouched, and a corrupt base backup exits 4, nothing replaced.
#[test]
fn replacing_a_standby_shows_its_plan_and_a_running_server_or_a_corrupt_backup_change_nothing() {
    let (site, _pg) = primary("standbyswap");
    let (host, standby) = standby_of(&site);
    wait_for("the standby to catch up", Duration::from_secs(60), || {
        host.caught_up()
    });

    // Its server still runs: refused, the standby replays on.
    let running = host.agent(&["standby", "init", "--yes"]);
    assert_ne!(running.code, 0);
    assert!(running.stderr.contains("is running"), "{}", running.stderr);
    assert_eq!(standby.psql("select pg_is_in_recovery()"), "t");
    assert!(site.entries_like("standby.drp-replaced-").is_empty());
    assert!(site.entries_like(".drp-restore-").is_empty());

    standby.stop();
    let before = crate::harness::tree_digest(&host.data);
    // The plan names what is replaced and where it is kept; without --yes
    // nothing changes.
    let asked = host.agent(&["standby", "init"]);
    asked.code(5);
    assert!(
        asked
            .stderr
            .contains("replaces         PostgreSQL 15 data directory")
            && asked.stderr.contains("standby.drp-replaced-"),
        "{}",
        asked.stderr
    );
    assert_eq!(crate::harness::tree_digest(&host.data), before);

    // A corrupt base backup: exit 4, nothing replaced, nothing left behind.
    let object = std::fs::read_dir(site.nas.join("db1/main/data"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "zst"))
        .unwrap();
    let mut bytes = std::fs::read(&object).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0xff;
    std::fs::write(&object, &bytes).unwrap();
    let corrupt = host.agent(&["standby", "init", "--yes"]);
    corrupt.code(4);
    assert_eq!(
        crate::harness::tree_digest(&host.data),
        before,
        "the standby changed"
    );
    assert!(site.entries_like("standby.drp-replaced-").is_empty());
    assert!(site.entries_like(".drp-restore-").is_empty());
}
