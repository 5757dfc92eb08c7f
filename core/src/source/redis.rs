//! Redis: a point is the server's RDB, streamed by `redis-cli --rdb -`
//! (the replication protocol: the server forks and sends its snapshot), its
//! keys counted and its checksum checked on the way (`redis/rdb.rs`); the
//! server's version and `run_id` and the RDB's keys per database go into
//! the manifest.
//!
//! A restore into the live server receives the RDB beside its dump file,
//! checks it, stops the server through the policy's `stop` command or
//! `unit`, keeps the dump it replaces (and the append-only files, which the
//! server would otherwise load instead) beside it, puts the RDB in place,
//! starts the server and checks its keys against the RDB's. A server that
//! does not come back with them gets what was replaced back. A restore to
//! a path (`--to`) writes the RDB file there and touches no server.
//!
//! The password is a secret reference handed to `redis-cli` in
//! `REDISCLI_AUTH`, never on its command line.

pub mod rdb;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Deserialize;

use super::process::{self, ChildExport, Input};
use super::{
    Cancel, CommitOptions, Committed, Destination, ExportInfo, ExportStream, Source, SourceError,
    Staged, replaced_path, replaced_pattern,
};
use crate::config::{HumanDuration, SecretRef, resolve_relative};
use rdb::Keyspace;

/// The manifest's `tools` entry holding the RDB's keys per database.
pub const KEYS_TOOL: &str = "redis_keys";

const HINT: &str = "install the Redis tools (Debian: redis-tools) or set `bin_dir`";

/// How long a stopped server may take to stop answering, and a started
/// one to answer (loading a large RDB), unless the source sets `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// The server's Unix socket; or `host` and `port`.
    pub socket: Option<PathBuf>,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// An ACL user (Redis 6 and later).
    pub user: Option<String>,
    pub password: Option<SecretRef>,
    /// How a restore stops the server: an argv; or `unit`.
    pub stop: Option<Vec<String>>,
    /// How a restore starts it again: an argv; or `unit`.
    pub start: Option<Vec<String>>,
    /// A systemd unit a restore stops and starts (`systemctl stop|start`).
    pub unit: Option<String>,
    /// The server's `dir`, when a restore must find its dump file without
    /// asking it (default: `CONFIG GET dir`).
    pub dir: Option<PathBuf>,
    /// The server's `dbfilename` (default: `CONFIG GET dbfilename`).
    pub dbfilename: Option<String>,
    /// Folder of `redis-cli` (and `redis-server` for restore tests).
    pub bin_dir: Option<PathBuf>,
    /// How long each step may take: the dump, a stop, a start (default 5m
    /// for a stop or a start, none for the dump).
    pub timeout: Option<HumanDuration>,
}

impl RedisConfig {
    /// Problems with the settings, each as (key under the source, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        match (&self.socket, &self.host) {
            (Some(_), Some(_)) => {
                out.push(("host".into(), "give `socket` or `host`, not both".into()))
            }
            (Some(_), None) if self.port.is_some() => out.push((
                "port".into(),
                "`port` goes with `host`; a socket has none".into(),
            )),
            _ => {}
        }
        match (&self.unit, &self.stop, &self.start) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => out.push((
                "unit".into(),
                "give `unit`, or `stop` and `start`, not both".into(),
            )),
            (None, Some(_), None) => out.push((
                "stop".into(),
                "`stop` needs `start`: a restore starts the server again".into(),
            )),
            (None, None, Some(_)) => out.push((
                "start".into(),
                "`start` needs `stop`: a restore stops the server first".into(),
            )),
            _ => {}
        }
        for (key, argv) in [("stop", &self.stop), ("start", &self.start)] {
            if argv
                .as_ref()
                .is_some_and(|a| a.first().is_none_or(|p| p.is_empty()))
            {
                out.push((
                    key.into(),
                    "an empty command: give the program and its arguments as a list".into(),
                ));
            }
        }
        if self
            .dbfilename
            .as_deref()
            .is_some_and(|f| f.is_empty() || f.contains('/'))
        {
            out.push((
                "dbfilename".into(),
                "a file name in `dir`, without `/`".into(),
            ));
        }
        out
    }
}

