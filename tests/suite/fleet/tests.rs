use std::time::Duration;

use super::*;
use crate::harness::Run;

/// SQL on fleet host 2's own PostgreSQL server.
fn host_psql(database: &str, sql: &str) -> String {
    let v = services();
    let out = Command::new("psql")
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "postgres"])
        .args(["-h", v.get("DRP_TEST_FLEET_PG"), "-p", "5432", "-d", database, "-c", sql])
        .env("PGPASSWORD", v.get("DRP_TEST_PG_PASSWORD"))
        .output()
        .unwrap();
    assert!(out.status.success(), "psql on {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A small web application in `web`'s namespace that shows the number of
/// orders in `db`'s database, or 503 when it cannot read them.
struct WebApp(std::process::Child);

impl WebApp {
    fn start(web: &Host, database: &str) -> WebApp {
        let v = services();
        let script = format!(
            r#"
import http.server, subprocess
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        r = subprocess.run(["psql", "-X", "-A", "-t", "-h", "{pg}", "-U", "postgres", "-d", "{db}", "-c", "select count(*) from orders"], capture_output=True, text=True)
        ok = r.returncode == 0
        body = ("orders=" + r.stdout.strip()) if ok else "database unavailable"
        self.send_response(200 if ok else 503)
        self.end_headers()
        self.wfile.write(body.encode())
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"#,
            pg = v.get("DRP_TEST_FLEET_PG"),
            db = database
        );
        let child = web
            .exec("python3")
            .args(["-c", &script])
            .env("PGPASSWORD", v.get("DRP_TEST_PG_PASSWORD"))
            .spawn()
            .unwrap();
        let url = format!("http://{}:8080/", web.addr);
        assert!(
            eventually(Duration::from_secs(10), || Command::new("curl").args(["-sf", &url]).status().is_ok_and(|s| s.success())),
            "the web application answers"
        );
        WebApp(child)
    }
}

impl Drop for WebApp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_runbook_restores_postgres_on_host_b_from_s3_and_checks_it_from_host_c() {
    let s = scratch("fleet_drill");
    let db_host = host(&s, 2, "db");
    let web_host = host(&s, 3, "web");
    let gone = host(&s, 9, "gone");
    forward_into(&db_host.ns, s3_port());
    let db = s.id.clone();
    host_psql("postgres", &format!("create database {db}"));
    host_psql(
        &db,
        &format!("create role {role}; \
         create table orders (id serial primary key, item text not null, qty int, placed timestamptz default now()); \
         create table audit (order_id int, at timestamptz default now()); \
         create function log_order() returns trigger language plpgsql as $$ begin insert into audit (order_id) values (new.id); return new; end $$; \
         create trigger orders_audit after insert on orders for each row execute function log_order(); \
         alter table orders owner to {role}; \
         insert into orders (item, qty) select 'article ' || i || ' — café ☕', i % 7 from generate_series(1, 1000) i;",
            role = format!("{db}_app")
        ),
    );
    let v = services();
    let pg_password = db_host.secret("pg-password", v.get("DRP_TEST_PG_PASSWORD"));
    let socket_dir = PathBuf::from(v.get("DRP_TEST_FLEET_DIR")).join("h2/pg");
    db_host.serve(&format!(
        "objectives: {{rto: 5m, rpo: 30m}}\ntargets:\n{}exports:\n  shop:\n    source: {{kind: postgres, host: {pg}, port: 5432, user: postgres, database: {db}, password: {{file: {pw}}}}}\n    targets: [s3]\nserve:\n  allow_destructive: true\n  commands:\n    drop-shop-db: {{run: [dropdb, -h, {sock}, -U, postgres, --force, {db}], destructive: true}}\n",
        db_host.s3_target(&s),
        pg = v.get("DRP_TEST_FLEET_PG"),
        pw = pg_password.display(),
        sock = socket_dir.display(),
    ));
    web_host.serve(
        "targets:\n  nas: {kind: local, path: nas}\nexports:\n  site:\n    source: {kind: directory, path: /etc/ssh}\n    targets: [nas]\n",
    );
    // A recovery point on S3, taken by the db host's agent.
    let backup = Run::from(
        db_host
            .exec(agent_bin().to_str().unwrap())
            .args(["backup", "--policy", db_host.policy_path().to_str().unwrap()])
            .output()
            .unwrap(),
    );
    backup.ok();
    let before = host_psql(&db, "select md5(string_agg(id || item || qty, ',' order by id)) from orders");
    let _web = WebApp::start(&web_host, &db);

    coordinator_policy(&s);
    inventory(&s, "fleet.yaml", &[&db_host, &web_host, &gone], None, None);
    s.write(
        "db-lost.yaml",
        r#"name: shop-db-lost-fleet
policy: coordinator.yaml
inventory: fleet.yaml
objectives: {rto: 5m, rpo: 30m}
phases:
  verify: {parallel: true}
drill:
  inject:
    - name: drop the shop database
      host: db
      action: {kind: command, named: drop-shop-db}
steps:
  - name: the site fails
    phase: detect
    host: web
    action: {kind: http, url: "http://127.0.0.1:8080/", until: fails, interval: 500ms}
    timeout: 30s
  - name: restore the shop database from S3
    phase: restore
    host: db
    action: {kind: restore_backup, export: shop, from: s3}
    timeout: 2m
  - name: the site shows the orders, seen from the web host
    phase: verify
    host: web
    action: {kind: http, url: "http://127.0.0.1:8080/", body_contains: "orders=1000"}
    timeout: 20s
    retries: 3
  - name: the orders are back, on the db host
    phase: verify
    host: db
    action: {kind: sql, export: shop, query: "select count(*) from orders", expect: {value: "1000"}}
    timeout: 20s
"#,
    );
    let check = s.drp(&["check", "db-lost.yaml"]);
    check.ok();
    assert!(check.stdout.contains("host `db` reachable: agent"), "{}", check.stdout);
    assert!(check.stdout.contains("step `restore the shop database from S3` on `db`: restore `shop`"), "{}", check.stdout);

    let r = s.drp(&["--json", "drill", "db-lost.yaml", "--yes", "--out", "reports"]);
    r.ok();
    let report = r.json();
    assert_eq!(report["status"], "passed", "{report:#}");
    assert_eq!(report["rto"]["met"], true, "{report:#}");
    assert!(report["rto"]["measured_seconds"].as_f64().unwrap() > 0.0);
    let restored = report["rpo"]["restored"].as_array().unwrap();
    assert_eq!(restored.len(), 1, "the db host's restore is measured: {report:#}");
    assert_eq!(restored[0]["export"], "shop");
    assert!(report["rpo"]["measured_seconds"].as_f64().unwrap() > 0.0);
    let hosts: Vec<(&str, &str)> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| (st["name"].as_str().unwrap(), st["host"].as_str().unwrap_or("-")))
        .collect();
    assert_eq!(
        hosts,
        [
            ("drop the shop database", "db"),
            ("the site fails", "web"),
            ("restore the shop database from S3", "db"),
            ("the site shows the orders, seen from the web host", "web"),
            ("the orders are back, on the db host", "db"),
        ]
    );
    assert_eq!(
        host_psql(&db, "select md5(string_agg(id || item || qty, ',' order by id)) from orders"),
        before,
        "the orders restored on host b are the ones backed up"
    );
    assert_eq!(host_psql(&db, "select count(*) from audit"), "1000", "the trigger's table came back");
    let id = report["id"].as_str().unwrap();
    let md = std::fs::read_to_string(s.path(&format!("reports/shop-db-lost-fleet-{id}.md"))).unwrap();
    assert!(md.contains("| main | restore | db | restore the shop database from S3 | passed"), "{md}");

    // The fleet view: the db host's export and its last drill; the host
    // nobody serves is listed as unreachable, not fatal.
    let st = s.drp(&["--json", "status", "--inventory", "fleet.yaml", "--policy", "coordinator.yaml"]);
    st.code(8);
    let rows = st.json()["rows"].as_array().unwrap().clone();
    let shop = rows.iter().find(|r| r["export"] == "shop").unwrap_or_else(|| panic!("{rows:#?}"));
    assert_eq!(shop["host"], "db");
    assert_eq!(shop["within_rpo"], true, "{shop:#}");
    assert_eq!(shop["last_drill"]["runbook"], "shop-db-lost-fleet");
    assert_eq!(shop["last_drill"]["passed"], true);
    let unreachable = rows.iter().find(|r| r["host"] == "gone").unwrap();
    assert_eq!(unreachable["reachable"], false);
    assert!(unreachable["error"].as_str().unwrap().contains("Permission denied"), "{unreachable:#}");
    let table = s.drp(&["status", "--inventory", "fleet.yaml"]);
    assert!(table.stdout.contains("UNREACHABLE"), "{}", table.stdout);
    assert!(table.stdout.contains("3 hosts, 1 unreachable"), "{}", table.stdout);
}

