//! Failover: `dns_switch` moves a name from the old address to the new one
//! on a real BIND 9 primary (RFC 2136 update signed with TSIG), started by
//! tests/services/start.sh with zone shop.example. open to the key drp-test
//! and zone locked.example. open to none. Each test writes its own name.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::{Run, Scratch, files_containing, psql, rand_u32, scratch, services};

pub(crate) fn port() -> &'static str {
    services().get("DRP_TEST_DNS_PORT")
}

/// A name of this test's own under shop.example. (BIND refuses `_` in
/// host names).
pub(crate) fn label(tag: &str) -> String {
    format!("{tag}-{:08x}", rand_u32())
}

/// Runs an nsupdate script against the test server with the drp-test key.
fn nsupdate(zone: &str, updates: &[String]) {
    let script = format!(
        "server 127.0.0.1 {}\nzone {zone}\n{}\nsend\n",
        port(),
        updates.join("\n")
    );
    let mut child = Command::new("nsupdate")
        .args(["-k", services().get("DRP_TEST_DNS_TSIG_KEY")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nsupdate runs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nsupdate failed:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `name` in shop.example. set to exactly `ip`, behind drp's back.
pub(crate) fn set(name: &str, ip: &str) {
    let fqdn = format!("{name}.shop.example.");
    nsupdate(
        "shop.example.",
        &[
            format!("update delete {fqdn} A"),
            format!("update add {fqdn} 60 A {ip}"),
        ],
    );
}

/// What the server answers for `fqdn` and `rtype`, sorted.
pub(crate) fn dig(fqdn: &str, rtype: &str) -> Vec<String> {
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            port(),
            "+short",
            "+norecurse",
            "+time=2",
            "+tries=1",
            fqdn,
            rtype,
        ])
        .output()
        .expect("dig runs");
    assert!(out.status.success(), "{out:?}");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// The TTL of `fqdn`'s A RRset as the server answers it.
fn ttl(fqdn: &str) -> String {
    let out = Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            port(),
            "+noall",
            "+answer",
            "+norecurse",
            fqdn,
            "A",
        ])
        .output()
        .expect("dig runs");
    let answer = String::from_utf8_lossy(&out.stdout).to_string();
    answer
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no answer for {fqdn}: {answer}"))
        .to_string()
}

fn serial(zone: &str) -> String {
    dig(zone, "SOA")
        .first()
        .and_then(|soa| soa.split_whitespace().nth(2).map(str::to_string))
        .unwrap_or_else(|| panic!("no SOA for {zone}"))
}

/// A failover runbook: the app's database restored on this host (with a
/// point to restore, taken once), then `name` in `zone` switched from
/// 10.0.0.1 to 10.0.0.2 with the key `key` whose secret is in `secret`;
/// `extra` adds keys to the switch.
fn runbook(s: &Scratch, zone: &str, name: &str, key: &str, secret: &Path, extra: &str) -> String {
    app_policy(s);
    let port = port();
    s.write(
        "runbook.yaml",
        &format!(
            r#"name: failover
policy: policy.yaml
steps:
  - name: restore the shop's database
    phase: restore
    action: {{kind: restore_backup, export: app, point: latest}}
  - name: move {name}
    phase: restart
    timeout: 90s
    action:
      kind: dns_switch
      provider: rfc2136
      server: "127.0.0.1:{port}"
      zone: {zone}
      name: {name}
      type: A
      from: 10.0.0.1
      to: 10.0.0.2
      ttl: 60s
      tsig: {{name: {key}, algorithm: hmac-sha256, secret: {{file: {secret}}}}}
{extra}  - name: the name answers the new address
    phase: verify
    action: {{kind: command, run: [dig, "@127.0.0.1", -p, "{port}", +short, "{name}.{zone}", A], output_contains: "10.0.0.2"}}
"#,
            secret = secret.display(),
        ),
    )
    .display()
    .to_string()
}

/// `policy.yaml`: the app's SQLite database, with one point to restore
/// (taken once).
fn app_policy(s: &Scratch) {
    if !s.path("app.db").exists() {
        s.write(
            "policy.yaml",
            "host: f\nobjectives: {rto: 5m, rpo: 30m}\ntargets:\n  nas: {kind: local, path: nas}\nexports:\n  app:\n    source: {kind: sqlite, path: app.db}\n    targets: [nas]\n",
        );
        let db = rusqlite::Connection::open(s.path("app.db")).unwrap();
        db.execute_batch("create table orders (id integer primary key, item text); insert into orders (item) values ('a');")
            .unwrap();
        s.agent(&["backup", "--policy", "policy.yaml"]).ok();
    }
}

fn shop_runbook(s: &Scratch, name: &str, extra: &str) -> String {
    let secret = PathBuf::from(services().get("DRP_TEST_DNS_TSIG_FILE"));
    runbook(s, "shop.example.", name, "drp-test", &secret, extra)
}

/// `drp --json run … --yes`, and the switch step's record from its report.
fn run(s: &Scratch, rb: &str) -> (Run, serde_json::Value) {
    let run = s.drp(&["--json", "run", rb, "--yes", "--out", "reports"]);
    let report = run.json();
    let step = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|st| st["name"].as_str().unwrap_or("").starts_with("move "))
        .cloned()
        .unwrap_or_else(|| panic!("no switch step in {report:#}"));
    (run, step)
}

