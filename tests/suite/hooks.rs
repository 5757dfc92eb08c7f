//! Hooks around backups and snapshot sets, with a real server they stop
//! and start: it was down while the point and the set were taken and up
//! after; a failing `before` keeps the backup (or the set, and the change
//! `guard` runs) from happening and says so; `on_error` learns what failed.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::harness::{Scratch, eventually, free_port, scratch};
use crate::receivers;

/// A small server: it answers on `port` and, while it runs, writes the time
/// into `data/state.txt` and appends it to `beats.log` every 20 ms; on
/// SIGTERM it finishes the beat under way and exits, as a server shuts down
/// cleanly.
const SERVER: &str = r#"
import os, signal, socket, sys, time
port = int(sys.argv[1])
stopping = False
def stop(*_):
    global stopping
    stopping = True
signal.signal(signal.SIGTERM, stop)
open("server.pid", "w").write(str(os.getpid()))
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(8); s.settimeout(0.02)
while not stopping:
    now = time.time_ns()
    open("data/state.txt", "w").write(str(now))
    with open("beats.log", "a") as b: b.write(f"{now}\n")
    try:
        c, _ = s.accept(); c.sendall(b"up\n"); c.close()
    except socket.timeout:
        pass
"#;

/// Starts the server the way a service manager would: detached, its output
/// away from whoever started it.
fn start_line(port: u16) -> String {
    format!(
        "setsid python3 server.py {port} </dev/null >>server.log 2>&1 & date +%s%N >> started.at"
    )
}

/// Stops it and waits until it is gone.
const STOP_LINE: &str = "pid=$(cat server.pid); kill $pid; while kill -0 $pid 2>/dev/null; do sleep 0.01; done; date +%s%N >> stopped.at";

/// Kills the server when the test ends, however it ends.
struct Server<'a>(&'a Scratch);

impl Drop for Server<'_> {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0.path("server.pid")) {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
    }
}

