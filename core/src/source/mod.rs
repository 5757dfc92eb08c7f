//! Sources: what an export reads and how a recovery point is loaded back.
//!
//! One trait, one implementation per file. Sources wrap the tools the
//! database ships (`pg_dump`, `mariadb-dump`) or a library (SQLite's online
//! backup API, tar), so their interface is blocking; callers run them on a
//! blocking thread.

pub mod command;
pub mod directory;
pub mod mysql;
pub mod mysql_scratch;
pub mod postgres;
pub mod private_server;
pub mod process;
pub mod redis;
pub mod redis_scratch;
pub mod sqlite;

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("`{tool}` was not found: {hint}")]
    ToolMissing { tool: String, hint: String },

    #[error("`{tool}` failed ({status}): {stderr}")]
    ToolFailed {
        tool: String,
        status: String,
        stderr: String,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{0}")]
    Invalid(String),

    #[error(
        "the restore was abandoned: its tools were stopped and the staged copy removed; the destination was not changed"
    )]
    Cancelled,
}

impl SourceError {
    /// A load into the copy `staged` beside database `live` failed; the copy
    /// was dropped. A cancellation stays one.
    pub fn load_failed(live: &str, staged: &str, err: SourceError) -> Self {
        match err {
            SourceError::Cancelled => err,
            e => SourceError::Invalid(format!(
                "the point did not load, so database `{live}` was not touched (the partial copy `{staged}` was dropped): {e}"
            )),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SourceError::Io {
            context: context.into(),
            source,
        }
    }
}

/// What the source knew once its stream ended, recorded in the manifest.
#[derive(Debug, Clone, Default)]
pub struct ExportInfo {
    /// The moment the data is consistent as of; never later than the truth.
    pub consistency_time: DateTime<Utc>,
    /// Tool and server versions, e.g. `pg_dump` → `pg_dump (PostgreSQL) 15.18`.
    pub tools: BTreeMap<String, String>,
    /// For a physical base backup: the WAL it needs from the archive.
    pub wal: Option<crate::archiving::WalRange>,
    /// For a MariaDB export with binary logs shipped: where a replay starts.
    pub binlog: Option<crate::archiving::binlog::BinlogStart>,
    /// For an incremental tree export: each target's snapshot, by target
    /// name, or why that target has none (it then commits nothing).
    pub incremental: BTreeMap<String, Result<crate::manifest::Incremental, String>>,
}

/// The raw byte stream of one export. Reading it to the end and calling
/// [`ExportStream::finish`] tells whether the export succeeded; dropping it
/// early abandons the export (the tool is stopped).
pub trait ExportStream: Read + Send {
    fn finish(self: Box<Self>) -> Result<ExportInfo, SourceError>;
}

/// Where a restore loads a recovery point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Database(String),
    Path(PathBuf),
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Database(name) => write!(f, "database `{name}`"),
            Destination::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// How a staged point is applied.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// Drop the data the restore replaced once it has succeeded; by default
    /// it is kept beside the destination.
    pub drop_replaced: bool,
    /// Set when the restore is abandoned (a timeout, a signal): tools are
    /// stopped and the staged copy removed, the destination left as it was.
    pub cancel: Cancel,
    /// For a physical base backup: how far to replay the archived WAL.
    pub replay: Option<Replay>,
}

/// How a restored point replays the changes archived after it, before it
/// is swapped in.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Stop at this instant; `None` replays everything archived.
    pub target: Option<DateTime<Utc>>,
    /// Whether a transaction committed exactly at `target` is replayed.
    pub inclusive: bool,
    pub from: ReplayFrom,
}

/// Where the changes a replay applies come from.
#[derive(Debug, Clone)]
pub enum ReplayFrom {
    /// PostgreSQL's WAL archive, fetched by the server itself.
    Archive {
        /// The `restore_command` the recovery runs (built by drp, never
        /// read from the repository).
        restore_command: String,
        /// The `archive_command` while it replays: drp's own push when the
        /// cluster is restored in place (its promotion's `.history` is then
        /// archived), `None` for a copy elsewhere (archiving off: a copy
        /// never writes into the original's archive).
        archive_command: Option<String>,
        /// The first WAL file the archive lacks (the plan's reach): a replay
        /// to the end must get this far, or a file went missing meanwhile.
        archive_ends_at: Option<String>,
        /// The cluster's WAL segment size.
        segment_size: u64,
        /// The timeline the plan follows (`recovery_target_timeline`).
        timeline: u32,
    },
    /// MariaDB binary logs, already fetched and verified.
    Binlogs(BinlogReplay),
    /// A warm standby: nothing is replayed before the swap; the restored
    /// data directory is set to replay the archive itself, continuously,
    /// once its server starts.
    Standby {
        /// The `restore_command` written into its settings (drp's `wal
        /// get --standby`).
        restore_command: String,
        /// Its `archive_command` once promoted; `None` turns archiving off.
        archive_command: Option<String>,
    },
}

