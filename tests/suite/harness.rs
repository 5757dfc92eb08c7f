//! Shared test plumbing: the services started by tests/run.sh, the binaries
//! under test, scratch folders, and helpers to read databases back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Addresses and credentials of the running services.
pub struct Services {
    vars: HashMap<String, String>,
}

impl Services {
    pub fn get(&self, key: &str) -> &str {
        self.vars.get(key).unwrap_or_else(|| {
            panic!("{key} missing from the services env file written by tests/services/start.sh")
        })
    }
}

/// The services, from the env file named by `DRP_TEST_ENV`.
pub fn services() -> &'static Services {
    static S: OnceLock<Services> = OnceLock::new();
    S.get_or_init(|| {
        let path = std::env::var("DRP_TEST_ENV").unwrap_or_else(|_| {
            panic!(
                "DRP_TEST_ENV is not set: the suite needs real PostgreSQL, MariaDB, Garage and OpenSSH servers. \
                 Run it with tests/run.sh, which installs them (tests/services/setup.sh) and starts them (tests/services/start.sh)."
            )
        });
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {path}: {e}; start the services with tests/services/start.sh"));
        let vars = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Services { vars }
    })
}

fn bin(name: &str) -> PathBuf {
    let drp = PathBuf::from(env!("CARGO_BIN_EXE_drp"));
    let p = drp.with_file_name(name);
    assert!(
        p.is_file(),
        "{} is not built: run `cargo build --bins` first (tests/run.sh does)",
        p.display()
    );
    p
}

/// A scratch folder for one test, with helpers to run the binaries in it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    /// Unique name for databases, prefixes and folders of this test.
    pub id: String,
    env: Vec<(String, String)>,
    /// Policies whose repositories were created (`drp-agent init`) before
    /// the first command that uses them; `None` once a test turns it off.
    initialised: Option<std::sync::Mutex<std::collections::HashSet<PathBuf>>>,
}

pub fn scratch(tag: &str) -> Scratch {
    let id = format!("{tag}_{:08x}", rand_u32());
    let s = services();
    Scratch {
        dir: tempfile::Builder::new()
            .prefix("drp-test-")
            .tempdir()
            .expect("temp dir"),
        id,
        env: vec![
            (
                "TEST_PG_PASSWORD".into(),
                s.get("DRP_TEST_PG_PASSWORD").into(),
            ),
            (
                "TEST_MY_PASSWORD".into(),
                s.get("DRP_TEST_MY_PASSWORD").into(),
            ),
            ("TEST_S3_KEY_ID".into(), s.get("DRP_TEST_S3_KEY_ID").into()),
            ("TEST_S3_SECRET".into(), s.get("DRP_TEST_S3_SECRET").into()),
        ],
        initialised: Some(Default::default()),
    }
}

pub fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish() as u32
}

