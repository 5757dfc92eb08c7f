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
//!
//! Here: the kind's settings and the `Source` itself. The export stream is
//! in `cluster/base_backup.rs` (with the tar reading of
//! `cluster/tar_watch.rs`), the restore's commit in `cluster/staged.rs` and
//! the replay in `cluster/replay.rs`.

mod base_backup;
mod replay;
mod staged;
mod tar_watch;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use serde::Deserialize;

use super::super::process::{self, ChildExport};
use super::super::{
    Destination, ExportInfo, ExportStream, Source, SourceError, Staged, replaced_pattern,
};
use super::{Postgres, PostgresConfig};
use crate::config::{SecretRef, resolve_relative};
use base_backup::BaseBackup;
use staged::{RestoreTools, StagedCluster};
use tar_watch::TarWatch;

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
            segment_size: parse_size(size).unwrap_or(crate::archiving::DEFAULT_SEGMENT_SIZE),
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