/// Binary logs to replay into a loaded dump.
#[derive(Debug, Clone)]
pub struct BinlogReplay {
    /// The files, in order (local copies, digests checked).
    pub files: Vec<PathBuf>,
    /// Where the dump stands in the first file.
    pub start_position: u64,
    /// Events from this whole second on are not replayed.
    pub stop: Option<DateTime<Utc>>,
}

/// Where a replay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// The commit time of the last transaction replayed.
    pub reached: Option<DateTime<Utc>>,
    /// The timeline the restored cluster continues on.
    pub timeline: u32,
}

/// What applying a point did to the data it replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    /// Where the replaced data was kept (a database or path), if any was.
    pub kept: Option<String>,
    /// The replaced data, dropped on request.
    pub dropped: Option<String>,
    /// For a physical restore: where its replay ended.
    pub replayed: Option<Replayed>,
}

impl Committed {
    /// The replaced data was kept at `what`.
    pub fn kept(what: impl Into<String>) -> Self {
        Committed {
            kept: Some(what.into()),
            ..Committed::default()
        }
    }

    /// The replaced data, once at `what`, was dropped on request.
    pub fn dropped(what: impl Into<String>) -> Self {
        Committed {
            dropped: Some(what.into()),
            ..Committed::default()
        }
    }
}

/// A recovery point fully received but not yet applied. Dropping it discards
/// the staged data and leaves the destination untouched.
///
/// `commit` loads the new copy beside the live data and swaps it in only
/// once it has fully loaded; the replaced data is kept (renamed) unless
/// `drop_replaced` is set. A commit that fails leaves the destination as it
/// was.
pub trait Staged: Send {
    fn commit(self: Box<Self>, options: &CommitOptions) -> Result<Committed, SourceError>;
}