impl Scratch {
    /// An environment variable for every command this scratch runs.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    /// The environment the example `policies/shop.yaml` and `runbooks/` read,
    /// pointed at this test's services, databases and folders.
    pub fn shop_env(&mut self) {
        let s = services();
        let dir = self.dir.path().to_path_buf();
        let id = self.id.clone();
        let vars = [
            ("DRP_NAS", dir.join("nas").display().to_string()),
            ("DRP_S3_BUCKET", s.get("DRP_TEST_S3_BUCKET").to_string()),
            ("DRP_S3_PREFIX", id.clone()),
            ("DRP_S3_ENDPOINT", s.get("DRP_TEST_S3_ENDPOINT").to_string()),
            ("DRP_S3_REGION", "garage".to_string()),
            (
                "DRP_S3_ACCESS_KEY_ID",
                s.get("DRP_TEST_S3_KEY_ID").to_string(),
            ),
            (
                "DRP_S3_SECRET_ACCESS_KEY",
                s.get("DRP_TEST_S3_SECRET").to_string(),
            ),
            ("SHOP_PG_PORT", s.get("DRP_TEST_PG_PORT").to_string()),
            ("SHOP_PG_USER", "postgres".to_string()),
            ("SHOP_PG_DB", id.clone()),
            (
                "SHOP_PG_PASSWORD",
                s.get("DRP_TEST_PG_PASSWORD").to_string(),
            ),
            ("SHOP_MY_PORT", s.get("DRP_TEST_MY_PORT").to_string()),
            ("SHOP_MY_USER", "drp".to_string()),
            ("SHOP_MY_DB", id.clone()),
            (
                "SHOP_MY_PASSWORD",
                s.get("DRP_TEST_MY_PASSWORD").to_string(),
            ),
            ("SHOP_APP_DB", dir.join("app.db").display().to_string()),
            ("SHOP_UPLOADS", dir.join("uploads").display().to_string()),
            ("SHOP_RESTART", "true".to_string()),
            ("SHOP_APP_CHECK", "true".to_string()),
        ];
        for (k, v) in vars {
            self.set_env(k, &v);
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Stops creating repositories before commands: for tests of what
    /// happens without one.
    pub fn no_auto_init(&mut self) {
        self.initialised = None;
    }

    /// The policy a command works on: `--policy FILE`, or the `policy:` of
    /// the runbook a `drp run`/`drp drill` is given.
    fn policy_of(&self, bin_name: &str, args: &[&str]) -> Option<PathBuf> {
        if let Some(at) = args.iter().position(|a| *a == "--policy" || *a == "-p") {
            return args.get(at + 1).map(|p| self.dir.path().join(p));
        }
        let sub = args.iter().position(|a| *a == "drill" || *a == "run")?;
        if bin_name != "drp" {
            return None;
        }
        let runbook = self.dir.path().join(args.get(sub + 1)?);
        let text = std::fs::read_to_string(&runbook).ok()?;
        let rel = text
            .lines()
            .find_map(|l| l.strip_prefix("policy: "))?
            .trim();
        Some(runbook.parent()?.join(rel))
    }

    /// Creates the repositories of the policy a command uses, once, as a
    /// user runs `drp-agent init` after writing a policy.
    fn init_for(&self, bin_name: &str, args: &[&str]) {
        let Some(done) = &self.initialised else {
            return;
        };
        let Some(policy) = self.policy_of(bin_name, args) else {
            return;
        };
        if !policy.is_file()
            || !done.lock().unwrap().insert(policy.clone())
            || args.contains(&"init")
        {
            return;
        }
        let mut c = Command::new(bin("drp-agent"));
        c.arg("init")
            .arg("--policy")
            .arg(&policy)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "warn")
            .env("DRP_STATE_DIR", self.dir.path().join("state"));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        // A target a test makes unreachable stays without one: that test's point.
        let _ = c.output();
    }

    fn command(&self, bin_name: &str, args: &[&str]) -> Command {
        self.init_for(bin_name, args);
        let mut c = Command::new(bin(bin_name));
        c.args(args)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "warn")
            .env("DRP_STATE_DIR", self.dir.path().join("state"));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn agent(&self, args: &[&str]) -> Run {
        Run::from(
            self.command("drp-agent", args)
                .output()
                .expect("drp-agent runs"),
        )
    }

    pub fn agent_cmd(&self, args: &[&str]) -> Command {
        self.command("drp-agent", args)
    }

    pub fn drp_cmd(&self, args: &[&str]) -> Command {
        self.command("drp", args)
    }

    pub fn drp(&self, args: &[&str]) -> Run {
        Run::from(self.command("drp", args).output().expect("drp runs"))
    }

    /// A key pair made by `drp-agent keys generate` into `name`: the private
    /// key's file and the public key.
    pub fn keypair(&self, name: &str, signing: bool) -> (PathBuf, String) {
        let out = self.path(name);
        let mut args = vec!["--json", "keys", "generate", "--out", out.to_str().unwrap()];
        if signing {
            args.push("--signing");
        }
        let run = self.agent(&args);
        run.ok();
        let public = run.json()["public"].as_str().unwrap().to_string();
        (out, public)
    }

    /// Target definitions for every kind, each under this test's own prefix.
    pub fn targets_yaml(&self) -> String {
        let s = services();
        format!(
            r#"targets:
  nas:
    kind: local
    path: nas
  s3:
    kind: s3
    bucket: {bucket}
    prefix: {id}
    endpoint: {endpoint}
    region: garage
    access_key_id: {{env: TEST_S3_KEY_ID}}
    secret_access_key: {{env: TEST_S3_SECRET}}
  sftp:
    kind: sftp
    host: 127.0.0.1
    port: {sftp_port}
    user: root
    key: {key}
    path: {sftp_root}/{id}
    known_hosts: accept
"#,
            bucket = s.get("DRP_TEST_S3_BUCKET"),
            id = self.id,
            endpoint = s.get("DRP_TEST_S3_ENDPOINT"),
            sftp_port = s.get("DRP_TEST_SFTP_PORT"),
            key = s.get("DRP_TEST_SFTP_KEY"),
            sftp_root = s.get("DRP_TEST_SFTP_ROOT"),
        )
    }

    pub fn pg_source_yaml(&self, database: &str) -> String {
        format!(
            "{{kind: postgres, host: 127.0.0.1, port: {}, user: postgres, database: {database}, password: {{env: TEST_PG_PASSWORD}}}}",
            services().get("DRP_TEST_PG_PORT")
        )
    }

    pub fn my_source_yaml(&self, database: &str) -> String {
        format!(
            "{{kind: mariadb, host: 127.0.0.1, port: {}, user: drp, database: {database}, password: {{env: TEST_MY_PASSWORD}}}}",
            services().get("DRP_TEST_MY_PORT")
        )
    }
}

/// The outcome of one run of a binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code, expected,
            "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs SQL on the test PostgreSQL server and returns psql's unaligned output.
pub fn psql(database: &str, sql: &str) -> String {
    psql_at(
        "127.0.0.1",
        services().get("DRP_TEST_PG_PORT"),
        database,
        sql,
    )
}

/// Runs SQL as `postgres` on the PostgreSQL server at `host:port` (the
/// suite's password) and returns psql's unaligned output.
pub fn psql_at(host: &str, port: &str, database: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            "postgres",
        ])
        .args(["-h", host, "-p", port, "-d", database, "-c", sql])
        .env("PGPASSWORD", services().get("DRP_TEST_PG_PASSWORD"))
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql on {host}:{port} failed on {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Headless Chromium with its own profile folder and no traffic of its own.
pub fn chromium(profile: &Path) -> Command {
    let bin = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chromium is not installed: tests/services/setup.sh installs it");
    let mut c = Command::new(bin);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// A local HTML page's DOM as headless Chromium renders it.
pub fn rendered_dom(html: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = chromium(profile.path())
        .arg("--dump-dom")
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium on {}: {}",
        html.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs SQL on the test MariaDB server (as root over its socket).
pub fn mariadb(database: Option<&str>, sql: &str) -> String {
    let s = services();
    let mut c = Command::new("mariadb");
    c.args(["--no-defaults", "-uroot", "--batch", "--skip-column-names"])
        .arg(format!("--socket={}", s.get("DRP_TEST_MY_SOCKET")));
    if let Some(db) = database {
        c.arg(db);
    }
    let out = c.args(["-e", sql]).output().expect("mariadb runs");
    assert!(
        out.status.success(),
        "mariadb failed on {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Row count and a digest of every row of a PostgreSQL table, in key order.
pub fn pg_table_digest(database: &str, table: &str) -> String {
    psql(
        database,
        &format!(
            "select count(*) || ':' || md5(coalesce(string_agg(t::text, '|' order by t::text), '')) from {table} t"
        ),
    )
}

/// Every file under `root` with its mode, size, mtime and content digest (or link target).
pub fn tree_digest(root: &Path) -> Vec<String> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if meta.file_type().is_symlink() {
                out.push(format!(
                    "{rel} -> {}",
                    std::fs::read_link(&p).unwrap().display()
                ));
            } else if meta.is_dir() {
                out.push(format!("{rel}/ mode={:o}", meta.mode() & 0o7777));
                walk(root, &p, out);
            } else {
                let digest = hex::encode(Sha256::digest(std::fs::read(&p).unwrap()));
                out.push(format!(
                    "{rel} mode={:o} size={} mtime={} sha256={digest}",
                    meta.mode() & 0o7777,
                    meta.len(),
                    meta.mtime()
                ));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// Every file under `dir`, recursively.
pub fn walk(dir: PathBuf) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Whether a process whose command line is exactly `cmdline` runs.
pub fn running(cmdline: &str) -> bool {
    Command::new("pgrep")
        .args(["-x", "-f", cmdline])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Waits until `f` holds, at most `within`.
pub fn eventually(within: std::time::Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    f()
}

/// The files under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && String::from_utf8_lossy(&bytes).contains(needle)
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// The step named `name` in a run's report (its JSON), or a panic showing
/// the report.
pub fn step_named(report: &serde_json::Value, name: &str) -> serde_json::Value {
    report["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps in {report:#}"))
        .iter()
        .find(|st| st["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no step `{name}` in {report:#}"))
}

/// A port free on loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
