//! The throwaway instance a restore test restores into: a private folder
//! that names the process it belongs to (a later test removes it, and
//! stops its server, when that process was killed), and in it a scratch
//! file or folder, or a private PostgreSQL or MariaDB server.

use std::path::Path;
use std::time::Instant;

use crate::config::SourceConfig;
use crate::source;
use crate::{Error, Result};

/// A private folder for the instance and the staged data, removed with it.
/// It names the process it belongs to, so that the next test removes it
/// (and stops its server) if that process was killed.
pub(super) struct Scratch(tempfile::TempDir);

const SCRATCH_PREFIX: &str = "drp-restore-test-";
const OWNER_FILE: &str = "owner.pid";

impl Scratch {
    pub(super) fn new() -> Result<Scratch> {
        sweep();
        let dir = tempfile::Builder::new()
            .prefix(SCRATCH_PREFIX)
            .tempdir()
            .map_err(|e| Error::io("cannot create the restore test's folder", e))?;
        std::fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())
            .map_err(|e| Error::io("cannot write the restore test's owner", e))?;
        Ok(Scratch(dir))
    }

    pub(super) fn path(&self) -> &Path {
        self.0.path()
    }
}

/// Removes the scratch folders of restore tests whose process is gone (a
/// test killed midway), stopping the private server left running in one.
fn sweep() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(SCRATCH_PREFIX) {
            continue;
        }
        let dir = e.path();
        let owner = std::fs::read_to_string(dir.join(OWNER_FILE))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok());
        match owner {
            Some(pid) if alive(pid) => continue,
            // Being created this very moment by another test.
            None if !dir.join("data").exists() => continue,
            _ => {}
        }
        stop_left_over(&dir.join("data"));
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => tracing::warn!("removed {} (a restore test killed midway)", dir.display()),
            Err(err) => tracing::warn!("cannot remove {}: {err}", dir.display()),
        }
    }
}

/// Stops the server a killed restore test left running on `data`: the
/// process its pid file names (PostgreSQL's postmaster gets an immediate
/// shutdown first), killed if still there after 10 seconds.
fn stop_left_over(data: &Path) {
    for (file, first) in [
        ("postmaster.pid", libc::SIGQUIT),
        (crate::source::mysql_scratch::PID_FILE, libc::SIGKILL),
        (crate::source::redis_scratch::PID_FILE, libc::SIGKILL),
    ] {
        let Some(pid) = std::fs::read_to_string(data.join(file))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok())
            .filter(|p| *p > 0)
        else {
            continue;
        };
        // SAFETY: signals the server that this data folder names.
        unsafe { libc::kill(pid, first) };
        let started = Instant::now();
        while alive(pid) {
            if started.elapsed() > std::time::Duration::from_secs(10) {
                // SAFETY: the server, still running after its shutdown.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

/// The throwaway copy a point is restored into, and the private server
/// holding it (stopped when dropped).
pub(super) struct Instance {
    pub(super) checked: Checked,
    _server: Option<Box<dyn std::any::Any + Send>>,
}

/// What the restore and the checks need of an instance: the source's
/// settings pointed at it, and what a restore's `--to` is.
#[derive(Clone)]
pub(super) struct Checked {
    pub(super) kind: SourceConfig,
    pub(super) to: Option<String>,
}

impl Instance {
    pub(super) fn start(
        source: &SourceConfig,
        scratch: &Scratch,
        base_dir: &Path,
    ) -> Result<Instance> {
        let at =
            |kind, to: Option<&Path>, server: Option<Box<dyn std::any::Any + Send>>| Instance {
                checked: Checked {
                    kind,
                    to: to.map(|p| p.display().to_string()),
                },
                _server: server,
            };
        Ok(match source {
            SourceConfig::Sqlite(_) => {
                let file = scratch.path().join("restored.db");
                let kind =
                    SourceConfig::Sqlite(source::sqlite::SqliteConfig { path: file.clone() });
                at(kind, Some(&file), None)
            }
            SourceConfig::Directory(c) => {
                let mut c = c.clone();
                c.path = scratch.path().join("restored");
                let dir = c.path.clone();
                at(SourceConfig::Directory(c), Some(&dir), None)
            }
            SourceConfig::Postgres(c) => {
                let server = crate::source::postgres::scratch::ScratchPostgres::start(
                    c,
                    scratch.path(),
                    base_dir,
                )?;
                at(
                    SourceConfig::Postgres(server.config()),
                    None,
                    Some(Box::new(server)),
                )
            }
            SourceConfig::Mysql(c) => {
                let server =
                    crate::source::mysql_scratch::ScratchMariadb::start(c, scratch.path())?;
                at(
                    SourceConfig::Mysql(server.config()),
                    None,
                    Some(Box::new(server)),
                )
            }
            SourceConfig::PostgresCluster(_) => {
                unreachable!("physical base backups are restored by Tester::restore_cluster")
            }
            SourceConfig::Redis(_) => unreachable!("RDBs are restored by Tester::restore_redis"),
            SourceConfig::Command(_) => {
                unreachable!("a command source's points are read by Tester::verify_command")
            }
        })
    }
}
