//! The streaming platform's plan, `policies/streaming.yaml`, run as shipped
//! (its `${VAR:-default}` values pointed at this test's components) with
//! its watchdog acting alone against real components: a PostgreSQL 15
//! cluster archiving its WAL through drp, the catalogue API's files on a
//! btrfs subvolume (the loop device tests/services/start.sh mounts), both
//! run by a `supervisord` of the test's own as the program group
//! `catalog`. A bad update is rolled back to the snapshot set taken before
//! it; a lost database is restored to just before its loss; `drp report`
//! lists both incidents with their RTO and RPO.
//!
//! Everything drp runs here runs as `postgres`, as the plan says: PostgreSQL
//! lets only its owner restore the cluster.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::archiving::{
    PG_BIN, PORT, PgCluster, Sock, agent_bin, as_postgres, chown_postgres, socket_dir,
};
use crate::harness::{Run, Scratch, eventually, free_port, scratch, services};
use crate::receivers::{HttpSink, http_sink};
use crate::watchdog::Supervised;

/// The catalogue API: `GET /health` answers 200 `catalog up: …` once it
/// has read its settings (`config.json` in its subvolume) and counted the
/// purchases in its database, 503 `catalog down: …` otherwise.
const API: &str = r#"import http.server, json, subprocess, sys
port, api, sock, psql = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        try:
            with open(api + "/config.json") as f:
                release = json.load(f)["release"]
            out = subprocess.run(
                [psql, "-X", "-qAt", "-h", sock, "-p", "5432", "-U", "postgres", "-d", "catalog",
                 "-c", "select count(*) from purchases"],
                capture_output=True, text=True, timeout=5)
            if out.returncode != 0:
                raise RuntimeError(out.stderr.strip())
            code, body = 200, "catalog up: release %s, %s purchases\n" % (release, out.stdout.strip())
        except Exception as e:
            code, body = 503, "catalog down: %s\n" % e
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", port), Health).serve_forever()
"#;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policies/streaming.yaml")
        .canonicalize()
        .unwrap()
}

fn sh(cmd: &str) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `postgres` user's uid and gid.
fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

/// The catalogue's VM: the plan's environment, its cluster, its API's
/// subvolume, supervisord running both, and the team's chat.
struct Vm {
    // Dropped in this order: the programs, the cluster's handle (a server
    // still running is stopped), its socket folder, the scratch folder.
    sup: Supervised,
    pg: PgCluster,
    sock: tempfile::TempDir,
    s: Scratch,
    env: Vec<(String, String)>,
    /// The API's subvolume.
    api: PathBuf,
    /// The cluster's data directory.
    data: PathBuf,
    chat: HttpSink,
}

