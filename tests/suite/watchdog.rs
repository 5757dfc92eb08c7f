//! The host's watchdog (`drp-agent watch`) against a real service manager:
//! each test starts its own `supervisord` (Debian's `supervisor`, installed
//! by tests/services/setup.sh) with a small HTTP service under it
//! (`python3 -m http.server` serving a data folder with a health file), and
//! the restart rung is `supervisorctl restart web`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Scratch, eventually, free_port, scratch};
use crate::receivers::http_sink;

/// A `supervisord` of the test's own, by default with one program, `web`,
/// serving `data/` on `port`. Shut down (and its programs with it) when
/// dropped.
pub(crate) struct Supervised {
    pub(crate) conf: PathBuf,
    pub(crate) port: u16,
    pub(crate) data: PathBuf,
    daemon: Child,
}

impl Supervised {
    /// `web` runs `python3 -m http.server`, after `delay` seconds; with
    /// `lives`, it exits by itself that many seconds after it starts.
    fn start(s: &Scratch, delay: u32, lives: Option<u32>) -> Supervised {
        let data = s.path("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("health"), "good v1\n").unwrap();
        let port = free_port();
        let serve = format!(
            "python3 -m http.server {port} --bind 127.0.0.1 --directory {}",
            data.display()
        );
        let serve = match lives {
            Some(n) => format!("timeout {n} {serve}"),
            None => format!("exec {serve}"),
        };
        Supervised::launch(
            s,
            port,
            data,
            "",
            &format!(
                "[program:web]\ncommand=sh -c 'sleep {delay}; {serve}'\nautorestart=false\nstartsecs=0\nstopasgroup=true\nkillasgroup=true\nstopwaitsecs=3\n"
            ),
        )
    }

    /// A `supervisord` in `<scratch>/supervisor` running `programs` (its
    /// `[program:…]` sections), whose service answers `GET /health` on
    /// `port`; `socket` adds lines to its `[unix_http_server]` section (a
    /// `chown=` for a watchdog that is not root). Returns once the service
    /// answers.
    pub(crate) fn launch(
        s: &Scratch,
        port: u16,
        data: PathBuf,
        socket: &str,
        programs: &str,
    ) -> Supervised {
        assert!(
            Command::new("supervisord")
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|st| st.success()),
            "supervisord is missing: run tests/services/setup.sh"
        );
        let dir = s.path("supervisor");
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let conf = dir.join("supervisord.conf");
        std::fs::write(
            &conf,
            format!(
                "[unix_http_server]\nfile={d}/supervisor.sock\n{socket}\n[supervisord]\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\nchildlogdir={d}\n\n\
                 [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
                 [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n\n{programs}"
            ),
        )
        .unwrap();
        let daemon = Command::new("supervisord")
            .args(["-n", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let sup = Supervised {
            conf,
            port,
            data,
            daemon,
        };
        assert!(
            eventually(Duration::from_secs(30), || sup.healthy()),
            "the service never started under supervisord: {}",
            std::fs::read_to_string(dir.join("supervisord.log")).unwrap_or_default()
        );
        sup
    }

    /// What `GET /health` answers (`None`: no answer, or not 200).
    pub(crate) fn health(&self) -> Option<String> {
        let out = Command::new("python3")
            .args([
                "-c",
                "import sys, urllib.request\ntry:\n    print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode(), end='')\nexcept Exception:\n    sys.exit(1)",
                &format!("http://127.0.0.1:{}/health", self.port),
            ])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub(crate) fn healthy(&self) -> bool {
        self.health().is_some()
    }

    pub(crate) fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new("supervisorctl")
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kills the service's process (SIGKILL), as a crash would.
    fn kill(&self) {
        let pid = self.ctl(&["pid", "web"]).trim().to_string();
        assert!(pid.parse::<u32>().is_ok_and(|p| p > 0), "pid: {pid}");
        // The program is `sh -c '…; exec python3'`: its pid is the server's.
        assert!(
            Command::new("kill")
                .args(["-9", &pid])
                .status()
                .unwrap()
                .success()
        );
        assert!(eventually(Duration::from_secs(5), || !self.healthy()));
    }

    /// The restart rung: `supervisorctl -c CONF restart web`.
    fn restart_rung(&self) -> String {
        format!(
            "{{restart: {{command: [supervisorctl, -c, '{}', restart, web]}}}}",
            self.conf.display()
        )
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let _ = self.ctl(&["shutdown"]);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.daemon.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// `drp-agent watch --policy policy.yaml`, stopped when dropped.
struct Watchdog(Child);

impl Watchdog {
    fn start(s: &Scratch) -> Watchdog {
        Watchdog(
            s.agent_cmd(&["watch", "--policy", "policy.yaml"])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(s.path("watch.log")).unwrap())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A policy watching `web` (checked every second) with `ladder`.
fn policy(
    s: &Scratch,
    sup: &Supervised,
    settings: &str,
    ladder: &[String],
    extra: &str,
) -> PathBuf {
    s.write(
        "policy.yaml",
        &format!(
            "host: web-1\ntargets:\n  nas: {{kind: local, path: nas}}\nexports:\n  site:\n    source: {{kind: directory, path: {data}}}\n    targets: [nas]\n{extra}watch:\n  web:\n    check: {{kind: http, url: 'http://127.0.0.1:{port}/health', body_contains: good}}\n    interval: 1s\n{settings}    ladder: [{ladder}]\n",
            data = sup.data.display(),
            port = sup.port,
            ladder = ladder.join(", "),
        ),
    )
}

fn state(s: &Scratch) -> serde_json::Value {
    std::fs::read(s.path("state/web-1/watch/web.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// The incident records stored on the `nas` target, oldest first.
fn incidents(s: &Scratch) -> Vec<serde_json::Value> {
    let dir = s.path("nas/incidents/web-1");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    names.retain(|p| p.extension().is_some_and(|e| e == "json"));
    names.sort();
    names
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

fn log(s: &Scratch) -> String {
    std::fs::read_to_string(s.path("watch.log")).unwrap_or_default()
}

/// Once the watchdog (`by`) saw the service up, kills it and waits for it
/// to be restarted and its incident closed as recovered.
#[track_caller]
fn kill_once_up_and_see_it_recovered(s: &Scratch, sup: &Supervised, by: &str) {
    assert!(
        eventually(Duration::from_secs(15), || state(s)["up"] == true),
        "{}",
        log(s)
    );
    sup.kill();
    assert!(
        eventually(Duration::from_secs(10), || sup.healthy()),
        "not restarted by {by}: {}",
        log(s)
    );
    assert!(
        eventually(Duration::from_secs(10), || incidents(s)
            .last()
            .is_some_and(|i| !i["recovered_at"].is_null())),
        "{}",
        log(s)
    );
}

fn restarts(s: &Scratch) -> u64 {
    state(s)["escalations_total"]["restart"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn a_killed_service_is_restarted_within_interval_times_fall_and_the_incident_shows_rung_1_and_its_rto()
 {
    let s = scratch("watch_kill");
    let sup = Supervised::start(&s, 0, None);
    policy(
        &s,
        &sup,
        "    fall: 2\n    rise: 1\n    grace: 3s\n",
        &[sup.restart_rung(), "{handover: {}}".into()],
        "",
    );
    let _watch = Watchdog::start(&s);
    // interval × fall (2 s), the restart, the server's start: well within 10 s.
    kill_once_up_and_see_it_recovered(&s, &sup, "the watchdog");
    let all = incidents(&s);
    assert_eq!(all.len(), 1, "{all:#?}");
    let i = &all[0];
    assert_eq!(i["service"], "web");
    assert_eq!(i["rungs"].as_array().unwrap().len(), 1, "{i:#}");
    assert_eq!(i["rungs"][0]["number"], 1);
    assert_eq!(i["rungs"][0]["rung"], "restart");
    assert_eq!(i["rungs"][0]["outcome"], "recovered");
    assert_eq!(i["needs_coordinator"], false);
    let rto = i["rto_seconds"].as_f64().unwrap();
    assert!(rto > 0.5 && rto < 15.0, "{i:#}");
    assert_eq!(restarts(&s), 1);
}

#[test]
fn a_corrupted_service_that_restart_does_not_fix_is_restored_from_its_export() {
    let s = scratch("watch_corrupt");
    let sup = Supervised::start(&s, 0, None);
    policy(
        &s,
        &sup,
        "    fall: 2\n    rise: 1\n    grace: 2s\n",
        &[
            sup.restart_rung(),
            "{restore: {export: site}}".into(),
            "{handover: {}}".into(),
        ],
        "",
    );
    s.agent(&["backup", "--policy", "policy.yaml"]).ok();
    let _watch = Watchdog::start(&s);
    assert!(eventually(Duration::from_secs(15), || state(&s)["up"] == true));
    // The data is damaged: the service runs, its health file is gone.
    std::fs::remove_file(sup.data.join("health")).unwrap();
    assert!(!sup.healthy());
    assert!(
        eventually(Duration::from_secs(40), || incidents(&s)
            .last()
            .is_some_and(|i| !i["recovered_at"].is_null())),
        "{}",
        log(&s)
    );
    assert_eq!(sup.health().as_deref(), Some("good v1\n"));
    let i = incidents(&s).pop().unwrap();
    let rungs: Vec<(&str, &str)> = i["rungs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["rung"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rungs,
        [("restart", "not_recovered"), ("restore", "recovered")],
        "{i:#}"
    );
    assert_eq!(i["restored"]["kind"], "point");
    assert_eq!(i["restored"]["of"], "site");
    assert!(i["rpo_seconds"].as_f64().unwrap() >= 0.0, "{i:#}");
    assert!(i["rto_seconds"].as_f64().unwrap() > 0.0, "{i:#}");
}

#[test]
fn a_flapping_service_gets_at_most_k_escalations_then_an_alert_and_no_more_action() {
    let s = scratch("watch_flap");
    let hook = http_sink(false);
    // The service dies 3 s after each start.
    let sup = Supervised::start(&s, 0, Some(3));
    policy(
        &s,
        &sup,
        "    fall: 1\n    rise: 1\n    grace: 1s\n    limit: {escalations: 2, per: 1h}\n",
        &[sup.restart_rung()],
        &format!("notify:\n  webhook: {{url: \"{}\"}}\n", hook.url),
    );
    let _watch = Watchdog::start(&s);
    assert!(
        eventually(Duration::from_secs(40), || !state(&s)["stopped"].is_null()),
        "{}",
        log(&s)
    );
    let stopped = state(&s)["stopped"].as_str().unwrap().to_string();
    assert!(stopped.contains("flap limit"), "{stopped}");
    assert_eq!(restarts(&s), 2);
    let bodies = hook.bodies.lock().unwrap().clone();
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("web on web-1: restart stopped")),
        "{bodies:#?}"
    );
    // No more action: the service stays down.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(restarts(&s), 2);
    assert!(!sup.healthy());
}

#[test]
fn pause_stops_action_and_resume_brings_it_back() {
    let s = scratch("watch_pause");
    let sup = Supervised::start(&s, 0, None);
    let textfile = s.path("metrics.prom");
    policy(
        &s,
        &sup,
        "    fall: 2\n    rise: 1\n    grace: 3s\n",
        &[sup.restart_rung()],
        &format!("metrics: {{textfile: {}}}\n", textfile.display()),
    );
    s.agent(&[
        "watch",
        "pause",
        "--policy",
        "policy.yaml",
        "--service",
        "web",
        "--for",
        "1h",
    ])
    .ok();
    let metrics = std::fs::read_to_string(&textfile).unwrap();
    assert!(
        metrics.contains("drp_watch_paused{host=\"web-1\",service=\"web\"} 1"),
        "{metrics}"
    );
    let status = s.agent(&["status", "--policy", "policy.yaml"]);
    assert!(status.stdout.contains("paused until"), "{}", status.stdout);
    let json = s
        .agent(&["--json", "status", "--policy", "policy.yaml"])
        .json();
    assert_eq!(json["watched"][0]["service"], "web", "{json:#}");
    assert!(json["watched"][0]["paused_until"].is_string(), "{json:#}");
    let _watch = Watchdog::start(&s);
    sup.kill();
    assert!(eventually(Duration::from_secs(10), || state(&s)["up"] == false));
    std::thread::sleep(Duration::from_secs(5));
    assert!(!sup.healthy(), "acted while paused: {}", log(&s));
    assert_eq!(restarts(&s), 0);
    s.agent(&[
        "watch",
        "resume",
        "--policy",
        "policy.yaml",
        "--service",
        "web",
    ])
    .ok();
    assert!(
        eventually(Duration::from_secs(10), || sup.healthy()),
        "not restarted after resume: {}",
        log(&s)
    );
    assert_eq!(restarts(&s), 1);
    let metrics = std::fs::read_to_string(&textfile).unwrap();
    assert!(
        metrics.contains("drp_watch_paused{host=\"web-1\",service=\"web\"} 0"),
        "{metrics}"
    );
}

#[test]
fn a_slow_starter_inside_its_grace_is_not_restarted_again() {
    let s = scratch("watch_slow");
    // Listens 4 s after each start.
    let sup = Supervised::start(&s, 4, None);
    policy(
        &s,
        &sup,
        "    fall: 2\n    rise: 1\n    grace: 8s\n",
        &[sup.restart_rung(), "{handover: {}}".into()],
        "",
    );
    let _watch = Watchdog::start(&s);
    assert!(eventually(Duration::from_secs(15), || state(&s)["up"] == true));
    sup.kill();
    assert!(
        eventually(Duration::from_secs(20), || incidents(&s)
            .last()
            .is_some_and(|i| !i["recovered_at"].is_null())),
        "{}",
        log(&s)
    );
    assert!(sup.healthy());
    assert_eq!(restarts(&s), 1, "{}", log(&s));
    let i = incidents(&s).pop().unwrap();
    assert_eq!(i["rungs"].as_array().unwrap().len(), 1, "{i:#}");
    assert_eq!(i["needs_coordinator"], false);
}

#[test]
fn the_daemon_runs_the_watch_beside_its_schedule_and_stops_on_sigterm() {
    let s = scratch("watch_daemon");
    let sup = Supervised::start(&s, 0, None);
    policy(
        &s,
        &sup,
        "    fall: 2\n    rise: 1\n    grace: 3s\n",
        &[sup.restart_rung(), "{handover: {}}".into()],
        &format!("metrics: {{listen: \"127.0.0.1:{}\"}}\n", free_port()),
    );
    // `drp-agent run` without --due: the one unit a host needs.
    let mut daemon = Watchdog(
        s.agent_cmd(&["run", "--policy", "policy.yaml"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(s.path("watch.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    kill_once_up_and_see_it_recovered(&s, &sup, "the daemon");
    assert_eq!(restarts(&s), 1);
    assert!(
        Command::new("kill")
            .args(["-TERM", &daemon.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    let status = loop {
        if let Some(st) = daemon.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the daemon did not stop on SIGTERM: {}",
            log(&s)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}: {}", log(&s));
    // Nothing acts once it stopped: a crash now stays down.
    sup.kill();
    std::thread::sleep(Duration::from_secs(4));
    assert!(!sup.healthy());
    assert_eq!(restarts(&s), 1);
}

#[test]
fn drp_report_lists_the_periods_incidents_and_one_not_recovered_misses_the_objectives() {
    let s = scratch("watch_report");
    s.write(
        "policy.yaml",
        &format!(
            "host: web-1\ntargets:\n  nas: {{kind: local, path: nas}}\nexports:\n  site:\n    source: {{kind: directory, path: .}}\n    targets: [nas]\nobjectives: {{rto: 1h}}\nwatch:\n  web:\n    check: {{kind: tcp, address: '127.0.0.1:{}'}}\n    interval: 1s\n    fall: 1\n    ladder: [{{restart: {{command: [sh, -c, 'exit 3']}}}}]\n",
            free_port()
        ),
    );
    s.agent(&["init", "--policy", "policy.yaml"]).ok();
    // One check of a service that is down: the incident opens, its restart fails.
    s.agent(&["watch", "--policy", "policy.yaml", "--once"])
        .ok();
    assert_eq!(incidents(&s).len(), 1);
    let report = s.drp(&["--json", "report", "--policy", "policy.yaml"]);
    report.code(8);
    let json = report.json();
    let i = &json["incidents"][0];
    assert_eq!(i["service"], "web", "{json:#}");
    assert_eq!(i["host"], "web-1");
    assert_eq!(i["outcome"], "open");
    assert_eq!(i["rungs"][0]["rung"], "restart");
    assert_eq!(i["rungs"][0]["outcome"], "failed");
    assert_eq!(i["rto_objective_seconds"], 3600.0);
    let md = s.drp(&["report", "--policy", "policy.yaml"]);
    assert!(md.stdout.contains("## Incidents"), "{}", md.stdout);
    assert!(
        md.stdout
            .contains("| web-1 | web | restart: failed | open | - | - | MISSED |"),
        "{}",
        md.stdout
    );
}