fn answers(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// The times (ns since the epoch) written one per line to `file`.
fn times(s: &Scratch, file: &str) -> Vec<i128> {
    std::fs::read_to_string(s.path(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn ns(t: &serde_json::Value) -> i128 {
    let t: DateTime<Utc> = t.as_str().unwrap().parse().unwrap();
    t.timestamp_nanos_opt().unwrap() as i128
}

/// Asserts the server was down over `[from, to]` (no beat) and that the
/// interval lies between a stop and the start that followed it.
fn down_over(s: &Scratch, round: usize, from: i128, to: i128) {
    let stopped = times(s, "stopped.at")[round];
    let started = times(s, "started.at")[round + 1];
    assert!(
        stopped <= from && to <= started,
        "taken between the stop ({stopped}) and the start ({started}): {from}..{to}"
    );
    let beats: Vec<i128> = times(s, "beats.log")
        .into_iter()
        .filter(|b| (stopped..started).contains(b))
        .collect();
    assert!(
        beats.is_empty(),
        "the server ran while it was stopped: {beats:?}"
    );
}

#[test]
fn hooks_stop_a_real_server_for_the_backup_and_the_snapshot_set_and_start_it_again() {
    let s = scratch("hooks");
    let port = free_port();
    std::fs::create_dir_all(s.path("data")).unwrap();
    s.write("server.py", SERVER);
    s.write("start.sh", &format!("#!/bin/sh\n{}\n", start_line(port)));
    std::process::Command::new("sh")
        .arg("start.sh")
        .current_dir(s.dir.path())
        .status()
        .unwrap();
    let _server = Server(&s);
    assert!(
        eventually(Duration::from_secs(10), || answers(port)),
        "the server starts"
    );
    let hooks =
        format!("{{before: [sh, -c, '{STOP_LINE}'], after: [sh, ./start.sh], timeout: 30s}}");
    let p = s.write(
        "policy.yaml",
        &format!(
            "host: web-1\ntargets:\n  nas: {{kind: local, path: nas}}\nexports:\n  app:\n    source: {{kind: directory, path: data}}\n    targets: [nas]\n    hooks: {hooks}\nsnapshots:\n  app-data: {{kind: directory, path: data, targets: [nas]}}\nsnapshot_hooks: {hooks}\n"
        ),
    );
    let p = p.to_str().unwrap();

    // `drp check` shows what runs around each.
    let check = s.drp(&["check", p]);
    check.ok();
    assert!(
        check.stdout.contains(&format!(
            "app: hooks: before `sh -c {STOP_LINE}` (if it fails, the backup is not taken), after `sh ./start.sh` (always); each killed with its process group after 30s"
        )),
        "{}",
        check.stdout
    );
    assert!(
        check.stdout.contains("snapshot sets: hooks: before `sh -c"),
        "{}",
        check.stdout
    );

    // The backup: the server down while the point was taken, up after.
    let run = s.agent(&["--json", "backup", "--policy", p]);
    run.ok();
    let backup = &run.json()["backups"][0];
    let manifest = &backup["targets"][0]["manifest"];
    assert_eq!(backup["hooks"].as_array().unwrap().len(), 2, "{backup}");
    down_over(
        &s,
        0,
        ns(&manifest["started_at"]),
        ns(&manifest["finished_at"]),
    );
    assert!(
        eventually(Duration::from_secs(10), || answers(port)),
        "the server is up again after the backup"
    );

    // The point holds the server's state as it stopped: its last write.
    let stopped = times(&s, "stopped.at")[0];
    let restored = s.path("restored");
    s.agent(&[
        "restore",
        "--policy",
        p,
        "--export",
        "app",
        "--to",
        restored.to_str().unwrap(),
        "--yes",
    ])
    .ok();
    let saved: i128 = std::fs::read_to_string(restored.join("state.txt"))
        .unwrap()
        .parse()
        .unwrap();
    let last_beat = times(&s, "beats.log")
        .into_iter()
        .filter(|b| *b < stopped)
        .max()
        .unwrap();
    assert_eq!(
        saved, last_beat,
        "the point is the server's last state before it stopped"
    );

    // The snapshot set, through `guard`: the same, around the set.
    let started = Instant::now();
    s.agent(&[
        "guard", "--policy", p, "--change", "CHG-1", "--reason", "upgrade", "--", "true",
    ])
    .ok();
    let listed = s.agent(&[
        "--json", "snapshot", "list", "--policy", p, "--change", "CHG-1",
    ]);
    let set = &listed.json()["sets"][0];
    assert_eq!(set["status"], "complete", "{set}");
    let hooks: Vec<&str> = set["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hook"].as_str().unwrap())
        .collect();
    assert_eq!(hooks, ["before", "after"]);
    // The set's snapshot is a point of `snap-app-data`: when it was read.
    let point = set["members"][0]["reference"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            s.path(&format!("nas/web-1/snap-app-data/manifests/{point}.json")),
        )
        .unwrap(),
    )
    .unwrap();
    down_over(
        &s,
        1,
        ns(&manifest["started_at"]),
        ns(&set["members"][0]["created_at"]),
    );
    assert!(
        eventually(Duration::from_secs(10), || answers(port)),
        "the server is up again after the set"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        eventually(Duration::from_secs(5), || times(&s, "beats.log")
            .last()
            .is_some_and(|b| *b > times(&s, "started.at")[2])),
        "the server beats again after its start"
    );
}

fn failing_policy(s: &Scratch, source: &str, before: &str, webhook: &str) -> String {
    s.write(
        "policy.yaml",
        &format!(
            "host: web-1\ntargets:\n  nas: {{kind: local, path: nas}}\nnotify:\n  webhook: {{url: \"{webhook}\"}}\nexports:\n  app:\n    source: {source}\n    targets: [nas]\n    hooks:\n      before: {before}\n      on_error: [sh, -c, 'printf \"%s\" \"$DRP_EXPORT: $DRP_ERROR\" > on_error.txt']\n      after: [sh, -c, 'printf \"%s\" \"$DRP_OUTCOME\" > after.txt']\nsnapshots:\n  app-data: {{kind: directory, path: data, targets: [nas]}}\nsnapshot_hooks:\n  before: {before}\n  after: [sh, -c, 'printf \"%s\" \"$DRP_SNAPSHOT_SET $DRP_OUTCOME\" > set-after.txt']\n"
        ),
    )
    .display()
    .to_string()
}

fn read(s: &Scratch, file: &str) -> String {
    std::fs::read_to_string(s.path(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn points(s: &Scratch, p: &str) -> usize {
    s.agent(&["--json", "list", "--policy", p]).json()["points"]
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn a_failing_before_skips_the_backup_and_the_set_and_says_so() {
    let s = scratch("hookfail");
    std::fs::create_dir_all(s.path("data")).unwrap();
    s.write("data/a.txt", "a");
    let sink = receivers::http_sink(false);
    let p = failing_policy(
        &s,
        "{kind: directory, path: data}",
        "[sh, -c, 'echo cannot quiesce the app >&2; exit 4']",
        &sink.url,
    );

    let run = s.agent(&["backup", "--policy", &p]);
    run.code(1);
    assert!(
        run.stderr.contains(
            "app: export failed, nothing committed: the `before` hook `sh -c echo cannot quiesce the app >&2; exit 4` failed (exit code 4): cannot quiesce the app; the backup was not taken and nothing was committed"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(points(&s, &p), 0, "nothing committed");
    assert!(
        !Path::new(&s.path("nas/web-1/app/data")).exists()
            || crate::harness::walk(s.path("nas/web-1/app/data")).is_empty(),
        "no data object either"
    );
    // `on_error` learned what failed, `after` ran all the same.
    assert!(
        read(&s, "on_error.txt").starts_with("app: the `before` hook"),
        "{}",
        read(&s, "on_error.txt")
    );
    assert_eq!(read(&s, "after.txt"), "failed");
    // The host's state, its status and the notification say it failed, and why.
    let status = s.agent(&["--json", "status", "--policy", &p]);
    let export = &status.json()["exports"][0];
    assert_eq!(export["last_result"], "failed", "{export}");
    assert!(
        export["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot quiesce the app"),
        "{export}"
    );
    let bodies = sink.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert!(
        bodies[0].contains("cannot quiesce the app"),
        "{}",
        bodies[0]
    );

    // The same `before` around a set: no snapshot, and the change not run.
    let run = s.agent(&[
        "guard",
        "--policy",
        &p,
        "--change",
        "CHG-2",
        "--reason",
        "r",
        "--",
        "sh",
        "-c",
        "echo changed > data/a.txt",
    ]);
    run.code(1);
    assert!(
        run.stderr.contains("the change was not run"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout
            .contains("app-data (directory): FAILED: not taken: the `before` hook"),
        "{}",
        run.stdout
    );
    assert_eq!(read(&s, "data/a.txt"), "a", "the change did not run");
    let after = read(&s, "set-after.txt");
    assert!(after.ends_with("-CHG-2 failed"), "{after}");
}

#[test]
fn on_error_runs_when_the_backup_itself_fails_and_after_says_ok_when_it_does_not() {
    let s = scratch("onerror");
    std::fs::create_dir_all(s.path("data")).unwrap();
    let sink = receivers::http_sink(false);
    // The source's path does not exist: the export fails after `before` passed.
    let p = failing_policy(
        &s,
        "{kind: directory, path: missing}",
        "[\"true\"]",
        &sink.url,
    );
    let run = s.agent(&["backup", "--policy", &p]);
    run.code(1);
    let on_error = read(&s, "on_error.txt");
    assert!(on_error.starts_with("app: "), "{on_error}");
    assert!(
        on_error.contains("missing"),
        "DRP_ERROR names what failed: {on_error}"
    );
    assert!(!on_error.contains("hook"), "{on_error}");
    assert_eq!(read(&s, "after.txt"), "failed");
    assert_eq!(points(&s, &p), 0);

    // Once the source is there, `after` hears `ok` and `on_error` stays quiet.
    std::fs::remove_file(s.path("on_error.txt")).unwrap();
    std::fs::create_dir_all(s.path("missing")).unwrap();
    s.agent(&["backup", "--policy", &p]).ok();
    assert_eq!(read(&s, "after.txt"), "ok");
    assert!(!s.path("on_error.txt").exists());
    assert_eq!(points(&s, &p), 1);

    // An `after` that fails leaves the point committed, and the run says
    // the application may not be back: exit 3, and the error.
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "after: [sh, -c, 'printf \"%s\" \"$DRP_OUTCOME\" > after.txt']",
        "after: [sh, -c, 'echo app did not start >&2; exit 1']",
    );
    std::fs::write(&p, text).unwrap();
    let run = s.agent(&["backup", "--policy", &p]);
    run.code(3);
    assert!(
        run.stderr.contains("the `after` hook `sh -c echo app did not start >&2; exit 1` failed (exit code 1): app did not start"),
        "{}",
        run.stderr
    );
    assert_eq!(points(&s, &p), 2);
}