pub struct Redis {
    config: RedisConfig,
    base_dir: PathBuf,
}

impl Redis {
    pub fn new(config: RedisConfig, base_dir: &Path) -> Self {
        Redis {
            config,
            base_dir: base_dir.to_path_buf(),
        }
    }

    fn bin_dir(&self) -> Option<PathBuf> {
        self.config
            .bin_dir
            .as_ref()
            .map(|d| resolve_relative(&self.base_dir, d))
    }

    /// Where the server is, as plans and errors name it.
    pub fn address(&self) -> String {
        match (&self.config.socket, &self.config.host) {
            (Some(s), _) => format!("unix:{}", resolve_relative(&self.base_dir, s).display()),
            (None, Some(h)) => format!("{h}:{}", self.config.port.unwrap_or(6379)),
            (None, None) => format!("127.0.0.1:{}", self.config.port.unwrap_or(6379)),
        }
    }

    /// `redis-cli` pointed at the server, failing on error replies, its
    /// password in its environment.
    fn cli(&self) -> Result<Command, SourceError> {
        let tool = process::find_tool(self.bin_dir().as_deref(), &["redis-cli"], HINT)?;
        let mut cmd = Command::new(tool);
        cmd.args(["-e", "--no-auth-warning"]);
        match (&self.config.socket, &self.config.host) {
            (Some(s), _) => {
                cmd.arg("-s").arg(resolve_relative(&self.base_dir, s));
            }
            (None, h) => {
                cmd.arg("-h")
                    .arg(h.as_deref().unwrap_or("127.0.0.1"))
                    .arg("-p")
                    .arg(self.config.port.unwrap_or(6379).to_string());
            }
        }
        if let Some(u) = &self.config.user {
            cmd.arg("--user").arg(u);
        }
        cmd.env_remove("REDISCLI_AUTH");
        if let Some(secret) = &self.config.password {
            let pw = secret
                .resolve(&self.base_dir)
                .map_err(|e| SourceError::Invalid(format!("Redis password: {e}")))?;
            cmd.env("REDISCLI_AUTH", pw.expose());
        }
        Ok(cmd)
    }

    /// One command's reply, as `redis-cli` prints it.
    fn query(&self, args: &[&str]) -> Result<String, SourceError> {
        let mut cmd = self.cli()?;
        cmd.args(args);
        process::run(&mut cmd, None).map_err(|e| match e {
            SourceError::ToolFailed { status, stderr, .. } => SourceError::Invalid(format!(
                "the Redis server at {} did not answer `{}` ({status}): {stderr}",
                self.address(),
                args.join(" ")
            )),
            e => e,
        })
    }

