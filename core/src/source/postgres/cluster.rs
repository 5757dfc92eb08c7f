//! A whole PostgreSQL cluster, physically (`kind: postgres-cluster`): base
//! backups through the replication protocol (`pg_basebackup`), restored
//! with the WAL archive to the newest instant or to a chosen one.
//!
//! A base backup is the server's tar stream, with the server's
//! `backup_manifest` inside it, passed through the same pipeline as every
//! export. Its start and stop positions come from the stream itself
//! (`backup_label`, the manifest's `WAL-Ranges`) and go into drp's manifest.
//!
//! A restore unpacks the backup beside the data directory, checks it with
//! `pg_verifybackup`, replays the archived WAL in a private server (no TCP
//! port, a socket in a private folder, `restore_command` and
//! `archive_command` set by drp, never read from the backup), waits for it
//! to promote, reads the instant reached, stops it cleanly, and only then
//! moves the data directory aside and the restored one in.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::super::process::{self, ChildExport};
use super::super::{
    CommitOptions, Committed, Destination, ExportInfo, ExportStream, Replay, ReplayFrom, Replayed,
    Source, SourceError, Staged, replaced_pattern,
};
use super::{Postgres, PostgresConfig};
use crate::config::{SecretRef, resolve_relative};
use crate::wal::{Lsn, WalRange};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// libpq connection URI or key=value string; the user needs the
    /// REPLICATION attribute (base backups) and may read settings.
    pub url: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<SecretRef>,
    /// Folder of `pg_basebackup`, `postgres`, `pg_verifybackup` and `psql`
    /// of the server's major version (Debian: `/usr/lib/postgresql/15/bin`).
    pub bin_dir: Option<PathBuf>,
    /// The cluster's data directory on this host: where a restore puts the
    /// cluster back by default, and whose `pg_wal` the agent archives from.
    pub data_directory: PathBuf,
    /// WAL files pushed at once, by the daemon and by `wal push` ahead of
    /// PostgreSQL's requests.
    #[serde(default = "default_parallel")]
    pub wal_parallel: usize,
    /// Alert when this many WAL files wait to be archived.
    #[serde(default = "default_backlog_alert")]
    pub wal_backlog_alert: usize,
}

fn default_parallel() -> usize {
    4
}

fn default_backlog_alert() -> usize {
    32
}

impl ClusterConfig {
    /// A cluster restored into the data directory `to`, for restores
    /// without a policy.
    pub fn bare(to: &str) -> ClusterConfig {
        ClusterConfig {
            url: None,
            host: None,
            port: None,
            user: None,
            password: None,
            bin_dir: None,
            data_directory: to.into(),
            wal_parallel: default_parallel(),
            wal_backlog_alert: default_backlog_alert(),
        }
    }

    fn connection(&self) -> PostgresConfig {
        PostgresConfig {
            url: self.url.clone(),
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            database: Some("postgres".into()),
            password: self.password.clone(),
            bin_dir: self.bin_dir.clone(),
            restore_jobs: None,
            no_owner: false,
            include_role_passwords: false,
        }
    }
}

pub struct Cluster {
    config: ClusterConfig,
    base_dir: PathBuf,
    pg: Postgres,
}

/// What the server says of itself before a base backup.
struct ServerFacts {
    version: String,
    system_identifier: String,
    segment_size: u64,
}

impl Cluster {
    pub fn new(config: ClusterConfig, base_dir: &Path) -> Self {
        Cluster {
            pg: Postgres::new(config.connection(), base_dir),
            base_dir: base_dir.to_path_buf(),
            config,
        }
    }

    /// The data directory, resolved against the policy's folder.
    pub fn data_directory(&self) -> PathBuf {
        resolve_relative(&self.base_dir, &self.config.data_directory)
    }

