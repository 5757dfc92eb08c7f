//! A MariaDB server's binary logs: listed, closed and fetched for the
//! archive, and replayed into a staged copy (after `replay_guard.rs` read
//! every statement) for a point-in-time restore.

use std::path::Path;
use std::process::Command;

use chrono::Utc;

use super::Mysql;
use super::replay_guard::refuse_unsafe_statements;
use crate::source::process;
use crate::source::{BinlogReplay, CommitOptions, SourceError};

impl Mysql {
    /// The server's binary logs and their sizes, oldest first, with the one
    /// being written last. An error when binary logging is off.
    pub fn binary_logs(&self) -> Result<Vec<(String, u64)>, SourceError> {
        let out = self.query(None, "show binary logs;").map_err(|e| {
            SourceError::Invalid(format!(
                "the server's binary logs cannot be listed (is `log_bin` on? start mariadbd with --log-bin \
                 --binlog-format=ROW): {e}"
            ))
        })?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                let name = f.next()?;
                let size = f.next()?.trim().parse().ok()?;
                crate::archiving::binlog::valid_name(name).then(|| (name.to_string(), size))
            })
            .collect())
    }

    /// Whether the server writes binary logs, and in which format.
    pub fn binlog_settings(&self) -> Result<(bool, String), SourceError> {
        let out = self.query(None, "select @@log_bin, @@binlog_format;")?;
        let mut f = out.split('\t');
        Ok((
            f.next() == Some("1"),
            f.next().unwrap_or_default().trim().to_string(),
        ))
    }

    /// Makes the server close its binary log and open the next one.
    pub fn flush_binary_logs(&self) -> Result<(), SourceError> {
        self.query(None, "flush binary logs;").map(|_| ())
    }

    /// Fetches the closed binary log `name` from the server (replication
    /// protocol, so it works from another host) into `dir`.
    pub fn fetch_binary_log(&self, name: &str, dir: &Path) -> Result<Vec<u8>, SourceError> {
        if !crate::archiving::binlog::valid_name(name) {
            return Err(SourceError::Invalid(format!(
                "`{name}` is not a binary log's name"
            )));
        }
        let tool = self.tool(&["mariadb-binlog", "mysqlbinlog"])?;
        let options = self.option_file()?;
        let mut cmd = self.command(&tool, &options);
        cmd.args(["--read-from-remote-server", "--raw"])
            .arg(format!("--result-file={}/", dir.display()))
            .arg("--")
            .arg(name);
        process::run(&mut cmd, None)?;
        let path = dir.join(name);
        std::fs::read(&path)
            .map_err(|e| SourceError::io(format!("cannot read {}", path.display()), e))
    }

    /// Replays binary logs into `database` (a staged copy): the events of
    /// the exported database only, renamed, from `start` in the first file,
    /// up to (not including) the whole second `stop`.
    pub(super) fn replay_binlogs(
        &self,
        database: &str,
        replay: &BinlogReplay,
        options: &CommitOptions,
    ) -> Result<(), SourceError> {
        if replay.files.is_empty() {
            return Ok(());
        }
        let logged = &self.config.database;
        let tool = self.tool(&["mariadb-binlog", "mysqlbinlog"])?;
        let mut decode = Command::new(&tool);
        decode
            .arg("--no-defaults")
            // MariaDB filters on the name as logged, then renames.
            .arg(format!("--database={logged}"))
            .arg(format!("--rewrite-db={logged}->{database}"))
            .arg(format!("--start-position={}", replay.start_position))
            // Its times are read in the zone of its environment: UTC, always.
            .env("TZ", "UTC");
        if let Some(t) = replay.stop {
            decode.arg(format!("--stop-datetime={}", t.format("%Y-%m-%d %H:%M:%S")));
        }
        decode.arg("--").args(&replay.files);
        // The decoded statements go to a file as bytes (a latin1 or binary
        // literal is not UTF-8), never through memory as text.
        let script = tempfile::Builder::new()
            .prefix(".drp-binlog-")
            .tempfile()
            .map_err(|e| SourceError::io("cannot stage the binary-log replay", e))?;
        let out = script
            .as_file()
            .try_clone()
            .map_err(|e| SourceError::io("cannot stage the binary-log replay", e))?;
        decode
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(std::process::Stdio::piped());
        let done = decode
            .output()
            .map_err(|e| SourceError::io(format!("cannot run {}", tool.display()), e))?;
        if !done.status.success() {
            return Err(SourceError::ToolFailed {
                tool: "mariadb-binlog".into(),
                status: done.status.to_string(),
                stderr: String::from_utf8_lossy(&done.stderr).trim().to_string(),
            });
        }
        refuse_unsafe_statements(script.path(), logged)?;
        let opts = self.option_file()?;
        let mut cmd = self.client(&opts)?;
        // Replayed changes are not logged again: the server's own log (and its
        // replicas) already hold them under their original GTIDs.
        cmd.arg("--init-command=SET SESSION sql_log_bin=0")
            .arg("--binary-mode")
            .arg("--")
            .arg(database);
        process::run_with_stdin_file(&mut cmd, script.path(), &options.cancel)
    }
}

/// The time of the last event a replay of `r` applies (none when it
/// applies none).
pub(super) fn replayed_until(r: &BinlogReplay) -> Option<chrono::DateTime<Utc>> {
    let files: Vec<(Vec<u8>, u64)> = r
        .files
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            let bytes = std::fs::read(f).ok()?;
            Some((bytes, if i == 0 { r.start_position } else { 0 }))
        })
        .collect();
    crate::archiving::binlog::last_event_before(&files, r.stop)
}