#[test]
fn a_switch_moves_the_name_and_its_report_keeps_the_old_address() {
    let s = scratch("dns_switch");
    let name = label("www");
    let fqdn = format!("{name}.shop.example.");
    set(&name, "10.0.0.1");
    let rb = shop_runbook(&s, &name, "");

    let (run, step) = run(&s, &rb);
    run.ok();
    assert_eq!(step["status"], "passed", "{step:#}");
    assert_eq!(
        step["message"],
        format!("{fqdn} A 10.0.0.1 → 10.0.0.2 (ttl 60s), seen on 1 server(s)"),
        "{step:#}"
    );
    assert_eq!(dig(&fqdn, "A"), ["10.0.0.2"]);
    assert_eq!(ttl(&fqdn), "60", "the new record has the step's ttl");
    assert!(
        !files_containing(&s.path("reports"), "10.0.0.1 → 10.0.0.2").is_empty(),
        "the stored report keeps the old address"
    );
}

#[test]
fn a_second_run_after_a_switch_changes_nothing_and_passes() {
    let s = scratch("dns_again");
    let name = label("again");
    let fqdn = format!("{name}.shop.example.");
    set(&name, "10.0.0.1");
    let rb = shop_runbook(&s, &name, "");
    let (first, _) = run(&s, &rb);
    first.ok();
    assert_eq!(dig(&fqdn, "A"), ["10.0.0.2"]);

    // The same address with another TTL: an update would set the step's.
    nsupdate(
        "shop.example.",
        &[
            format!("update delete {fqdn} A"),
            format!("update add {fqdn} 123 A 10.0.0.2"),
        ],
    );
    let (again, step) = run(&s, &rb);
    again.ok();
    assert_eq!(step["status"], "passed", "{step:#}");
    assert_eq!(
        step["message"],
        format!(
            "{fqdn} A already points at 10.0.0.2 (from 10.0.0.1: nothing to change), seen on 1 server(s)"
        ),
        "{step:#}"
    );
    assert_eq!(dig(&fqdn, "A"), ["10.0.0.2"]);
    assert_eq!(ttl(&fqdn), "123", "no update was sent");
}

#[test]
fn a_record_changed_behind_drps_back_is_not_switched() {
    let s = scratch("dns_cas");
    let name = label("cas");
    let fqdn = format!("{name}.shop.example.");
    set(&name, "10.0.0.1");
    let rb = shop_runbook(&s, &name, "");
    // Someone else moves the name before the step runs.
    set(&name, "10.0.0.9");

    let (run, step) = run(&s, &rb);
    assert_ne!(run.code, 0, "{}", run.all());
    assert_eq!(step["status"], "failed", "{step:#}");
    let message = step["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{fqdn} A holds 10.0.0.9"))
            && message.contains("not 10.0.0.1")
            && message.contains("NXRRSET")
            && message.contains("nothing was changed"),
        "{message}"
    );
    assert_eq!(
        dig(&fqdn, "A"),
        ["10.0.0.9"],
        "the record is left as it was"
    );
    assert_eq!(ttl(&fqdn), "60");
}

#[test]
fn a_wrong_key_or_a_zone_closed_to_updates_is_refused_and_changes_nothing() {
    let s = scratch("dns_refused");
    let name = label("key");
    let fqdn = format!("{name}.shop.example.");
    set(&name, "10.0.0.1");

    // The right key name with another secret.
    let wrong = s.write(
        "wrong.secret",
        "c29tZSBvdGhlciBzZWNyZXQgb2YgMzIgYnl0ZXMhIQ==\n",
    );
    let rb = runbook(&s, "shop.example.", &name, "drp-test", &wrong, "");
    let (run_, step) = run(&s, &rb);
    assert_ne!(run_.code, 0);
    assert_eq!(step["status"], "failed", "{step:#}");
    let message = step["message"].as_str().unwrap();
    assert!(
        message.contains("rejected the update's TSIG key drp-test (NOTAUTH, BADSIG)")
            && message.contains("NOTAUTH, BADSIG")
            && message.contains("wrong secret"),
        "{message}"
    );
    assert_eq!(dig(&fqdn, "A"), ["10.0.0.1"]);

    // A key the server does not know.
    let secret = PathBuf::from(services().get("DRP_TEST_DNS_TSIG_FILE"));
    let rb = runbook(&s, "shop.example.", &name, "nobody", &secret, "");
    let (_, step) = run(&s, &rb);
    let message = step["message"].as_str().unwrap();
    assert!(message.contains("NOTAUTH, BADKEY"), "{message}");
    assert_eq!(dig(&fqdn, "A"), ["10.0.0.1"]);

    // A zone that accepts no update at all.
    let before = serial("locked.example.");
    let rb = runbook(&s, "locked.example.", "www", "drp-test", &secret, "");
    let (_, step) = run(&s, &rb);
    assert_eq!(step["status"], "failed", "{step:#}");
    let message = step["message"].as_str().unwrap();
    assert!(
        message.contains("refused the update of zone locked.example. (REFUSED)")
            && message.contains("allow-update"),
        "{message}"
    );
    assert_eq!(dig("www.locked.example.", "A"), ["10.0.0.1"]);
    assert_eq!(serial("locked.example."), before);
}

