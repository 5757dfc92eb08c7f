//! Redis exports against a real `redis-server` from Debian's packages, each
//! test's own on a Unix socket in its scratch folder, started and stopped by
//! the argv commands its policy declares: a point taken under writes
//! restores with every key it holds, a server on append-only files gets the
//! point rather than its old log, and a restore test loads the point in a
//! throwaway server and leaves the live one alone.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::harness::{Scratch, eventually, scratch};

pub(crate) const PASSWORD: &str = "redis-Test-Pw-5b1e";

/// A test's own Redis server: `redis-server <conf>`, daemonised, on a
/// socket in the scratch folder; killed through its pid file when dropped.
pub struct TestRedis {
    pub sock: PathBuf,
    pub data: PathBuf,
    pub conf: PathBuf,
    pid_file: PathBuf,
}

impl TestRedis {
    pub fn start(s: &Scratch, appendonly: bool) -> TestRedis {
        for tool in ["redis-server", "redis-cli"] {
            assert!(
                Command::new(tool).arg("--version").output().is_ok(),
                "`{tool}` is missing: run tests/services/setup.sh"
            );
        }
        let sock = s.path("redis.sock");
        let data = s.path("redis");
        std::fs::create_dir_all(&data).unwrap();
        let pid_file = s.path("redis.pid");
        let conf = s.write(
            "redis.conf",
            &format!(
                "port 0\nunixsocket {sock}\nunixsocketperm 700\ndir {data}\ndbfilename dump.rdb\n\
                 pidfile {pid}\nlogfile {log}\ndaemonize yes\nsave 3600 1\nappendonly {aof}\n\
                 requirepass {PASSWORD}\nenable-debug-command local\n",
                sock = sock.display(),
                data = data.display(),
                pid = pid_file.display(),
                log = s.path("redis.log").display(),
                aof = if appendonly { "yes" } else { "no" },
            ),
        );
        let r = TestRedis {
            sock,
            data,
            conf,
            pid_file,
        };
        r.launch();
        r
    }

    fn launch(&self) {
        let out = Command::new("redis-server")
            .arg(&self.conf)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(
            eventually(Duration::from_secs(30), || self
                .try_cli(&["PING"])
                .is_some_and(|o| o == "PONG")),
            "redis-server did not answer"
        );
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-e", "--no-auth-warning", "-s"])
            .arg(&self.sock)
            .args(args)
            .env("REDISCLI_AUTH", PASSWORD)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }

    pub fn dbsize(&self) -> u64 {
        self.cli(&["DBSIZE"]).parse().unwrap()
    }

    pub fn run_id(&self) -> String {
        self.cli(&["INFO", "server"])
            .lines()
            .find_map(|l| l.trim().strip_prefix("run_id:"))
            .unwrap()
            .to_string()
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            // SAFETY: the test's own redis-server, by the pid it wrote.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// The policy of a Redis export: stopped by a small script that shuts the
/// server down (its password in the environment, as the script's own), and
/// started again from its configuration file.
pub fn policy(s: &Scratch, r: &TestRedis, extra: &str) -> PathBuf {
    let stop = s.write(
        "stop-redis.sh",
        &format!(
            "#!/bin/sh\nexec redis-cli --no-auth-warning -s {} SHUTDOWN\n",
            r.sock.display()
        ),
    );
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&stop, std::fs::Permissions::from_mode(0o755)).unwrap();
    s.write(
        "policy.yaml",
        &format!(
            "host: cache-1\n{}exports:\n  cache:\n    source:\n      kind: redis\n      socket: {}\n      \
             password: {{env: TEST_REDIS_PASSWORD}}\n      stop: [{}]\n      start: [redis-server, {}]\n    \
             targets: [nas]\n{extra}",
            s.targets_yaml(),
            r.sock.display(),
            stop.display(),
            r.conf.display(),
        ),
    )
}

/// A scratch with the Redis password in the environment, under the name
/// the policy references and the one the stop script's `redis-cli` reads.
pub fn redis_scratch(tag: &str) -> Scratch {
    let mut s = scratch(tag);
    s.set_env("TEST_REDIS_PASSWORD", PASSWORD);
    s.set_env("REDISCLI_AUTH", PASSWORD);
    s
}

/// Writes `SET w:<n> <n>` for n = 0, 1, 2, … one at a time (each answered
/// before the next), until stopped; the count written.
struct Writer {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(sock: &Path) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let (st, wr) = (stop.clone(), written.clone());
        let mut conn = UnixStream::connect(sock).unwrap();
        let thread = std::thread::spawn(move || {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            conn.write_all(format!("AUTH {PASSWORD}\r\n").as_bytes())
                .unwrap();
            reader.read_line(&mut line).unwrap();
            assert_eq!(line, "+OK\r\n");
            let mut n = 0u64;
            while !st.load(Ordering::SeqCst) {
                conn.write_all(format!("SET w:{n} {n}\r\n").as_bytes())
                    .unwrap();
                line.clear();
                reader.read_line(&mut line).unwrap();
                assert_eq!(line, "+OK\r\n");
                n += 1;
                wr.store(n, Ordering::SeqCst);
            }
        });
        Writer {
            stop,
            written,
            thread: Some(thread),
        }
    }

    fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.written()
    }
}

/// `count` keys `k:<i>` with known values, a tenth of them with a day to live.
pub(crate) fn fill(r: &TestRedis, count: u64) {
    let mut conn = UnixStream::connect(&r.sock).unwrap();
    let mut cmds = format!("AUTH {PASSWORD}\r\n");
    for i in 0..count {
        cmds += &format!("SET k:{i} value-{i}-{}\r\n", "x".repeat((i % 50) as usize));
        if i % 10 == 0 {
            cmds += &format!("EXPIRE k:{i} 86400\r\n");
        }
    }
    cmds += "SELECT 3\r\nSET other:db yes\r\n";
    conn.write_all(cmds.as_bytes()).unwrap();
    let mut reader = BufReader::new(conn);
    let replies = count + count.div_ceil(10) + 3;
    let mut line = String::new();
    for _ in 0..replies {
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with('+') || line.starts_with(':'), "{line}");
    }
}

/// The backup's manifest (one target).
fn backup(s: &Scratch, p: &str) -> serde_json::Value {
    let run = s.agent(&["--json", "backup", "--policy", p]);
    run.ok();
    run.json()["backups"][0]["targets"][0]["manifest"].clone()
}

#[test]
fn a_redis_point_taken_under_writes_restores_with_every_key_it_holds() {
    let s = redis_scratch("redis_writes");
    let r = TestRedis::start(&s, false);
    fill(&r, 5000);
    // Enough data that the dump takes a while beside the writer.
    r.cli(&["DEBUG", "POPULATE", "300000", "bulk", "64"]);
    let policy = policy(&s, &r, "");
    let p = policy.to_str().unwrap();
    let run_id = r.run_id();

    let writer = Writer::start(&r.sock);
    assert!(eventually(Duration::from_secs(10), || writer.written() > 100));
    let at_start = writer.written();
    let m = backup(&s, p);
    let after = writer.stop();
    assert!(after > at_start, "the writer ran beside the backup");

    assert_eq!(m["kind"], "redis");
    assert_eq!(m["tools"]["server"], "Redis 7.0.15", "{m:#}");
    assert_eq!(m["tools"]["redis_run_id"], run_id.as_str());
    let keys = m["tools"]["redis_keys"].as_str().unwrap().to_string();
    // db0: the fill, the bulk keys and the writer's first keys; db3: one.
    let db0: u64 = keys
        .strip_prefix("db0:keys=")
        .and_then(|k| k.split(',').next())
        .and_then(|k| k.parse().ok())
        .unwrap_or_else(|| panic!("{keys}"));
    assert!(keys.ends_with(";db3:keys=1,expires=0"), "{keys}");
    assert!(keys.contains(",expires=500;"), "{keys}");
    let in_point = db0 - 5000 - 300_000;
    assert!(
        in_point >= at_start && in_point <= after,
        "{in_point} writer keys in the point; {at_start} written before it began, {after} by its end"
    );

    // Later writes, then the disaster: the data is wiped.
    r.cli(&["SET", "after:backup", "1"]);
    r.cli(&["FLUSHALL"]);
    r.cli(&["SET", "junk", "1"]);

    let run = s.agent(&["restore", "--policy", p, "--export", "cache", "--yes"]);
    run.ok();
    assert!(run.stderr.contains("is stopped"), "{}", run.stderr);
    assert!(
        run.stdout.contains("dump.rdb.drp-replaced-"),
        "{}",
        run.stdout
    );

    // Every key of the point, exactly: the fill's values, the writer's
    // keys 0..n with none missing and none later, the other database.
    assert_eq!(r.dbsize(), db0);
    assert_eq!(r.cli(&["GET", "k:0"]), format!("value-0-"));
    assert_eq!(
        r.cli(&["GET", "k:4999"]),
        format!("value-4999-{}", "x".repeat(4999 % 50))
    );
    let ttl: i64 = r.cli(&["TTL", "k:10"]).parse().unwrap();
    assert!(ttl > 80_000, "{ttl}");
    for i in (0..5000).step_by(7) {
        assert_eq!(
            r.cli(&["GET", &format!("k:{i}")]),
            format!("value-{i}-{}", "x".repeat((i % 50) as usize))
        );
    }
    assert_eq!(
        r.cli(&["GET", &format!("w:{}", in_point - 1)]),
        (in_point - 1).to_string()
    );
    assert_eq!(r.cli(&["EXISTS", &format!("w:{in_point}")]), "0");
    assert_eq!(r.cli(&["EXISTS", "junk", "after:backup"]), "0");
    assert_eq!(r.cli(&["-n", "3", "GET", "other:db"]), "yes");
    // What it replaced is kept beside the dump.
    let kept: Vec<String> = std::fs::read_dir(&r.data)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("dump.rdb.drp-replaced-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
}

#[test]
fn a_server_on_append_only_files_gets_the_point_not_its_old_log() {
    let s = redis_scratch("redis_aof");
    let r = TestRedis::start(&s, true);
    fill(&r, 1000);
    let policy = policy(&s, &r, "");
    let p = policy.to_str().unwrap();
    let m = backup(&s, p);
    assert_eq!(
        m["tools"]["redis_keys"],
        "db0:keys=1000,expires=100;db3:keys=1,expires=0"
    );
    // After the point: the log holds these writes, which must not come back.
    r.cli(&["DEL", "k:1", "k:2"]);
    r.cli(&["SET", "after:backup", "1"]);

    let run = s.agent(&["restore", "--policy", p, "--export", "cache", "--yes"]);
    run.ok();
    assert_eq!(r.dbsize(), 1000);
    assert_eq!(r.cli(&["GET", "k:1"]), "value-1-x");
    assert_eq!(r.cli(&["EXISTS", "after:backup"]), "0");
    assert_eq!(r.cli(&["CONFIG", "GET", "appendonly"]), "appendonly\nyes");
    let names: Vec<String> = std::fs::read_dir(&r.data)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("appendonlydir.drp-replaced-")),
        "the old append-only files are kept: {names:?}"
    );
    // The server goes on logging on the restored data: restarted, it has it.
    r.cli(&["SET", "after:restore", "1"]);
    let _ = Command::new("redis-cli")
        .args(["--no-auth-warning", "-s"])
        .arg(&r.sock)
        .arg("SHUTDOWN")
        .env("REDISCLI_AUTH", PASSWORD)
        .output();
    assert!(eventually(Duration::from_secs(30), || r
        .try_cli(&["PING"])
        .is_none()));
    r.launch();
    assert_eq!(r.dbsize(), 1001);
    assert_eq!(r.cli(&["GET", "k:1"]), "value-1-x");
}

