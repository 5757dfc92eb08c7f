//! The replay of a base backup's WAL in a private server (the lifecycle of
//! `private_server.rs`): no TCP port, a socket in a private folder,
//! `restore_command` and `archive_command` set by drp and never read from
//! the backup; it runs until it promotes (or ends before its target), and
//! is stopped with a fast shutdown, which leaves the data directory clean.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::source::private_server::{PrivateServer, Shutdown, Spec, Stopped};
use crate::source::process;
use crate::source::{CommitOptions, Replayed, SourceError};

/// How long a replaying server is given to shut down cleanly.
const STOP_WAIT: Duration = Duration::from_secs(120);

/// A fast shutdown (SIGINT to the server), which ends with a checkpoint:
/// the data directory is then clean.
const FAST_SHUTDOWN: Shutdown = Shutdown {
    signal: libc::SIGINT,
    whole_group: false,
    wait: STOP_WAIT,
};

/// Starts `postgres` on `dir` with no TCP port and a socket in a private
/// folder, waits for recovery to end (promotion), reads where it ended,
/// and stops the server cleanly; or tells that recovery ended, unpromoted,
/// before reaching `target`.
pub(super) fn replay_in_private_server(
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
    cmd.stdout(Stdio::from(
        log.try_clone().map_err(|e| SourceError::io("log", e))?,
    ))
    .stderr(Stdio::from(log));
    let mut server = PrivateServer::start(
        &mut cmd,
        Spec {
            what: "the replaying server",
            log: log_path,
            on_drop: None,
            cannot_start: format!("cannot start {}", postgres.display()),
        },
    )?;
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
    // No deadline: a replay takes as long as the archive it reads; a cancel
    // ends it, and so does the server's own end.
    let promoted = server.wait_until(None, |server| {
        options.cancel.check()?;
        if let Some(status) = server.exited() {
            let log = server.read_log();
            if !matches!(stop, Stop::End) && log.contains(TARGET_NOT_REACHED) {
                return Ok(Some(Recovered::Ended(Replayal::TargetNotReached(
                    redo_done_at(&log),
                ))));
            }
            return Err(SourceError::Invalid(format!(
                "the replay stopped ({status}) and the data directory was not touched: {}",
                log_tail(&log)
            )));
        }
        Ok(
            (query("select pg_is_in_recovery();").ok().as_deref() == Some("f"))
                .then_some(Recovered::Promoted),
        )
    })?;
    if let Recovered::Ended(replayal) = promoted {
        return Ok(replayal);
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
    stop_cleanly(&mut server)?;
    Ok(Replayal::Promoted(Replayed { reached, timeline }, ended_in))
}

/// Where a replay stops.
pub(super) enum Stop {
    /// At an instant; whether a commit exactly then is replayed.
    Time(DateTime<Utc>, bool),
    /// At a WAL position, included.
    Lsn(String),
    /// At the end of the archive.
    End,
}

/// How the private server recovers.
pub(super) struct Recovery<'a> {
    pub(super) stop: &'a Stop,
    /// `recovery_target_timeline` (0: the latest).
    pub(super) timeline: u32,
    pub(super) restore_command: &'a str,
    pub(super) archive_command: Option<&'a str>,
}

/// How a replay in the private server ended.
pub(super) enum Replayal {
    /// Promoted; with the WAL file it continues in.
    Promoted(Replayed, String),
    /// The server stopped at the end of the archived WAL without meeting a
    /// transaction committed after the target time (PostgreSQL 13 and later
    /// refuse to promote then).
    TargetNotReached(Option<String>),
}

/// What PostgreSQL logs, as FATAL, when recovery ends before its target.
const TARGET_NOT_REACHED: &str = "recovery ended before configured recovery target was reached";

/// How waiting for the replaying server ended.
enum Recovered {
    /// Out of recovery: promoted, running.
    Promoted,
    /// Ended without promoting.
    Ended(Replayal),
}

/// The position where redo ended, as the server logged it
/// (`redo done at 0/3000148`).
fn redo_done_at(log: &str) -> Option<String> {
    let at = log.rfind("redo done at ")?;
    let lsn = log[at + "redo done at ".len()..]
        .split_whitespace()
        .next()?;
    crate::archiving::Lsn::parse(lsn).map(|l| l.to_string())
}

/// The last errors the server logged (or its last lines).
fn log_tail(text: &str) -> String {
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

/// Stops the promoted server with a fast shutdown; it must end cleanly.
fn stop_cleanly(server: &mut PrivateServer) -> Result<(), SourceError> {
    match server.stop(FAST_SHUTDOWN) {
        Stopped::Before => Ok(()),
        Stopped::Exited(status) if status.success() => Ok(()),
        Stopped::Exited(status) => Err(SourceError::Invalid(format!(
            "the replayed server did not stop cleanly ({status}): {}",
            log_tail(&server.read_log())
        ))),
        Stopped::StillRunning => Err(SourceError::Invalid(format!(
            "the replayed server did not stop within {}s",
            STOP_WAIT.as_secs()
        ))),
    }
}
