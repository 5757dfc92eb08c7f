use std::time::Duration;

use std::path::Path;

use super::*;
use crate::harness::{Run, mariadb, psql};

/// SQL on fleet host 2's own PostgreSQL server.
fn host_psql(database: &str, sql: &str) -> String {
    psql_at(services().get("DRP_TEST_FLEET_PG"), "5432", database, sql)
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
            eventually(Duration::from_secs(10), || Command::new("curl")
                .args(["-sf", &url])
                .status()
                .is_ok_and(|s| s.success())),
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

fn example(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policies/fleet")
        .join(rel)
}

/// `node`'s entry at `path`, which the example must have.
fn entry<'a>(node: &'a mut serde_yaml_ng::Value, path: &[&str]) -> &'a mut serde_yaml_ng::Value {
    path.iter().fold(node, |n, key| {
        n.get_mut(*key)
            .unwrap_or_else(|| panic!("the example inventory has `{}`", path.join(".")))
    })
}

/// `policies/fleet/inventory.yaml` as shipped, with this fleet set in it:
/// each host's address and policy, and the coordinator's user, key, known
/// hosts and agent in the `drp_agents` group's variables.
fn example_inventory(s: &Scratch, hosts: &[&Host]) -> PathBuf {
    use serde_yaml_ng::Value;
    let v = services();
    let mut inventory: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(example("inventory.yaml")).unwrap())
            .unwrap();
    let agents = entry(&mut inventory, &["all", "children", "drp_agents"]);
    for (key, value) in [
        ("ansible_user", "root".to_string()),
        (
            "ansible_ssh_private_key_file",
            v.get("DRP_TEST_FLEET_KEY").into(),
        ),
        (
            "drp_known_hosts",
            v.get("DRP_TEST_FLEET_KNOWN_HOSTS").into(),
        ),
        ("drp_agent", agent_bin().display().to_string()),
    ] {
        *entry(agents, &["vars", key]) = Value::from(value);
    }
    for h in hosts {
        let group = entry(agents, &["children"])
            .as_mapping_mut()
            .unwrap()
            .values_mut()
            .find(|g| g["hosts"].get(&h.name).is_some())
            .unwrap_or_else(|| panic!("the example inventory has a host `{}`", h.name));
        let vars = entry(group, &["hosts", &h.name]);
        *entry(vars, &["ansible_host"]) = Value::from(h.addr.clone());
        *entry(vars, &["drp_policy"]) = Value::from(h.policy_path().display().to_string());
    }
    s.write(
        "inventory.yaml",
        &serde_yaml_ng::to_string(&inventory).unwrap(),
    )
}

