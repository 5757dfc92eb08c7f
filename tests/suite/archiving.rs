//! Continuous WAL archiving of whole PostgreSQL clusters (`postgres-cluster`
//! exports) against real PostgreSQL 15 servers each test creates: the
//! archive_command and restore_command contract, a target that goes away, a
//! second cluster pointed at the same export, point-in-time restores, a
//! promotion onto a new timeline, and the RPO of a host lost mid-write.
//!
//! The tests run as root; PostgreSQL refuses to, so every server, every
//! PostgreSQL tool and every `drp-agent` command runs as the `postgres` user,
//! as it does in production (the archive_command runs as the server's user).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::harness::{Run, Scratch, rand_u32, scratch, tree_digest};

pub(crate) const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// Every server here listens on a socket only, in a folder of its own, so
/// the port only names the socket.
pub(crate) const PORT: &str = "5432";

pub(crate) fn agent_bin() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_BIN_EXE_drp")).with_file_name("drp-agent");
    assert!(
        p.is_file(),
        "{} is not built: run `cargo build --bins` first",
        p.display()
    );
    p
}

pub(crate) fn pg_tool(name: &str) -> PathBuf {
    let p = Path::new(PG_BIN).join(name);
    assert!(
        p.is_file(),
        "{} is missing: the suite needs PostgreSQL 15's server binaries (tests/services/setup.sh installs them)",
        p.display()
    );
    p
}

/// `program` run as the `postgres` user, in `dir`.
pub(crate) fn as_postgres(program: &Path, dir: &Path) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"])
        .arg(program)
        .current_dir(dir)
        .env("TMPDIR", "/tmp")
        .env("RUST_LOG", "warn");
    c
}

pub(crate) fn chown_postgres(path: &Path) {
    let st = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()
        .expect("chown runs");
    assert!(st.success(), "chown -R postgres {}", path.display());
}