#[test]
fn a_restore_to_a_file_writes_the_rdb_and_touches_no_server() {
    let s = redis_scratch("redis_file");
    let r = TestRedis::start(&s, false);
    fill(&r, 200);
    let policy = policy(&s, &r, "");
    let p = policy.to_str().unwrap();
    backup(&s, p);
    let run_id = r.run_id();
    let to = s.path("copy.rdb");
    std::fs::write(&to, "an older copy").unwrap();
    let run = s.agent(&[
        "restore",
        "--policy",
        p,
        "--export",
        "cache",
        "--to",
        to.to_str().unwrap(),
        "--yes",
    ]);
    run.ok();
    assert!(std::fs::read(&to).unwrap().starts_with(b"REDIS0010"));
    assert!(
        run.stdout.contains("copy.rdb.drp-replaced-"),
        "{}",
        run.stdout
    );
    // The live server was not stopped: the same process, the same keys.
    assert_eq!(r.run_id(), run_id);
    assert_eq!(r.dbsize(), 200);
}

#[test]
fn a_restore_test_loads_the_point_in_a_throwaway_server_and_leaves_the_live_one_alone() {
    let s = redis_scratch("redis_test");
    let r = TestRedis::start(&s, false);
    fill(&r, 2000);
    let policy = policy(&s, &r, "    restore_test: {every: 1d}\n");
    let p = policy.to_str().unwrap();
    backup(&s, p);
    let run_id = r.run_id();
    let tmp = s.path("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let mut cmd = s.agent_cmd(&["--json", "test-restore", "--policy", p]);
    cmd.env("TMPDIR", &tmp);
    let run = crate::harness::Run::from(cmd.output().unwrap());
    run.ok();
    let t = &run.json()["tests"][0];
    assert_eq!(t["passed"], true, "{t:#}");
    let check = &t["checks"][0];
    assert_eq!(
        check["check"],
        "the RDB loads in a throwaway redis-server with the point's keys"
    );
    assert_eq!(
        check["detail"], "2001 keys (1801 without a time to live, all there)",
        "{t:#}"
    );
    // The live server is the same process, with the same keys, and the
    // throwaway one is gone with its folder.
    assert_eq!(r.run_id(), run_id);
    assert_eq!(r.dbsize(), 2000);
    assert_eq!(r.cli(&["-n", "3", "DBSIZE"]), "1");
    assert!(
        std::fs::read_dir(&tmp).unwrap().next().is_none(),
        "the scratch folder is left"
    );
    let servers: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&tmp.display().to_string()))
        .collect();
    assert!(servers.is_empty(), "{servers:?}");
}