/// A flag shared between a restore and whoever may abandon it. Cloning
/// shares the flag.
#[derive(Debug, Clone, Default)]
pub struct Cancel(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// An error when cancelled, to stop between steps.
    pub fn check(&self) -> Result<(), SourceError> {
        if self.is_cancelled() {
            Err(SourceError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// The name a restore gives the data it replaces, or the copy it loads:
/// `<name>_drp_<what>_<UTC time>_<4 hex>` (two restores in one second get
/// two names), cut to `max` bytes by shortening `name`.
pub fn sibling_name(name: &str, what: &str, max: usize) -> String {
    let suffix = format!(
        "_drp_{what}_{}_{:04x}",
        Utc::now().format("%Y%m%d%H%M%S"),
        rand::random::<u16>()
    );
    let mut base = name;
    while base.len() + suffix.len() > max {
        let mut end = base.len() - 1;
        while !base.is_char_boundary(end) {
            end -= 1;
        }
        base = &base[..end];
    }
    format!("{base}{suffix}")
}

/// How a plan names what [`sibling_name`] will call the data a restore
/// replaces: its time and id are only fixed when the swap happens.
pub fn sibling_pattern(name: &str, what: &str) -> String {
    format!("{name}_drp_{what}_<time>_<id>")
}

/// Where a restore moves the file or tree it replaces:
/// `<name>.drp-replaced-<UTC time>-<4 hex>` beside `path`.
pub fn replaced_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        "{name}.drp-replaced-{}-{:04x}",
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        rand::random::<u16>()
    ))
}

/// How a plan names [`replaced_path`] of `path`.
pub fn replaced_pattern(path: &Path) -> String {
    format!("{}.drp-replaced-<time>-<id>", path.display())
}

pub trait Source: Send + Sync {
    /// Non-secret facts about the source, recorded in the manifest.
    fn describe(&self) -> BTreeMap<String, String>;

    /// Starts an export and returns its raw stream.
    fn export(&self) -> Result<Box<dyn ExportStream>, SourceError>;

    /// The destination a restore replaces when none is given: the source itself.
    fn default_destination(&self) -> Destination;

    /// Parses a destination given on the command line (`--to`).
    fn destination(&self, text: &str) -> Destination;

    /// What currently exists at the destination and would be replaced, if anything.
    fn existing(&self, dest: &Destination) -> Result<Option<String>, SourceError>;

    /// Where a restore keeps what it replaces at `dest`, for the plan.
    fn kept_as(&self, dest: &Destination) -> String;

    /// Runs SQL on the source's database (or `database` on the same server)
    /// and returns the rows, each as its columns' text. Directory sources have
    /// no SQL.
    fn sql(&self, database: Option<&str>, sql: &str) -> Result<Vec<Vec<String>>, SourceError> {
        self.run_sql(database, sql, false)
    }

    /// [`Source::sql`], in a session that cannot write when `read_only`
    /// (the database refuses any change the statement would make). What
    /// a source with SQL implements.
    fn run_sql(
        &self,
        database: Option<&str>,
        sql: &str,
        read_only: bool,
    ) -> Result<Vec<Vec<String>>, SourceError> {
        let _ = (database, sql, read_only);
        Err(SourceError::Invalid("this source has no SQL".into()))
    }

    /// Checks the tools a restore needs are installed; returns their versions.
    fn check_tools(&self) -> Result<Vec<String>, SourceError> {
        Ok(Vec::new())
    }

    /// Receives an incremental point (`raw` is its descriptor) from the
    /// restic snapshot `at` names, next to the destination, without
    /// changing it. Only incremental directory exports have such points.
    fn stage_incremental(
        &self,
        raw: &mut dyn Read,
        dest: &Destination,
        at: &directory::incremental::At,
    ) -> Result<Box<dyn Staged>, SourceError> {
        let _ = (raw, dest, at);
        Err(SourceError::Invalid(
            "this point is an incremental tree snapshot: restore it into a directory export".into(),
        ))
    }

    /// Receives the raw stream of a recovery point next to the destination,
    /// without changing it. `workdir` is private scratch space.
    fn stage(
        &self,
        raw: &mut dyn Read,
        dest: &Destination,
        workdir: &Path,
    ) -> Result<Box<dyn Staged>, SourceError>;
}

/// What an export reads. One variant per source kind, one file per kind:
/// this enum is the registry (the compiler then asks for each kind's arm in
/// the matches below).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceConfig {
    Postgres(postgres::PostgresConfig),
    /// A whole PostgreSQL cluster, physically: base backups and its WAL archive.
    #[serde(rename = "postgres-cluster", alias = "postgres_cluster")]
    PostgresCluster(postgres::cluster::ClusterConfig),
    #[serde(alias = "mariadb")]
    Mysql(mysql::MysqlConfig),
    Sqlite(sqlite::SqliteConfig),
    Directory(directory::DirectoryConfig),
    /// Any dump tool: its stdout is the point, a restore feeds its stdin.
    Command(command::CommandConfig),
    Redis(redis::RedisConfig),
}

impl SourceConfig {
    pub fn kind(&self) -> SourceKind {
        match self {
            SourceConfig::Postgres(_) => SourceKind::Postgres,
            SourceConfig::PostgresCluster(_) => SourceKind::PostgresCluster,
            SourceConfig::Mysql(_) => SourceKind::Mysql,
            SourceConfig::Sqlite(_) => SourceKind::Sqlite,
            SourceConfig::Directory(_) => SourceKind::Directory,
            SourceConfig::Command(_) => SourceKind::Command,
            SourceConfig::Redis(_) => SourceKind::Redis,
        }
    }