impl Vm {
    fn new() -> Vm {
        let s = scratch("streaming");
        let sock = socket_dir();
        let data = s.path("db");
        let root = PathBuf::from(services().get("DRP_TEST_BTRFS")).join(&s.id);
        std::fs::create_dir_all(&root).unwrap();
        let api = root.join("api");
        sh(&format!("btrfs subvolume create {}", api.display()));
        std::fs::write(api.join("config.json"), "{\"release\": \"1\"}\n").unwrap();
        chown_postgres(&root);
        let port = free_port();
        let chat = http_sink(false);
        let env: Vec<(String, String)> = [
            ("DRP_NAS", s.path("nas").display().to_string()),
            ("STREAM_STATE", s.path("state").display().to_string()),
            ("STREAM_API", api.display().to_string()),
            ("STREAM_PG_SOCKET", sock.path().display().to_string()),
            ("STREAM_PG_PORT", PORT.to_string()),
            ("STREAM_PG_DATA", data.display().to_string()),
            (
                "STREAM_HEALTH_URL",
                format!("http://127.0.0.1:{port}/health"),
            ),
            (
                "STREAM_SUPERVISOR_CONF",
                s.path("supervisor/supervisord.conf").display().to_string(),
            ),
            ("STREAM_WATCH_INTERVAL", "1s".to_string()),
            ("STREAM_WATCH_GRACE", "3s".to_string()),
            ("STREAM_CHAT_WEBHOOK", chat.url.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        s.write("api.py", API);
        chown_postgres(s.dir.path());
        let vm_agent = |args: &[&str]| -> Run {
            let mut c = as_postgres(&agent_bin(), s.dir.path());
            c.args(args).envs(env.iter().map(|(k, v)| (k, v)));
            Run::from(c.output().unwrap())
        };
        vm_agent(&["init", "--policy", example().to_str().unwrap()]).ok();

        // The cluster archives through drp with the plan's environment
        // (in production the plan's defaults are the real paths).
        let vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let pg = PgCluster::init(
            &data,
            Sock::Borrowed(sock.path().to_path_buf()),
            &format!(
                "archive_mode = on\narchive_command = 'env {} {} wal push --policy {} %p'\narchive_timeout = 1s\n",
                vars.join(" "),
                agent_bin().display(),
                example().display()
            ),
        );
        pg.start();
        pg.psql("create database catalog");
        let out = as_postgres(&PathBuf::from(PG_BIN).join("psql"), Path::new("/"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(sock.path())
            .args(["-p", PORT, "-U", "postgres", "-d", "catalog", "-c"])
            .arg(
                "create table purchases (id serial primary key, title text not null, at timestamptz not null default clock_timestamp()); \
                 insert into purchases (title) select 'film ' || n from generate_series(1, 100) n",
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.stop();

        let programs = format!(
            "[group:catalog]\nprograms=db,api\n\n\
             [program:db]\ncommand={PG_BIN}/postgres -D {data}\nuser=postgres\nautorestart=false\nstartsecs=2\nstartretries=0\nstopsignal=INT\nstopwaitsecs=30\n\n\
             [program:api]\ncommand=/usr/bin/python3 {app} {port} {api} {sock} {PG_BIN}/psql\nuser=postgres\nautorestart=false\nstartsecs=1\nstartretries=0\nstopasgroup=true\nkillasgroup=true\nstopwaitsecs=3\n",
            data = data.display(),
            app = s.path("api.py").display(),
            api = api.display(),
            sock = sock.path().display(),
        );
        let sup = Supervised::launch(
            &s,
            port,
            api.clone(),
            "chown=postgres:postgres\n",
            &programs,
        );
        Vm {
            sup,
            pg,
            sock,
            s,
            env,
            api,
            data,
            chat,
        }
    }

    /// `drp-agent ARGS` as postgres, with the plan's environment.
    fn agent(&self, args: &[&str]) -> Run {
        let mut c = as_postgres(&agent_bin(), self.s.dir.path());
        c.args(args).envs(self.env.iter().map(|(k, v)| (k, v)));
        Run::from(c.output().unwrap())
    }

    /// `drp ARGS` as postgres, with the plan's environment.
    fn drp(&self, args: &[&str]) -> Run {
        let drp = PathBuf::from(env!("CARGO_BIN_EXE_drp"));
        let mut c = as_postgres(&drp, self.s.dir.path());
        c.args(args).envs(self.env.iter().map(|(k, v)| (k, v)));
        Run::from(c.output().unwrap())
    }

    /// `drp-agent watch` on the plan, as postgres (no `runuser` in
    /// between, so that killing it stops it), until dropped.
    fn watchdog(&self) -> Watchdog {
        let (uid, gid) = postgres_ids();
        let log = self.s.path("watch.log");
        let child = Command::new(agent_bin())
            .args(["watch", "--policy", example().to_str().unwrap()])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("RUST_LOG", "info")
            .env("TMPDIR", "/tmp")
            .current_dir(self.s.dir.path())
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        chown_postgres(&log);
        Watchdog(child)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.s.path("watch.log")).unwrap_or_default()
    }

    fn state(&self) -> serde_json::Value {
        std::fs::read(self.s.path("state/catalog-1/watch/catalog.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// The incident records on the NAS, oldest first.
    fn incidents(&self) -> Vec<serde_json::Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.s.path("nas/incidents/catalog-1"))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        names.retain(|p| p.extension().is_some_and(|e| e == "json"));
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    /// Waits until `n` incidents are on the NAS and the last one closed
    /// as recovered.
    #[track_caller]
    fn recovered(&self, n: usize, within: Duration) -> serde_json::Value {
        let done = eventually(within, || {
            let all = self.incidents();
            all.len() == n && !all[n - 1]["recovered_at"].is_null()
        });
        assert!(
            done,
            "incident {n} did not recover: {:#?}\n{}",
            self.incidents(),
            self.log()
        );
        self.incidents().pop().unwrap()
    }

    /// The id of the snapshot set of `change`.
    fn set_of(&self, change: &str) -> String {
        let listed = self.agent(&[
            "--json",
            "snapshot",
            "list",
            "--policy",
            example().to_str().unwrap(),
            "--change",
            change,
        ]);
        listed.ok();
        listed.json()["sets"][0]["id"].as_str().unwrap().to_string()
    }

    /// `psql` on the catalogue's database: its unaligned output.
    fn query(&self, sql: &str) -> Result<String, String> {
        let out = as_postgres(&PathBuf::from(PG_BIN).join("psql"), Path::new("/"))
            .args(["-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.sock.path())
            .args(["-p", PORT, "-U", "postgres", "-d", "catalog", "-c", sql])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    #[track_caller]
    fn sql(&self, sql: &str) {
        if let Err(e) = self.query(sql) {
            panic!("{sql}: {e}");
        }
    }

    /// How many purchases, and the newest one's title.
    #[track_caller]
    fn purchases(&self) -> String {
        self.query("select count(*) || ' ' || (select title from purchases order by id desc limit 1) from purchases")
            .unwrap_or_else(|e| panic!("the purchases cannot be read: {e}"))
    }

    /// The entries beside `path` whose names start with its own and `tail`.
    fn kept_beside(path: &Path, tail: &str) -> Vec<String> {
        let prefix = format!("{}{tail}", path.file_name().unwrap().to_string_lossy());
        std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&prefix))
            .collect()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // The subvolume and its snapshots go with the test (root may).
        let root = self.api.parent().unwrap().to_path_buf();
        if let Ok(entries) = std::fs::read_dir(&root) {
            let mut subvolumes: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            if let Ok(snaps) = std::fs::read_dir(root.join(".drp-snapshots")) {
                subvolumes.extend(snaps.flatten().map(|e| e.path()));
            }
            for sub in subvolumes {
                let _ = Command::new("btrfs")
                    .args(["subvolume", "delete"])
                    .arg(&sub)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// A watchdog process, killed when dropped.
struct Watchdog(Child);

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Each rung of an incident with its outcome.
fn rungs(incident: &serde_json::Value) -> Vec<(String, String)> {
    incident["rungs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["rung"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_streaming_plan_rolls_back_a_bad_update_then_restores_a_lost_database_on_its_own_and_reports_both()
 {
    let vm = Vm::new();
    let policy = example();
    let policy = policy.to_str().unwrap();

    // The plan as shipped passes `drp check`: twice-daily base backups and
    // the WAL archive meet the 30-minute RPO.
    let check = vm.drp(&["--json", "check", policy]);
    check.ok();
    let export = &check.json()["policies"][0]["exports"][0];
    assert_eq!(export["export"], "catalog-db", "{}", check.stdout);
    assert_eq!(export["meets_rpo"], true, "{}", check.stdout);

    // The 06:00 export.
    vm.agent(&["backup", "--policy", policy]).ok();
    vm.sql("insert into purchases (title) select 'film ' || n from generate_series(101, 150) n");
    let _watch = vm.watchdog();
    assert!(
        eventually(Duration::from_secs(15), || vm.state()["up"] == true),
        "{}",
        vm.log()
    );
    assert!(
        vm.sup
            .health()
            .unwrap()
            .contains("release 1, 150 purchases")
    );

    // Release 2 is deployed under guard: a snapshot set first, then the
    // deploy, which exits 0 but leaves settings the API cannot read.
    let config = vm.api.join("config.json");
    vm.agent(&[
        "guard",
        "--policy",
        policy,
        "--change",
        "REL-2",
        "--reason",
        "catalogue release 2",
        "--",
        "sh",
        "-c",
        &format!("printf '{{\"release\": \"2\",' > {}", config.display()),
    ])
    .ok();
    let before_update = vm.set_of("REL-2");
    assert!(vm.sup.health().is_none(), "the bad release still answers");
    // Once the watchdog saw it fail, someone snapshots the broken state
    // before a hotfix: a set the rollback must not choose.
    assert!(
        eventually(Duration::from_secs(10), || vm.state()["up"] == false),
        "{}",
        vm.log()
    );
    vm.agent(&[
        "snapshot",
        "create",
        "--policy",
        policy,
        "--change",
        "HOTFIX-3",
        "--reason",
        "before a hotfix",
    ])
    .ok();

    // Restart does not help; the rollback of the set taken before the
    // update does.
    let first = vm.recovered(1, Duration::from_secs(60));
    assert_eq!(
        rungs(&first),
        [
            ("restart".to_string(), "not_recovered".to_string()),
            ("rollback".to_string(), "recovered".to_string())
        ],
        "{first:#}"
    );
    assert_eq!(first["restored"]["kind"], "snapshot_set", "{first:#}");
    assert_eq!(first["restored"]["id"], before_update.as_str(), "{first:#}");
    assert_eq!(
        vm.sup.health().as_deref(),
        Some("catalog up: release 1, 150 purchases\n")
    );
    assert_eq!(
        Vm::kept_beside(&vm.api, ".drp-replaced-").len(),
        1,
        "the broken release is kept beside the subvolume"
    );

    // A later configuration change, snapshotted first as every change is.
    vm.agent(&[
        "guard",
        "--policy",
        policy,
        "--change",
        "CFG-4",
        "--reason",
        "longer cache",
        "--",
        "sh",
        "-c",
        &format!("echo 'cache: 2h' > {}", vm.api.join("cache.yaml").display()),
    ])
    .ok();
    let before_change = vm.set_of("CFG-4");
    // Purchases go on; the last is archived (archive_timeout 1s).
    vm.sql("insert into purchases (title) select 'film ' || n from generate_series(151, 180) n");
    vm.pg.switch_wal();
    assert_eq!(vm.purchases(), "180 film 180");

    // The database's disk loses the cluster: the server dies, its files
    // are gone. Restart cannot start it, rollback does not touch it.
    vm.pg.kill_9();
    sh(&format!("rm -rf {0}/base {0}/global", vm.data.display()));
    let second = vm.recovered(2, Duration::from_secs(120));
    let climbed = rungs(&second);
    let names: Vec<&str> = climbed.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        names,
        ["restart", "rollback", "restore", "restart"],
        "{second:#}"
    );
    assert_ne!(climbed[0].1, "recovered", "{second:#}");
    assert_eq!(climbed[3].1, "recovered", "{second:#}");
    assert!(
        second["rungs"][1]["detail"]
            .as_str()
            .unwrap()
            .contains(&before_change),
        "the rollback took the newest set before the failure: {second:#}"
    );
    // The cluster is back with every archived purchase.
    assert_eq!(second["restored"]["kind"], "point", "{second:#}");
    assert_eq!(second["restored"]["of"], "catalog-db", "{second:#}");
    assert_eq!(vm.purchases(), "180 film 180");
    assert_eq!(
        vm.sup.health().as_deref(),
        Some("catalog up: release 1, 180 purchases\n")
    );
    assert_eq!(
        Vm::kept_beside(&vm.data, ".drp-replaced-").len(),
        1,
        "the damaged data directory is kept"
    );
    let rpo = second["rpo_seconds"].as_f64().unwrap();
    assert!((0.0..60.0).contains(&rpo), "{second:#}");

    // The team heard each rung in its chat.
    let said = vm.chat.bodies.lock().unwrap().join("\n");
    for line in [
        "catalog on catalog-1: rollback recovered",
        "catalog on catalog-1: restore done",
        "catalog on catalog-1: restart recovered",
    ] {
        assert!(said.contains(line), "{line} not in {said}");
    }

    // The period's report lists both incidents, each with its RTO and RPO.
    let report = vm.drp(&["--json", "report", "--policy", policy]);
    // Both recovered within the RTO: the objectives are met (exit 0).
    report.ok();
    let json = report.json();
    let incidents = json["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 2, "{json:#}");
    for (i, rung) in incidents.iter().zip(["rollback", "restart"]) {
        assert_eq!(i["service"], "catalog");
        assert_eq!(i["outcome"], "recovered", "{i:#}");
        assert_eq!(i["rungs"].as_array().unwrap().last().unwrap()["rung"], rung);
        let rto = i["rto_seconds"].as_f64().unwrap();
        assert!(rto > 0.0 && rto < 300.0, "{i:#}");
        assert_eq!(i["within_rto"], true, "{i:#}");
        assert!(i["rpo_seconds"].as_f64().is_some(), "{i:#}");
        assert_eq!(i["within_rpo"], true, "{i:#}");
        eprintln!(
            "incident recovered by {rung}: RTO {rto:.1} s, RPO {:.1} s",
            i["rpo_seconds"].as_f64().unwrap()
        );
    }
    let md = vm.drp(&["report", "--policy", policy]);
    assert!(md.stdout.contains("## Incidents"), "{}", md.stdout);
    assert!(
        md.stdout.contains(
            "| catalog-1 | catalog | restart: not recovered, rollback: recovered | recovered |"
        ),
        "{}",
        md.stdout
    );

    // The on-call engineer's procedure, kept in Git beside the plan, on a
    // third loss while the watchdog is paused: the same restore, by hand.
    let runbook = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../runbooks/streaming-db-lost.yaml")
        .canonicalize()
        .unwrap();
    let runbook = runbook.to_str().unwrap();
    vm.drp(&["check", runbook]).ok();
    vm.agent(&[
        "watch",
        "pause",
        "--policy",
        policy,
        "--service",
        "catalog",
        "--for",
        "1h",
    ])
    .ok();
    vm.sql("insert into purchases (title) values ('film 181')");
    vm.pg.switch_wal();
    let failed_at = chrono::Utc::now();
    vm.pg.kill_9();
    sh(&format!("rm -rf {0}/base {0}/global", vm.data.display()));
    let run = vm.drp(&[
        "--json",
        "run",
        runbook,
        "--failed-at",
        &failed_at.to_rfc3339(),
        "--yes",
        "--out",
        "reports",
    ]);
    run.ok();
    assert_eq!(run.json()["status"], "passed", "{}", run.stdout);
    assert_eq!(vm.purchases(), "181 film 181");
    assert_eq!(
        vm.sup.health().as_deref(),
        Some("catalog up: release 1, 181 purchases\n")
    );
    assert_eq!(Vm::kept_beside(&vm.data, ".drp-replaced-").len(), 2);
    assert_eq!(vm.incidents().len(), 2, "the paused watchdog did nothing");
}