#[test]
fn each_host_refuses_what_its_policy_does_not_allow() {
    let s = scratch("fleet_refuse");
    let h = host(&s, 4, "app");
    let v = services();
    s.write("hosts/app/data/index.html", "live\n");
    h.serve(&format!(
        "targets:\n  nas: {{kind: local, path: {nas}}}\nexports:\n  pages:\n    source: {{kind: directory, path: {data}}}\n    targets: [nas]\nserve:\n  units: [shop.service]\n  commands:\n    flush: {{run: [\"true\"]}}\n",
        nas = h.dir.join("nas").display(),
        data = h.dir.join("data").display(),
    ));
    Run::from(
        Command::new(agent_bin())
            .args(["backup", "--policy", h.policy_path().to_str().unwrap()])
            .output()
            .unwrap(),
    )
    .ok();
    let key = v.get("DRP_TEST_FLEET_KEY");
    let marker = s.path("pwned");
    let hello = serde_json::json!({"id": 1, "op": "hello", "protocol": 1});
    let step = |id: u64, op: &str, action: serde_json::Value| {
        serde_json::json!({"id": id, "op": op, "step": {"name": "x", "action": action}, "t_fail": "2026-12-02T10:00:00Z", "runbook": "rogue"})
    };
    // A coordinator bypassed: the agent itself refuses, whatever it is sent.
    let (replies, _) = raw_session(
        &h,
        key,
        &[],
        &[
            hello.clone(),
            step(2, "run", serde_json::json!({"kind": "restore_backup", "export": "pages"})),
            step(3, "run", serde_json::json!({"kind": "restore_backup", "export": "billing"})),
            step(4, "run", serde_json::json!({"kind": "restart", "unit": "nginx.service"})),
            step(5, "run", serde_json::json!({"kind": "command", "run": ["touch", marker.to_str().unwrap()]})),
            step(6, "run", serde_json::json!({"kind": "command", "named": "flush", "destructive": false, "run": ["touch", marker.to_str().unwrap()]})),
            step(7, "run", serde_json::json!({"kind": "restart", "unit": "shop.service"})),
            step(8, "validate", serde_json::json!({"kind": "command", "named": "flush"})),
        ],
    );
    let by_id = |id: u64| {
        replies
            .iter()
            .find(|r| r["id"] == id && r["reply"] != "running")
            .unwrap_or_else(|| panic!("no reply to {id}: {replies:#?}"))
            .clone()
    };
    assert_eq!(by_id(1)["reply"], "hello");
    assert_eq!(by_id(1)["host"], "app");
    let refused = |id: u64, words: &str| {
        let r = by_id(id);
        assert_eq!((r["reply"].as_str(), r["kind"].as_str()), (Some("error"), Some("refused")), "{id}: {r:#}");
        assert!(r["message"].as_str().unwrap().contains(words), "{id}: {r:#}");
    };
    refused(2, "allow_destructive");
    refused(3, "unknown export `billing`");
    refused(4, "refuses to restart `nginx.service`");
    refused(5, "runs no command given by a coordinator");
    refused(6, "give exactly one of `run` or `named`");
    refused(7, "allow_destructive");
    assert_eq!(by_id(8)["reply"], "allowed");
    assert_eq!(by_id(8)["destructive"], false);
    assert!(!marker.exists(), "nothing a coordinator sent was run");
    assert_eq!(std::fs::read_to_string(h.dir.join("data/index.html")).unwrap(), "live\n");

    // The key can start nothing but the agent: a command asked for is ignored.
    let (replies, _) = raw_session(&h, key, &["touch", marker.to_str().unwrap()], &[hello.clone()]);
    assert_eq!(replies[0]["reply"], "hello", "{replies:#?}");
    assert!(!marker.exists(), "authorized_keys pins the serve command");

    // Through the coordinator: `drp check` shows the host's refusals.
    coordinator_policy(&s);
    inventory(&s, "fleet.yaml", &[&h], None, None);
    s.write(
        "rb.yaml",
        "name: app\npolicy: coordinator.yaml\ninventory: fleet.yaml\nobjectives: {rto: 5m, rpo: 30m}\nsteps:\n  - {name: put the pages back, phase: restore, host: app, action: {kind: restore_backup, export: pages}}\n  - {name: flush, phase: verify, host: app, action: {kind: command, named: flush}}\n",
    );
    let c = s.drp(&["check", "rb.yaml"]);
    c.code(2);
    assert!(c.stderr.contains("step `put the pages back` on `app`: host `app` refuses `restore `pages`"), "{}", c.stderr);
    assert!(c.stdout.contains("step `flush` on `app`"), "{}", c.stdout);

    // A host whose key does not match the pinned one, and a key the host does not know.
    let wrong = s.write(
        "wrong_known_hosts",
        &format!(
            "{} {}",
            h.addr,
            std::fs::read_to_string(format!("{}.pub", v.get("DRP_TEST_FLEET_STRANGER_KEY"))).unwrap().split_whitespace().take(2).collect::<Vec<_>>().join(" ")
        ),
    );
    inventory(&s, "spoofed.yaml", &[&h], None, Some(&wrong));
    s.write("spoofed-rb.yaml", &std::fs::read_to_string(s.path("rb.yaml")).unwrap().replace("fleet.yaml", "spoofed.yaml"));
    let c = s.drp(&["check", "spoofed-rb.yaml"]);
    c.code(2);
    assert!(c.stderr.contains("Host key verification failed"), "{}", c.stderr);
    inventory(&s, "stranger.yaml", &[&h], Some(v.get("DRP_TEST_FLEET_STRANGER_KEY")), None);
    s.write("stranger-rb.yaml", &std::fs::read_to_string(s.path("rb.yaml")).unwrap().replace("fleet.yaml", "stranger.yaml"));
    let c = s.drp(&["check", "stranger-rb.yaml"]);
    c.code(2);
    assert!(c.stderr.contains("Permission denied"), "{}", c.stderr);
}