    /// `INFO section`'s fields.
    fn info(&self, section: &str) -> Result<BTreeMap<String, String>, SourceError> {
        Ok(self
            .query(&["INFO", section])?
            .lines()
            .filter_map(|l| l.trim().split_once(':'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    /// The keys the server holds now.
    pub fn keyspace(&self) -> Result<Keyspace, SourceError> {
        let text = self.query(&["INFO", "keyspace"])?;
        Keyspace::parse(&text).ok_or_else(|| {
            SourceError::Invalid(format!(
                "unreadable `INFO keyspace` from {}",
                self.address()
            ))
        })
    }

    /// One setting (`CONFIG GET name`); `None` when the server has none of
    /// that name.
    fn setting(&self, name: &str) -> Result<Option<String>, SourceError> {
        let out = self.query(&["CONFIG", "GET", name])?;
        let mut lines = out.lines();
        Ok(match (lines.next(), lines.next()) {
            (Some(k), Some(v)) if k == name => Some(v.to_string()),
            _ => None,
        })
    }

    fn answers(&self) -> bool {
        self.query(&["PING"]).is_ok_and(|o| o.trim() == "PONG")
    }

    fn step_timeout(&self) -> Duration {
        self.config.timeout.map_or(DEFAULT_TIMEOUT, |t| t.0)
    }

    /// The commands that stop and start the server, as the policy declares them.
    fn lifecycle(&self) -> Option<(Vec<String>, Vec<String>)> {
        if let Some(unit) = &self.config.unit {
            let systemctl =
                |verb: &str| vec!["systemctl".to_string(), verb.to_string(), unit.clone()];
            return Some((systemctl("stop"), systemctl("start")));
        }
        Some((self.config.stop.clone()?, self.config.start.clone()?))
    }

    /// Runs a declared stop or start command to its end, within the step's
    /// timeout.
    fn run_declared(&self, argv: &[String], cancel: &Cancel) -> Result<(), SourceError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(SourceError::Invalid("an empty command".into()));
        };
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(&self.base_dir);
        process::run_limited(
            &mut cmd,
            Input::Bytes(&[]),
            cancel,
            Some(self.step_timeout()),
        )
        .map(|_| ())
        .map_err(|e| match e {
            SourceError::ToolFailed { status, stderr, .. } => SourceError::ToolFailed {
                tool: argv.join(" "),
                status,
                stderr,
            },
            e => e,
        })
    }

    /// Polls until the server answers (`up`) or stops answering, within the
    /// step's timeout.
    fn await_server(&self, up: bool, cancel: &Cancel) -> Result<(), SourceError> {
        let started = Instant::now();
        while self.answers() != up {
            cancel.check()?;
            if started.elapsed() > self.step_timeout() {
                return Err(SourceError::Invalid(format!(
                    "the Redis server at {} {} within {}",
                    self.address(),
                    if up {
                        "did not answer"
                    } else {
                        "still answered"
                    },
                    crate::config::units::format_duration(self.step_timeout())
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// Where the server keeps its dump and its append-only files: the
    /// policy's `dir` and `dbfilename`, else the server's own settings.
    fn files(&self) -> Result<ServerFiles, SourceError> {
        let up = self.answers();
        let ask = |name: &str| -> Result<Option<String>, SourceError> {
            if up { self.setting(name) } else { Ok(None) }
        };
        let dir = match &self.config.dir {
            Some(d) => resolve_relative(&self.base_dir, d),
            None => ask("dir")?.map(PathBuf::from).ok_or_else(|| {
                SourceError::Invalid(format!(
                    "the Redis server at {} does not answer, so its dump file cannot be found: declare `dir` and `dbfilename` in the source",
                    self.address()
                ))
            })?,
        };
        let dbfilename = match &self.config.dbfilename {
            Some(f) => f.clone(),
            None => ask("dbfilename")?.unwrap_or_else(|| "dump.rdb".into()),
        };
        let appendfilename = ask("appendfilename")?.unwrap_or_else(|| "appendonly.aof".into());
        // Redis 7 keeps its append-only files in a folder; before, one file.
        let aof = match ask("appenddirname")? {
            Some(d) => Aof::Folder(dir.join(d)),
            None if up => Aof::File(dir.join(&appendfilename)),
            None => Aof::Folder(dir.join("appendonlydir")),
        };
        // A server down cannot say: its append-only files, if any are there,
        // are replaced as if it used them (and kept).
        let appendonly = match ask("appendonly")? {
            Some(v) => v == "yes",
            None => aof.path().exists(),
        };
        Ok(ServerFiles {
            dump: dir.join(dbfilename),
            dir,
            appendonly,
            aof,
            appendfilename,
        })
    }
}

/// Where a server's data is on disk.
#[derive(Debug, Clone)]
struct ServerFiles {
    dir: PathBuf,
    dump: PathBuf,
    appendonly: bool,
    aof: Aof,
    appendfilename: String,
}

#[derive(Debug, Clone)]
enum Aof {
    /// Redis 7: `appendonlydir`, with a manifest and a base file.
    Folder(PathBuf),
    /// Before: one file, which may start with an RDB preamble.
    File(PathBuf),
}

impl Aof {
    fn path(&self) -> &Path {
        match self {
            Aof::Folder(p) | Aof::File(p) => p,
        }
    }
}

/// The RDB stream, its keys counted and its checksum checked by a thread
/// beside it; the export fails when the RDB is damaged or cut short.
struct RdbExport {
    inner: Box<ChildExport>,
    tx: Option<mpsc::SyncSender<Vec<u8>>>,
    counter: Option<std::thread::JoinHandle<Result<rdb::Contents, rdb::Damaged>>>,
}

/// Reads the chunks a channel carries.
struct Chunks {
    rx: mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.chunk = c;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl RdbExport {
    fn new(inner: ChildExport) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(16);
        let counter = std::thread::Builder::new()
            .name("drp-rdb-count".into())
            .spawn(move || {
                let mut chunks = Chunks {
                    rx,
                    chunk: Vec::new(),
                    at: 0,
                };
                let read = rdb::read(&mut chunks);
                // Whatever happened, the stream is drained: the export goes on.
                let _ = std::io::copy(&mut chunks, &mut std::io::sink());
                read
            })
            .expect("a thread starts");
        RdbExport {
            inner: Box::new(inner),
            tx: Some(tx),
            counter: Some(counter),
        }
    }
}

impl Read for RdbExport {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0
            && let Some(tx) = &self.tx
        {
            let _ = tx.send(buf[..n].to_vec());
        }
        Ok(n)
    }
}

impl ExportStream for RdbExport {
    fn finish(mut self: Box<Self>) -> Result<ExportInfo, SourceError> {
        self.tx.take();
        let counted = self
            .counter
            .take()
            .expect("finish runs once")
            .join()
            .map_err(|_| SourceError::Invalid("the RDB count stopped".into()))?;
        let mut info = self.inner.finish()?;
        let contents = counted.map_err(|e| {
            SourceError::Invalid(format!(
                "the RDB `redis-cli --rdb -` sent is not whole: {e}; nothing was committed"
            ))
        })?;
        let keys = match (&contents.keyspace, &contents.uncounted) {
            (Some(k), _) => k.to_string(),
            (None, why) => format!("uncounted: {}", why.as_deref().unwrap_or("-")),
        };
        info.tools.insert(KEYS_TOOL.into(), keys);
        info.tools
            .insert("rdb".into(), format!("RDB version {}", contents.version));
        Ok(info)
    }
}

/// The RDB's keys as its manifest records them; `None` when uncounted.
pub fn recorded_keys(tools: &BTreeMap<String, String>) -> Option<Keyspace> {
    tools.get(KEYS_TOOL).and_then(|t| Keyspace::parse(t))
}

/// Whether the keys a server holds are the RDB's: every key without a time
/// to live, and no more keys than the RDB held (a key with a time to live
/// may have expired since). `Err` says what differs.
pub fn keys_match(expected: &Keyspace, found: &Keyspace) -> Result<String, String> {
    let mut dbs: Vec<u64> = expected.0.keys().chain(found.0.keys()).copied().collect();
    dbs.sort_unstable();
    dbs.dedup();
    for db in dbs {
        let e = expected.0.get(&db).copied().unwrap_or_default();
        let f = found.0.get(&db).copied().unwrap_or_default();
        let (ep, fp) = (e.keys - e.expires, f.keys - f.expires);
        if fp != ep || f.keys > e.keys {
            return Err(format!(
                "db{db} holds {} keys ({fp} without a time to live); the point has {} ({ep} without)",
                f.keys, e.keys
            ));
        }
    }
    Ok(format!(
        "{} keys ({} without a time to live, all there)",
        found.keys(),
        found.persistent()
    ))
}

impl Source for Redis {
    fn describe(&self) -> BTreeMap<String, String> {
        let mut d = BTreeMap::new();
        match (&self.config.socket, &self.config.host) {
            (Some(s), _) => {
                d.insert("socket".into(), s.display().to_string());
            }
            (None, h) => {
                d.insert(
                    "host".into(),
                    h.clone().unwrap_or_else(|| "127.0.0.1".into()),
                );
                d.insert("port".into(), self.config.port.unwrap_or(6379).to_string());
            }
        }
        d.insert("format".into(), "RDB (redis-cli --rdb)".into());
        d
    }

    fn export(&self) -> Result<Box<dyn ExportStream>, SourceError> {
        // Checks the login before anything is written, and records who answered.
        let server = self.info("server")?;
        let cli = process::find_tool(self.bin_dir().as_deref(), &["redis-cli"], HINT)?;
        let mut tools = BTreeMap::new();
        tools.insert("redis-cli".into(), process::version(&cli)?);
        if let Some(v) = server.get("redis_version") {
            tools.insert("server".into(), format!("Redis {v}"));
        }
        if let Some(id) = server.get("run_id") {
            tools.insert("redis_run_id".into(), id.clone());
        }
        // The server forks its snapshot after this instant.
        let info = ExportInfo {
            consistency_time: Utc::now(),
            tools,
            ..ExportInfo::default()
        };
        let mut cmd = self.cli()?;
        cmd.args(["--rdb", "-"]);
        let dump = ChildExport::start_limited(
            &mut cmd,
            "redis-cli --rdb -".into(),
            info,
            self.config.timeout.map(|t| t.0),
        )?;
        Ok(Box::new(RdbExport::new(dump)))
    }

    fn default_destination(&self) -> Destination {
        Destination::Database(format!("redis {}", self.address()))
    }

    /// A path: the RDB is written there, and no server is touched.
    fn destination(&self, text: &str) -> Destination {
        Destination::Path(PathBuf::from(text))
    }

    fn existing(&self, dest: &Destination) -> Result<Option<String>, SourceError> {
        match dest {
            Destination::Path(p) => Ok(std::fs::metadata(p).ok().map(|m| {
                format!(
                    "file {} ({})",
                    p.display(),
                    crate::config::units::format_bytes(m.len())
                )
            })),
            Destination::Database(_) => {
                if !self.answers() {
                    let files = self.files()?;
                    return Ok(Some(format!(
                        "the data of the Redis server at {} (not answering now): {}",
                        self.address(),
                        files.dump.display()
                    )));
                }
                let version = self
                    .info("server")?
                    .get("redis_version")
                    .cloned()
                    .unwrap_or_default();
                let keys = self.keyspace()?;
                let files = self.files()?;
                Ok(Some(format!(
                    "Redis {version} at {}: {} keys ({}), dump {}{}",
                    self.address(),
                    keys.keys(),
                    if keys.0.is_empty() {
                        "empty".to_string()
                    } else {
                        keys.to_string()
                    },
                    files.dump.display(),
                    if files.appendonly {
                        format!(", append-only files {}", files.aof.path().display())
                    } else {
                        String::new()
                    }
                )))
            }
        }
    }

    fn kept_as(&self, dest: &Destination) -> String {
        match dest {
            Destination::Path(p) => {
                format!("the replaced file is kept as `{}`", replaced_pattern(p))
            }
            Destination::Database(_) => {
                let how = match (&self.config.unit, &self.config.stop) {
                    (Some(u), _) => format!("systemctl stop {u}"),
                    (None, Some(s)) => s.join(" "),
                    (None, None) => {
                        "(no `stop` or `unit` declared: the restore will refuse)".into()
                    }
                };
                format!(
                    "the server is stopped (`{how}`) and its dump file is kept beside it as `<dump>.drp-replaced-<time>-<id>` \
                     (its append-only files too, when appendonly is on: the server would load them instead); \
                     writes after the point are lost"
                )
            }
        }
    }

    fn check_tools(&self) -> Result<Vec<String>, SourceError> {
        let cli = process::find_tool(self.bin_dir().as_deref(), &["redis-cli"], HINT)?;
        Ok(vec![process::version(&cli)?])
    }

    fn stage(
        &self,
        raw: &mut dyn Read,
        dest: &Destination,
        _workdir: &Path,
    ) -> Result<Box<dyn Staged>, SourceError> {
        let (dir, into) = match dest {
            Destination::Path(p) => {
                let dir = p
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf();
                std::fs::create_dir_all(&dir)
                    .map_err(|e| SourceError::io(format!("cannot create {}", dir.display()), e))?;
                (dir, Place::File(p.clone()))
            }
            Destination::Database(_) => {
                if self.lifecycle().is_none() {
                    return Err(SourceError::Invalid(format!(
                        "a restore into the Redis server at {} stops and starts it: declare `unit`, or `stop` and `start`, in the source \
                         (or restore the RDB to a file with --to)",
                        self.address()
                    )));
                }
                let files = self.files()?;
                (files.dir.clone(), Place::Server(files))
            }
        };
        // Beside the dump: the swap is a rename on one filesystem.
        let file = super::stage_to_file(raw, &dir)?;
        Ok(Box::new(StagedRdb {
            file,
            into,
            redis: Redis::new(self.config.clone(), &self.base_dir),
        }))
    }
}

enum Place {
    File(PathBuf),
    Server(ServerFiles),
}

struct StagedRdb {
    file: tempfile::NamedTempFile,
    into: Place,
    redis: Redis,
}

/// Gives `path` the owner and mode of `like` (the file or folder it
/// replaces): a server running as its own user reads what drp, as root, wrote.
fn same_owner(path: &Path, like: &Path) -> Result<(), SourceError> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let Ok(m) = std::fs::metadata(like) else {
        return Ok(());
    };
    let mode = if m.is_dir() {
        m.mode() & 0o7777
    } else {
        m.mode() & 0o666
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| SourceError::io(format!("cannot set the mode of {}", path.display()), e))?;
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(path, Some(m.uid()), Some(m.gid())).map_err(|e| {
            SourceError::io(format!("cannot set the owner of {}", path.display()), e)
        })?;
    }
    Ok(())
}

fn rename(from: &Path, to: &Path) -> Result<(), SourceError> {
    std::fs::rename(from, to).map_err(|e| {
        SourceError::io(
            format!("cannot move {} to {}", from.display(), to.display()),
            e,
        )
    })
}

/// One move a swap made, undone by moving back.
struct Moved {
    from: PathBuf,
    to: PathBuf,
}

impl StagedRdb {
    /// Puts the RDB into the server's folder in place of its dump (and of
    /// its append-only files when appendonly is on); returns what it moved
    /// aside and what it created.
    fn swap_in(&self, files: &ServerFiles) -> Result<(Vec<Moved>, Vec<PathBuf>), SourceError> {
        let mut moved = Vec::new();
        let mut created = Vec::new();
        let like = if files.dump.exists() {
            files.dump.clone()
        } else {
            files.dir.clone()
        };
        same_owner(self.file.path(), &like)?;
        if files.dump.exists() {
            let kept = replaced_path(&files.dump);
            rename(&files.dump, &kept)?;
            moved.push(Moved {
                from: files.dump.clone(),
                to: kept,
            });
        }
        if files.appendonly {
            let aof = files.aof.path();
            // The new append-only files get the owner of the old ones (or
            // of the server's folder).
            let mut like = files.dir.clone();
            if aof.exists() {
                let kept = replaced_path(aof);
                rename(aof, &kept)?;
                like = kept.clone();
                moved.push(Moved {
                    from: aof.to_path_buf(),
                    to: kept,
                });
            }
            // The server loads its append-only files and ignores the RDB:
            // they start again from the RDB (Redis 7: as the base of a new
            // folder; before: as the RDB preamble of a new file).
            match &files.aof {
                Aof::Folder(dir) => {
                    std::fs::create_dir(dir).map_err(|e| {
                        SourceError::io(format!("cannot create {}", dir.display()), e)
                    })?;
                    created.push(dir.clone());
                    same_owner(dir, &like)?;
                    let base = dir.join(format!("{}.1.base.rdb", files.appendfilename));
                    std::fs::copy(self.file.path(), &base).map_err(|e| {
                        SourceError::io(format!("cannot write {}", base.display()), e)
                    })?;
                    same_owner(&base, self.file.path())?;
                    let manifest = dir.join(format!("{}.manifest", files.appendfilename));
                    let name = base
                        .file_name()
                        .expect("a file")
                        .to_string_lossy()
                        .into_owned();
                    std::fs::write(&manifest, format!("file {name} seq 1 type b\n")).map_err(
                        |e| SourceError::io(format!("cannot write {}", manifest.display()), e),
                    )?;
                    same_owner(&manifest, self.file.path())?;
                }
                Aof::File(file) => {
                    std::fs::copy(self.file.path(), file).map_err(|e| {
                        SourceError::io(format!("cannot write {}", file.display()), e)
                    })?;
                    created.push(file.clone());
                    same_owner(file, self.file.path())?;
                }
            }
        }
        rename(self.file.path(), &files.dump)?;
        created.push(files.dump.clone());
        Ok((moved, created))
    }

    /// Undoes a swap: what it created is set aside as `<name>.drp-failed-…`
    /// (kept for a look), what it moved goes back.
    fn swap_out(moved: &[Moved], created: &[PathBuf]) -> Result<(), SourceError> {
        for path in created {
            if path.exists() {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let failed = path.with_file_name(format!(
                    "{name}.drp-failed-{}",
                    Utc::now().format("%Y%m%dT%H%M%SZ")
                ));
                rename(path, &failed)?;
            }
        }
        for m in moved.iter().rev() {
            rename(&m.to, &m.from)?;
        }
        Ok(())
    }

    fn into_server(
        self,
        files: &ServerFiles,
        options: &CommitOptions,
    ) -> Result<Committed, SourceError> {
        let expected = self.check()?;
        let redis = &self.redis;
        let cancel = &options.cancel;
        let (stop, start) = redis.lifecycle().expect("checked when staged");
        cancel.check()?;
        if redis.answers() {
            redis.run_declared(&stop, cancel)?;
            redis.await_server(false, cancel).map_err(|e| {
                SourceError::Invalid(format!(
                    "{e} after `{}`: nothing was replaced",
                    stop.join(" ")
                ))
            })?;
        }
        let (moved, created) = match self.swap_in(files) {
            Ok(swapped) => swapped,
            Err(e) => {
                let back = redis.run_declared(&start, &Cancel::default());
                return Err(SourceError::Invalid(format!(
                    "the RDB could not be put in place ({e}); the server was started again on its own data{}",
                    back.err()
                        .map(|e| format!(" — but its start failed: {e}"))
                        .unwrap_or_default()
                )));
            }
        };
        let checked = redis
            .run_declared(&start, cancel)
            .and_then(|()| redis.await_server(true, cancel))
            .and_then(|()| match &expected {
                Some(k) => keys_match(k, &redis.keyspace()?)
                    .map(|_| ())
                    .map_err(SourceError::Invalid),
                None => Ok(()),
            });
        if let Err(e) = checked {
            // The server does not hold the point: it gets its data back.
            let _ = redis.run_declared(&stop, &Cancel::default());
            let _ = redis.await_server(false, &Cancel::default());
            let undone = Self::swap_out(&moved, &created);
            let started = redis.run_declared(&start, &Cancel::default());
            return Err(SourceError::Invalid(match (undone, started) {
                (Ok(()), Ok(())) => format!(
                    "the restored server failed its check ({e}); the data it replaced was put back and the server started on it"
                ),
                (Err(u), _) => format!(
                    "the restored server failed its check ({e}), and its data could not be put back ({u}): the replaced files are kept as {}",
                    moved
                        .iter()
                        .map(|m| m.to.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                (Ok(()), Err(s)) => format!(
                    "the restored server failed its check ({e}); the data it replaced was put back, but the server did not start: {s}"
                ),
            }));
        }
        let kept: Vec<String> = moved.iter().map(|m| m.to.display().to_string()).collect();
        if options.drop_replaced {
            for m in &moved {
                let gone = if m.to.is_dir() {
                    std::fs::remove_dir_all(&m.to)
                } else {
                    std::fs::remove_file(&m.to)
                };
                gone.map_err(|e| {
                    SourceError::io(format!("restored, but cannot remove {}", m.to.display()), e)
                })?;
            }
            return Ok(if kept.is_empty() {
                Committed::default()
            } else {
                Committed::dropped(kept.join(", "))
            });
        }
        Ok(if kept.is_empty() {
            Committed::default()
        } else {
            Committed::kept(kept.join(", "))
        })
    }

    /// Reads the staged RDB whole: its checksum, and its keys when counted.
    fn check(&self) -> Result<Option<Keyspace>, SourceError> {
        let file = std::fs::File::open(self.file.path())
            .map_err(|e| SourceError::io("cannot read the staged RDB", e))?;
        let contents = rdb::read(std::io::BufReader::new(file)).map_err(|e| {
            SourceError::Invalid(format!(
                "the point is not a whole RDB ({e}): nothing was replaced"
            ))
        })?;
        // Only the RDB goes in place, without the end mark of its transfer.
        let size = std::fs::metadata(self.file.path())
            .map_err(|e| SourceError::io("cannot read the staged RDB", e))?
            .len();
        if size > contents.len {
            self.file
                .as_file()
                .set_len(contents.len)
                .map_err(|e| SourceError::io("cannot cut the staged RDB to its end", e))?;
        }
        if let Some(why) = &contents.uncounted {
            tracing::warn!(
                "the RDB's keys are not counted ({why}): the restored server's keys are not checked"
            );
        }
        Ok(contents.keyspace)
    }
}

impl Staged for StagedRdb {
    fn commit(self: Box<Self>, options: &CommitOptions) -> Result<Committed, SourceError> {
        match &self.into {
            Place::Server(files) => {
                let files = files.clone();
                self.into_server(&files, options)
            }
            Place::File(path) => {
                self.check()?;
                options.cancel.check()?;
                let path = path.clone();
                if !path.exists() {
                    self.file.persist(&path).map_err(|e| {
                        SourceError::io(format!("cannot write {}", path.display()), e.error)
                    })?;
                    return Ok(Committed::default());
                }
                let kept = replaced_path(&path);
                rename(&path, &kept)?;
                self.file.persist(&path).map_err(|e| {
                    SourceError::io(format!("cannot write {}", path.display()), e.error)
                })?;
                let what = kept.display().to_string();
                if options.drop_replaced {
                    std::fs::remove_file(&kept).map_err(|e| {
                        SourceError::io(format!("restored, but cannot remove {what}"), e)
                    })?;
                    return Ok(Committed::dropped(what));
                }
                Ok(Committed::kept(what))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> RedisConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn conflicting_or_half_declared_settings_are_problems_at_their_keys() {
        let keys = |yaml| {
            config(yaml)
                .problems()
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        };
        assert!(keys("socket: /run/redis.sock\nunit: redis-server").is_empty());
        assert!(keys("host: 10.0.0.5\nport: 6380\nstop: [a]\nstart: [b]").is_empty());
        assert_eq!(keys("socket: /s\nhost: h"), ["host"]);
        assert_eq!(keys("socket: /s\nport: 1"), ["port"]);
        assert_eq!(keys("unit: u\nstop: [a]"), ["unit"]);
        assert_eq!(keys("stop: [a]"), ["stop"]);
        assert_eq!(keys("start: [a]"), ["start"]);
        assert_eq!(keys("stop: []\nstart: [b]"), ["stop"]);
        assert_eq!(keys("dbfilename: a/b"), ["dbfilename"]);
    }

    #[test]
    fn a_servers_keys_match_a_point_when_every_key_without_a_ttl_is_there() {
        let point = Keyspace::parse("db0:keys=10,expires=3;db1:keys=2,expires=0").unwrap();
        let same = point.clone();
        assert!(keys_match(&point, &same).is_ok());
        let expired = Keyspace::parse("db0:keys=8,expires=1;db1:keys=2,expires=0").unwrap();
        assert!(keys_match(&point, &expired).is_ok());
        let lost = Keyspace::parse("db0:keys=9,expires=3;db1:keys=2,expires=0").unwrap();
        assert!(
            keys_match(&point, &lost)
                .unwrap_err()
                .contains("db0 holds 9 keys")
        );
        let other_db = Keyspace::parse("db0:keys=10,expires=3").unwrap();
        assert!(
            keys_match(&point, &other_db)
                .unwrap_err()
                .contains("db1 holds 0")
        );
        let more =
            Keyspace::parse("db0:keys=10,expires=3;db1:keys=2,expires=0;db5:keys=1,expires=0")
                .unwrap();
        assert!(keys_match(&point, &more).is_err());
    }

    #[test]
    fn the_password_travels_in_the_environment_never_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret-Pw\n").unwrap();
        let r = Redis::new(
            config("socket: /run/redis.sock\nuser: app\npassword: {file: pw}"),
            dir.path(),
        );
        let Ok(cmd) = r.cli() else {
            panic!("redis-cli is not installed (tests/services/setup.sh installs it)");
        };
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(!args.iter().any(|a| a.contains("s3cret")), "{args:?}");
        assert_eq!(
            args,
            [
                "-e",
                "--no-auth-warning",
                "-s",
                "/run/redis.sock",
                "--user",
                "app"
            ]
        );
        let env: Vec<_> = cmd
            .get_envs()
            .filter(|(k, _)| *k == "REDISCLI_AUTH")
            .collect();
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].1.unwrap(), "s3cret-Pw");
    }
}