    fn facts(&self) -> Result<ServerFacts, SourceError> {
        let row = self.pg.psql(
            "postgres",
            "select current_setting('server_version') || '|' || system_identifier || '|' \
             || current_setting('archive_mode') || '|' || current_setting('wal_segment_size') || '|' \
             || current_setting('archive_command') from pg_control_system();",
            &[],
        )?;
        // The command last: it may hold a `|`, and it is never shown (it may
        // hold another tool's credentials).
        let f: Vec<&str> = row.splitn(5, '|').collect();
        let [version, sysid, mode, size, command] = f[..] else {
            return Err(SourceError::Invalid(
                "the server's settings could not be read".into(),
            ));
        };
        if mode == "off" || command.trim().is_empty() || command == "(disabled)" {
            return Err(SourceError::Invalid(
                "the server does not archive its WAL (archive_mode is off or archive_command is empty), so a base \
                 backup could not be restored: set archive_mode = on and archive_command = 'drp-agent wal push \
                 --policy FILE %p' (see docs/archiving.md), restart the server, then back up"
                    .into(),
            ));
        }
        Ok(ServerFacts {
            version: version.to_string(),
            system_identifier: sysid.to_string(),
            segment_size: parse_size(size).unwrap_or(crate::wal::DEFAULT_SEGMENT_SIZE),
        })
    }

    /// The server's archiving settings, as `drp check` judges them.
    pub fn archive_settings(&self) -> Result<ArchiveSettings, SourceError> {
        let row = self.pg.psql(
            "postgres",
            "select current_setting('archive_mode') || '|' || \
             (select setting from pg_settings where name = 'archive_timeout') || '|' || \
             current_setting('archive_command');",
            &[],
        )?;
        let mut f = row.splitn(3, '|');
        let mode = f.next().unwrap_or_default().to_string();
        let timeout = f.next().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
        let command = f.next().unwrap_or_default().to_string();
        Ok(ArchiveSettings {
            archiving: mode != "off" && command.contains(" wal push "),
            archive_timeout: Duration::from_secs(timeout),
            command,
        })
    }