    /// Problems `drp check` reports in place, each as (key under the
    /// export, message): settings that parse but cannot work, and a
    /// `restore_test:` the kind cannot run (`restore_test_checks`: the
    /// number of checks of the export's restore test, if it has one).
    pub fn problems(&self, restore_test_checks: Option<usize>) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = match self {
            SourceConfig::Command(c) => c.problems(),
            SourceConfig::Redis(c) => c.problems(),
            _ => Vec::new(),
        }
        .into_iter()
        .map(|(k, m)| (format!("source.{k}"), m))
        .collect();
        let Some(checks) = restore_test_checks else {
            return out;
        };
        match self {
            SourceConfig::Command(c) if c.verify.is_none() => out.push((
                "restore_test".into(),
                "a command source is tested by its `verify` command, which it does not have: add `verify:` to the source"
                    .into(),
            )),
            SourceConfig::Command(_) | SourceConfig::Redis(_) if checks > 0 => {
                out.push((
                    "restore_test.checks".into(),
                    format!(
                        "a {} export's restore test has no SQL or files to check: {}",
                        self.kind(),
                        if let SourceConfig::Redis(_) = self {
                            "it checks the restored server's keys against the point's"
                        } else {
                            "its `verify` command is the check"
                        }
                    ),
                ))
            }
            _ => {}
        }
        out
    }

    /// Whether drp archives this source's changes continuously (WAL, binary
    /// logs): its loss is bounded by the archive, not by the export schedule.
    pub fn archives_continuously(&self) -> bool {
        match self {
            SourceConfig::PostgresCluster(_) => true,
            SourceConfig::Mysql(c) => c.binlog.is_some(),
            _ => false,
        }
    }

    /// A destination of `kind` described by `to` alone (a database name or
    /// a path) with every other setting at its default: for restores
    /// without a policy, from a bare machine.
    pub fn bare(kind: SourceKind, to: &str) -> SourceConfig {
        match kind {
            SourceKind::Postgres => SourceConfig::Postgres(postgres::PostgresConfig {
                url: None,
                host: None,
                port: None,
                user: None,
                database: Some(to.to_string()),
                password: None,
                bin_dir: None,
                restore_jobs: None,
                no_owner: false,
                include_role_passwords: false,
            }),
            SourceKind::PostgresCluster => {
                SourceConfig::PostgresCluster(postgres::cluster::ClusterConfig::bare(to))
            }
            SourceKind::Mysql => SourceConfig::Mysql(mysql::MysqlConfig {
                host: None,
                port: None,
                socket: None,
                user: None,
                password: None,
                database: to.to_string(),
                bin_dir: None,
                binlog: None,
                include_account_passwords: false,
                throwaway: false,
            }),
            SourceKind::Sqlite => SourceConfig::Sqlite(sqlite::SqliteConfig { path: to.into() }),
            SourceKind::Directory => SourceConfig::Directory(directory::DirectoryConfig {
                path: to.into(),
                ..directory::DirectoryConfig::default()
            }),
            // Without a policy there is no restore command to run: the
            // restore says so.
            SourceKind::Command => SourceConfig::Command(command::CommandConfig {
                backup: Vec::new(),
                restore: Vec::new(),
                verify: None,
                env: BTreeMap::new(),
                timeout: None,
            }),
            // The RDB written to the file `to`; no server is touched.
            SourceKind::Redis => SourceConfig::Redis(redis::RedisConfig {
                socket: None,
                host: None,
                port: None,
                user: None,
                password: None,
                stop: None,
                start: None,
                unit: None,
                dir: None,
                dbfilename: None,
                bin_dir: None,
                timeout: None,
            }),
        }
    }
}

/// The kinds of source, by the name policies and manifests give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Postgres,
    #[serde(rename = "postgres-cluster")]
    PostgresCluster,
    Mysql,
    Sqlite,
    Directory,
    Command,
    Redis,
}