#[test]
fn a_host_cut_off_mid_step_fails_within_its_timeout_and_the_others_go_on() {
    let s = scratch("fleet_cut");
    let cut = host(&s, 5, "far");
    let near = host(&s, 6, "near");
    for h in [&cut, &near] {
        h.serve(&format!(
            "targets:\n  nas: {{kind: local, path: {nas}}}\nexports:\n  etc:\n    source: {{kind: directory, path: /etc/ssh}}\n    targets: [nas]\nserve:\n  commands:\n    long-check: {{run: [sleep, \"{secs}\"]}}\n",
            nas = h.dir.join("nas").display(),
            secs = if h.n == 5 { "47" } else { "3" },
        ));
    }
    coordinator_policy(&s);
    inventory(&s, "fleet.yaml", &[&cut, &near], None, None);
    s.write(
        "rb.yaml",
        "name: cut\npolicy: coordinator.yaml\ninventory: fleet.yaml\nobjectives: {rto: 5m, rpo: 30m}\nphases: {verify: {parallel: true}}\nsteps:\n  - {name: far check, phase: verify, host: far, timeout: 25s, action: {kind: command, named: long-check}}\n  - {name: near check, phase: verify, host: near, timeout: 25s, action: {kind: command, named: long-check}}\n",
    );
    let child = s
        .drp_cmd(&["--json", "run", "rb.yaml", "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(15), || running("sleep 47")), "the far step started");
    let started = Instant::now();
    let link = LinkCut::new(&cut);
    let r = Run::from(child.wait_with_output().unwrap());
    let took = started.elapsed();
    assert!(took < Duration::from_secs(25), "the step failed within its timeout: {took:?}");
    let report = r.json();
    let step = |name: &str| {
        report["steps"].as_array().unwrap().iter().find(|st| st["name"] == name).unwrap_or_else(|| panic!("{}", r.all())).clone()
    };
    let far = step("far check");
    assert_eq!((far["status"].as_str(), far["host"].as_str()), (Some("failed"), Some("far")), "{far:#}");
    let msg = far["message"].as_str().unwrap();
    assert!(msg.contains("connection to host `far` lost during the step"), "{msg}");
    assert!(msg.contains("last known state: running on the host for"), "{msg}");
    assert_eq!(step("near check")["status"], "passed", "{report:#}");
    assert_ne!(r.code, 0);
    // The host's sshd drops the session; the agent stops the step there.
    assert!(
        eventually(Duration::from_secs(15), || !running("sleep 47")),
        "the cut-off host's step was stopped on the host"
    );
    drop(link);
}

#[test]
fn a_timed_out_remote_step_is_cancelled_on_its_host() {
    let s = scratch("fleet_cancel");
    let h = host(&s, 7, "slow");
    h.serve(&format!(
        "targets:\n  nas: {{kind: local, path: {nas}}}\nexports:\n  etc:\n    source: {{kind: directory, path: /etc/ssh}}\n    targets: [nas]\nserve:\n  commands:\n    slow-check: {{run: [sleep, \"53\"]}}\n",
        nas = h.dir.join("nas").display(),
    ));
    coordinator_policy(&s);
    inventory(&s, "fleet.yaml", &[&h], None, None);
    // While drp still runs (and its session is open), the host has stopped the step.
    s.write(
        "rb.yaml",
        "name: slow\npolicy: coordinator.yaml\ninventory: fleet.yaml\nobjectives: {rto: 5m, rpo: 30m}\nsteps:\n  - {name: slow check, phase: detect, host: slow, timeout: 2s, on_failure: continue, action: {kind: command, named: slow-check}}\n  - {name: the slow check no longer runs there, phase: verify, timeout: 10s, action: {kind: command, run: [sh, -c, \"sleep 1; ! pgrep -x -f 'sleep 53'\"]}}\n",
    );
    let r = s.drp(&["--json", "run", "rb.yaml", "--yes"]);
    let report = r.json();
    let steps = report["steps"].as_array().unwrap_or_else(|| panic!("{}", r.all()));
    assert_eq!(steps[0]["status"], "timed_out", "{report:#}");
    assert_eq!(steps[1]["status"], "passed", "the host stopped the timed-out step: {report:#}");
}