/// The one stored data object of the export on the NAS (not the index's).
fn stored_point(s: &Scratch) -> PathBuf {
    crate::harness::walk(s.path("nas"))
        .into_iter()
        .find(|f| {
            f.extension().is_some_and(|e| e == "zst")
                && !f.parent().is_some_and(|d| d.ends_with("index"))
        })
        .expect("a stored point on the NAS")
}

/// Before `yes`, the plan says what the restore replaces and nothing
/// changes (exit 5); a point whose stored bytes were altered exits 4 with the
/// live server untouched: the same process, every key, no replaced copy.
#[test]
fn a_redis_restore_shows_its_plan_before_yes_and_a_corrupt_point_replaces_nothing() {
    let s = redis_scratch("redis_corrupt");
    let r = TestRedis::start(&s, false);
    fill(&r, 300);
    let policy = policy(&s, &r, "");
    let p = policy.to_str().unwrap();
    backup(&s, p);
    r.cli(&["SET", "written:after", "the point"]);
    let run_id = r.run_id();
    let untouched = |what: &str| {
        assert_eq!(r.run_id(), run_id, "{what}: the server was restarted");
        assert_eq!(r.dbsize(), 301, "{what}: the live keys changed");
        let replaced: Vec<_> = crate::harness::walk(s.dir.path().to_path_buf())
            .into_iter()
            .filter(|f| f.display().to_string().contains("drp-replaced"))
            .collect();
        assert!(replaced.is_empty(), "{what}: {replaced:?}");
    };

    let plan = s.agent(&["restore", "--policy", p, "--export", "cache"]);
    plan.code(5);
    // What the user reads before saying yes: the live keys and dump it
    // replaces, where that dump is kept, what is lost.
    let said = &plan.stderr;
    let dump = r.conf.parent().unwrap().join("redis/dump.rdb");
    for expected in [
        "replaces         Redis 7".to_string(),
        "302 keys".to_string(),
        format!("dump {}", dump.display()),
        "kept beside it as `<dump>.drp-replaced-".to_string(),
        "writes after the point are lost".to_string(),
        "nothing was changed".to_string(),
    ] {
        assert!(
            said.contains(&expected),
            "`{expected}` not in the plan:\n{said}"
        );
    }
    untouched("the plan");

    let object = stored_point(&s);
    let mut bytes = std::fs::read(&object).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&object, bytes).unwrap();
    let run = s.agent(&["restore", "--policy", p, "--export", "cache", "--yes"]);
    run.code(4);
    untouched("the corrupt point");
}