/// The README's three-host set-up, as `policies/fleet/` ships it: the
/// coordinator here, db-1 (PostgreSQL) and web-1 (the shop) as namespaces.
#[test]
fn a_runbook_restores_postgres_on_host_b_from_s3_and_checks_it_from_host_c() {
    let mut s = scratch("fleet_drill");
    let db_host = host(&s, 2, "db-1");
    let web_host = host(&s, 3, "web-1");
    let gone = host(&s, 9, "gone");
    forward_into(&db_host.ns, s3_port());
    let db = s.id.clone();
    host_psql("postgres", &format!("create database {db}"));
    host_psql(
        &db,
        &format!(
            "create role {role}; \
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
    // The example host policies, as they read once installed on each host.
    db_host.secret("pg-password", v.get("DRP_TEST_PG_PASSWORD"));
    db_host.secret("s3-key-id", v.get("DRP_TEST_S3_KEY_ID"));
    db_host.secret("s3-secret", v.get("DRP_TEST_S3_SECRET"));
    let socket_dir = PathBuf::from(v.get("DRP_TEST_FLEET_DIR")).join("h2/pg");
    db_host.serve_policy(&render(
        &std::fs::read_to_string(example("db-1.yaml")).unwrap(),
        &[
            (
                "DRP_STATE_DIR",
                db_host.dir.join("state").display().to_string(),
            ),
            ("DRP_S3_BUCKET", v.get("DRP_TEST_S3_BUCKET").into()),
            ("DRP_S3_PREFIX", s.id.clone()),
            ("DRP_S3_ENDPOINT", v.get("DRP_TEST_S3_ENDPOINT").into()),
            ("DRP_S3_REGION", "garage".into()),
            ("DRP_SECRETS", db_host.dir.display().to_string()),
            ("SHOP_PG_HOST", v.get("DRP_TEST_FLEET_PG").into()),
            ("SHOP_PG_DB", db.clone()),
            ("SHOP_PG_SOCKET", socket_dir.display().to_string()),
        ],
    ));
    std::fs::create_dir_all(web_host.dir.join("site")).unwrap();
    std::fs::write(web_host.dir.join("site/index.html"), "shop\n").unwrap();
    web_host.serve_policy(&render(
        &std::fs::read_to_string(example("web-1.yaml")).unwrap(),
        &[
            (
                "DRP_STATE_DIR",
                web_host.dir.join("state").display().to_string(),
            ),
            ("DRP_NAS", web_host.dir.join("nas").display().to_string()),
            ("SITE_ROOT", web_host.dir.join("site").display().to_string()),
        ],
    ));
    let before = host_psql(
        &db,
        "select md5(string_agg(id || item || qty, ',' order by id)) from orders",
    );
    let _web = WebApp::start(&web_host, &db);

    // The coordinator's side: the example runbook and policy, and the
    // example inventory with this fleet's addresses, policies and keys.
    for name in ["db-lost.yaml", "coordinator.yaml"] {
        s.write(name, &std::fs::read_to_string(example(name)).unwrap());
    }
    example_inventory(&s, &[&db_host, &web_host]);
    s.write("runbooks/README", "the on-call runbooks\n");
    for (k, val) in [
        ("DRP_COORDINATOR", "coordinator".to_string()),
        ("DRP_NAS", s.path("nas").display().to_string()),
        ("DRP_RUNBOOKS", s.path("runbooks").display().to_string()),
        ("SHOP_EXPECT", "orders=1000".into()),
    ] {
        s.set_env(k, &val);
    }
    let runbook = s.path("db-lost.yaml").display().to_string();
    let check = s.drp(&["check", &runbook]);
    check.ok();
    assert!(
        check.stdout.contains("host `db-1` reachable: agent"),
        "{}",
        check.stdout
    );
    assert!(
        check
            .stdout
            .contains("step `restore the shop database from S3` on `db-1`: restore `shop`"),
        "{}",
        check.stdout
    );

    let r = s.drp(&["--json", "drill", &runbook, "--yes", "--out", "reports"]);
    r.ok();
    let report = r.json();
    assert_eq!(report["status"], "passed", "{report:#}");
    assert_eq!(report["rto"]["met"], true, "{report:#}");
    assert!(report["rto"]["measured_seconds"].as_f64().unwrap() > 0.0);
    let restored = report["rpo"]["restored"].as_array().unwrap();
    assert_eq!(restored.len(), 1, "db-1's restore is measured: {report:#}");
    assert_eq!(restored[0]["export"], "shop");
    assert!(report["rpo"]["measured_seconds"].as_f64().unwrap() > 0.0);
    assert!(
        report["notes"].as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap()
            .starts_with("drill backup of `shop` on `db-1`: backup ")),
        "the drill's fresh point was taken on db-1: {report:#}"
    );
    let hosts: Vec<(&str, &str)> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| {
            (
                st["name"].as_str().unwrap(),
                st["host"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        hosts,
        [
            ("drop the shop database", "db-1"),
            ("the site fails", "web-1"),
            ("restore the shop database from S3", "db-1"),
            ("the site shows the orders, seen from web-1", "web-1"),
            ("the orders are back, on db-1", "db-1"),
        ]
    );
    assert_eq!(
        host_psql(
            &db,
            "select md5(string_agg(id || item || qty, ',' order by id)) from orders"
        ),
        before,
        "the orders restored on db-1 are the ones backed up"
    );
    assert_eq!(
        host_psql(&db, "select count(*) from audit"),
        "1000",
        "the trigger's table came back"
    );
    let id = report["id"].as_str().unwrap();
    let md =
        std::fs::read_to_string(s.path(&format!("reports/shop-db-lost-fleet-{id}.md"))).unwrap();
    assert!(
        md.contains("| main | restore | db-1 | restore the shop database from S3 | passed"),
        "{md}"
    );

    // The fleet view: db-1's export and its last drill; a host nobody
    // serves is listed as unreachable, not fatal.
    inventory(&s, "fleet.yaml", &[&db_host, &web_host, &gone], None, None);
    let policy = s.path("coordinator.yaml").display().to_string();
    let st = s.drp(&[
        "--json",
        "status",
        "--inventory",
        "fleet.yaml",
        "--policy",
        &policy,
    ]);
    st.code(8);
    let rows = st.json()["rows"].as_array().unwrap().clone();
    let shop = rows
        .iter()
        .find(|r| r["export"] == "shop")
        .unwrap_or_else(|| panic!("{rows:#?}"));
    assert_eq!(shop["host"], "db-1");
    assert_eq!(shop["within_rpo"], true, "{shop:#}");
    assert_eq!(shop["last_drill"]["runbook"], "shop-db-lost-fleet");
    assert_eq!(shop["last_drill"]["passed"], true);
    let unreachable = rows.iter().find(|r| r["host"] == "gone").unwrap();
    assert_eq!(unreachable["reachable"], false);
    assert!(
        unreachable["error"]
            .as_str()
            .unwrap()
            .contains("Permission denied"),
        "{unreachable:#}"
    );
    let table = s.drp(&["status", "--inventory", "fleet.yaml"]);
    assert!(table.stdout.contains("UNREACHABLE"), "{}", table.stdout);
    assert!(
        table.stdout.contains("3 hosts, 1 unreachable"),
        "{}",
        table.stdout
    );
    // The quarter's page covers the fleet: the drill, and every host's exposure.
    let rep = s.drp(&["report", "--policy", &policy, "--inventory", "fleet.yaml"]);
    rep.code(8);
    assert!(rep.stdout.contains("## Fleet"), "{}", rep.stdout);
    assert!(rep.stdout.contains("| db-1 | shop |"), "{}", rep.stdout);
    assert!(
        rep.stdout.contains("| gone | UNREACHABLE: "),
        "{}",
        rep.stdout
    );
    assert!(rep.stdout.contains("shop-db-lost-fleet"), "{}", rep.stdout);
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
    let hello = serde_json::json!({"id": 1, "op": "hello", "protocol": drp_coordinator::fleet::protocol::PROTOCOL});
    let step = |id: u64, op: &str, action: serde_json::Value| serde_json::json!({"id": id, "op": op, "step": {"name": "x", "action": action}, "t_fail": "2026-12-02T10:00:00Z", "runbook": "rogue"});
    // A coordinator bypassed: the agent itself refuses, whatever it is sent.
    let (replies, _) = raw_session(
        &h,
        key,
        &[],
        &[
            hello.clone(),
            step(
                2,
                "run",
                serde_json::json!({"kind": "restore_backup", "export": "pages"}),
            ),
            step(
                3,
                "run",
                serde_json::json!({"kind": "restore_backup", "export": "billing"}),
            ),
            step(
                4,
                "run",
                serde_json::json!({"kind": "restart", "unit": "nginx.service"}),
            ),
            step(
                5,
                "run",
                serde_json::json!({"kind": "command", "run": ["touch", marker.to_str().unwrap()]}),
            ),
            step(
                6,
                "run",
                serde_json::json!({"kind": "command", "named": "flush", "destructive": false, "run": ["touch", marker.to_str().unwrap()]}),
            ),
            step(
                7,
                "run",
                serde_json::json!({"kind": "restart", "unit": "shop.service"}),
            ),
            step(
                8,
                "validate",
                serde_json::json!({"kind": "command", "named": "flush"}),
            ),
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
        assert_eq!(
            (r["reply"].as_str(), r["kind"].as_str()),
            (Some("error"), Some("refused")),
            "{id}: {r:#}"
        );
        assert!(
            r["message"].as_str().unwrap().contains(words),
            "{id}: {r:#}"
        );
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
    assert_eq!(
        std::fs::read_to_string(h.dir.join("data/index.html")).unwrap(),
        "live\n"
    );

    // The key can start nothing but the agent: a command asked for is ignored.
    let (replies, _) = raw_session(
        &h,
        key,
        &["touch", marker.to_str().unwrap()],
        std::slice::from_ref(&hello),
    );
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
    assert!(
        c.stderr
            .contains("step `put the pages back` on `app`: host `app` refuses `restore `pages`"),
        "{}",
        c.stderr
    );
    assert!(c.stdout.contains("step `flush` on `app`"), "{}", c.stdout);

    // A host whose key does not match the pinned one, and a key the host does not know.
    let wrong = s.write(
        "wrong_known_hosts",
        &format!(
            "{} {}",
            h.addr,
            std::fs::read_to_string(format!("{}.pub", v.get("DRP_TEST_FLEET_STRANGER_KEY")))
                .unwrap()
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        ),
    );
    inventory(&s, "spoofed.yaml", &[&h], None, Some(&wrong));
    s.write(
        "spoofed-rb.yaml",
        &std::fs::read_to_string(s.path("rb.yaml"))
            .unwrap()
            .replace("fleet.yaml", "spoofed.yaml"),
    );
    let c = s.drp(&["check", "spoofed-rb.yaml"]);
    c.code(2);
    assert!(
        c.stderr.contains("Host key verification failed"),
        "{}",
        c.stderr
    );
    inventory(
        &s,
        "stranger.yaml",
        &[&h],
        Some(v.get("DRP_TEST_FLEET_STRANGER_KEY")),
        None,
    );
    s.write(
        "stranger-rb.yaml",
        &std::fs::read_to_string(s.path("rb.yaml"))
            .unwrap()
            .replace("fleet.yaml", "stranger.yaml"),
    );
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
    assert!(
        eventually(Duration::from_secs(15), || running("sleep 47")),
        "the far step started"
    );
    let started = Instant::now();
    let link = LinkCut::new(&cut);
    let r = Run::from(child.wait_with_output().unwrap());
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(25),
        "the step failed within its timeout: {took:?}"
    );
    let report = r.json();
    let step = |name: &str| crate::harness::step_named(&report, name);
    let far = step("far check");
    assert_eq!(
        (far["status"].as_str(), far["host"].as_str()),
        (Some("failed"), Some("far")),
        "{far:#}"
    );
    let msg = far["message"].as_str().unwrap();
    assert!(
        msg.contains("connection to host `far` lost during the step"),
        "{msg}"
    );
    assert!(
        msg.contains("last known state: running on the host for"),
        "{msg}"
    );
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
        "targets:\n  nas: {{kind: local, path: {nas}}}\nexports:\n  etc:\n    source: {{kind: directory, path: /etc/ssh}}\n    targets: [nas]\nserve:\n  commands:\n    slow-check: {{run: [sh, -c, \"sleep 53; true\"]}}\n",
        nas = h.dir.join("nas").display(),
    ));
    coordinator_policy(&s);
    inventory(&s, "fleet.yaml", &[&h], None, None);
    // While drp still runs (and its session is open), the host has stopped the
    // step: the shell and the `sleep` it started, its whole process group.
    s.write(
        "rb.yaml",
        "name: slow\npolicy: coordinator.yaml\ninventory: fleet.yaml\nobjectives: {rto: 5m, rpo: 30m}\nsteps:\n  - {name: slow check, phase: detect, host: slow, timeout: 2s, on_failure: continue, action: {kind: command, named: slow-check}}\n  - {name: the slow check no longer runs there, phase: verify, timeout: 10s, action: {kind: command, run: [sh, -c, \"sleep 1; ! pgrep -x -f 'sleep 53'\"]}}\n",
    );
    let r = s.drp(&["--json", "run", "rb.yaml", "--yes"]);
    let report = r.json();
    let steps = report["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.all()));
    assert_eq!(steps[0]["status"], "timed_out", "{report:#}");
    assert_eq!(
        steps[1]["status"], "passed",
        "the host stopped the timed-out step: {report:#}"
    );
}

/// Requests to a `drp-agent serve --stdio` started here, one at a time: each
/// gets its final reply before the next is sent.
fn local_session(policy: &Path, requests: &[serde_json::Value]) -> Vec<serde_json::Value> {
    use std::io::BufRead;
    let mut child = Command::new(agent_bin())
        .args(["serve", "--stdio", "--policy"])
        .arg(policy)
        .env("TEST_PG_PASSWORD", services().get("DRP_TEST_PG_PASSWORD"))
        .env("TEST_MY_PASSWORD", services().get("DRP_TEST_MY_PASSWORD"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut finals = Vec::new();
    for r in requests {
        writeln!(stdin, "{r}").unwrap();
        let reply = loop {
            let line = lines.next().expect("a reply").unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["id"] == r["id"] && v["reply"] != "running" {
                break v;
            }
        };
        finals.push(reply);
    }
    drop(stdin);
    child.wait().unwrap();
    finals
}

#[test]
fn a_coordinators_check_runs_as_one_statement_that_cannot_write() {
    let s = scratch("fleet_read_only");
    let db = s.id.clone();
    psql("postgres", &format!("create database {db}"));
    psql(
        &db,
        "create table t (id int); insert into t values (1), (2)",
    );
    mariadb(None, &format!("create database {db}"));
    mariadb(
        Some(&db),
        "create table t (id int); insert into t values (1), (2)",
    );
    let policy = s.write(
        "policy.yaml",
        &format!(
            "host: db\ntargets:\n  nas: {{kind: local, path: nas}}\nexports:\n  pg:\n    source: {}\n    targets: [nas]\n  my:\n    source: {}\n    targets: [nas]\n",
            s.pg_source_yaml(&db),
            s.my_source_yaml(&db)
        ),
    );
    let mut requests = vec![
        serde_json::json!({"id": 0, "op": "hello", "protocol": drp_coordinator::fleet::protocol::PROTOCOL}),
    ];
    let writes = [
        "delete from t",
        "select 1; delete from t",
        "commit; delete from t",
        "drop table t",
        "delete from t returning id",
        "select set_config('transaction_read_only', 'off', false), (select count(*) from t)",
        "create table u (a int)",
    ];
    let lifts = [
        ("pg", "set transaction read write; delete from t"),
        ("my", "set session transaction read write; delete from t"),
    ];
    for export in ["pg", "my"] {
        let lift = lifts.iter().filter(|(e, _)| *e == export).map(|(_, q)| q);
        for (i, query) in writes.iter().chain(lift).enumerate() {
            requests.push(serde_json::json!({
                "id": requests.len(), "op": "run", "t_fail": "2026-12-03T10:00:00Z", "runbook": "rogue",
                "step": {"name": format!("{export} write {i}"), "action": {"kind": "sql", "export": export, "query": query}},
            }));
        }
        requests.push(serde_json::json!({
            "id": requests.len(), "op": "run", "t_fail": "2026-12-03T10:00:00Z", "runbook": "rogue",
            "step": {"name": format!("{export} read"), "action": {"kind": "sql", "export": export,
                "query": "select count(*), 'a, \"b\"' from t;", "expect": {"value": "2"}}},
        }));
    }
    let replies = local_session(&policy, &requests);
    assert_eq!(replies[0]["reply"], "hello", "{:#?}", replies[0]);
    for (request, reply) in requests.iter().zip(&replies).skip(1) {
        let name = request["step"]["name"].as_str().unwrap();
        if name.ends_with("read") {
            assert_eq!(reply["reply"], "done", "{name}: {reply:#}");
        } else {
            assert_eq!(reply["kind"], "failed", "{name}: {reply:#}");
            assert!(
                reply["message"]
                    .as_str()
                    .unwrap()
                    .contains("one statement that only reads"),
                "{name}: {reply:#}"
            );
        }
    }
    assert_eq!(psql(&db, "select count(*) from t"), "2");
    assert_eq!(
        psql(&db, "select count(*) from pg_tables where tablename = 'u'"),
        "0"
    );
    assert_eq!(mariadb(Some(&db), "select count(*) from t"), "2");
    assert_eq!(mariadb(Some(&db), "show tables"), "t");
    psql("postgres", &format!("drop database {db} with (force)"));
    mariadb(None, &format!("drop database {db}"));
}