    fn check_not_root() -> Result<(), SourceError> {
        // SAFETY: geteuid only reads the process's effective user id.
        if unsafe { libc::geteuid() } == 0 {
            return Err(SourceError::Invalid(
                "PostgreSQL refuses to run as root, and a physical restore replays its WAL in a private server: \
                 run the restore as the cluster's owner (e.g. `sudo -u postgres drp-agent restore …`)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// How a server archives its WAL.
#[derive(Debug, Clone)]
pub struct ArchiveSettings {
    /// `archive_mode` is on and `archive_command` is drp's `wal push`.
    pub archiving: bool,
    /// `archive_timeout`: the longest a finished transaction waits in an
    /// unfinished segment (zero: until the segment fills, however long).
    pub archive_timeout: Duration,
    pub command: String,
}

/// `16MB` (as `current_setting('wal_segment_size')` shows it) in bytes.
fn parse_size(text: &str) -> Option<u64> {
    let digits: String = text.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: u64 = digits.parse().ok()?;
    match text[digits.len()..].trim() {
        "kB" => Some(n << 10),
        "MB" => Some(n << 20),
        "GB" => Some(n << 30),
        "" => Some(n),
        _ => None,
    }
}

impl Source for Cluster {
    fn describe(&self) -> BTreeMap<String, String> {
        let mut d = self.pg.describe();
        d.remove("database");
        d.insert(
            "data_directory".into(),
            self.data_directory().display().to_string(),
        );
        d.insert(
            "format".into(),
            "tar (pg_basebackup, with the server's backup_manifest; WAL in the archive)".into(),
        );
        d
    }

    fn export(&self) -> Result<Box<dyn ExportStream>, SourceError> {
        let facts = self.facts()?;
        let pg_basebackup = self.pg.tool("pg_basebackup")?;
        let mut tools = BTreeMap::new();
        tools.insert("pg_basebackup".into(), process::version(&pg_basebackup)?);
        tools.insert("server".into(), format!("PostgreSQL {}", facts.version));
        // Every transaction committed before this instant is in the backup
        // once its WAL is replayed: a safe (never late) consistency time.
        let info = ExportInfo {
            consistency_time: Utc::now(),
            tools,
            ..ExportInfo::default()
        };
        let mut cmd = self.pg.command(&pg_basebackup)?;
        cmd.args([
            "-D",
            "-",
            "-F",
            "t",
            "-X",
            "none",
            "--checkpoint=fast",
            "--no-password",
            "--label",
            "drp base backup",
            "-d",
        ])
        .arg(self.pg.conninfo("postgres"));
        let child = ChildExport::start(&mut cmd, info, None)?;
        Ok(Box::new(BaseBackup {
            child,
            watch: TarWatch::default(),
            facts,
        }))
    }

    fn default_destination(&self) -> Destination {
        Destination::Path(self.data_directory())
    }

    fn destination(&self, text: &str) -> Destination {
        Destination::Path(PathBuf::from(text))
    }

    fn existing(&self, dest: &Destination) -> Result<Option<String>, SourceError> {
        let dir = data_dir(dest)?;
        if !dir.exists() {
            return Ok(None);
        }
        let version = std::fs::read_to_string(dir.join("PG_VERSION")).unwrap_or_default();
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| SourceError::io(format!("cannot read {}", dir.display()), e))?
            .count();
        Ok(Some(if version.trim().is_empty() {
            format!("directory {} ({entries} entries at its top)", dir.display())
        } else {
            format!(
                "PostgreSQL {} data directory {}",
                version.trim(),
                dir.display()
            )
        }))
    }

    fn kept_as(&self, dest: &Destination) -> String {
        match dest {
            Destination::Path(p) => format!(
                "the replaced data directory is kept, moved to `{}`",
                replaced_pattern(p)
            ),
            Destination::Database(_) => String::new(),
        }
    }

    fn run_sql(
        &self,
        database: Option<&str>,
        sql: &str,
        read_only: bool,
    ) -> Result<Vec<Vec<String>>, SourceError> {
        self.pg
            .run_sql(Some(database.unwrap_or("postgres")), sql, read_only)
    }

    fn check_tools(&self) -> Result<Vec<String>, SourceError> {
        ["pg_basebackup", "postgres", "pg_verifybackup", "psql"]
            .iter()
            .map(|t| process::version(&self.pg.tool(t)?))
            .collect()
    }

    fn stage(
        &self,
        raw: &mut dyn Read,
        dest: &Destination,
        _workdir: &Path,
    ) -> Result<Box<dyn Staged>, SourceError> {
        Cluster::check_not_root()?;
        let dir = data_dir(dest)?;
        refuse_running(&dir)?;
        let tools = RestoreTools {
            postgres: self.pg.tool("postgres")?,
            verify: self.pg.tool("pg_verifybackup")?,
        };
        let staging = super::super::directory::staging_beside(&dir)?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(staging.path(), std::fs::Permissions::from_mode(0o700))
                .map_err(|e| SourceError::io("cannot protect the staging folder", e))?;
        }
        let mut archive = tar::Archive::new(&mut *raw);
        archive.set_preserve_permissions(true);
        archive
            .unpack(staging.path())
            .map_err(|e| SourceError::io("cannot unpack the base backup", e))?;
        // The digests cover the whole stream, padding included.
        std::io::copy(raw, &mut std::io::sink())
            .map_err(|e| SourceError::io("cannot receive the base backup", e))?;
        Ok(Box::new(StagedCluster {
            staging,
            dest: dir,
            tools,
            user: self.config.user.clone(),
        }))
    }
}

fn data_dir(dest: &Destination) -> Result<PathBuf, SourceError> {
    match dest {
        Destination::Path(p) => Ok(p.clone()),
        Destination::Database(_) => Err(SourceError::Invalid(
            "a postgres-cluster export restores into a data directory".into(),
        )),
    }
}

/// Refuses a data directory a live server runs on: its files are never
/// replaced under it.
fn refuse_running(dir: &Path) -> Result<(), SourceError> {
    let Ok(pidfile) = std::fs::read_to_string(dir.join("postmaster.pid")) else {
        return Ok(());
    };
    let pid: i32 = pidfile
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    // SAFETY: signal 0 only asks whether the process exists.
    if pid > 0 && unsafe { libc::kill(pid, 0) } == 0 {
        return Err(SourceError::Invalid(format!(
            "a PostgreSQL server (pid {pid}) is running on {}: stop it first; drp never replaces a running \
             cluster's files",
            dir.display()
        )));
    }
    Ok(())
}

/// A base backup's stream, watched for its `backup_label` and
/// `backup_manifest` on the way through.
struct BaseBackup {
    child: ChildExport,
    watch: TarWatch,
    facts: ServerFacts,
}

impl Read for BaseBackup {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.child.read(buf)?;
        self.watch.feed(&buf[..n]);
        Ok(n)
    }
}

impl ExportStream for BaseBackup {
    fn finish(self: Box<Self>) -> Result<ExportInfo, SourceError> {
        let this = *self;
        let mut info = Box::new(this.child).finish()?;
        let label = this
            .watch
            .file("backup_label")
            .ok_or_else(|| SourceError::Invalid("the base backup holds no backup_label".into()))?;
        let manifest = this.watch.file("backup_manifest").ok_or_else(|| {
            SourceError::Invalid("the base backup holds no backup_manifest".into())
        })?;
        check_manifest_checksum(manifest)?;
        let (timeline, start_lsn, stop_lsn) = wal_range(manifest)?;
        let label = String::from_utf8_lossy(label);
        let label_start = label
            .lines()
            .find_map(|l| l.strip_prefix("START WAL LOCATION: "))
            .and_then(|l| Lsn::parse(l.split_whitespace().next()?));
        if label_start != Some(start_lsn) {
            return Err(SourceError::Invalid(format!(
                "the base backup's backup_label and backup_manifest disagree on its start ({label_start:?} vs {start_lsn})"
            )));
        }
        info.wal = Some(WalRange {
            timeline,
            start_lsn,
            stop_lsn,
            system_identifier: this.facts.system_identifier,
            segment_size: this.facts.segment_size,
            consistent_after: Utc::now(),
        });
        Ok(info)
    }
}

/// Checks the manifest's own SHA-256 (its last line): the server's record
/// of every file's size and checksum arrived whole.
fn check_manifest_checksum(manifest: &[u8]) -> Result<(), SourceError> {
    use sha2::{Digest as _, Sha256};
    let text = String::from_utf8_lossy(manifest);
    let key = "\"Manifest-Checksum\": \"";
    let at = text
        .rfind(key)
        .ok_or_else(|| SourceError::Invalid("the backup_manifest has no checksum".into()))?;
    let covered = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let expected: String = text[at + key.len()..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    let actual = hex::encode(Sha256::digest(&manifest[..covered]));
    if actual != expected {
        return Err(SourceError::Invalid(format!(
            "the backup_manifest's checksum does not match its content ({actual} vs {expected})"
        )));
    }
    Ok(())
}

/// The timeline and start and stop positions in a backup manifest's
/// `WAL-Ranges` (a backup taken on a primary has exactly one).
fn wal_range(manifest: &[u8]) -> Result<(u32, Lsn, Lsn), SourceError> {
    #[derive(Deserialize)]
    struct Range {
        #[serde(rename = "Timeline")]
        timeline: u32,
        #[serde(rename = "Start-LSN")]
        start: String,
        #[serde(rename = "End-LSN")]
        end: String,
    }
    #[derive(Deserialize)]
    struct Manifest {
        #[serde(rename = "WAL-Ranges")]
        ranges: Vec<Range>,
    }
    let m: Manifest = serde_json::from_slice(manifest)
        .map_err(|e| SourceError::Invalid(format!("the backup_manifest cannot be read: {e}")))?;
    let [r] = &m.ranges[..] else {
        return Err(SourceError::Invalid(format!(
            "the backup spans {} timelines; drp takes base backups from a primary",
            m.ranges.len()
        )));
    };
    let lsn = |t: &str| {
        Lsn::parse(t)
            .ok_or_else(|| SourceError::Invalid(format!("invalid LSN `{t}` in the manifest")))
    };
    Ok((r.timeline, lsn(&r.start)?, lsn(&r.end)?))
}

/// Follows a tar stream block by block and keeps the content of a few
/// small top-level files. It never changes the bytes.
#[derive(Default)]
struct TarWatch {
    header: Vec<u8>,
    /// Bytes left in the current entry (data and padding).
    skip: u64,
    /// The entry being kept: its name, its size and what arrived of it.
    keeping: Option<(String, u64, Vec<u8>)>,
    kept: BTreeMap<String, Vec<u8>>,
    ended: bool,
}

/// Files kept, and the most of each kept (a manifest lists every file).
const WATCHED: [&str; 2] = ["backup_label", "backup_manifest"];
const WATCH_LIMIT: u64 = 256 << 20;

impl TarWatch {
    fn file(&self, name: &str) -> Option<&[u8]> {
        self.kept.get(name).map(Vec::as_slice)
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.ended {
            if self.skip > 0 {
                let n = (self.skip as usize).min(bytes.len());
                if let Some((_, size, data)) = &mut self.keeping {
                    let want = (*size as usize).saturating_sub(data.len()).min(n);
                    data.extend_from_slice(&bytes[..want]);
                    if data.len() as u64 == *size {
                        let (name, _, data) = self.keeping.take().expect("kept entry");
                        self.kept.insert(name, data);
                    }
                }
                self.skip -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let n = (512 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() < 512 {
                continue;
            }
            let header = std::mem::take(&mut self.header);
            if header.iter().all(|&b| b == 0) {
                self.ended = true;
                break;
            }
            let size = octal(&header[124..136]);
            let name = cstr(&header[..100]);
            let name = name.trim_start_matches("./");
            self.skip = size.div_ceil(512) * 512;
            if header[156] != b'L'
                && header[156] != b'x'
                && WATCHED.contains(&name)
                && size <= WATCH_LIMIT
            {
                if size == 0 {
                    self.kept.insert(name.to_string(), Vec::new());
                } else {
                    self.keeping =
                        Some((name.to_string(), size, Vec::with_capacity(size as usize)));
                }
            }
        }
    }
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn octal(field: &[u8]) -> u64 {
    // GNU base-256 for sizes over 8 GiB: high bit of the first byte.
    if field[0] & 0x80 != 0 {
        return field[1..].iter().fold(0u64, |n, &b| (n << 8) | b as u64);
    }
    let text = cstr(field);
    u64::from_str_radix(text.trim(), 8).unwrap_or(0)
}

struct RestoreTools {
    postgres: PathBuf,
    verify: PathBuf,
}

struct StagedCluster {
    staging: tempfile::TempDir,
    dest: PathBuf,
    tools: RestoreTools,
    user: Option<String>,
}

/// How long a replaying server is given to shut down cleanly.
const STOP_WAIT: Duration = Duration::from_secs(120);

impl Staged for StagedCluster {
    fn commit(self: Box<Self>, options: &CommitOptions) -> Result<Committed, SourceError> {
        let Some(Replay {
            target,
            inclusive,
            from:
                ReplayFrom::Archive {
                    restore_command,
                    archive_command,
                    archive_ends_at,
                    segment_size,
                    timeline,
                },
        }) = &options.replay
        else {
            return Err(SourceError::Invalid(
                "a base backup is restored with its WAL archive; no replay was given".into(),
            ));
        };
        let dir = self.staging.path();
        let mut verify = Command::new(&self.tools.verify);
        verify.args(["--no-parse-wal", "--quiet"]).arg(dir);
        process::run_cancellable(&mut verify, process::Input::Bytes(&[]), &options.cancel)
            .map_err(|e| {
                SourceError::Invalid(format!(
                    "the base backup does not match its backup_manifest: {e}"
                ))
            })?;
        std::fs::write(dir.join("recovery.signal"), b"")
            .map_err(|e| SourceError::io("cannot write recovery.signal", e))?;
        let replay = |stop: &Stop| {
            replay_in_private_server(
                dir,
                &self.tools.postgres,
                self.user.as_deref(),
                Recovery {
                    stop,
                    timeline: *timeline,
                    restore_command,
                    archive_command: archive_command.as_deref(),
                },
                options,
            )
        };
        let first = match target {
            Some(t) => Stop::Time(*t, *inclusive),
            None => Stop::End,
        };
        let (replayed, to_the_end, ended_in) = match replay(&first)? {
            Replayal::Promoted(r, ended_in) => (r, target.is_none(), ended_in),
            // PostgreSQL stops short of a target time when no transaction
            // committed after it in the archived WAL: every change it
            // replayed is then before the target. The same server resumes and
            // stops exactly where that replay ended, never further (files
            // archived meanwhile may hold changes after the target).
            Replayal::TargetNotReached(Some(end)) => {
                tracing::info!(
                    "no transaction in the archived WAL committed after the target: stopping at {end}"
                );
                match replay(&Stop::Lsn(end))? {
                    Replayal::Promoted(r, ended_in) => (r, false, ended_in),
                    Replayal::TargetNotReached(_) => {
                        return Err(SourceError::Invalid(
                            "the replay could not stop where the archived WAL ends; the data directory was not \
                             touched: restore to an earlier time"
                                .into(),
                        ));
                    }
                }
            }
            Replayal::TargetNotReached(None) => {
                return Err(SourceError::Invalid(
                    "the replay ended before its target and the server did not say where; the data directory \
                     was not touched: restore to an earlier time"
                        .into(),
                ));
            }
        };
        if to_the_end {
            check_replayed_to_the_end(&ended_in, archive_ends_at.as_deref(), *segment_size)?;
        }
        options.cancel.check()?;
        refuse_running(&self.dest)?;
        let mut committed = super::super::directory::swap_in(
            &self.staging.keep(),
            &self.dest,
            options.drop_replaced,
        )?;
        committed.replayed = Some(replayed);
        Ok(committed)
    }
}

/// Starts `postgres` on `dir` with no TCP port and a socket in a private
/// folder, waits for recovery to end (promotion), reads where it ended,
/// and stops the server cleanly; or tells that recovery ended, unpromoted,
/// before reaching `target`.
fn replay_in_private_server(
    dir: &Path,
    postgres: &Path,
    user: Option<&str>,
    recovery: Recovery<'_>,
    options: &CommitOptions,
) -> Result<Replayal, SourceError> {
    let sockets = tempfile::Builder::new()
        .prefix("drp-pg-")
        .tempdir()
        .map_err(|e| SourceError::io("cannot create a socket folder", e))?;
    let log_path = sockets.path().join("server.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| SourceError::io("cannot create the server log", e))?;
    let mut cmd = Command::new(postgres);
    cmd.arg("-D").arg(dir);
    let Recovery {
        stop,
        timeline,
        restore_command,
        archive_command,
    } = recovery;
    // Only what drp decides runs: the backup's own settings that run
    // commands, load code, connect out or stop the recovery elsewhere are
    // overridden (they come back with the data directory, for its owner to
    // start it with).
    let hba = sockets.path().join("pg_hba.conf");
    std::fs::write(&hba, "local all all trust\n")
        .map_err(|e| SourceError::io("cannot write the private server's pg_hba.conf", e))?;
    let mut settings: Vec<(&str, String)> = vec![
        ("listen_addresses", String::new()),
        (
            "unix_socket_directories",
            sockets.path().to_string_lossy().into_owned(),
        ),
        ("port", "5432".into()),
        ("hba_file", hba.to_string_lossy().into_owned()),
        ("restore_command", restore_command.to_string()),
        (
            "recovery_target_timeline",
            if timeline > 0 {
                timeline.to_string()
            } else {
                "latest".into()
            },
        ),
        ("recovery_target_action", "promote".into()),
        ("recovery_end_command", String::new()),
        ("archive_cleanup_command", String::new()),
        ("archive_library", String::new()),
        ("shared_preload_libraries", String::new()),
        ("session_preload_libraries", String::new()),
        ("local_preload_libraries", String::new()),
        ("max_logical_replication_workers", "0".into()),
        ("primary_conninfo", String::new()),
        ("hot_standby", "off".into()),
        ("logging_collector", "off".into()),
        ("log_destination", "stderr".into()),
        ("recovery_target", String::new()),
        ("recovery_target_name", String::new()),
        ("recovery_target_xid", String::new()),
        ("recovery_target_lsn", String::new()),
        ("recovery_target_time", String::new()),
    ];
    match archive_command {
        Some(c) => {
            settings.push(("archive_mode", "on".into()));
            settings.push(("archive_command", c.to_string()));
        }
        None => settings.push(("archive_mode", "off".into())),
    }
    match stop {
        Stop::Time(t, inclusive) => {
            // A numeric UTC offset: the server's own zone never enters into it.
            settings.push((
                "recovery_target_time",
                t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(),
            ));
            settings.push((
                "recovery_target_inclusive",
                if *inclusive { "on" } else { "off" }.into(),
            ));
        }
        Stop::Lsn(lsn) => {
            settings.push(("recovery_target_lsn", lsn.clone()));
            settings.push(("recovery_target_inclusive", "on".into()));
        }
        Stop::End => {}
    }
    // Later `-c` of the same name wins: the targets set above replace the
    // blanks.
    let postgresql_conf = dir.join("postgresql.conf");
    let minimal = sockets.path().join("postgresql.conf");
    if !postgresql_conf.exists() {
        // Debian keeps the configuration in /etc: the copy gets a minimal one.
        std::fs::write(&minimal, "")
            .map_err(|e| SourceError::io("cannot write the private server's configuration", e))?;
        settings.push(("config_file", minimal.to_string_lossy().into_owned()));
    }
    // Each `-c name=value` is one argument, taken literally: no quoting.
    for (k, v) in &settings {
        cmd.arg("-c").arg(format!("{k}={v}"));
    }
    {
        use std::os::unix::process::CommandExt as _;
        cmd.process_group(0);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(
            log.try_clone().map_err(|e| SourceError::io("log", e))?,
        ))
        .stderr(Stdio::from(log));
    let child = cmd
        .spawn()
        .map_err(|e| SourceError::io(format!("cannot start {}", postgres.display()), e))?;
    let mut server = PrivateServer {
        child: Some(child),
        log: log_path,
    };
    let psql = postgres.with_file_name("psql");
    let query = |sql: &str| -> Result<String, SourceError> {
        let mut q = Command::new(&psql);
        q.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(sockets.path())
            .args(["-p", "5432", "-d", "postgres"]);
        if let Some(u) = user {
            q.args(["-U", u]);
        }
        process::run(&mut q, Some(sql.as_bytes())).map(|s| s.trim().to_string())
    };
    let started = Instant::now();
    loop {
        options.cancel.check()?;
        if let Some(status) = server.exited() {
            if !matches!(stop, Stop::End) && server.log_contains(TARGET_NOT_REACHED) {
                return Ok(Replayal::TargetNotReached(server.redo_done_at()));
            }
            return Err(SourceError::Invalid(format!(
                "the replay stopped ({status}) and the data directory was not touched: {}",
                server.log_tail()
            )));
        }
        if query("select pg_is_in_recovery();").ok().as_deref() == Some("f") {
            break;
        }
        let waited = started.elapsed();
        std::thread::sleep(if waited < Duration::from_secs(5) {
            Duration::from_millis(100)
        } else {
            Duration::from_millis(500)
        });
    }
    let row = query(
        "select coalesce(extract(epoch from pg_last_xact_replay_timestamp())::text, '') || '|' \
         || pg_walfile_name(pg_current_wal_lsn()) || '|' || (select count(*) from pg_database);",
    )?;
    let fields: Vec<&str> = row.split('|').collect();
    let reached = fields
        .first()
        .and_then(|t| t.parse::<f64>().ok())
        .and_then(|s| DateTime::from_timestamp_micros((s * 1e6) as i64));
    let ended_in = fields.get(1).map(|f| f.to_string()).unwrap_or_default();
    let timeline = ended_in
        .get(..8)
        .and_then(|t| u32::from_str_radix(t, 16).ok())
        .unwrap_or(0);
    if archive_command.is_none() {
        // A copy elsewhere keeps the original's archive_command in its
        // configuration: started as it is, it would archive its new
        // timeline into the original's export. Its archiving is turned off
        // (in its postgresql.auto.conf) until it is given a policy of its own.
        query("alter system set archive_mode = 'off';")?;
    }
    server.stop()?;
    Ok(Replayal::Promoted(Replayed { reached, timeline }, ended_in))
}

/// Where a replay stops.
enum Stop {
    /// At an instant; whether a commit exactly then is replayed.
    Time(DateTime<Utc>, bool),
    /// At a WAL position, included.
    Lsn(String),
    /// At the end of the archive.
    End,
}

/// How the private server recovers.
struct Recovery<'a> {
    stop: &'a Stop,
    /// `recovery_target_timeline` (0: the latest).
    timeline: u32,
    restore_command: &'a str,
    archive_command: Option<&'a str>,
}

/// How a replay in the private server ended.
enum Replayal {
    /// Promoted; with the WAL file it continues in.
    Promoted(Replayed, String),
    /// The server stopped at the end of the archived WAL without meeting a
    /// transaction committed after the target time (PostgreSQL 13 and later
    /// refuse to promote then).
    TargetNotReached(Option<String>),
}

/// A replay to the end of the archive must end in the last file of the
/// unbroken run the plan saw (or later): ending earlier means a file of it
/// went missing or could not be read after the plan, and the restore would
/// silently lose what follows.
fn check_replayed_to_the_end(
    ended_in: &str,
    archive_ends_at: Option<&str>,
    size: u64,
) -> Result<(), SourceError> {
    let size = if size == 0 {
        crate::wal::DEFAULT_SEGMENT_SIZE
    } else {
        size
    };
    let segno = |name: &str| crate::wal::WalFile::parse(name).and_then(|f| f.segno(size));
    if let (Some(ended), Some(end)) = (segno(ended_in), archive_ends_at.and_then(segno))
        && ended + 1 < end
    {
        return Err(SourceError::Invalid(format!(
            "the replay ended in {ended_in}, before the end of the archive the plan saw ({} is the first file \
             missing): a WAL file went missing or could not be read meanwhile; the data directory was not touched",
            archive_ends_at.unwrap_or_default()
        )));
    }
    Ok(())
}

/// What PostgreSQL logs, as FATAL, when recovery ends before its target.
const TARGET_NOT_REACHED: &str = "recovery ended before configured recovery target was reached";

/// The replaying server; dropped before it stopped, it is killed.
struct PrivateServer {
    child: Option<Child>,
    log: PathBuf,
}

impl PrivateServer {
    fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status.to_string())
            }
            _ => None,
        }
    }

    fn log_contains(&self, text: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|log| log.contains(text))
    }

    /// The position where redo ended, as the server logged it
    /// (`redo done at 0/3000148`).
    fn redo_done_at(&self) -> Option<String> {
        let log = std::fs::read_to_string(&self.log).ok()?;
        let at = log.rfind("redo done at ")?;
        let lsn = log[at + "redo done at ".len()..]
            .split_whitespace()
            .next()?;
        crate::wal::Lsn::parse(lsn).map(|l| l.to_string())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("FATAL") || l.contains("ERROR") || l.contains("PANIC"))
            .collect();
        let tail = if lines.is_empty() {
            text.lines().rev().take(3).collect::<Vec<_>>().join(" / ")
        } else {
            lines[lines.len().saturating_sub(3)..].join(" / ")
        };
        tail.trim().to_string()
    }