#[track_caller]
pub(crate) fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {}s waiting for {what}",
            timeout.as_secs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn epoch(t: DateTime<Utc>) -> f64 {
    t.timestamp_micros() as f64 / 1e6
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn json_time(v: &serde_json::Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

/// One test's host: its scratch folder, a NAS folder, a policy with one
/// `postgres-cluster` export (`main`) of the cluster in `<scratch>/db`, and
/// the repository created.
pub(crate) struct Site {
    pub(crate) s: Scratch,
    pub(crate) policy: PathBuf,
    pub(crate) nas: PathBuf,
    pub(crate) state: PathBuf,
    /// The data directory the policy names.
    pub(crate) data: PathBuf,
    /// The socket folder of the policy's cluster (short: sockets are < 108 bytes).
    pub(crate) sock: tempfile::TempDir,
}

impl Site {
    pub(crate) fn new(tag: &str) -> Site {
        Site::with(tag, "")
    }

    /// A site whose policy has `extra` (top-level keys) too.
    pub(crate) fn with(tag: &str, extra: &str) -> Site {
        Site::with_exports(tag, extra, |_| String::new())
    }

    /// A site whose policy has `extra` top-level keys and the exports
    /// `more` writes (given the scratch) after its cluster's.
    pub(crate) fn with_exports(tag: &str, extra: &str, more: impl Fn(&Scratch) -> String) -> Site {
        let s = scratch(tag);
        let more = more(&s);
        let sock = socket_dir();
        let (nas, state, data) = (s.path("nas"), s.path("state"), s.path("db"));
        let policy = s.write(
            "policy.yaml",
            &format!(
                "host: db1\nstate_dir: {state}\n{extra}targets:\n  nas: {{kind: local, path: {nas}}}\nexports:\n  main:\n    source:\n      kind: postgres-cluster\n      host: {sock}\n      port: {PORT}\n      user: postgres\n      bin_dir: {PG_BIN}\n      data_directory: {data}\n    targets: [nas]\n{more}",
                state = state.display(),
                nas = nas.display(),
                sock = sock.path().display(),
                data = data.display(),
            ),
        );
        chown_postgres(s.dir.path());
        let site = Site {
            s,
            policy,
            nas,
            state,
            data,
            sock,
        };
        site.agent(&["init"]).ok();
        site
    }

    /// `drp-agent <verb> --policy <policy> <rest>`, as postgres. A leading
    /// `--json` stays in front of the verb.
    pub(crate) fn agent(&self, args: &[&str]) -> Run {
        let (global, rest): (Vec<&str>, Vec<&str>) = {
            let split = args.iter().take_while(|a| a.starts_with("--")).count();
            (args[..split].to_vec(), args[split..].to_vec())
        };
        let mut c = as_postgres(&agent_bin(), self.s.dir.path());
        c.args(&global);
        // `wal push|get|status` take the policy after their own verb.
        let verbs = if rest.first() == Some(&"wal") { 2 } else { 1 };
        c.args(&rest[..verbs.min(rest.len())])
            .arg("--policy")
            .arg(&self.policy)
            .args(&rest[verbs.min(rest.len())..]);
        Run::from(c.output().expect("drp-agent runs"))
    }

    /// The `archive_command` of every cluster archiving into this site.
    pub(crate) fn archive_command(&self) -> String {
        format!(
            "{} wal push --policy {} %p",
            agent_bin().display(),
            self.policy.display()
        )
    }

    /// The policy's cluster, created (not started).
    pub(crate) fn primary(&self, settings: &str) -> PgCluster {
        PgCluster::init(
            &self.data,
            Sock::Borrowed(self.sock.path().to_path_buf()),
            &format!(
                "archive_mode = on\narchive_command = '{}'\n{settings}",
                self.archive_command()
            ),
        )
    }

    /// A folder of the scratch, for postgres.
    pub(crate) fn dir(&self, rel: &str) -> PathBuf {
        let p = self.s.path(rel);
        std::fs::create_dir_all(&p).unwrap();
        chown_postgres(&p);
        p
    }

    pub(crate) fn wal_root(&self) -> PathBuf {
        self.nas.join("db1/main/wal")
    }

    /// The archived objects of one WAL file (normally one).
    pub(crate) fn objects(&self, name: &str) -> Vec<PathBuf> {
        let folder = if name.ends_with(".history") {
            self.wal_root().join("history")
        } else {
            self.wal_root().join(&name[..16])
        };
        let mut out: Vec<PathBuf> = std::fs::read_dir(&folder)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .unwrap()
                            .to_string_lossy()
                            .starts_with(&format!("{name}-"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// The entries of the scratch folder whose names start with `prefix`.
    pub(crate) fn entries_like(&self, prefix: &str) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.s.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(prefix))
            .collect();
        out.sort();
        out
    }

    /// `wal status --json`.
    pub(crate) fn wal_status(&self) -> serde_json::Value {
        let r = self.agent(&["--json", "wal", "status"]);
        r.ok();
        r.json()
    }

    /// A physical restore, timed: `restore --export main <args> --yes --json`.
    pub(crate) fn restore(&self, args: &[&str]) -> (Run, Duration) {
        let mut all = vec!["--json", "restore", "--export", "main", "--yes"];
        all.extend_from_slice(args);
        let started = Instant::now();
        let r = self.agent(&all);
        (r, started.elapsed())
    }
}

pub(crate) fn socket_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("drp-pg")
        .tempdir_in("/tmp")
        .expect("socket folder");
    chown_postgres(d.path());
    assert!(d.path().as_os_str().len() < 80);
    d
}

pub(crate) enum Sock {
    /// The site's, which outlives the cluster.
    Borrowed(PathBuf),
    Own(tempfile::TempDir),
}

impl Sock {
    fn path(&self) -> &Path {
        match self {
            Sock::Borrowed(p) => p,
            Sock::Own(d) => d.path(),
        }
    }
}

/// A real PostgreSQL 15 cluster of the test's own, run by `postgres` on a
/// Unix socket only. Dropped, it is stopped (immediately: a test that
/// panicked leaves no server behind).
pub(crate) struct PgCluster {
    data: PathBuf,
    sock: Sock,
    log: PathBuf,
}

impl PgCluster {
    /// `initdb` in `data`, with `settings` appended to its postgresql.conf.
    pub(crate) fn init(data: &Path, sock: Sock, settings: &str) -> PgCluster {
        let parent = data.parent().unwrap();
        let out = as_postgres(&pg_tool("initdb"), parent)
            .arg("-D")
            .arg(data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = PgCluster::adopt(data, sock);
        pg.configure(settings);
        pg
    }

    /// A data directory already there (a restored one), served on `sock`.
    pub(crate) fn adopt(data: &Path, sock: Sock) -> PgCluster {
        let log = data.with_file_name(format!(
            "{}.log",
            data.file_name().unwrap().to_string_lossy()
        ));
        let pg = PgCluster {
            data: data.to_path_buf(),
            sock,
            log,
        };
        pg.configure(&format!(
            "port = {PORT}\nlisten_addresses = ''\nunix_socket_directories = '{}'\n",
            pg.sock.path().display()
        ));
        pg
    }

    /// Appends to postgresql.conf (later lines win).
    pub(crate) fn configure(&self, settings: &str) {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .expect("postgresql.conf");
        writeln!(f, "\n# drp test suite\n{settings}").unwrap();
    }

    pub(crate) fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        as_postgres(&pg_tool("pg_ctl"), self.data.parent().unwrap())
            .arg("-D")
            .arg(&self.data)
            .args(args)
            .output()
            .expect("pg_ctl runs")
    }

    pub(crate) fn start(&self) {
        let log = self.log.display().to_string();
        let out = self.pg_ctl(&["-l", &log, "-w", "-t", "60", "start"]);
        assert!(
            out.status.success(),
            "the server on {} did not start: {}\n{}",
            self.data.display(),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
    }

    pub(crate) fn stop(&self) {
        let out = self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"]);
        assert!(
            out.status.success(),
            "the server did not stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub(crate) fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// The host is lost: SIGKILL to the postmaster and every process of its
    /// group at once (pg_ctl starts it as a session leader), archiver and
    /// the archive_command it is running included.
    pub(crate) fn kill_9(&self) {
        let pid = self.postmaster_pid().expect("a running server");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let pgid: u32 = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(2)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(pgid, pid, "the postmaster leads its process group");
        let st = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .status()
            .unwrap();
        assert!(st.success());
        wait_for(
            "the killed server's processes to go",
            Duration::from_secs(10),
            || group_members(pgid).is_empty(),
        );
    }

    pub(crate) fn try_psql(&self, sql: &str) -> Result<String, String> {
        let out = as_postgres(&pg_tool("psql"), Path::new("/"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.sock.path())
            .args(["-p", PORT, "-U", "postgres", "-d", "postgres", "-c", sql])
            .output()
            .expect("psql runs");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    #[track_caller]
    pub(crate) fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|e| panic!("psql failed on {sql}: {e}"))
    }

    /// Inserts one row into `events`; returns its time (the commit follows it).
    pub(crate) fn event(&self, note: &str) -> f64 {
        self.psql(&format!(
            "insert into events (note) values ('{note}') returning extract(epoch from at)"
        ))
        .parse()
        .unwrap()
    }

    pub(crate) fn notes(&self) -> Vec<String> {
        self.psql("select note from events order by id")
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Ends the current segment; returns its name.
    pub(crate) fn switch_wal_nowait(&self) -> String {
        self.psql("select pg_walfile_name(pg_switch_wal())")
    }

    /// Ends the current segment and waits until PostgreSQL saw it archived.
    #[track_caller]
    pub(crate) fn switch_wal(&self) -> String {
        let name = self.switch_wal_nowait();
        let done = self.status_file(&name, "done");
        let started = Instant::now();
        while !done.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{name} was not archived within 30s: {}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        name
    }

    pub(crate) fn status_file(&self, name: &str, suffix: &str) -> PathBuf {
        self.data
            .join("pg_wal/archive_status")
            .join(format!("{name}.{suffix}"))
    }

    pub(crate) fn failed_count(&self) -> u64 {
        self.psql("select failed_count from pg_stat_archiver")
            .parse()
            .unwrap()
    }

    pub(crate) fn system_identifier(&self) -> String {
        let out = as_postgres(&pg_tool("pg_controldata"), Path::new("/"))
            .arg("-D")
            .arg(&self.data)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("Database system identifier:"))
            .expect("pg_controldata names the system identifier")
            .trim()
            .to_string()
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// The live (not zombie) processes of a process group.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        if fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid.to_string().as_str()) {
            out.push(pid);
        }
    }
    out
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.postmaster_pid().is_some() {
            let _ = self.pg_ctl(&["-m", "immediate", "-w", "-t", "30", "stop"]);
        }
    }
}

/// A table of events, each with the instant it was written.
pub(crate) const EVENTS: &str = "create table events (id serial primary key, at timestamptz not null default clock_timestamp(), note text not null)";

#[test]
fn wal_push_and_get_keep_postgresql_s_archive_contract() {
    let site = Site::new("walcontract");
    let pg = site.primary("");
    pg.start();
    pg.psql("create table t (n int); insert into t select generate_series(1, 10000)");
    let first = pg.switch_wal();
    pg.psql("insert into t select generate_series(1, 10000)");
    let second = pg.switch_wal();
    // Copies of both, before a checkpoint recycles them.
    let kept = site.dir("kept");
    for name in [&first, &second] {
        std::fs::copy(pg.data.join("pg_wal").join(name), kept.join(name)).unwrap();
    }
    chown_postgres(&kept);
    let original = std::fs::read(kept.join(&first)).unwrap();
    let stored = site.objects(&first);
    assert_eq!(stored.len(), 1, "one object for {first}: {stored:?}");
    let stored_bytes = std::fs::read(&stored[0]).unwrap();
    // Pushed from the cluster's own pg_wal (the only place a push accepts),
    // the server stopped so that nothing recycles the file meanwhile.
    pg.stop();
    let in_pg_wal = pg.data.join("pg_wal").join(&first);
    let put = |bytes: &[u8]| {
        std::fs::write(&in_pg_wal, bytes).unwrap();
        chown_postgres(&in_pg_wal);
    };
    let push = || site.agent(&["wal", "push", &in_pg_wal.display().to_string()]);

    // The same file again is success: at once (the agent's marker says it
    // is archived), and checked against the target once the marker is gone.
    put(&original);
    push().ok();
    std::fs::remove_file(site.state.join("db1/wal-spool/main").join(&first)).unwrap();
    push().ok();
    assert_eq!(site.objects(&first), stored, "a second object was written");

    // Different content under an archived name is refused, nothing overwritten.
    let mut forged = original.clone();
    forged[1_000_000] ^= 0xff;
    put(&forged);
    let r = push();
    assert_eq!(
        r.code,
        4,
        "same name, different content must fail: {}",
        r.all()
    );
    assert!(
        r.all().contains("already archives a different"),
        "{}",
        r.all()
    );
    assert_eq!(site.objects(&first), stored);
    assert_eq!(
        std::fs::read(&stored[0]).unwrap(),
        stored_bytes,
        "the archived object changed"
    );

    // restore_command: an archived file comes back byte for byte.
    let out = site.dir("restored");
    let get = |name: &str| site.agent(&["wal", "get", name, &out.join(name).display().to_string()]);
    get(&first).ok();
    assert!(
        std::fs::read(out.join(&first)).unwrap() == original,
        "{first} did not come back as archived"
    );
    // A valid name never archived is authoritatively absent: exit 1.
    let missing = "0000000100000000000000FF";
    get(missing).code(1);
    assert!(!out.join(missing).exists());
    // A damaged copy is not "absent": 126 stops the recovery, nothing written.
    let damaged = site.objects(&second);
    assert_eq!(damaged.len(), 1);
    let mut bytes = std::fs::read(&damaged[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid..mid + 16].copy_from_slice(b"not a zstd frame");
    std::fs::write(&damaged[0], &bytes).unwrap();
    let r = get(&second);
    r.code(126);
    assert!(
        !out.join(&second).exists(),
        "a damaged WAL file was handed to PostgreSQL"
    );
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![first.clone()], "stray files in pg_wal");
}

#[test]
fn a_target_that_goes_away_keeps_the_wal_in_pg_wal_and_archiving_catches_up_when_it_returns() {
    let site = Site::new("walaway");
    let pg = site.primary("");
    pg.start();
    pg.psql("create table t (n int)");
    pg.switch_wal();

    // The NAS share is gone (unmounted): no repository marker there.
    let away = site.s.path("nas.away");
    std::fs::rename(&site.nas, &away).unwrap();
    let mut waiting = Vec::new();
    for i in 0..3 {
        let failed = pg.failed_count();
        pg.psql(&format!(
            "insert into t select generate_series(1, {i} + 1000)"
        ));
        waiting.push(pg.switch_wal_nowait());
        // PostgreSQL calls the archive_command, which refuses: it retries.
        wait_for(
            "the archive_command to fail on the missing target",
            Duration::from_secs(30),
            || pg.failed_count() > failed,
        );
    }
    assert!(
        pg.log_text().contains("cannot be reached"),
        "the server log does not say why: {}",
        pg.log_tail()
    );
    let r = site.agent(&[
        "wal",
        "push",
        &pg.data
            .join("pg_wal")
            .join(&waiting[0])
            .display()
            .to_string(),
    ]);
    r.code(1);
    assert!(r.stderr.contains("cannot be reached"), "{}", r.stderr);
    // A checkpoint does not recycle what is not archived.
    pg.psql("checkpoint");
    for name in &waiting {
        assert!(
            pg.status_file(name, "ready").exists(),
            "{name} is not waiting"
        );
        assert!(pg.data.join("pg_wal").join(name).exists());
    }

    // The share is back. PostgreSQL waits up to a minute after three failed
    // tries; a configuration reload (like the next segment) wakes its
    // archiver at once.
    std::fs::rename(&away, &site.nas).unwrap();
    pg.psql("select pg_reload_conf()");
    wait_for(
        "the waiting files to be archived",
        Duration::from_secs(60),
        || waiting.iter().all(|n| pg.status_file(n, "done").exists()),
    );
    for name in &waiting {
        assert_eq!(site.objects(name).len(), 1, "{name} is not archived");
    }
    assert_eq!(
        pg.psql("select last_archived_wal from pg_stat_archiver"),
        waiting[2]
    );
    let status = site.wal_status();
    assert_eq!(status["backlog_files"], 0, "{status:#}");
    assert_eq!(
        status["targets"][0]["timelines"][0]["gaps"],
        serde_json::json!([])
    );
}

#[test]
fn a_second_cluster_archiving_into_the_same_export_is_refused_and_the_archive_is_untouched() {
    let site = Site::new("walsecond");
    let first = site.primary("");
    first.start();
    first.psql("create table t (n int)");
    first.switch_wal();
    let first_id = first.system_identifier();
    let before = tree_digest(&site.nas);

    // The cluster is re-created in place (another initdb, another system
    // identifier, the same data_directory and archive_command), the old one
    // moved aside.
    first.stop();
    let aside = site.s.path("db.old");
    std::fs::rename(&site.data, &aside).unwrap();
    let second = PgCluster::init(
        &site.data,
        Sock::Borrowed(site.sock.path().to_path_buf()),
        &format!(
            "archive_mode = on\narchive_command = '{}'\n",
            site.archive_command()
        ),
    );
    let second_id = second.system_identifier();
    assert_ne!(first_id, second_id);
    second.start();
    second.psql("create table u (n int)");
    let name = second.switch_wal_nowait();
    wait_for(
        "the second cluster's archive_command to fail",
        Duration::from_secs(30),
        || second.failed_count() > 0,
    );
    assert!(second.status_file(&name, "ready").exists());
    let log = second.log_text();
    assert!(
        log.contains(&second_id) && log.contains(&first_id),
        "the server log does not name both clusters: {}",
        second.log_tail()
    );
    let r = site.agent(&[
        "wal",
        "push",
        &second.data.join("pg_wal").join(&name).display().to_string(),
    ]);
    r.code(4);
    assert!(
        r.stderr.contains(&second_id) && r.stderr.contains("system identifier"),
        "{}",
        r.stderr
    );
    assert_eq!(tree_digest(&site.nas), before, "the archive changed");

    // The cluster the archive belongs to keeps archiving.
    second.stop();
    std::fs::rename(&site.data, site.s.path("db.second")).unwrap();
    std::fs::rename(&aside, &site.data).unwrap();
    first.start();
    first.psql("insert into t values (1)");
    let next = first.switch_wal();
    assert_eq!(site.objects(&next).len(), 1);
}

#[test]
fn a_point_in_time_restore_brings_back_the_rows_up_to_the_instant_and_none_after() {
    let site = Site::new("walpitr");
    let pg = site.primary("");
    pg.start();
    pg.psql(EVENTS);
    site.agent(&["backup"]).ok();
    pg.event("before 1");
    let last_before = pg.event("before 2");
    std::thread::sleep(Duration::from_millis(1200));
    let target = Utc::now();
    std::thread::sleep(Duration::from_millis(1200));
    pg.event("after 1");
    pg.event("after 2");
    pg.switch_wal();

    let copy = site.s.path("copy");
    let (r, took) = site.restore(&[
        "--to-time",
        &rfc3339(target),
        "--to",
        &copy.display().to_string(),
    ]);
    r.ok();
    let report = r.json();
    let reached = json_time(&report["reached"]);
    assert!(
        epoch(reached) >= last_before && reached <= target,
        "reached {reached}, asked {target}, last row before it at {last_before}"
    );
    assert_eq!(
        report["timeline"], 2,
        "a restore to an instant promotes: {report:#}"
    );
    eprintln!(
        "point-in-time restore: {:.1}s, reached {} for a target of {}",
        took.as_secs_f64(),
        rfc3339(reached),
        rfc3339(target)
    );

    // The copy runs on its own, without archiving into the export.
    let restored = PgCluster::adopt(&copy, Sock::Own(socket_dir()));
    restored.configure("archive_mode = off\n");
    restored.start();
    assert_eq!(restored.notes(), ["before 1", "before 2"]);
    assert_eq!(pg.notes().len(), 4, "the live cluster changed");
    assert!(
        site.entries_like(".drp-restore-").is_empty(),
        "staging left behind"
    );
}

#[test]
fn an_archiving_cluster_exports_every_wal_metric_the_monitoring_kit_uses() {
    let site = Site::with("walmetrics", "metrics: {textfile: drp.prom}\n");
    let pg = site.primary("");
    pg.start();
    pg.psql(EVENTS);
    site.agent(&["backup"]).ok();
    pg.event("archived");
    pg.switch_wal();
    // A scheduled run's archiving turn records the archive's state, and
    // writes it into the metrics.
    site.agent(&["run", "--due"]).ok();
    let text = std::fs::read_to_string(site.s.path("drp.prom")).unwrap();
    let exported = crate::monitoring::metric_names(&text);
    let used: Vec<String> = crate::monitoring::kit_metrics()
        .into_iter()
        .filter(|n| crate::monitoring::is_archive_metric(n))
        .collect();
    assert!(used.len() >= 5, "{used:?}");
    let missing: Vec<_> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the kit uses {missing:?}, not exported by an archiving cluster:\n{text}"
    );
}

#[test]
fn a_point_in_time_restore_to_an_instant_after_the_last_archived_commit_restores_everything() {
    let site = Site::new("walquiet");
    let pg = site.primary("");
    pg.start();
    pg.psql(EVENTS);
    site.agent(&["backup"]).ok();
    let last = pg.event("the last write");
    std::thread::sleep(Duration::from_millis(1500));
    // Nothing is committed after this instant; the segment ends later.
    let target = Utc::now();
    std::thread::sleep(Duration::from_millis(1500));
    pg.switch_wal();

    let copy = site.s.path("copy");
    let (r, _) = site.restore(&[
        "--to-time",
        &rfc3339(target),
        "--to",
        &copy.display().to_string(),
    ]);
    r.ok();
    let reached = json_time(&r.json()["reached"]);
    assert!(
        epoch(reached) >= last && reached <= target,
        "reached {reached}"
    );
    let restored = PgCluster::adopt(&copy, Sock::Own(socket_dir()));
    restored.configure("archive_mode = off\n");
    restored.start();
    assert_eq!(restored.notes(), ["the last write"]);
}

#[test]
fn a_target_time_past_the_archive_is_refused_and_nothing_is_created() {
    let site = Site::new("walpast");
    let pg = site.primary("");
    pg.start();
    pg.psql(EVENTS);
    site.agent(&["backup"]).ok();
    pg.event("archived");
    pg.switch_wal();
    std::thread::sleep(Duration::from_millis(1500));
    // Written, but still in the current segment: not in the archive.
    pg.event("not archived yet");
    let target = Utc::now();
    let status = site.wal_status();
    let until = json_time(&status["recoverable_until"]);
    assert!(until < target, "{status:#}");

    let copy = site.s.path("copy");
    let (r, _) = site.restore(&[
        "--to-time",
        &rfc3339(target),
        "--to",
        &copy.display().to_string(),
    ]);
    r.code(6);
    assert!(
        r.all()
            .contains("is later than the newest instant the archive reaches"),
        "{}",
        r.all()
    );
    assert!(
        !copy.exists(),
        "a restore refused created {}",
        copy.display()
    );
    assert!(site.entries_like(".drp-restore-").is_empty());
    assert!(site.entries_like("copy").is_empty());
}

#[test]
fn a_restore_in_place_promotes_to_timeline_2_which_is_archived_and_restorable() {
    let site = Site::new("waltl2");
    let pg = site.primary("");
    pg.start();
    pg.psql(EVENTS);
    pg.event("a");
    site.agent(&["backup"]).ok();
    let b = pg.event("b");
    pg.switch_wal();

    // Never under a running server.
    let (r, _) = site.restore(&["--latest"]);
    assert_ne!(r.code, 0);
    assert!(r.all().contains("is running on"), "{}", r.all());
    assert_eq!(pg.notes(), ["a", "b"]);
    assert!(site.entries_like("db.drp-replaced-").is_empty());

    pg.stop();
    let (r, took) = site.restore(&["--latest"]);
    r.ok();
    let report = r.json();
    assert_eq!(report["timeline"], 2, "{report:#}");
    assert!(epoch(json_time(&report["reached"])) >= b, "{report:#}");
    let kept = site.entries_like("db.drp-replaced-");
    assert_eq!(
        kept.len(),
        1,
        "the replaced data directory is kept beside it"
    );
    assert!(site.s.path(&kept[0]).join("PG_VERSION").is_file());
    eprintln!(
        "in-place restore to the newest instant: {:.1}s",
        took.as_secs_f64()
    );

    // The restored cluster runs as before, archiving with drp, on timeline 2.
    pg.start();
    assert_eq!(pg.notes(), ["a", "b"]);
    wait_for(
        "00000002.history to be archived",
        Duration::from_secs(30),
        || !site.objects("00000002.history").is_empty(),
    );
    let c = pg.event("c");
    std::thread::sleep(Duration::from_millis(1200));
    let target = Utc::now();
    std::thread::sleep(Duration::from_millis(1200));
    pg.event("d");
    let segment = pg.switch_wal();
    assert!(segment.starts_with("00000002"), "{segment}");
    let status = site.wal_status();
    let timelines = status["targets"][0]["timelines"].as_array().unwrap();
    assert!(timelines.iter().any(|t| t["timeline"] == 2), "{status:#}");
    assert!(
        json_time(&status["recoverable_until"]) >= target,
        "{status:#}"
    );

    // From the same base backup, through the branch, to the rows written on timeline 2.
    let copy = site.s.path("copy");
    let (r, _) = site.restore(&[
        "--to-time",
        &rfc3339(target),
        "--to",
        &copy.display().to_string(),
    ]);
    r.ok();
    let report = r.json();
    let reached = json_time(&report["reached"]);
    assert!(epoch(reached) >= c && reached <= target, "{report:#}");
    assert_eq!(report["timeline"], 3, "{report:#}");
    let restored = PgCluster::adopt(&copy, Sock::Own(socket_dir()));
    restored.configure("archive_mode = off\n");
    restored.start();
    assert_eq!(restored.notes(), ["a", "b", "c"]);
}

#[test]
fn a_cluster_restored_in_place_to_an_instant_keeps_archiving_on_its_new_timeline() {
    let site = Site::new("walundo");
    let pg = site.primary("");
    pg.start();
    pg.psql(EVENTS);
    site.agent(&["backup"]).ok();
    pg.event("kept");
    std::thread::sleep(Duration::from_millis(1200));
    let target = Utc::now();
    std::thread::sleep(Duration::from_millis(1200));
    pg.event("the mistake");
    pg.switch_wal();
    pg.stop();

    // Back to before the mistake, in place: the new timeline begins in the
    // middle of a segment.
    let (r, took) = site.restore(&["--to-time", &rfc3339(target)]);
    r.ok();
    eprintln!("in-place point-in-time restore: {:.1}s", took.as_secs_f64());
    assert_eq!(r.json()["timeline"], 2, "{}", r.stdout);
    pg.start();
    assert_eq!(pg.notes(), ["kept"]);
    pg.event("after the restore");
    // The first segment of timeline 2 (the parent's, copied up to the
    // switch) and the next are archived.
    let segment = pg.switch_wal();
    assert!(segment.starts_with("00000002"), "{segment}");
    pg.event("later still");
    pg.switch_wal();
    let status = site.wal_status();
    let tl2 = status["targets"][0]["timelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["timeline"] == 2)
        .cloned()
        .unwrap_or_else(|| panic!("no timeline 2: {status:#}"));
    assert_eq!(tl2["gaps"], serde_json::json!([]), "{status:#}");

    // And the newest instant is restorable, through the branch.
    let copy = site.s.path("copy");
    let (r, _) = site.restore(&["--latest", "--to", &copy.display().to_string()]);
    r.ok();
    let restored = PgCluster::adopt(&copy, Sock::Own(socket_dir()));
    restored.configure("archive_mode = off\n");
    restored.start();
    assert_eq!(
        restored.notes(),
        ["kept", "after the restore", "later still"]
    );
}

#[test]
fn a_host_lost_mid_write_is_restored_to_within_seconds_of_the_crash() {
    let site = Site::new("walrpo");
    let pg = site.primary("archive_timeout = '5s'\n");
    pg.start();
    pg.psql("create table heartbeat (n int primary key, at timestamptz not null default clock_timestamp())");
    site.agent(&["backup"]).ok();

    // One write a second, acknowledged to the client, until the host is lost.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<(i64, f64)>::new()));
    let writer = {
        let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
        let sock = pg.sock.path().to_path_buf();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let out = as_postgres(&pg_tool("psql"), Path::new("/"))
                    .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
                    .arg(&sock)
                    .args(["-p", PORT, "-U", "postgres", "-d", "postgres", "-c"])
                    .arg(format!(
                        "insert into heartbeat (n) values ({n}) returning extract(epoch from at)"
                    ))
                    .output()
                    .unwrap();
                if let Ok(at) = String::from_utf8_lossy(&out.stdout).trim().parse::<f64>() {
                    acknowledged.lock().unwrap().push((n, at));
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    // At a moment unrelated to the archive_timeout's rhythm.
    let lost_after = Duration::from_millis(18_000 + (rand_u32() % 5_000) as u64);
    std::thread::sleep(lost_after);
    let crash = Utc::now();
    pg.kill_9();
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    std::fs::remove_dir_all(&pg.data).unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 15,
        "{} heartbeats",
        acknowledged.len()
    );

    let (r, took) = site.restore(&["--latest"]);
    r.ok();
    let report = r.json();
    pg.start();
    let rows: Vec<(i64, f64)> = pg
        .psql("select n || '|' || extract(epoch from at) from heartbeat order by n")
        .lines()
        .map(|l| {
            let (n, at) = l.split_once('|').unwrap();
            (n.parse().unwrap(), at.parse().unwrap())
        })
        .collect();
    let newest = rows.last().map_or(f64::NAN, |r| r.1);
    let rpo = epoch(crash) - newest;
    eprintln!(
        "RPO drill: host lost {:.1}s into the writes; {} of {} acknowledged heartbeats restored; the newest restored \
         is {:.1}s older than the crash (archive_timeout 5s); restore took {:.1}s; drp reports it reached {}",
        lost_after.as_secs_f64(),
        rows.len(),
        acknowledged.len(),
        rpo,
        took.as_secs_f64(),
        report["reached"]
    );
    // What comes back is exactly what was acknowledged, up to a point.
    assert_eq!(
        rows[..],
        acknowledged[..rows.len()],
        "the restored heartbeats are not a prefix of the acknowledged ones"
    );
    // drp's report agrees with the data: the last transaction it replayed
    // is the newest heartbeat's (or a later one of PostgreSQL's own).
    let reached = json_time(&report["reached"]);
    assert!(
        epoch(reached) >= newest && reached <= crash,
        "reached {reached}, newest heartbeat {newest}, crash {crash}"
    );
    assert!(
        rpo <= 20.0,
        "RPO {rpo:.1}s is more than archive_timeout (5s) plus a margin"
    );
}

#[test]
fn a_restored_copy_started_as_it_is_never_archives_into_the_original_s_export() {
    let site = Site::new("walcopy");
    let pg = site.primary("archive_timeout = 60s\n");
    pg.start();
    pg.psql(EVENTS);
    site.agent(&["backup"]).ok();
    pg.event("on the original");
    pg.switch_wal();
    let copy = site.s.path("copy");
    let (r, _) = site.restore(&["--latest", "--to", &copy.display().to_string()]);
    r.ok();
    // Started with only its socket changed: its configuration still holds
    // the original's archive_command.
    let restored = PgCluster::adopt(&copy, Sock::Own(socket_dir()));
    restored.start();
    assert_eq!(
        restored.psql("show archive_mode"),
        "off",
        "a copy's archiving is off until it has a policy of its own"
    );
    restored.psql("insert into events (note) values ('on the copy')");
    restored.switch_wal_nowait();
    std::thread::sleep(Duration::from_secs(2));
    let timelines: Vec<u64> = site.wal_status()["targets"][0]["timelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["timeline"].as_u64().unwrap())
        .collect();
    assert_eq!(
        timelines,
        vec![1],
        "the copy's timeline reached the original's archive"
    );

    // And if someone turns it back on, the push itself refuses the copy's files.
    let segment = std::fs::read_dir(copy.join("pg_wal"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.len() == 24)
        .unwrap();
    let pushed = site.agent(&[
        "wal",
        "push",
        &copy.join("pg_wal").join(&segment).display().to_string(),
    ]);
    pushed.code(4);
    assert!(
        pushed.stderr.contains("a restored copy or another cluster"),
        "{}",
        pushed.stderr
    );
    assert_eq!(pg.notes(), ["on the original"]);
}

/// `drp <args>` as postgres, in the site's folder.
pub(crate) fn drp_as_postgres(site: &Site, args: &[&str]) -> Run {
    let drp = PathBuf::from(env!("CARGO_BIN_EXE_drp"));
    Run::from(
        as_postgres(&drp, site.s.dir.path())
            .args(args)
            .output()
            .expect("drp runs"),
    )
}

#[test]
fn the_example_policy_meets_a_30_minute_rpo_with_archive_timeout_60s_and_says_what_to_set_without()
{
    let site = Site::new("walcheck");
    let pg = site.primary("archive_timeout = 60s\n");
    pg.start();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policies/db-cluster.yaml")
        .canonicalize()
        .unwrap();
    let check = |site: &Site| {
        let drp = PathBuf::from(env!("CARGO_BIN_EXE_drp"));
        Run::from(
            as_postgres(&drp, site.s.dir.path())
                .args(["--json", "check"])
                .arg(&example)
                .env("DRP_CLUSTER_SOCKET", site.sock.path())
                .env("DRP_CLUSTER_PORT", PORT)
                .env("DRP_CLUSTER_DATA", &site.data)
                .env("DRP_CLUSTER_STATE", &site.state)
                .env("DRP_NAS", &site.nas)
                .output()
                .expect("drp runs"),
        )
    };
    let ok = check(&site);
    ok.ok();
    let export = &ok.json()["policies"][0]["exports"][0];
    assert_eq!(export["meets_rpo"], true, "{}", ok.stdout);
    let worst = export["worst_case_rpo_seconds"].as_u64().unwrap();
    assert!(
        (60..=70).contains(&worst),
        "archive_timeout plus a push: {worst}s"
    );

    // Without archive_timeout a quiet server keeps its last writes unarchived.
    pg.psql("alter system set archive_timeout = 0");
    pg.psql("select pg_reload_conf()");
    let missed = check(&site);
    missed.code(8);
    assert!(
        missed.stdout.contains("set archive_timeout = 60s"),
        "{}",
        missed.stdout
    );
}

#[test]
fn a_drill_of_a_lost_cluster_restores_it_in_place_and_measures_the_rpo_from_the_archive() {
    let site = Site::new("waldrill");
    let pg = site.primary("archive_timeout = 2s\n");
    pg.start();
    pg.psql("create table orders (id int primary key); insert into orders select generate_series(1, 500)");
    let pg_ctl = pg_tool("pg_ctl").display().to_string();
    let data = site.data.display().to_string();
    let log = site.s.path("restarted.log").display().to_string();
    let runbook = site.s.write(
        "cluster-lost.yaml",
        &format!(
            "name: cluster-lost\npolicy: policy.yaml\nobjectives: {{rto: 5m, rpo: 30m}}\nheartbeat: {{export: main, interval: 1s}}\n\
             drill:\n  backup_first: true\n  settle: 10s\n  inject:\n    - name: the server crashes\n      \
             action: {{kind: command, destructive: true, run: [{pg_ctl}, -D, {data}, -m, immediate, -w, stop]}}\n\
             steps:\n  - name: the server is down\n    phase: detect\n    \
             action: {{kind: sql, export: main, query: \"select 1\", until: fails, interval: 1s}}\n    timeout: 30s\n  \
             - name: restore the cluster to just before the crash\n    phase: restore\n    \
             action: {{kind: restore_backup, export: main, point: before_failure}}\n    timeout: 2m\n  \
             - name: start it\n    phase: restart\n    \
             action: {{kind: command, run: [{pg_ctl}, -D, {data}, -l, {log}, -w, start]}}\n    timeout: 1m\n  \
             - name: the orders are back\n    phase: verify\n    \
             action: {{kind: sql, export: main, query: \"select count(*) from orders\", expect: {{value: \"500\"}}}}\n    timeout: 30s\n"
        ),
    );
    chown_postgres(&runbook);
    let r = drp_as_postgres(
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
    let rpo = report["rpo"]["heartbeat_seconds"].as_f64().unwrap();
    eprintln!("PostgreSQL drill: heartbeat RPO {rpo:.1}s after a 10 s settle (archive_timeout 2s)");
    assert!(
        rpo < 6.0,
        "heartbeat RPO {rpo:.1}s: the archived WAL was not replayed {report:#}"
    );
    assert!(
        !site.entries_like("db.drp-replaced-").is_empty(),
        "the crashed data directory is kept"
    );
}

#[test]
fn a_push_killed_mid_upload_never_leaves_a_partial_object_in_the_archive() {
    let site = Site::new("walkill");
    let pg = site.primary("");
    pg.start();
    pg.psql("create table t (n int); insert into t select generate_series(1, 200000)");
    let name = pg.switch_wal();
    let segment = pg.data.join("pg_wal").join(&name);
    let mut bytes = std::fs::read(&segment).unwrap();
    // Stopped, so that nothing recycles it; its shutdown checkpoint may
    // have, so it is put back. Past its first page, incompressible: a
    // local push of well-compressing WAL takes milliseconds, too short to
    // be cut.
    pg.stop();
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ crate::harness::rand_u32() as u64;
    for b in &mut bytes[8192..] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = (x >> 32) as u8;
    }
    std::fs::write(&segment, &bytes).unwrap();
    chown_postgres(&segment);
    let out = site.dir("fetched");
    let pattern = format!("wal push --policy {}", site.policy.display());
    let forget = || {
        for o in site.objects(&name) {
            std::fs::remove_file(o).unwrap();
        }
        let _ = std::fs::remove_file(site.state.join("db1/wal-spool/main").join(&name));
    };
    let push = || {
        let mut c = as_postgres(&agent_bin(), site.s.dir.path());
        c.args(["wal", "push", "--policy"])
            .arg(&site.policy)
            .arg(&segment);
        c.spawn().unwrap()
    };
    // How long a whole push takes here; the kills sweep its first half,
    // where the upload is (then it records the archive's reach).
    forget();
    let started = std::time::Instant::now();
    assert!(push().wait().unwrap().success());
    let span = started.elapsed().as_millis() as u64;
    let rounds = 24;
    let mut cut_short = 0;
    for round in 0..rounds {
        // Nothing archived yet for this name: each round starts clean.
        forget();
        // Kills swept over the first half, with a random jitter.
        let jitter = crate::harness::rand_u32() as u64 % 5;
        let delay = Duration::from_millis(span / 2 * round / rounds + jitter);
        let mut child = push();
        // From the agent's own start (runuser takes a while to exec it),
        // read from /proc: a pgrep per poll is slower than the push.
        let runuser = child.id();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let agent = loop {
            let children =
                std::fs::read_to_string(format!("/proc/{runuser}/task/{runuser}/children"))
                    .unwrap_or_default();
            let exec = children.split_whitespace().next().filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == agent_bin())
            });
            if let Some(pid) = exec {
                break Some(pid.to_string());
            }
            if child.try_wait().unwrap().is_some() {
                break None;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the push never started"
            );
        };
        std::thread::sleep(delay);
        if let Some(pid) = &agent {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
        // runuser and the agent both match; kill until neither is left, so
        // no agent forked just before the kill goes on alone.
        wait_for(
            "the killed push to be gone",
            Duration::from_secs(10),
            || {
                let _ = Command::new("pkill")
                    .args(["-KILL", "-f", &pattern])
                    .status();
                !Command::new("pgrep")
                    .args(["-f", &pattern])
                    .output()
                    .unwrap()
                    .status
                    .success()
            },
        );
        let _ = child.wait();
        // Whatever is listed is whole: `wal get` finds it intact (0) or
        // finds nothing (1), never a damaged copy (126).
        let got = site.agent(&["wal", "get", &name, &out.join(&name).display().to_string()]);
        assert!(
            got.code == 0 || got.code == 1,
            "round {round} (killed after {delay:?} of {span} ms): wal get exited {}: {}",
            got.code,
            got.all()
        );
        assert!(site.objects(&name).len() <= 1, "round {round}: two objects");
        if got.code == 1 {
            cut_short += 1;
        }
    }
    assert!(
        cut_short > 0,
        "no push was killed before it finished: the test proved nothing"
    );
    site.agent(&["wal", "push", &segment.display().to_string()])
        .ok();
    site.agent(&["wal", "get", &name, &out.join(&name).display().to_string()])
        .ok();
    assert_eq!(std::fs::read(out.join(&name)).unwrap(), bytes);
}

/// The stopped cluster's data directory, for comparing it byte for byte.
fn data_digest(site: &Site) -> Vec<String> {
    tree_digest(&site.data)
}

/// A cluster with a base backup, more writes after it spread over several
/// archived segments, and the server stopped: what a physical restore in
/// place replaces.
fn stopped_cluster_with_history(site: &Site) -> PgCluster {
    let pg = site.primary("");
    pg.start();
    pg.psql(EVENTS);
    pg.event("before the backup");
    site.agent(&["backup"]).ok();
    for i in 0..4 {
        pg.psql(&format!(
            "insert into events (note) select 'after the backup {i}' from generate_series(1, 2000)"
        ));
        pg.switch_wal();
    }
    pg.stop();
    pg
}

#[test]
fn a_physical_restore_shows_its_plan_and_replaces_nothing_unless_told_yes() {
    let site = Site::new("walplan");
    let _pg = stopped_cluster_with_history(&site);
    let before = data_digest(&site);
    // No terminal and no --yes: the plan, then nothing.
    let r = site.agent(&["restore", "--export", "main", "--latest"]);
    r.code(5);
    for shown in [
        "recovery point",
        "postgres-cluster",
        &format!(
            "replaces         PostgreSQL 15 data directory {}",
            site.data.display()
        ),
        &format!("{}.drp-replaced-<time>-<id>", site.data.display()),
        "replays logs to  the newest archived instant",
        "data-loss window",
    ] {
        assert!(
            r.stderr.contains(shown),
            "the plan does not show `{shown}`:\n{}",
            r.stderr
        );
    }
    assert!(r.stderr.contains("not confirmed"), "{}", r.stderr);
    assert_eq!(
        data_digest(&site),
        before,
        "the data directory changed without a yes"
    );
    assert!(site.entries_like(".drp-restore-").is_empty());
    assert!(site.entries_like("db.drp-replaced-").is_empty());
}

#[test]
fn a_physical_restore_whose_replay_fails_halfway_leaves_the_data_directory_exactly_as_it_was() {
    let site = Site::new("walhalf");
    let _pg = stopped_cluster_with_history(&site);
    let before = data_digest(&site);
    // A segment in the middle of the archive, after the backup's own: the
    // base backup unpacks and verifies, the replay starts, and then fails.
    let mut segments: Vec<PathBuf> = tree_digest(&site.wal_root())
        .iter()
        .filter_map(|l| l.split_whitespace().next().map(|p| site.wal_root().join(p)))
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.len() > 24 && n.as_bytes()[24] == b'-' && n.ends_with(".zst")
        })
        .collect();
    segments.sort();
    assert!(segments.len() >= 4, "{segments:?}");
    let victim = &segments[segments.len() - 2];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid..mid + 16].copy_from_slice(b"not a zstd frame");
    std::fs::write(victim, &bytes).unwrap();

    let (r, _) = site.restore(&["--latest"]);
    r.code(1);
    assert!(
        r.stderr.contains("the data directory was not touched"),
        "{}",
        r.stderr
    );
    assert_eq!(
        data_digest(&site),
        before,
        "the live data directory changed"
    );
    assert!(
        site.entries_like(".drp-restore-").is_empty(),
        "staging left behind"
    );
    assert!(
        site.entries_like("db.drp-replaced-").is_empty(),
        "something was moved aside"
    );
}

#[test]
fn a_corrupt_base_backup_is_refused_with_exit_4_and_replaces_nothing() {
    let site = Site::new("walcorrupt");
    let _pg = stopped_cluster_with_history(&site);
    let before = data_digest(&site);
    let data_dir = site.nas.join("db1/main/data");
    let object = std::fs::read_dir(&data_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "zst"))
        .unwrap();
    let mut bytes = std::fs::read(&object).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0xff;
    std::fs::write(&object, &bytes).unwrap();

    let (r, _) = site.restore(&["--latest"]);
    r.code(4);
    assert!(r.stderr.contains("integrity check failed"), "{}", r.stderr);
    assert_eq!(
        data_digest(&site),
        before,
        "the live data directory changed"
    );
    assert!(
        site.entries_like(".drp-restore-").is_empty(),
        "staging left behind"
    );
    assert!(
        site.entries_like("db.drp-replaced-").is_empty(),
        "something was moved aside"
    );
}