#[test]
fn verify_names_each_server_not_answering_the_new_address() {
    let s = scratch("dns_verify");
    let name = label("verify");
    let fqdn = format!("{name}.shop.example.");
    set(&name, "10.0.0.1");
    // A port nothing listens on stands for a name server that is down.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let rb = shop_runbook(
        &s,
        &name,
        &format!(
            "      verify: {{servers: [\"127.0.0.1:{}\", \"{down}\"], timeout: 2s}}\n",
            port()
        ),
    );
    let (run, step) = run(&s, &rb);
    assert_ne!(run.code, 0);
    assert_eq!(step["status"], "failed", "{step:#}");
    let message = step["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("{fqdn} A 10.0.0.1 → 10.0.0.2 (ttl 60s), but after 2s not every server answers 10.0.0.2: {down}: ")),
        "{message}"
    );
    assert!(
        !message.contains(&format!("127.0.0.1:{} answers", port())),
        "the primary answers the new address: {message}"
    );
    assert_eq!(
        dig(&fqdn, "A"),
        ["10.0.0.2"],
        "the switch itself went through"
    );
}

#[test]
fn a_name_outside_the_zone_is_refused_when_the_runbook_is_read() {
    let s = scratch("dns_check");
    let rb = shop_runbook(&s, "www.elsewhere.example.", "");
    let check = s.drp(&["check", &rb]);
    check.code(2);
    assert!(
        check
            .stderr
            .contains("www.elsewhere.example. is not within zone shop.example."),
        "{}",
        check.stderr
    );
}

/// A step that would time out before its own verification window ends is
/// refused where its timeout is written.
#[test]
fn a_step_timeout_shorter_than_the_verification_window_is_refused() {
    let s = scratch("dns_window");
    let rb = shop_runbook(&s, "www", "      verify: {timeout: 2m}\n");
    let check = s.drp(&["check", &rb]);
    check.code(2);
    assert!(
        check.stderr.contains("steps[1].timeout")
            && check.stderr.contains(
                "the step's timeout (1m 30s) is not longer than its action's own wait (2m)"
            ),
        "{}",
        check.stderr
    );
    // With the default window (45 s) the same step is read (the policy's
    // own schedule is another matter: exit 8).
    let accepted = s.drp(&["check", &shop_runbook(&s, "www", "")]);
    assert!(
        accepted.stdout.contains("runbook failover") && !accepted.all().contains(".timeout"),
        "{}",
        accepted.all()
    );
}