    /// Fast shutdown (SIGINT), which ends with a checkpoint: the data
    /// directory is then clean.
    fn stop(&mut self) -> Result<(), SourceError> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        // SAFETY: signals the server we started, by its pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGINT);
        }
        let deadline = Instant::now() + STOP_WAIT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => {
                    self.child = None;
                    return Ok(());
                }
                Ok(Some(status)) => {
                    self.child = None;
                    return Err(SourceError::Invalid(format!(
                        "the replayed server did not stop cleanly ({status}): {}",
                        self.log_tail()
                    )));
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => {
                    return Err(SourceError::Invalid(format!(
                        "the replayed server did not stop within {}s",
                        STOP_WAIT.as_secs()
                    )));
                }
            }
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kills the process group of the server we started.
            unsafe {
                libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_keeps_the_label_and_manifest_whatever_the_read_sizes() {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, body) in [
            (
                "backup_label",
                &b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"[..],
            ),
            ("base/1/1259", &vec![7u8; 9000][..]),
            ("backup_manifest", &b"{\"x\": 1}\n"[..]),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(body.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            tar.append_data(&mut h, name, body).unwrap();
        }
        let bytes = tar.into_inner().unwrap();
        for step in [1, 7, 512, 4096, bytes.len()] {
            let mut w = TarWatch::default();
            for chunk in bytes.chunks(step) {
                w.feed(chunk);
            }
            assert!(w.file("backup_label").unwrap().starts_with(b"START WAL"));
            assert_eq!(w.file("backup_manifest").unwrap(), b"{\"x\": 1}\n");
            assert!(w.file("base/1/1259").is_none());
        }
    }

    #[test]
    fn a_replay_to_the_end_that_stops_before_the_planned_end_is_refused() {
        let end = Some("000000010000000000000009");
        let size = crate::wal::DEFAULT_SEGMENT_SIZE;
        check_replayed_to_the_end("000000020000000000000008", end, size).unwrap();
        check_replayed_to_the_end("000000020000000000000009", end, size).unwrap();
        let early = check_replayed_to_the_end("000000020000000000000005", end, size).unwrap_err();
        assert!(early.to_string().contains("went missing"), "{early}");
        // 64 MiB segments: the last of log 0 is followed by the first of log 1.
        check_replayed_to_the_end(
            "00000001000000000000003F",
            Some("000000010000000100000000"),
            64 << 20,
        )
        .unwrap();
        assert!(early.to_string().contains("went missing"), "{early}");
    }

    #[test]
    fn a_manifest_is_checked_against_its_own_checksum() {
        let body = "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n";
        use sha2::{Digest as _, Sha256};
        let sum = hex::encode(Sha256::digest(body.as_bytes()));
        let good = format!("{body}\"Manifest-Checksum\": \"{sum}\"}}\n");
        check_manifest_checksum(good.as_bytes()).unwrap();
        assert_eq!(
            wal_range(good.as_bytes()).unwrap(),
            (
                1,
                Lsn::parse("0/2000028").unwrap(),
                Lsn::parse("0/2000100").unwrap()
            )
        );
        let bad = good.replace("0/2000100", "0/2000108");
        assert!(check_manifest_checksum(bad.as_bytes()).is_err());
        assert_eq!(parse_size("16MB"), Some(16 << 20));
    }
}