impl SourceKind {
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Postgres => "postgres",
            SourceKind::PostgresCluster => "postgres-cluster",
            SourceKind::Mysql => "mysql",
            SourceKind::Sqlite => "sqlite",
            SourceKind::Directory => "directory",
            SourceKind::Command => "command",
            SourceKind::Redis => "redis",
        }
    }

    /// The kind a manifest names; `None` for one this build does not know.
    pub fn from_name(name: &str) -> Option<SourceKind> {
        use serde::Deserialize as _;
        use serde::de::IntoDeserializer as _;
        let name: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
            name.into_deserializer();
        SourceKind::deserialize(name).ok()
    }

    /// Whether it holds SQL tables (runbook `sql` steps, drill heartbeats).
    pub fn is_database(self) -> bool {
        match self {
            SourceKind::Postgres
            | SourceKind::PostgresCluster
            | SourceKind::Mysql
            | SourceKind::Sqlite => true,
            SourceKind::Directory | SourceKind::Command | SourceKind::Redis => false,
        }
    }

    /// What bounds the loss of this kind to seconds.
    pub fn continuous_archiving(self) -> &'static str {
        match self {
            SourceKind::Postgres | SourceKind::PostgresCluster => {
                "drp's continuous WAL archiving (an export of `kind: postgres-cluster` with `archive_command` and `archive_timeout` set)"
            }
            SourceKind::Mysql => {
                "drp's binary-log shipping (`binlog: {rotate_every: 5m}` on the source; the server needs `log_bin` and `binlog_format = ROW`)"
            }
            SourceKind::Sqlite => "continuous WAL replication (e.g. Litestream)",
            SourceKind::Directory => "a replicated or snapshotting filesystem",
            SourceKind::Command => "the tool's own log shipping or replication, if it has any",
            SourceKind::Redis => {
                "a Redis replica (drp's points are RDB snapshots; the server's own AOF stays on the host)"
            }
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The source an export's configuration describes.
pub fn build(config: &SourceConfig, base_dir: &Path) -> Box<dyn Source> {
    match config {
        SourceConfig::Postgres(c) => Box::new(postgres::Postgres::new(c.clone(), base_dir)),
        SourceConfig::PostgresCluster(c) => {
            Box::new(postgres::cluster::Cluster::new(c.clone(), base_dir))
        }
        SourceConfig::Mysql(c) => Box::new(mysql::Mysql::new(c.clone(), base_dir)),
        SourceConfig::Sqlite(c) => Box::new(sqlite::Sqlite::new(c.clone(), base_dir)),
        SourceConfig::Directory(c) => Box::new(directory::Directory::new(c.clone(), base_dir)),
        SourceConfig::Command(c) => Box::new(command::CommandSource::new(c.clone(), base_dir)),
        SourceConfig::Redis(c) => Box::new(redis::Redis::new(c.clone(), base_dir)),
    }
}

/// A staged file, loaded by a closure on commit (dump files for database tools).
pub struct StagedFile<F>
where
    F: FnOnce(&Path, &CommitOptions) -> Result<Committed, SourceError> + Send,
{
    pub file: tempfile::NamedTempFile,
    pub load: F,
}

impl<F> Staged for StagedFile<F>
where
    F: FnOnce(&Path, &CommitOptions) -> Result<Committed, SourceError> + Send,
{
    fn commit(self: Box<Self>, options: &CommitOptions) -> Result<Committed, SourceError> {
        let this = *self;
        (this.load)(this.file.path(), options)
    }
}

/// A new private staging file in `workdir`.
pub fn staging_file(workdir: &Path) -> Result<tempfile::NamedTempFile, SourceError> {
    tempfile::Builder::new()
        .prefix(".drp-stage-")
        .tempfile_in(workdir)
        .map_err(|e| {
            SourceError::io(
                format!("cannot create a staging file in {}", workdir.display()),
                e,
            )
        })
}

/// Copies `raw` into a new private file in `workdir`.
pub fn stage_to_file(
    raw: &mut dyn Read,
    workdir: &Path,
) -> Result<tempfile::NamedTempFile, SourceError> {
    let mut file = staging_file(workdir)?;
    // Large pieces: one write per megabyte rather than per 8 KiB.
    let mut buf = vec![0u8; 1 << 20];
    let out = file.as_file_mut();
    loop {
        let n = match raw.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SourceError::io("cannot receive the recovery point", e)),
        };
        out.write_all(&buf[..n])
            .map_err(|e| SourceError::io("cannot write the staging file", e))?;
    }
    Ok(file)
}

#[cfg(test)]
mod kind_tests {
    use super::*;

    #[test]
    fn every_kind_is_read_back_from_the_name_it_writes() {
        for to in ["shop", "/srv/app.db"] {
            for kind in [
                SourceKind::Postgres,
                SourceKind::PostgresCluster,
                SourceKind::Mysql,
                SourceKind::Sqlite,
                SourceKind::Directory,
                SourceKind::Command,
                SourceKind::Redis,
            ] {
                assert_eq!(SourceKind::from_name(kind.name()), Some(kind));
                assert_eq!(SourceConfig::bare(kind, to).kind(), kind);
            }
        }
        assert_eq!(SourceKind::from_name("oracle"), None);
    }
}
