//! The coordinator's watch (`drp watch --inventory`) on the test fleet:
//! hosts are network namespaces with their own sshd and agent
//! (tests/services/start.sh), the coordinator is this namespace, and each
//! host's service is a real web server in its namespace. A host cut from
//! the coordinator only is not failed over; cut from its witness too, or
//! handed over by its own watchdog, its failover runbook runs: the old
//! host fenced, its newest point restored onto the successor, which then
//! serves it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::fencing::CoordinatorCut;
use crate::fleet::{Host, LinkCut, agent_bin, host, inventory};
use crate::harness::{Run, Scratch, eventually, scratch};
use crate::receivers::http_sink;

/// A web server in `h`'s namespace serving `dir` on port 8080 of its
/// address (`/health` is the file `health` there). Killed when dropped.
struct Web(Child);

impl Web {
    fn start(h: &Host, dir: &Path) -> Web {
        let child = h
            .exec("python3")
            .args([
                "-m",
                "http.server",
                "8080",
                "--bind",
                &h.addr,
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let web = Web(child);
        assert!(
            eventually(Duration::from_secs(10), || health_from(h, h).is_some()),
            "the web server on {} answers",
            h.name
        );
        web
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn url(h: &Host) -> String {
    format!("http://{}:8080/health", h.addr)
}

/// `GET /health` of `h`'s service as seen from `from`'s namespace.
fn health_from(from: &Host, h: &Host) -> Option<String> {
    let out = from
        .exec("curl")
        .args(["-sf", "--max-time", "3", &url(h)])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `GET /health` of `h`'s service from here, the coordinator.
fn health(h: &Host) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "3", &url(h)])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A site folder with its health file.
fn site(s: &Scratch, name: &str, health: &str) -> PathBuf {
    s.write(&format!("{name}/health"), health);
    s.path(name)
}

/// A fleet host's policy: its site exported to the shared NAS, and `extra`.
fn serve_site(h: &Host, nas: &Path, site: &Path, extra: &str) {
    h.serve(&format!(
        "objectives: {{rto: 5m, rpo: 30m}}\ntargets:\n  nas: {{kind: local, path: {}}}\nexports:\n  site: {{source: {{kind: directory, path: {}}}, targets: [nas]}}\n{extra}",
        nas.display(),
        site.display()
    ));
}

/// The coordinator's policy: its host, the shared NAS (where the fence
/// and incident records go), alerts to `alert_url` by webhook.
fn coordinator_policy(s: &mut Scratch, nas: &Path, alert_url: &str) {
    s.set_env("ALERT_URL", alert_url);
    s.write("notes/README", "the on-call notes\n");
    s.write(
        "coordinator.yaml",
        &format!(
            "host: coordinator\nstate_dir: {}\nobjectives: {{rto: 5m, rpo: 30m}}\ntargets:\n  nas: {{kind: local, path: {}}}\nexports:\n  notes: {{source: {{kind: directory, path: notes}}, targets: [nas]}}\nnotify:\n  webhook: {{url: {{env: ALERT_URL}}}}\n",
            s.path("state").display(),
            nas.display()
        ),
    );
    s.agent(&["init", "--policy", "coordinator.yaml"]).ok();
}

/// The failover runbook: fence `old` (with `witnesses`), restore its
/// newest point of `site` onto `new`, tell the team, check `new` serves it.
fn failover_runbook(s: &Scratch, old: &Host, new: &Host, witnesses: &[&str], serves: &str) {
    s.write(
        "failover.yaml",
        &format!(
            "name: {old} failover\npolicy: coordinator.yaml\ninventory: fleet.yaml\nsteps:\n  - name: fence {old}\n    phase: restore\n    timeout: 1m\n    action: {{kind: fence, host: {old}, witnesses: [{w}], successor: {new}}}\n  - name: restore {old}'s site on {new}\n    phase: restore\n    host: {new}\n    timeout: 1m\n    action: {{kind: restore_backup, export: site, from_host: {old}, into: site}}\n  - name: tell the team\n    phase: restart\n    action: {{kind: notify, message: \"the shop moved to {new}; {old} is fenced\"}}\n  - name: {new} serves the site\n    phase: verify\n    timeout: 30s\n    action: {{kind: http, url: \"{url}\", body_contains: \"{serves}\", until: passes, interval: 1s}}\n",
            old = old.name,
            new = new.name,
            w = witnesses.join(", "),
            url = url(new),
        ),
    );
}

/// The inventory of `hosts`, with `watch` (YAML lines of host variables)
/// added to `watched`'s.
fn watched_inventory(s: &Scratch, hosts: &[&Host], watched: &Host, watch: &str) {
    let path = inventory(s, "fleet.yaml", hosts, None, None);
    let text = std::fs::read_to_string(&path).unwrap();
    let anchor = format!(
        "          drp_policy: {}\n",
        watched.policy_path().display()
    );
    assert!(text.contains(&anchor), "{text}");
    let vars: String = watch.lines().map(|l| format!("          {l}\n")).collect();
    std::fs::write(&path, text.replace(&anchor, &format!("{anchor}{vars}"))).unwrap();
}

/// One round of the watch (`drp --json watch --once`): its one host's turn.
fn watch_once(s: &Scratch, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--json", "watch", "--inventory", "fleet.yaml", "--once"];
    args.extend(extra);
    let run: Run = s.drp(&args);
    assert!(
        run.code == 0,
        "drp watch --once exited {}\n{}",
        run.code,
        run.all()
    );
    run.json()
}

/// The coordinator's incident records about its hosts, oldest first.
fn coordinator_incidents(nas: &Path) -> Vec<serde_json::Value> {
    records(&nas.join("incidents/coordinator"))
}

fn records(dir: &Path) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
        .collect();
    out.sort_by_key(|r| r["first_failed"].as_str().unwrap_or_default().to_string());
    out
}

fn told(alerts: &crate::receivers::HttpSink, parts: &[&str]) -> bool {
    eventually(Duration::from_secs(5), || {
        alerts
            .bodies
            .lock()
            .unwrap()
            .iter()
            .any(|b| parts.iter().all(|p| b.contains(p)))
    })
}

/// The split-brain rule, watched: shop-a cut from the coordinator only
/// (its witness still reaches it) is not failed over, and the incident
/// says why while its service keeps serving; the link back, the incident
/// closes after `rise` passes. Cut from the witness too, it is failed
/// over: fenced by record, its site restored onto shop-b, which serves it;
/// the incident has its RTO from the first failed check and its RPO from
/// the restore, and the host is not failed over again.
#[test]
fn a_host_cut_from_the_coordinator_only_is_not_failed_over_and_one_cut_from_its_witness_too_is() {
    let mut s = scratch("cwatch");
    let shop_a = host(&s, 13, "shop-a");
    let shop_b = host(&s, 14, "shop-b");
    let witness = host(&s, 15, "witness");
    let nas = s.path("nas");
    let site_a = site(&s, "site-a", "shop orders=3\n");
    let site_b = site(&s, "site-b", "standby, no data yet\n");
    serve_site(
        &shop_a,
        &nas,
        &site_a,
        &format!(
            "fencing:\n  services:\n    - {{name: shop, stop: [pkill, -f, {a}], running: [pgrep, -f, {a}]}}\n",
            a = site_a.display()
        ),
    );
    serve_site(&shop_b, &nas, &site_b, "serve: {allow_destructive: true}\n");
    witness.serve(&format!(
        "objectives: {{rto: 5m, rpo: 30m}}\ntargets:\n  nas: {{kind: local, path: {}}}\nexports:\n  app: {{source: {{kind: sqlite, path: app.db}}, targets: [nas]}}\n",
        s.path("witness-nas").display()
    ));
    let alerts = http_sink(false);
    coordinator_policy(&mut s, &nas, &alerts.url);
    failover_runbook(&s, &shop_a, &shop_b, &["witness"], "orders=3");
    watched_inventory(
        &s,
        &[&shop_a, &shop_b, &witness],
        &shop_a,
        &format!(
            "drp_failover: failover.yaml\ndrp_witnesses: [witness]\ndrp_watch:\n  check: {{kind: http, url: \"{}\", body_contains: \"orders=\"}}\n  interval: 2s\n  fall: 2\n  rise: 2",
            url(&shop_a)
        ),
    );
    s.drp(&["check", "failover.yaml"]).ok();
    let _web_a = Web::start(&shop_a, &site_a);
    let _web_b = Web::start(&shop_b, &site_b);
    s.agent(&["backup", "--policy", shop_a.policy_path().to_str().unwrap()])
        .ok();

    let turn = watch_once(&s, &[]);
    assert_eq!(turn["action"], "watching", "{turn:#}");
    assert_eq!(turn["up"], true, "{turn:#}");

    // Cut from the coordinator only: seen down here, but the witness
    // reaches it. Not failed over; the incident says why.
    {
        let _cut = CoordinatorCut::new(&shop_a);
        let first = watch_once(&s, &[]);
        assert_eq!(first["action"], "watching", "{first:#}");
        assert!(
            first["said"]
                .as_str()
                .unwrap()
                .contains("1 of 2 before it counts as down"),
            "{first:#}"
        );
        let second = watch_once(&s, &[]);
        assert_eq!(second["action"], "not_failed_over", "{second:#}");
        let why = second["said"].as_str().unwrap();
        assert!(
            why.contains("witness `witness` reaches shop-a")
                && why.contains("the link from the coordinator is cut"),
            "{second:#}"
        );
        let stored = coordinator_incidents(&nas);
        assert_eq!(stored.len(), 1, "{stored:#?}");
        assert_eq!(stored[0]["service"], "shop-a");
        assert_eq!(stored[0]["host"], "coordinator");
        assert!(
            stored[0]["stopped"]
                .as_str()
                .unwrap()
                .contains("the link from the coordinator is cut"),
            "{stored:#?}"
        );
        assert!(stored[0]["recovered_at"].is_null());
        assert!(!nas.join("fencing/shop-a").exists(), "nothing is fenced");
        assert_eq!(
            health_from(&witness, &shop_a).as_deref(),
            Some("shop orders=3\n"),
            "shop-a still serves, as its witness sees"
        );
        assert!(
            health(&shop_a).is_none(),
            "the coordinator does not reach it"
        );
        assert!(
            told(
                &alerts,
                &[
                    "shop-a",
                    "failover refused",
                    "link from the coordinator is cut"
                ]
            ),
            "an alert names the host, the action and the outcome: {:?}",
            alerts.bodies.lock().unwrap()
        );
    }
    // The link is back: `rise` passes close the incident, nothing failed over.
    let again = watch_once(&s, &[]);
    assert_eq!(again["action"], "watching", "{again:#}");
    let back = watch_once(&s, &[]);
    assert_eq!(back["action"], "recovered", "{back:#}");
    let stored = coordinator_incidents(&nas);
    assert_eq!(stored.len(), 1);
    assert!(stored[0]["recovered_at"].is_string(), "{stored:#?}");
    assert!(stored[0]["rto_seconds"].as_f64().unwrap() > 0.0);

    // Cut from everyone: the witness answers and does not reach it.
    {
        let _cut = LinkCut::new(&shop_a);
        let first = watch_once(&s, &[]);
        assert_eq!(first["action"], "watching", "{first:#}");
        let failover = watch_once(&s, &[]);
        assert_eq!(failover["action"], "failover", "{failover:#}");
        let incident = &failover["incident"];
        let rungs = incident["rungs"].as_array().unwrap();
        let names: Vec<&str> = rungs.iter().map(|r| r["rung"].as_str().unwrap()).collect();
        assert_eq!(names, ["witnesses", "failover"], "{incident:#}");
        assert!(
            rungs[0]["detail"]
                .as_str()
                .unwrap()
                .contains("none reaches it: witness does not"),
            "{incident:#}"
        );
        assert_eq!(rungs[1]["outcome"], "recovered", "{incident:#}");
        let rto = incident["rto_seconds"].as_f64().unwrap();
        let first_failed: chrono::DateTime<chrono::Utc> =
            incident["first_failed"].as_str().unwrap().parse().unwrap();
        let recovered: chrono::DateTime<chrono::Utc> =
            incident["recovered_at"].as_str().unwrap().parse().unwrap();
        assert!(
            (rto - (recovered - first_failed).num_milliseconds() as f64 / 1000.0).abs() < 0.01,
            "the RTO runs from the first failed check to the recovery: {incident:#}"
        );
        assert!(rto > 2.0, "two checks 2 s apart failed first: {incident:#}");
        assert_eq!(incident["restored"]["of"], "site", "{incident:#}");
        assert!(
            incident["rpo_seconds"].as_f64().unwrap() > 0.0,
            "the RPO from the restored point: {incident:#}"
        );
        // The fence record, agreed by the witness; the successor serves
        // shop-a's site.
        let fences = records(&nas.join("fencing/shop-a"));
        assert_eq!(fences.len(), 1, "{fences:#?}");
        assert_eq!(fences[0]["fenced"], true);
        assert_eq!(fences[0]["forced"], false);
        assert_eq!(fences[0]["successor"], "shop-b");
        assert_eq!(fences[0]["witnesses"][0]["reached"], false);
        assert_eq!(health(&shop_b).as_deref(), Some("shop orders=3\n"));
        let stored = coordinator_incidents(&nas);
        assert_eq!(stored.len(), 2, "{stored:#?}");
        assert_eq!(stored[1]["rungs"][1]["rung"], "failover");
        assert!(
            told(&alerts, &["shop-a", "failover done", "RTO"]),
            "{:?}",
            alerts.bodies.lock().unwrap()
        );
        assert!(
            told(&alerts, &["the shop moved to shop-b"]),
            "the runbook's own notification: {:?}",
            alerts.bodies.lock().unwrap()
        );
        // Failed over once: not again until its fence is lifted.
        let held = watch_once(&s, &[]);
        assert_eq!(held["action"], "held", "{held:#}");
        assert!(
            held["said"]
                .as_str()
                .unwrap()
                .contains("drp unfence shop-a"),
            "{held:#}"
        );
    }

    // The report lists the coordinator's incidents beside the drills.
    let report = s.drp(&[
        "--json",
        "report",
        "--policy",
        "coordinator.yaml",
        "--inventory",
        "fleet.yaml",
    ]);
    let incidents = report.json()["incidents"].as_array().unwrap().clone();
    let about_shop_a: Vec<&serde_json::Value> = incidents
        .iter()
        .filter(|i| i["host"] == "coordinator" && i["service"] == "shop-a")
        .collect();
    assert_eq!(about_shop_a.len(), 2, "{incidents:#?}");
    assert_eq!(about_shop_a[0]["outcome"], "recovered");
    assert_eq!(about_shop_a[1]["outcome"], "recovered");
    assert_eq!(about_shop_a[1]["within_rto"], true, "{incidents:#?}");
}

/// The host's own watchdog climbs its ladder to `handover`: its incident
/// record asks for the coordinator, whose watch runs the failover runbook
/// (first in a dry run, which does and writes nothing). The old host
/// answers, so it stands down itself; the successor serves its site; the
/// report lists the host's incident and the coordinator's.
#[test]
fn a_host_whose_watchdog_hands_over_is_failed_over_by_the_coordinator() {
    let mut s = scratch("handover");
    let app_a = host(&s, 16, "app-a");
    let app_b = host(&s, 17, "app-b");
    let nas = s.path("nas");
    let site_a = site(&s, "site-a", "app orders=7\n");
    let site_b = site(&s, "site-b", "standby, no data yet\n");
    serve_site(
        &app_a,
        &nas,
        &site_a,
        &format!(
            "fencing:\n  services:\n    - {{name: web, stop: [pkill, -f, {a}], running: [pgrep, -f, {a}]}}\nwatch:\n  web:\n    check: {{kind: http, url: \"{u}\", body_contains: orders}}\n    interval: 1s\n    fall: 2\n    ladder: [{{handover: {{}}}}]\n",
            a = site_a.display(),
            u = url(&app_a)
        ),
    );
    serve_site(&app_b, &nas, &site_b, "serve: {allow_destructive: true}\n");
    let alerts = http_sink(false);
    coordinator_policy(&mut s, &nas, &alerts.url);
    failover_runbook(&s, &app_a, &app_b, &[], "orders=7");
    // No check of its own: the coordinator watches whether its agent answers.
    watched_inventory(&s, &[&app_a, &app_b], &app_a, "drp_failover: failover.yaml");
    let web_a = Web::start(&app_a, &site_a);
    let _web_b = Web::start(&app_b, &site_b);
    s.agent(&["backup", "--policy", app_a.policy_path().to_str().unwrap()])
        .ok();
    assert_eq!(watch_once(&s, &[])["action"], "watching");

    // The service dies; the host's watchdog, checking it on the host,
    // hands over after `fall` failures.
    drop(web_a);
    for _ in 0..2 {
        let out = app_a
            .exec(agent_bin().to_str().unwrap())
            .args([
                "watch",
                "--once",
                "--policy",
                app_a.policy_path().to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let asked = records(&nas.join("incidents/app-a"));
    assert_eq!(asked.len(), 1, "{asked:#?}");
    assert_eq!(asked[0]["needs_coordinator"], true, "{asked:#?}");

    // A dry run says what it would do, and does nothing.
    let state = s.path("state/coordinator/coordinator-watch/app-a.json");
    let before = std::fs::read(&state).unwrap();
    let dry = watch_once(&s, &["--dry-run"]);
    assert_eq!(dry["action"], "would_fail_over", "{dry:#}");
    assert!(
        dry["said"]
            .as_str()
            .unwrap()
            .contains("handed service `web` over"),
        "{dry:#}"
    );
    assert!(coordinator_incidents(&nas).is_empty());
    assert!(!nas.join("fencing/app-a").exists());
    assert_eq!(
        std::fs::read(&state).unwrap(),
        before,
        "its state is as it was"
    );

    let done = watch_once(&s, &[]);
    assert_eq!(done["action"], "failover", "{done:#}");
    let incident = &done["incident"];
    assert_eq!(incident["rungs"][0]["rung"], "failover", "{incident:#}");
    assert_eq!(incident["rungs"][0]["outcome"], "recovered", "{incident:#}");
    assert_eq!(
        incident["first_failed"], asked[0]["first_failed"],
        "the RTO runs from the host's first failed check"
    );
    assert!(incident["rto_seconds"].as_f64().unwrap() > 0.0);
    // Reached, the old host stood down itself.
    let fence: serde_json::Value =
        serde_json::from_slice(&std::fs::read(app_a.dir.join("state/app-a/fence.json")).unwrap())
            .unwrap();
    assert_eq!(fence["fenced"], true);
    assert_eq!(health(&app_b).as_deref(), Some("app orders=7\n"));
    assert!(
        told(&alerts, &["app-a", "failover done"]),
        "{:?}",
        alerts.bodies.lock().unwrap()
    );
    assert_eq!(watch_once(&s, &[])["action"], "held");

    // The report lists the host's incident and the coordinator's.
    let report = s.drp(&[
        "--json",
        "report",
        "--policy",
        "coordinator.yaml",
        "--inventory",
        "fleet.yaml",
    ]);
    let incidents = report.json()["incidents"].as_array().unwrap().clone();
    let host_said = incidents
        .iter()
        .find(|i| i["host"] == "app-a" && i["service"] == "web")
        .unwrap_or_else(|| panic!("app-a's incident: {incidents:#?}"));
    assert_eq!(host_said["outcome"], "handed_over");
    let coordinator_did = incidents
        .iter()
        .find(|i| i["host"] == "coordinator" && i["service"] == "app-a")
        .unwrap_or_else(|| panic!("the coordinator's incident: {incidents:#?}"));
    assert_eq!(coordinator_did["outcome"], "recovered");
    let markdown = s.drp(&[
        "report",
        "--policy",
        "coordinator.yaml",
        "--inventory",
        "fleet.yaml",
    ]);
    assert!(
        markdown.stdout.contains("| app-a | web |")
            && markdown.stdout.contains("| coordinator | app-a |"),
        "{}",
        markdown.stdout
    );
}