#[test]
fn the_tsig_secret_never_appears_in_output_or_reports() {
    let mut s = scratch("dns_secret");
    s.set_env("RUST_LOG", "debug");
    let name = label("secret");
    set(&name, "10.0.0.1");
    let secret_file = PathBuf::from(services().get("DRP_TEST_DNS_TSIG_FILE"));
    let secret = std::fs::read_to_string(&secret_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(secret.len() >= 40, "a real secret to look for");
    let wrong_secret = "c29tZSBvdGhlciBzZWNyZXQgb2YgMzIgYnl0ZXMhIQ==";

    let mut outputs = Vec::new();
    let rb = shop_runbook(&s, &name, "");
    outputs.push(s.drp(&["check", &rb]));
    outputs.push(run(&s, &rb).0);
    outputs.push(run(&s, &rb).0);
    outputs.push(s.drp(&["run", &rb, "--yes", "--out", "reports"]));
    set(&name, "10.0.0.9");
    outputs.push(run(&s, &rb).0);
    let wrong = s.write("wrong.secret", wrong_secret);
    let rb = runbook(&s, "shop.example.", &name, "drp-test", &wrong, "");
    outputs.push(run(&s, &rb).0);
    for o in &outputs {
        let all = o.all();
        assert!(!all.contains(&secret), "{all}");
        assert!(!all.contains(wrong_secret), "{all}");
    }
    assert!(
        outputs[1].stderr.contains("DEBUG"),
        "the debug log was on: {}",
        outputs[1].stderr
    );
    assert!(s.path("reports").read_dir().unwrap().next().is_some());
    assert!(files_containing(s.dir.path(), &secret).is_empty());
    let leaked: Vec<String> = files_containing(s.dir.path(), wrong_secret)
        .into_iter()
        .filter(|p| !p.ends_with("/wrong.secret"))
        .collect();
    assert!(leaked.is_empty(), "the secret is in {leaked:?}");
}

/// A site on `ip`:`port` (a loopback address of its own) that answers
/// `site=WHO orders=N` from database `db` on the suite's PostgreSQL, or 503
/// when it cannot read the orders.
pub(crate) struct Site(std::process::Child);

impl Site {
    pub(crate) fn start(who: &str, ip: &str, port: u16, db: &str) -> Site {
        let v = services();
        let script = r#"
import http.server, subprocess, sys
who, ip, port, pg_port, db = sys.argv[1:]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        r = subprocess.run(["psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-p", pg_port, "-U", "postgres", "-d", db,
                            "-c", "select count(*) from orders"], capture_output=True, text=True)
        ok = r.returncode == 0
        self.send_response(200 if ok else 503)
        self.end_headers()
        self.wfile.write(("site=%s orders=%s" % (who, r.stdout.strip() if ok else "?")).encode())
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((ip, int(port)), H).serve_forever()
"#;
        let child = Command::new("python3")
            .args([
                "-c",
                script,
                who,
                ip,
                &port.to_string(),
                v.get("DRP_TEST_PG_PORT"),
                db,
            ])
            .env("PGPASSWORD", v.get("DRP_TEST_PG_PASSWORD"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let up = crate::harness::eventually(std::time::Duration::from_secs(10), || {
            std::net::TcpStream::connect((ip, port)).is_ok()
        });
        assert!(up, "the {who} site listens on {ip}:{port}");
        Site(child)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A primary's and a standby's database on the suite's PostgreSQL, the
/// primary's holding `orders` with `items`, the standby's empty.
pub(crate) fn primary_and_standby(s: &Scratch, items: &[&str]) -> (String, String) {
    let (primary, standby) = (format!("{}_p", s.id), format!("{}_s", s.id));
    psql("postgres", &format!("create database {primary}"));
    psql("postgres", &format!("create database {standby}"));
    let values: Vec<String> = items.iter().map(|i| format!("('{i}')")).collect();
    psql(
        &primary,
        &format!(
            "create table orders (id serial primary key, item text not null); \
             insert into orders (item) values {};",
            values.join(", ")
        ),
    );
    (primary, standby)
}

/// What `url` answers when its host is `ip` (curl's `--resolve`).
pub(crate) fn get(url_host: &str, port: u16, ip: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "--resolve",
            &format!("{url_host}:{port}:{ip}"),
            &format!("http://{url_host}:{port}/"),
        ])
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The web agency's plan, as `policies/agency.yaml` and
/// `runbooks/agency-failover.yaml` ship it: the sites' VPS goes down, the
/// nightly export is restored from object storage (Garage) onto the
/// standby's database, the name moves to the standby on a real BIND, and
/// the sites answer through their name from the standby. The drill
/// measures RTO and RPO, the RPO also from heartbeats read on the standby.
/// Then `drp failback` brings the data written on the standby home and the
/// name back.
#[test]
fn the_agency_failover_drill_restores_onto_the_standby_and_moves_the_name() {
    let mut s = scratch("agency");
    s.shop_env();
    let v = services();
    let name = label("sites");
    let fqdn = format!("{name}.shop.example");
    let (primary_db, standby_db) = primary_and_standby(&s, &["chaise", "Ωmega", "桌子"]);
    let http_port = crate::harness::free_port();
    let primary = Site::start("primary", "127.0.0.2", http_port, &primary_db);
    let _standby = Site::start("standby", "127.0.0.3", http_port, &standby_db);
    set(&name, "127.0.0.2");
    assert!(get(&fqdn, http_port, "127.0.0.2").contains("site=primary orders=3"));
    for (k, val) in [
        ("AGENCY_HOST", format!("vps-{}", s.id)),
        ("AGENCY_PG_PORT", v.get("DRP_TEST_PG_PORT").to_string()),
        ("AGENCY_PG_USER", "postgres".to_string()),
        ("AGENCY_PG_DB", primary_db.clone()),
        ("AGENCY_STANDBY_PG_HOST", "127.0.0.1".to_string()),
        ("AGENCY_STANDBY_PG_DB", standby_db.clone()),
        (
            "AGENCY_PG_PASSWORD",
            v.get("DRP_TEST_PG_PASSWORD").to_string(),
        ),
        ("AGENCY_STOP_PRIMARY", format!("kill {}", primary.pid())),
        ("AGENCY_NAME", name.clone()),
        ("AGENCY_ZONE", "shop.example".to_string()),
        ("AGENCY_HTTP_PORT", http_port.to_string()),
        ("AGENCY_DNS", format!("127.0.0.1:{}", port())),
        ("AGENCY_PRIMARY_IP", "127.0.0.2".to_string()),
        ("AGENCY_STANDBY_IP", "127.0.0.3".to_string()),
        (
            "AGENCY_TSIG_NAME",
            v.get("DRP_TEST_DNS_TSIG_NAME").to_string(),
        ),
        (
            "AGENCY_TSIG_FILE",
            v.get("DRP_TEST_DNS_TSIG_FILE").to_string(),
        ),
    ] {
        s.set_env(k, &val);
    }
    let rb = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runbooks/agency-failover.yaml");

    let drill = s.drp(&[
        "--json",
        "drill",
        rb.to_str().unwrap(),
        "--yes",
        "--out",
        "reports",
    ]);
    drill.ok();
    let report = drill.json();
    assert_eq!(report["status"], "passed", "{report:#}");

    // The name answers the standby, and the standby serves the orders.
    assert_eq!(dig(&format!("{fqdn}."), "A"), ["127.0.0.3"]);
    assert_eq!(get(&fqdn, http_port, "127.0.0.3"), "site=standby orders=3");
    assert_eq!(
        psql(
            &standby_db,
            "select string_agg(item, ',' order by id) from orders"
        ),
        "chaise,Ωmega,桌子"
    );
    // The old primary's data is left as it was.
    assert_eq!(psql(&primary_db, "select count(*) from orders"), "3");

    // RTO from the failure to the check through the name; RPO from the
    // point restored and from the heartbeats found on the standby.
    let rto = report["rto"]["measured_seconds"].as_f64().unwrap();
    assert!(rto > 0.0 && rto <= 900.0, "{report:#}");
    let rpo = &report["rpo"];
    assert_eq!(rpo["restored"][0]["export"], "sites-db", "{rpo:#}");
    let heartbeat = rpo["heartbeat_seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("the heartbeat was read on the standby: {report:#}"));
    assert!(heartbeat > 0.0 && heartbeat < 60.0, "{rpo:#}");
    let steps = report["steps"].as_array().unwrap();
    let verify = steps.iter().find(|st| st["phase"] == "verify").unwrap();
    assert!(
        verify["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{fqdn} is 127.0.0.3")),
        "{verify:#}"
    );

    // vps-1 is repaired; the standby took an order meanwhile. The failback
    // brings that order home and the name back.
    psql(
        &standby_db,
        "insert into orders (item) values ('pendant la panne')",
    );
    drop(primary);
    let _primary = Site::start("primary", "127.0.0.2", http_port, &primary_db);
    let back = s.drp(&[
        "--json",
        "failback",
        rb.to_str().unwrap(),
        "--yes",
        "--out",
        "reports",
    ]);
    back.ok();
    let report = back.json();
    assert_eq!(report["status"], "passed", "{report:#}");
    assert_eq!(report["runbook"], "agency-failover-failback");
    assert_eq!(dig(&format!("{fqdn}."), "A"), ["127.0.0.2"]);
    assert_eq!(get(&fqdn, http_port, "127.0.0.2"), "site=primary orders=4");
    assert_eq!(
        psql(
            &primary_db,
            "select item from orders order by id desc limit 1"
        ),
        "pendant la panne"
    );
    assert_eq!(
        report["rpo"]["restored"][0]["export"], "standby-db",
        "{report:#}"
    );
}

/// Runs `f` with a Route 53 client of the test's AWS API emulator (moto).
fn route53<T>(f: impl AsyncFnOnce(aws_sdk_route53::Client) -> T) -> T {
    let endpoint = services().get("DRP_TEST_AWS_ENDPOINT").to_string();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new("us-east-1"))
                .endpoint_url(&endpoint)
                .credentials_provider(aws_sdk_route53::config::Credentials::new(
                    "testing", "testing", None, None, "test",
                ))
                .load()
                .await;
            f(aws_sdk_route53::Client::new(&conf)).await
        })
}

/// Sets `fqdn`'s A record in `zone_id` to `ip` (TTL 60), behind drp's back.
fn r53_set(zone_id: &str, fqdn: &str, ip: &str) {
    use aws_sdk_route53::types::{
        Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
    };
    let (zone_id, fqdn, ip) = (zone_id.to_string(), fqdn.to_string(), ip.to_string());
    route53(async move |c| {
        let set = ResourceRecordSet::builder()
            .name(fqdn)
            .r#type(RrType::A)
            .ttl(60)
            .resource_records(ResourceRecord::builder().value(ip).build().unwrap())
            .build()
            .unwrap();
        let change = Change::builder()
            .action(ChangeAction::Upsert)
            .resource_record_set(set)
            .build()
            .unwrap();
        c.change_resource_record_sets()
            .hosted_zone_id(zone_id)
            .change_batch(ChangeBatch::builder().changes(change).build().unwrap())
            .send()
            .await
            .unwrap();
    })
}

/// `fqdn`'s A record in `zone_id`: its addresses and TTL.
fn r53_get(zone_id: &str, fqdn: &str) -> (Vec<String>, i64) {
    let (zone_id, fqdn) = (zone_id.to_string(), fqdn.to_string());
    route53(async move |c| {
        let out = c
            .list_resource_record_sets()
            .hosted_zone_id(zone_id)
            .send()
            .await
            .unwrap();
        let set = out
            .resource_record_sets()
            .iter()
            .find(|s| s.name().trim_end_matches('.') == fqdn.trim_end_matches('.'))
            .unwrap_or_else(|| panic!("no record {fqdn}"));
        (
            set.resource_records()
                .iter()
                .map(|r| r.value().to_string())
                .collect(),
            set.ttl().unwrap_or(0),
        )
    })
}

/// `provider: route53` against moto's Route 53: the switch is one batch
/// (the old record set deleted exactly, the new one created) awaited until
/// INSYNC, the hosted zone found by its name; a record changed behind
/// drp's back is not switched.
#[test]
fn a_route53_switch_moves_the_name_and_a_changed_record_is_left_alone() {
    let s = scratch("route53");
    let zone = format!("r53-{:08x}.example.", rand_u32());
    let zone_id = route53({
        let zone = zone.clone();
        async move |c| {
            let out = c
                .create_hosted_zone()
                .name(zone)
                .caller_reference(format!("drp-{}", rand_u32()))
                .send()
                .await
                .unwrap();
            out.hosted_zone()
                .unwrap()
                .id()
                .trim_start_matches("/hostedzone/")
                .to_string()
        }
    });
    let fqdn = format!("www.{zone}");
    r53_set(&zone_id, &fqdn, "10.0.0.1");
    s.write(
        "policy.yaml",
        "host: f\nobjectives: {rto: 5m, rpo: 30m}\ntargets:\n  nas: {kind: local, path: nas}\nexports:\n  app:\n    source: {kind: sqlite, path: app.db}\n    targets: [nas]\n",
    );
    let rb = s.write(
        "runbook.yaml",
        &format!(
            "name: r53\npolicy: policy.yaml\nsteps:\n  - name: move www\n    phase: restart\n    action: {{kind: dns_switch, provider: route53, endpoint: \"{}\", zone: {zone}, name: www, from: 10.0.0.1, to: 10.0.0.2, ttl: 30s}}\n  - name: the switch waited for INSYNC, its own check\n    phase: verify\n    action: {{kind: wait, duration: 0s}}\n",
            services().get("DRP_TEST_AWS_ENDPOINT")
        ),
    );
    let rb = rb.to_str().unwrap();
    let run_it = || {
        let mut c = s.drp_cmd(&["--json", "run", rb, "--yes"]);
        c.env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing");
        Run::from(c.output().unwrap())
    };
    let first = run_it();
    first.ok();
    let step = &first.json()["steps"][0];
    assert_eq!(
        step["message"],
        format!("{fqdn} A 10.0.0.1 → 10.0.0.2 (ttl 30s), INSYNC on every Route 53 name server"),
        "{step:#}"
    );
    assert_eq!(r53_get(&zone_id, &fqdn), (vec!["10.0.0.2".to_string()], 30));

    // Someone moved it meanwhile: refused, nothing changed.
    r53_set(&zone_id, &fqdn, "10.0.0.9");
    let rb2 = std::fs::read_to_string(rb).unwrap().replace(
        "from: 10.0.0.1, to: 10.0.0.2",
        "from: 10.0.0.2, to: 10.0.0.3",
    );
    std::fs::write(rb, rb2).unwrap();
    let refused = run_it();
    refused.code(1);
    let message = refused.json()["steps"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("holds 10.0.0.9") && message.contains("nothing was changed"),
        "{message}"
    );
    assert_eq!(r53_get(&zone_id, &fqdn), (vec!["10.0.0.9".to_string()], 60));
}

/// `drp check` weighs a switched name's TTL against the RTO: clients keep
/// the old address that long after the switch.
#[test]
fn drp_check_says_when_a_switched_names_ttl_is_too_long_for_the_rto() {
    let s = scratch("dns_ttl");
    let rb = shop_runbook(&s, &label("ttl"), "");
    // Exports every 10 minutes: the RPO holds, only the TTL is weighed.
    let policy = std::fs::read_to_string(s.path("policy.yaml")).unwrap();
    s.write(
        "policy.yaml",
        &policy.replace(
            "    targets: [nas]\n",
            "    targets: [nas]\n    schedule: \"*/10 * * * *\"\n",
        ),
    );
    let text = std::fs::read_to_string(&rb).unwrap();
    let check = |ttl: &str| {
        std::fs::write(&rb, text.replace("ttl: 60s", &format!("ttl: {ttl}"))).unwrap();
        s.drp(&["check", &rb])
    };
    let short = check("60s");
    short.ok();
    assert!(!short.stdout.contains("TTL"), "{}", short.stdout);
    let long = check("2m");
    long.ok();
    assert!(
        long.stdout
            .contains("a TTL of 2m, more than a quarter of the RTO 5m")
            && long.stdout.contains("cache longer than the TTL"),
        "{}",
        long.stdout
    );
    let too_long = check("1h");
    too_long.code(8);
    assert!(
        too_long
            .stdout
            .contains("a TTL of 1h, not less than the RTO 5m"),
        "{}",
        too_long.stdout
    );
}

/// `restore_backup` with `into:` replaces a standby's data only as every
/// restore does, against the real PostgreSQL: before anything runs the
/// plan says where the point goes; a load that fails halfway and a corrupt
/// point leave the standby's data exactly as it was, with no copy left.
#[test]
fn a_restore_into_the_standby_shows_its_plan_and_a_failed_load_or_a_corrupt_point_changes_nothing()
{
    use crate::harness::pg_table_digest;
    let s = scratch("into_standby");
    let (primary, standby) = (format!("{}_p", s.id), format!("{}_s", s.id));
    psql("postgres", &format!("create database {primary}"));
    psql("postgres", &format!("create database {standby}"));
    // An index over a function reading a table by its unqualified name:
    // fine live, it fails in pg_restore (empty search_path), late in the load.
    psql(
        &primary,
        "create table buckets (n int); insert into buckets values (1), (2), (3);
         create function bucket(i int) returns int language sql immutable
           as 'select i % (select count(*)::int from buckets)';
         create table items (id int primary key, name text);
         insert into items select i, 'item ' || i from generate_series(1, 1001) i;
         create index items_bucket on items (bucket(id));",
    );
    psql(
        &standby,
        "create table notes (id serial primary key, body text);
         insert into notes (body) values ('the standby''s own'), ('données ☕');",
    );
    s.write(
        "policy.yaml",
        &format!(
            "host: into-{}\nobjectives: {{rto: 5m, rpo: 30m}}\n{}exports:\n  site:\n    source: {}\n    targets: [nas]\n  standby:\n    source: {}\n    targets: [nas]\n",
            s.id,
            s.targets_yaml(),
            s.pg_source_yaml(&primary),
            s.pg_source_yaml(&standby)
        ),
    );
    let rb = s.write(
        "runbook.yaml",
        "name: onto-standby\npolicy: policy.yaml\nsteps:\n  - name: restore onto the standby\n    phase: restore\n    action: {kind: restore_backup, export: site, point: latest, into: standby}\n  - name: the standby answers\n    phase: verify\n    action: {kind: sql, export: standby, query: \"select count(*) from items\", expect: {min: 1}}\n",
    );
    let rb = rb.to_str().unwrap();
    s.agent(&["backup", "--policy", "policy.yaml", "--export", "site"])
        .ok();
    let before = pg_table_digest(&standby, "notes");
    let untouched = |what: &str| {
        assert_eq!(
            pg_table_digest(&standby, "notes"),
            before,
            "{what}: the standby changed"
        );
        assert_eq!(
            psql(
                "postgres",
                &format!("select count(*) from pg_database where datname like '{standby}_drp_%'")
            ),
            "0",
            "{what}: a partial copy was left behind"
        );
    };

    // The plan, before anything changes: not confirmed without a terminal.
    let unconfirmed = s.drp(&["run", rb]);
    unconfirmed.code(5);
    assert!(
        unconfirmed.stderr.contains(
            "Step `restore onto the standby` will restore `site` (latest) into the source of `standby`."
        ),
        "{}",
        unconfirmed.stderr
    );
    untouched("not confirmed");

    // The load fails halfway (the index): the standby is as it was.
    let failed = s.drp(&["--json", "run", rb, "--yes"]);
    failed.code(1);
    let step = crate::harness::step_named(&failed.json(), "restore onto the standby");
    assert_eq!(step["status"], "failed", "{step:#}");
    assert!(
        step["message"]
            .as_str()
            .unwrap()
            .contains(&format!("database `{standby}` was not touched")),
        "{step:#}"
    );
    untouched("failed load");

    // A corrupt point: refused before the standby is touched.
    let data = crate::harness::walk(s.path(&format!("nas/into-{}/site/data", s.id)))
        .pop()
        .expect("the point's data object");
    let mut bytes = std::fs::read(&data).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let corrupt = s.drp(&["--json", "run", rb, "--yes"]);
    corrupt.code(1);
    let step = crate::harness::step_named(&corrupt.json(), "restore onto the standby");
    let message = step["message"].as_str().unwrap();
    assert!(
        message.contains("integrity check failed") && message.contains("was not loaded"),
        "{step:#}"
    );
    untouched("corrupt point");
    // `drp restore` of the same point says so with its own exit code.
    s.drp(&[
        "restore",
        "--policy",
        "policy.yaml",
        "--export",
        "site",
        "--yes",
    ])
    .code(4);
    assert_eq!(
        psql(&primary, "select count(*) from items"),
        "1001",
        "the primary was replaced by a corrupt point"
    );
}

/// A site on `ip`:`port` answering `site=WHO host=HOST`, HOST being the
/// request's `Host` header.
pub(crate) fn host_echo(who: &str, ip: &str, port: u16) -> Site {
    let script = r#"
import http.server, sys
who, ip, port = sys.argv[1:]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(("site=%s host=%s" % (who, self.headers.get("Host"))).encode())
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((ip, int(port)), H).serve_forever()
"#;
    let child = Command::new("python3")
        .args(["-c", script, who, ip, &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let up = crate::harness::eventually(std::time::Duration::from_secs(10), || {
        std::net::TcpStream::connect((ip, port)).is_ok()
    });
    assert!(up, "the {who} site listens on {ip}:{port}");
    Site(child)
}

/// A failover runbook of the app whose drill moves `records` (YAML, the
/// value of `drill.records`) instead of production's names: the app's
/// database restored, `name` in shop.example. moved from 127.0.0.2 to
/// 127.0.0.3, the site checked through its name on the zone's server,
/// expecting the standby with the production name as its `Host`.
fn drill_records_runbook(s: &Scratch, name: &str, records: &str, http_port: u16) -> String {
    app_policy(s);
    let port = port();
    let secret = services().get("DRP_TEST_DNS_TSIG_FILE");
    s.write(
        "runbook.yaml",
        &format!(
            r#"name: failover
policy: policy.yaml
drill:
  records: {records}
  inject:
    - name: the primary is declared down
      action: {{kind: command, run: ["true"]}}
steps:
  - name: restore the app's database
    phase: restore
    action: {{kind: restore_backup, export: app, point: latest}}
  - name: move {name}
    phase: restart
    timeout: 90s
    action:
      kind: dns_switch
      provider: rfc2136
      server: "127.0.0.1:{port}"
      zone: shop.example.
      name: {name}
      from: 127.0.0.2
      to: 127.0.0.3
      ttl: 60s
      tsig: {{name: drp-test, secret: {{file: {secret}}}}}
  - name: the site answers through its name
    phase: verify
    action:
      kind: http
      url: "http://{name}.shop.example:{http_port}/"
      resolve_with: "127.0.0.1:{port}"
      body_contains: "site=standby host={name}.shop.example:{http_port}"
"#
        ),
    )
    .display()
    .to_string()
}

/// A drill with `drill.records` moves the drill record on the real BIND
/// and checks the site through it (still asking for the production host),
/// and leaves the production name on the primary; `drp run` of the same
/// runbook, an incident, moves the production name and leaves the drill
/// record alone.
#[test]
fn a_drill_moves_its_drill_record_and_leaves_the_production_name_alone() {
    let s = scratch("drill_records");
    let (www, drill) = (label("www"), label("drill"));
    let (prod_fqdn, drill_fqdn) = (
        format!("{www}.shop.example."),
        format!("{drill}.shop.example."),
    );
    set(&www, "127.0.0.2");
    set(&drill, "127.0.0.2");
    let http_port = crate::harness::free_port();
    let _primary = host_echo("primary", "127.0.0.2", http_port);
    let _standby = host_echo("standby", "127.0.0.3", http_port);
    let rb = drill_records_runbook(
        &s,
        &www,
        &format!("{{{prod_fqdn}: {drill_fqdn}}}"),
        http_port,
    );
    let replaced = format!("drill: {prod_fqdn} → {drill_fqdn}, production untouched");

    // The plan says which name the drill moves instead (here refused at
    // the prompt: no terminal, no --yes).
    let asked = s.drp(&["drill", &rb]);
    asked.code(5);
    assert!(
        asked.stderr.contains(&replaced)
            && asked.stderr.contains(&format!(
                "switch {drill_fqdn} A (drill record of {prod_fqdn}) from 127.0.0.2 to 127.0.0.3"
            )),
        "{}",
        asked.stderr
    );
    assert_eq!(dig(&drill_fqdn, "A"), ["127.0.0.2"], "nothing moved yet");

    let drilled = s.drp(&["--json", "drill", &rb, "--yes", "--out", "reports"]);
    drilled.ok();
    let report = drilled.json();
    assert_eq!(report["status"], "passed", "{report:#}");
    // Production still answers the primary; the drill record, moved for
    // the check, is set back for the next drill.
    assert_eq!(dig(&prod_fqdn, "A"), ["127.0.0.2"], "production untouched");
    assert_eq!(
        dig(&drill_fqdn, "A"),
        ["127.0.0.2"],
        "set back after the drill"
    );
    let reset = crate::harness::step_named(
        &report,
        &format!("set drill record {drill_fqdn} back to 127.0.0.2"),
    );
    assert_eq!(reset["status"], "passed", "{reset:#}");
    assert_eq!(
        get(&format!("{www}.shop.example"), http_port, "127.0.0.2"),
        format!("site=primary host={www}.shop.example:{http_port}")
    );
    let switch = crate::harness::step_named(&report, &format!("move {www}"));
    assert!(
        switch["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{drill_fqdn} A 127.0.0.2 → 127.0.0.3 (ttl 60s)")),
        "{switch:#}"
    );
    // The check went to the drill record's address, naming the production
    // host (its body holds the Host header the standby saw).
    let check = crate::harness::step_named(&report, "the site answers through its name");
    assert_eq!(check["status"], "passed", "{check:#}");
    assert!(
        check["message"].as_str().unwrap().contains(&format!(
            "(drill record {drill_fqdn} of {www}.shop.example is 127.0.0.3 on 127.0.0.1:{})",
            port()
        )),
        "{check:#}"
    );
    let notes: Vec<&str> = report["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .collect();
    assert!(notes.contains(&replaced.as_str()), "{notes:?}");
    assert!(
        !files_containing(&s.path("reports"), &replaced).is_empty(),
        "the stored report says so too"
    );

    // An incident moves production, and only production.
    let incident = s.drp(&["--json", "run", &rb, "--yes", "--out", "reports"]);
    incident.ok();
    let report = incident.json();
    assert_eq!(report["status"], "passed", "{report:#}");
    assert_eq!(dig(&prod_fqdn, "A"), ["127.0.0.3"]);
    assert_eq!(
        dig(&drill_fqdn, "A"),
        ["127.0.0.2"],
        "the drill record is a drill's only"
    );
    let check = crate::harness::step_named(&report, "the site answers through its name");
    assert!(
        check["message"]
            .as_str()
            .unwrap()
            .contains(&format!("({www}.shop.example is 127.0.0.3 on")),
        "{check:#}"
    );
    assert!(!incident.all().contains("drill:"), "{}", incident.all());
    assert!(
        !report["notes"].to_string().contains("production untouched"),
        "{report:#}"
    );
}

/// `drp check` refuses a drill record outside the switch's zone, equal to
/// its production name, or of a name no switch moves, each located.
#[test]
fn drp_check_refuses_a_drill_record_outside_the_zone_or_equal_to_production() {
    let s = scratch("drill_records_check");
    let records = "\n    www.shop.example.: drill.elsewhere.example.\n    api.shop.example.: api.shop.example.\n    db.shop.example.: drill-db.shop.example.\n    host.shop.example: drill-host.shop.example.";
    let rb = drill_records_runbook(&s, "www", records, 8080);
    let check = s.drp(&["check", &rb]);
    check.code(2);
    let err = &check.stderr;
    for (line, key, message) in [
        (
            5,
            "www.shop.example.",
            "drill record drill.elsewhere.example. is not within zone shop.example. of `steps[1]` (`move www`), which moves www.shop.example.",
        ),
        (
            6,
            "api.shop.example.",
            "the drill record of api.shop.example. is the production name itself: a drill would move production",
        ),
        (
            7,
            "db.shop.example.",
            "no `dns_switch` step a drill runs moves db.shop.example.",
        ),
        (
            8,
            "host.shop.example",
            "`host.shop.example` is not a fully qualified name",
        ),
    ] {
        assert!(
            err.contains(&format!(
                "runbook.yaml:{line}:5: `drill.records.{key}`: {message}"
            )),
            "{key}:\n{err}"
        );
    }
    // A drill record of the zone, for a name a switch moves, is read.
    let rb = drill_records_runbook(&s, "www", "{www.shop.example.: drill.shop.example.}", 8080);
    let accepted = s.drp(&["check", &rb]);
    assert!(
        accepted.stdout.contains("runbook failover") && !accepted.all().contains("drill.records"),
        "{}",
        accepted.all()
    );
}