#[test]
fn an_encrypted_archive_holds_no_plaintext_and_replays_only_with_an_identity() {
    // The identity is made first, outside the site: the host never holds it.
    let keys = scratch("walkeys");
    let identity = keys.path("ops.age");
    let made = keys.agent(&[
        "--json",
        "keys",
        "generate",
        "--out",
        identity.to_str().unwrap(),
    ]);
    made.ok();
    let public = made.json()["public"].as_str().unwrap().to_string();
    chown_postgres(keys.dir.path());
    chown_postgres(&identity);
    let site = Site::with(
        "walsealed",
        &format!("keys: {{recipients: {{ops: {public}}}}}\n"),
    );
    let pg = site.primary("");
    pg.start();
    pg.psql(EVENTS);
    site.agent(&["backup"]).ok();
    const SECRET: &str = "payroll-IBAN-FR7630006000011234567890189";
    pg.event(SECRET);
    let segment = pg.switch_wal();

    // What lies in the archive is age, holding no trace of the row.
    let objects = site.objects(&segment);
    assert_eq!(objects.len(), 1, "{objects:?}");
    let stored = std::fs::read(&objects[0]).unwrap();
    assert!(stored.starts_with(b"age-encryption.org/v1\n"));
    assert!(!stored.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
    // The host that archives cannot fetch it back (126: recovery stops,
    // never promotes early); with the identity it can.
    let dest = site.dir("fetched").join(&segment);
    let d = dest.to_str().unwrap();
    site.agent(&["wal", "get", &segment, d]).code(126);
    assert!(!dest.exists());
    let id = identity.to_str().unwrap();
    site.agent(&["wal", "get", "--identity", id, &segment, d])
        .ok();
    let fetched = std::fs::read(&dest).unwrap();
    assert!(
        fetched
            .windows(SECRET.len())
            .any(|w| w == SECRET.as_bytes())
    );
    // Pushing it again is still success, without the identity.
    site.agent(&["wal", "push", dest.to_str().unwrap()]).ok();

    // A restore needs the identity, and replays the encrypted archive with it.
    let copy = site.s.path("copy");
    let (refused, _) = site.restore(&["--latest", "--to", &copy.display().to_string()]);
    refused.code(2);
    assert!(!copy.exists(), "a refused restore created its destination");
    let (r, _) = site.restore(&[
        "--latest",
        "--identity",
        id,
        "--to",
        &copy.display().to_string(),
    ]);
    r.ok();
    let restored = PgCluster::adopt(&copy, Sock::Own(socket_dir()));
    restored.configure("archive_mode = off\n");
    restored.start();
    assert_eq!(restored.notes(), [SECRET]);
}

#[test]
fn a_base_backup_is_restore_tested_to_a_random_instant_in_a_private_server() {
    let site = Site::new("walrestoretest");
    let text = std::fs::read_to_string(&site.policy).unwrap()
        + "    restore_test:\n      checks:\n        - {sql: \"select count(*) >= 1 from events where note = 'before'\", expect: \"t\"}\n";
    std::fs::write(&site.policy, text).unwrap();
    let pg = site.primary("");
    pg.start();
    pg.psql(EVENTS);
    pg.event("before");
    site.agent(&["backup"]).ok();
    std::thread::sleep(Duration::from_millis(1200));
    pg.event("after 1");
    std::thread::sleep(Duration::from_millis(1200));
    pg.event("after 2");
    pg.switch_wal();
    let live = pg.notes();

    let tmp = site.dir("tmp");
    let mut cmd = as_postgres(&agent_bin(), site.s.dir.path());
    cmd.env("TMPDIR", &tmp)
        .args(["--json", "test-restore", "--policy"])
        .arg(&site.policy);
    let run = Run::from(cmd.output().unwrap());
    run.ok();
    let t = &run.json()["tests"][0];
    assert_eq!(t["passed"], true, "{t:#}");
    let checks = t["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{checks:#?}");
    // The newest base backup, replayed to an instant after its end.
    let at = json_time(&t["to_time"]);
    assert!(at <= Utc::now(), "{t:#}");
    assert!(t["load_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(pg.notes(), live, "the live cluster changed");
    assert!(
        std::fs::read_dir(&tmp).unwrap().next().is_none(),
        "the scratch folder is left"
    );
}

/// Seconds in a duration as `format_duration` writes it (`1m 5s`, `800ms`).
fn parse_shown(text: &str) -> f64 {
    text.split_whitespace()
        .map(|part| {
            let split = part.find(|c: char| c.is_alphabetic()).unwrap();
            let (n, unit) = part.split_at(split);
            let n: f64 = n
                .parse()
                .unwrap_or_else(|_| panic!("not a duration: {text}"));
            n * match unit {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                "d" => 86_400.0,
                _ => panic!("not a duration: {text}"),
            }
        })
        .sum()
}

#[test]
fn every_view_tells_one_exposure_from_the_archive_s_reach_with_archive_command_alone() {
    // An archiving cluster (RPO 30m, the host's) and a logical SQLite export
    // with its own objective (a day), both on the same NAS.
    let site = Site::with_exports(
        "views",
        "metrics: {textfile: drp.prom}\nobjectives: {rpo: 30m}\n",
        |s| {
            let app = s.path("app.db");
            let db = rusqlite::Connection::open(&app).unwrap();
            db.execute_batch("create table t (x); insert into t values ('é');")
                .unwrap();
            format!(
                "  app:\n    source: {{kind: sqlite, path: {}}}\n    targets: [nas]\n    objectives: {{rpo: 1d}}\n",
                app.display()
            )
        },
    );
    chown_postgres(site.s.dir.path());
    let pg = site.primary("archive_timeout = 1s\n");
    pg.start();
    pg.psql(EVENTS);
    site.agent(&["backup"]).ok();
    let base_done = Utc::now();

    // Writes go on after the base backup; PostgreSQL's archive_command is
    // the only thing running (no daemon, no timer).
    let mut last = 0.0;
    for i in 0..8 {
        last = pg.event(&format!("write {i}"));
        std::thread::sleep(Duration::from_millis(500));
    }
    let status = |site: &Site| {
        let r = site.agent(&["--json", "status"]);
        r.ok();
        r.json()
    };
    let export = |v: &serde_json::Value, name: &str| {
        v["exports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["export"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no export {name}: {v:#}"))
    };
    let reaches = |e: &serde_json::Value, t: f64| {
        e["recoverable_until"]
            .as_str()
            .is_some_and(|u| epoch(json_time(&serde_json::json!(u))) >= t.floor())
    };
    wait_for(
        "the archive to reach the last write",
        Duration::from_secs(30),
        || reaches(&export(&status(&site), "main"), last),
    );
    pg.stop();
    std::thread::sleep(Duration::from_millis(1500));

    // The agent's status: the archive's reach bounds the cluster's loss,
    // not its base backup; the SQLite export is bounded by its point.
    let before = Utc::now();
    let st = status(&site);
    let (main, app) = (export(&st, "main"), export(&st, "app"));
    let until = json_time(&main["recoverable_until"]);
    assert!(epoch(until) >= last.floor(), "{main:#}");
    assert!(
        until > base_done,
        "the reach is the archive's, not the base backup's: {main:#}"
    );
    assert_eq!(main["bound"], "wal_archive", "{main:#}");
    assert_eq!(main["rpo_objective_seconds"], 1800.0, "{main:#}");
    assert_eq!(main["within_rpo"], true, "{main:#}");
    assert_eq!(app["bound"], "point", "{app:#}");
    assert_eq!(
        app["recoverable_until"], app["newest_point"]["consistency_time"],
        "{app:#}"
    );
    assert_eq!(app["rpo_objective_seconds"], 86_400.0, "{app:#}");
    // Each view's exposure is its own now minus that one instant.
    let agrees =
        |view: &str, e: &serde_json::Value, now_from: DateTime<Utc>, now_to: DateTime<Utc>| {
            let name = e["export"].as_str().unwrap();
            let ours = if name == "main" { &main } else { &app };
            assert_eq!(
                e["recoverable_until"], ours["recoverable_until"],
                "{view}: {e:#}"
            );
            assert_eq!(e["within_rpo"], ours["within_rpo"], "{view}: {e:#}");
            assert_eq!(
                e["rpo_objective_seconds"], ours["rpo_objective_seconds"],
                "{view}: {e:#}"
            );
            let reached = json_time(&e["recoverable_until"]);
            let x = e["rpo_exposure_seconds"].as_f64().unwrap();
            let (lo, hi) = (
                epoch(now_from) - epoch(reached),
                epoch(now_to) - epoch(reached),
            );
            assert!(
                lo - 0.01 <= x && x <= hi + 0.01,
                "{view}: exposure {x} not in [{lo}, {hi}]: {e:#}"
            );
        };
    agrees("status", &main, before, Utc::now());
    agrees("status", &app, before, Utc::now());

    // The metrics the last push wrote: the same reach, the same objectives.
    let text = std::fs::read_to_string(site.s.path("drp.prom")).unwrap();
    let written: DateTime<Utc> = std::fs::metadata(site.s.path("drp.prom"))
        .unwrap()
        .modified()
        .unwrap()
        .into();
    let sample = |name: &str, export: &str| -> f64 {
        let needle = format!("{name}{{host=\"db1\",export=\"{export}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&needle))
            .unwrap_or_else(|| panic!("{needle} missing:\n{text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(
        sample("drp_export_recoverable_until_timestamp_seconds", "main"),
        epoch(until),
        "the push kept the metrics' reach where the archive is:\n{text}"
    );
    assert_eq!(sample("drp_export_rpo_objective_seconds", "main"), 1800.0);
    assert_eq!(sample("drp_export_rpo_objective_seconds", "app"), 86_400.0);
    for (name, e) in [("main", &main), ("app", &app)] {
        let reached = epoch(json_time(&e["recoverable_until"]));
        let x = sample("drp_export_rpo_exposure_seconds", name);
        assert!(
            (x - (epoch(written) - reached)).abs() < 1.0,
            "{name}: the metrics' exposure {x} is not their time minus the reach:\n{text}"
        );
    }

    // The compliance report a manager files.
    let from = Utc::now();
    let report = drp_as_postgres(
        &site,
        &[
            "--json",
            "report",
            "--policy",
            site.policy.to_str().unwrap(),
        ],
    );
    report.ok();
    let to = Utc::now();
    for e in report.json()["exposure"].as_array().unwrap() {
        agrees("report", e, from, to);
    }

    // The fleet's view: the agent asked over SSH, answering typed.
    let host = crate::fleet::host(&site.s, 8, "db1");
    std::fs::write(
        host.policy_path(),
        std::fs::read_to_string(&site.policy).unwrap(),
    )
    .unwrap();
    host.authorize();
    crate::fleet::inventory(&site.s, "fleet.yaml", &[&host], None, None);
    let from = Utc::now();
    let fleet = site
        .s
        .drp(&["--json", "status", "--inventory", "fleet.yaml"]);
    fleet.ok();
    let to = Utc::now();
    let rows = fleet.json()["rows"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for e in &rows {
        agrees("fleet", e, from, to);
    }

    // The handover page: the same exposure, as a duration.
    let from = Utc::now();
    drp_as_postgres(
        &site,
        &[
            "handover",
            "--policy",
            site.policy.to_str().unwrap(),
            "--out",
            site.dir("handover").to_str().unwrap(),
        ],
    )
    .ok();
    let to = Utc::now();
    let page = std::fs::read_to_string(site.s.path("handover/handover.md")).unwrap();
    for (name, e) in [("main", &main), ("app", &app)] {
        let row = page
            .lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{page}"));
        let shown = parse_shown(row.split('|').nth(5).unwrap().trim());
        let reached = epoch(json_time(&e["recoverable_until"]));
        assert!(
            epoch(from) - reached - 1.0 <= shown && shown <= epoch(to) - reached,
            "{name}: handover shows {shown}s: {row}"
        );
    }

    // After a point-in-time restore onto timeline 2, the reach follows the
    // new timeline: status still knows what is restorable.
    let (r, _) = site.restore(&["--to-time", &rfc3339(base_done)]);
    r.ok();
    assert_eq!(r.json()["timeline"], 2, "{}", r.stdout);
    pg.start();
    let after = pg.event("after the restore");
    pg.switch_wal();
    wait_for("the reach on timeline 2", Duration::from_secs(30), || {
        reaches(&export(&status(&site), "main"), after)
    });
    let e = export(&status(&site), "main");
    assert_eq!(e["within_rpo"], true, "{e:#}");
}
