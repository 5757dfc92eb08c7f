//! Fencing: a failover never leaves two primaries. The old primary and a
//! witness are hosts of the test fleet (network namespaces with their own
//! sshd, tests/services/start.sh); the coordinator is this namespace. The
//! old primary's "service" is a real process its policy knows how to stop.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::fleet::{Host, LinkCut, agent_bin, forward_into, host, inventory};
use crate::harness::{Scratch, eventually, scratch, services};
use crate::receivers::http_sink;

/// The old primary's service: a process whose command line carries
/// `marker`, started inside its namespace.
fn start_service(h: &Host, marker: &str) {
    let mut child = h
        .exec("python3")
        .args(["-c", "import time\nwhile True: time.sleep(1)", marker])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Reaped whenever it is stopped (by the agent, or at the test's end).
    std::thread::spawn(move || child.wait());
    assert!(eventually(Duration::from_secs(5), || runs(marker)));
}

/// Stops every process of the service when the test ends, however it ends.
struct StopAtEnd(String);

impl Drop for StopAtEnd {
    fn drop(&mut self) {
        let _ = Command::new("pkill").args(["-f", &self.0]).status();
    }
}

fn runs(marker: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", marker])
        .status()
        .unwrap()
        .success()
}

/// `drp-agent fence check` on the host, inside its namespace.
fn fence_check(h: &Host) -> std::process::Output {
    h.exec(agent_bin().to_str().unwrap())
        .args([
            "fence",
            "check",
            "--policy",
            h.policy_path().to_str().unwrap(),
        ])
        .output()
        .unwrap()
}

/// Makes the coordinator's address unreachable from `h` (replies to it are
/// dropped), while every other host still reaches `h`: a partition between
/// the coordinator and one host only. Undone when dropped.
pub(crate) struct CoordinatorCut(String);

impl CoordinatorCut {
    pub(crate) fn new(h: &Host) -> CoordinatorCut {
        let route = format!("{}.1/32", services().get("DRP_TEST_FLEET_NET"));
        assert!(
            Command::new("ip")
                .args(["-n", &h.ns, "route", "add", "blackhole", &route])
                .status()
                .unwrap()
                .success()
        );
        CoordinatorCut(format!("{} {route}", h.ns))
    }
}

impl Drop for CoordinatorCut {
    fn drop(&mut self) {
        let (ns, route) = self.0.split_once(' ').unwrap();
        let _ = Command::new("ip")
            .args(["-n", ns, "route", "del", "blackhole", route])
            .status();
    }
}

/// The runbooks' verify step: the fence is recorded in the repository.
const VERIFY: &str = "  - name: the fence is recorded\n    phase: verify\n    action: {kind: command, run: [test, -d, nas/fencing/old-primary]}\n";

fn fence_records(s: &Scratch, host: &str) -> Vec<serde_json::Value> {
    let dir = s.path(&format!("nas/fencing/{host}"));
    let mut out: Vec<serde_json::Value> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .collect();
    out.sort_by_key(|r| r["at"].as_str().unwrap().to_string());
    out
}

/// The failover's fence step from `drp --json run`'s report.
fn fence_step(run: &crate::harness::Run) -> serde_json::Value {
    crate::harness::step_named(&run.json(), "fence the old primary")
}

/// The split-brain test: the old primary's link is cut from the
/// coordinator only → no fence (the witness still reaches it); cut from
/// everyone → fenced by record; when its link comes back, its agent stops
/// the service that kept running, alerts, and keeps it stopped until
/// `drp unfence`. Reached directly, it stands down at once. With neither
/// the host nor the witness answering, only `--force` fences.
#[test]
fn a_host_cut_from_the_coordinator_only_is_not_fenced_and_a_fenced_host_stays_down() {
    let s = scratch("fence");
    let old = host(&s, 1, "old-primary");
    let witness = host(&s, 10, "witness");
    let marker = format!("drp-fenced-service-{}", s.id);
    let _stop = StopAtEnd(marker.clone());
    let nas = s.path("nas");
    let alerts = http_sink(false);
    let alert_port = alerts
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    forward_into(&old.ns, alert_port.parse().unwrap());
    old.serve(&format!(
        "objectives: {{rto: 5m, rpo: 30m}}\ntargets:\n  nas: {{kind: local, path: {nas}}}\nexports:\n  app: {{source: {{kind: sqlite, path: app.db}}, targets: [nas]}}\nnotify:\n  webhook: {{url: {{env: ALERT_URL}}}}\nfencing:\n  check_every: 1s\n  services:\n    - {{name: shop, stop: [pkill, -f, {marker}], running: [pgrep, -f, {marker}]}}\n",
        nas = nas.display()
    ));
    witness.serve(&format!(
        "objectives: {{rto: 5m, rpo: 30m}}\ntargets:\n  nas: {{kind: local, path: {}}}\nexports:\n  app: {{source: {{kind: sqlite, path: app.db}}, targets: [nas]}}\n",
        s.path("witness-nas").display()
    ));
    inventory(&s, "fleet.yaml", &[&old, &witness], None, None);
    s.write(
        "coordinator.yaml",
        &format!(
            "host: coordinator\nobjectives: {{rto: 5m, rpo: 30m}}\ntargets:\n  nas: {{kind: local, path: {}}}\nexports:\n  notes: {{source: {{kind: directory, path: notes}}, targets: [nas]}}\n",
            nas.display()
        ),
    );
    let rb = s.write(
        "failover.yaml",
        &format!("name: failover\npolicy: coordinator.yaml\ninventory: fleet.yaml\nsteps:\n  - name: fence the old primary\n    phase: restart\n    timeout: 2m\n    action: {{kind: fence, host: old-primary, witnesses: [witness], successor: standby}}\n{VERIFY}"),
    );
    let rb = rb.to_str().unwrap();
    start_service(&old, &marker);

    // Cut from the coordinator only: the witness reaches it, nothing is fenced.
    {
        let _cut = CoordinatorCut::new(&old);
        let run = s.drp(&["--json", "run", rb, "--yes"]);
        run.code(1);
        let step = fence_step(&run);
        let message = step["message"].as_str().unwrap();
        assert!(
            message.contains("witness `witness` reaches it") && message.contains("not fencing"),
            "{step:#}"
        );
        assert!(fence_records(&s, "old-primary").is_empty());
        assert!(runs(&marker), "the service is left alone");
    }

    // Cut from everyone: the witness agrees it is down; fenced by record,
    // while its service, out of reach, still runs.
    {
        let _cut = LinkCut::new(&old);
        let run = s.drp(&["--json", "run", rb, "--yes"]);
        run.ok();
        let message = fence_step(&run)["message"].as_str().unwrap().to_string();
        assert!(
            message.contains("nor from witness") && message.contains("fenced by record"),
            "{message}"
        );
        let records = fence_records(&s, "old-primary");
        assert_eq!(records.len(), 1, "{records:#?}");
        let r = &records[0];
        assert_eq!(r["fenced"], true);
        assert_eq!(r["forced"], false);
        assert_eq!(r["successor"], "standby");
        assert_eq!(r["witnesses"][0]["witness"], "witness");
        assert_eq!(r["witnesses"][0]["reached"], false);
        assert!(
            runs(&marker),
            "cut off, the old primary still runs its service"
        );
    }

    // The link is back: its agent reads the record, stops the service,
    // alerts, and exits 10 (as ExecStartPre, the unit stays down).
    let mut with_alerts = old.exec(agent_bin().to_str().unwrap());
    with_alerts
        .args([
            "fence",
            "check",
            "--policy",
            old.policy_path().to_str().unwrap(),
        ])
        .env("ALERT_URL", &alerts.url);
    let out = with_alerts.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(10), "{stderr}");
    assert!(
        stderr.contains("old-primary is fenced") && stderr.contains("stopped shop"),
        "{stderr}"
    );
    assert!(!runs(&marker), "the fenced service was stopped");
    assert!(
        eventually(Duration::from_secs(5), || alerts
            .bodies
            .lock()
            .unwrap()
            .iter()
            .any(
                |b| b.contains("old-primary is fenced") && b.contains("stopped shop")
            )),
        "an alert names the host and the service: {:?}",
        alerts.bodies.lock().unwrap()
    );
    // Started again by hand, it is stopped again at the next turn.
    start_service(&old, &marker);
    assert_eq!(fence_check(&old).status.code(), Some(10));
    assert!(!runs(&marker));
    // The fence is kept in the host's state: with its repository gone, it
    // stays fenced.
    std::fs::rename(&nas, s.path("nas-away")).unwrap();
    assert_eq!(fence_check(&old).status.code(), Some(10));
    std::fs::rename(s.path("nas-away"), &nas).unwrap();

    // Lifted: the service may run again.
    let lifted = s.drp(&["unfence", "old-primary", "--runbook", rb]);
    lifted.ok();
    assert!(
        lifted.stdout.contains("fence of `old-primary` lifted"),
        "{}",
        lifted.all()
    );
    let out = fence_check(&old);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    start_service(&old, &marker);
    assert!(fence_check(&old).status.success());
    assert!(runs(&marker), "an unfenced host's service is left running");

    // Reachable: the old primary stands down at once.
    let run = s.drp(&["--json", "run", rb, "--yes"]);
    run.ok();
    let message = fence_step(&run)["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("old-primary: fenced, stopped shop"),
        "{message}"
    );
    assert!(!runs(&marker));
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(old.dir.join("state/old-primary/fence.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["fenced"], true);
    s.drp(&["unfence", "old-primary", "--runbook", rb]).ok();
    assert!(fence_check(&old).status.success());

    // Neither the host nor the witness answers: nothing is fenced without
    // `--force`, and a forced fence says so in its record.
    let before = fence_records(&s, "old-primary").len();
    let _cut_old = LinkCut::new(&old);
    let _cut_witness = LinkCut::new(&witness);
    let run = s.drp(&["--json", "run", rb, "--yes"]);
    run.code(1);
    let message = fence_step(&run)["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("no witness answered") && message.contains("--force"),
        "{message}"
    );
    assert_eq!(fence_records(&s, "old-primary").len(), before);
    let forced = s.drp(&["--json", "run", rb, "--yes", "--force"]);
    forced.ok();
    let message = fence_step(&forced)["message"].as_str().unwrap().to_string();
    assert!(message.contains("forced: no witness answered"), "{message}");
    let records = fence_records(&s, "old-primary");
    assert_eq!(records.len(), before + 1);
    assert_eq!(records.last().unwrap()["forced"], true);
}

/// The ERP publisher's plan, as `policies/erp/` ships it: two providers,
/// erp-a serving and erp-b standing by (fleet hosts whose agents fence and
/// witness), the database restored from Garage onto erp-b, erp-a fenced
/// (its agent stops its web front), the name moved on BIND 9, the team
/// told by webhook, the ERP checked through its name; then `drp failback`
/// brings erp-b's data home, lifts the fence and moves the name back.
#[test]
fn the_erp_failover_drill_fences_provider_a_moves_the_name_and_fails_back() {
    use crate::failover::{Site, dig, get, label, primary_and_standby, set};
    use crate::harness::psql;
    let mut s = scratch("erp");
    s.shop_env();
    let v = services();
    let (a, b) = (host(&s, 11, "erp-a"), host(&s, 12, "erp-b"));
    let (a_db, b_db) = primary_and_standby(&s, &["facture 1", "facture 2", "facture 3"]);
    let http_port = crate::harness::free_port();
    let (who_a, who_b) = (format!("erp-a-{}", s.id), format!("erp-b-{}", s.id));
    let _stop = StopAtEnd(who_a.clone());
    let site_a = Site::start(&who_a, "127.0.0.2", http_port, &a_db);
    let _site_b = Site::start(&who_b, "127.0.0.3", http_port, &b_db);
    let name = label("erp");
    let fqdn = format!("{name}.shop.example");
    set(&name, "127.0.0.2");
    // erp-a's agent stops its web front when fenced; erp-b's stands by.
    let agent_policy = |h: &Host, fencing: &str| {
        h.serve(&format!(
            "objectives: {{rto: 15m, rpo: 30m}}\ntargets:\n  nas: {{kind: local, path: {}}}\nexports:\n  app: {{source: {{kind: sqlite, path: app.db}}, targets: [nas]}}\n{fencing}",
            s.path(&format!("nas-{}", h.name)).display()
        ))
    };
    agent_policy(
        &a,
        &format!(
            "fencing:\n  services:\n    - {{name: erp-web, stop: [pkill, -f, {who_a}], running: [pgrep, -f, {who_a}]}}\n"
        ),
    );
    agent_policy(&b, "");
    let inventory = inventory(&s, "fleet.yaml", &[&a, &b], None, None);
    let alerts = http_sink(false);
    for (k, val) in [
        ("ERP_HOST", format!("erp-{}", s.id)),
        ("ERP_INVENTORY", inventory.display().to_string()),
        ("ERP_PG_PORT", v.get("DRP_TEST_PG_PORT").to_string()),
        ("ERP_PG_USER", "postgres".into()),
        ("ERP_A_PG_HOST", "127.0.0.1".into()),
        ("ERP_A_PG_DB", a_db.clone()),
        ("ERP_B_PG_HOST", "127.0.0.1".into()),
        ("ERP_B_PG_DB", b_db.clone()),
        ("ERP_PG_PASSWORD", v.get("DRP_TEST_PG_PASSWORD").to_string()),
        ("ERP_ALERT_URL", alerts.url.clone()),
        ("ERP_BREAK_A", format!("kill {}", site_a.pid())),
        ("ERP_NAME", name.clone()),
        ("ERP_ZONE", "shop.example".into()),
        ("ERP_HTTP_PORT", http_port.to_string()),
        ("ERP_DNS", format!("127.0.0.1:{}", crate::failover::port())),
        ("ERP_A_IP", "127.0.0.2".into()),
        ("ERP_B_IP", "127.0.0.3".into()),
        ("ERP_TSIG_NAME", v.get("DRP_TEST_DNS_TSIG_NAME").to_string()),
        ("ERP_TSIG_FILE", v.get("DRP_TEST_DNS_TSIG_FILE").to_string()),
    ] {
        s.set_env(k, &val);
    }
    let rb = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/erp/failover.yaml");
    let rb = rb.to_str().unwrap();
    s.drp(&["check", rb]).ok();

    let drill = s.drp(&["--json", "drill", rb, "--yes", "--out", "reports"]);
    drill.ok();
    let report = drill.json();
    assert_eq!(report["status"], "passed", "{report:#}");
    assert_eq!(dig(&format!("{fqdn}."), "A"), ["127.0.0.3"]);
    assert_eq!(
        get(&fqdn, http_port, "127.0.0.3"),
        format!("site={who_b} orders=3")
    );
    let step = |name: &str| crate::harness::step_named(&report, name);
    assert!(
        step("fence erp-a")["message"]
            .as_str()
            .unwrap()
            .starts_with("erp-a: fenced"),
        "{report:#}"
    );
    let fence: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.dir.join("state/erp-a/fence.json")).unwrap())
            .unwrap();
    assert_eq!(
        (fence["fenced"].clone(), fence["successor"].clone()),
        (true.into(), "erp-b".into())
    );
    assert!(
        report["rpo"]["heartbeat_seconds"].as_f64().is_some(),
        "{report:#}"
    );
    let told = |text: &str| {
        eventually(Duration::from_secs(5), || {
            alerts
                .bodies
                .lock()
                .unwrap()
                .iter()
                .any(|b| b.contains(text))
        })
    };
    assert!(
        told("the ERP moved to provider B"),
        "{:?}",
        alerts.bodies.lock().unwrap()
    );

    // Provider A is back; erp-b took an invoice meanwhile.
    psql(
        &b_db,
        "insert into orders (item) values ('facture pendant la panne')",
    );
    drop(site_a);
    let _site_a = Site::start(&who_a, "127.0.0.2", http_port, &a_db);
    let back = s.drp(&["--json", "failback", rb, "--yes", "--out", "reports"]);
    back.ok();
    assert_eq!(back.json()["status"], "passed", "{:#}", back.json());
    assert_eq!(dig(&format!("{fqdn}."), "A"), ["127.0.0.2"]);
    assert_eq!(
        get(&fqdn, http_port, "127.0.0.2"),
        format!("site={who_a} orders=4")
    );
    let fence: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.dir.join("state/erp-a/fence.json")).unwrap())
            .unwrap();
    assert_eq!(fence["fenced"], false);
    assert!(
        told("the ERP is back at provider A"),
        "{:?}",
        alerts.bodies.lock().unwrap()
    );
}
