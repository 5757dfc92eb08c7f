//! SQLite: a consistent copy through the online backup API, taken in one
//! step so that writers in other processes never make it restart; restored
//! through the same API, so the replacement is atomic for other connections.
//!
//! The backup API writes into a database, so the copy is made in a private
//! temporary file that is streamed and then removed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use serde::Deserialize;

use super::{
    CommitOptions, Committed, Destination, ExportInfo, ExportStream, Source, SourceError, Staged,
    replaced_path, replaced_pattern,
};
use crate::config::resolve_relative;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// The database file; relative to the policy's folder.
    pub path: PathBuf,
}

pub struct Sqlite {
    path: PathBuf,
}

/// How long to wait for a lock held by a writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

impl Sqlite {
    pub fn new(config: SqliteConfig, base_dir: &Path) -> Self {
        Sqlite {
            path: resolve_relative(base_dir, &config.path),
        }
    }
}

fn sql_err(context: &str, path: &Path, e: rusqlite::Error) -> SourceError {
    SourceError::Invalid(format!("{context} {}: {e}", path.display()))
}

/// Copies `src` into `dst` in one backup step, waiting out busy writers.
fn copy_all(src: &Connection, dst: &mut Connection, path: &Path) -> Result<(), SourceError> {
    let backup =
        Backup::new(src, dst).map_err(|e| sql_err("cannot start the backup of", path, e))?;
    let started = Instant::now();
    loop {
        match backup.step(-1).map_err(|e| sql_err("backup of", path, e))? {
            StepResult::Done => return Ok(()),
            StepResult::Busy | StepResult::Locked if started.elapsed() < BUSY_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20))
            }
            StepResult::More => {}
            other => {
                return Err(SourceError::Invalid(format!(
                    "backup of {} gave up after {}s: database stayed {other:?}",
                    path.display(),
                    BUSY_TIMEOUT.as_secs()
                )));
            }
        }
    }
}

struct FileExport {
    file: File,
    _temp: tempfile::TempPath,
    info: ExportInfo,
}

impl Read for FileExport {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
}

impl ExportStream for FileExport {
    fn finish(self: Box<Self>) -> Result<ExportInfo, SourceError> {
        Ok(self.info)
    }
}

impl Source for Sqlite {
    fn describe(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("path".to_string(), self.path.display().to_string())])
    }

    fn export(&self) -> Result<Box<dyn ExportStream>, SourceError> {
        if !self.path.is_file() {
            return Err(SourceError::Invalid(format!(
                "SQLite database {} does not exist",
                self.path.display()
            )));
        }
        let src = Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| sql_err("cannot open", &self.path, e))?;
        src.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sql_err("cannot open", &self.path, e))?;
        let temp = tempfile::Builder::new()
            .prefix("drp-sqlite-")
            .tempfile()
            .map_err(|e| SourceError::io("cannot create a temporary file for the SQLite copy", e))?
            .into_temp_path();
        let mut dst = Connection::open(&temp).map_err(|e| sql_err("cannot create", &temp, e))?;
        // The single backup step reads under one shared lock: the copy is
        // consistent as of the moment the step starts.
        let consistency_time = Utc::now();
        copy_all(&src, &mut dst, &self.path)?;
        drop(dst);
        let file =
            File::open(&temp).map_err(|e| SourceError::io("cannot read the SQLite copy", e))?;
        Ok(Box::new(FileExport {
            file,
            _temp: temp,
            info: ExportInfo {
                consistency_time,
                tools: BTreeMap::from([(
                    "sqlite".to_string(),
                    format!("SQLite {}", rusqlite::version()),
                )]),
                ..ExportInfo::default()
            },
        }))
    }

    fn default_destination(&self) -> Destination {
        Destination::Path(self.path.clone())
    }

    /// SQL on the file (or `database`, another file); opened read-only
    /// when `read_only`.
    fn run_sql(
        &self,
        database: Option<&str>,
        sql: &str,
        read_only: bool,
    ) -> Result<Vec<Vec<String>>, SourceError> {
        let path = database
            .map(PathBuf::from)
            .unwrap_or_else(|| self.path.clone());
        let conn = if read_only {
            Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        } else {
            Connection::open(&path)
        }
        .map_err(|e| sql_err("cannot open", &path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sql_err("cannot open", &path, e))?;
        let mut out = Vec::new();
        // Runs every statement; returns the rows of the last one that has any.
        let mut batch = rusqlite::Batch::new(&conn, sql);
        while let Some(mut stmt) = fallible_iterator::FallibleIterator::next(&mut batch)
            .map_err(|e| sql_err("SQL on", &path, e))?
        {
            let n = stmt.column_count();
            let mut rows = stmt.raw_query();
            let mut these = Vec::new();
            while let Some(row) = rows.next().map_err(|e| sql_err("SQL on", &path, e))? {
                let mut cols = Vec::with_capacity(n);
                for i in 0..n {
                    let v: rusqlite::types::Value =
                        row.get(i).map_err(|e| sql_err("SQL on", &path, e))?;
                    cols.push(match v {
                        rusqlite::types::Value::Null => String::new(),
                        rusqlite::types::Value::Integer(i) => i.to_string(),
                        rusqlite::types::Value::Real(f) => f.to_string(),
                        rusqlite::types::Value::Text(t) => t,
                        rusqlite::types::Value::Blob(b) => format!("<{} bytes>", b.len()),
                    });
                }
                these.push(cols);
            }
            if n > 0 {
                out = these;
            }
        }
        Ok(out)
    }

    fn destination(&self, text: &str) -> Destination {
        Destination::Path(PathBuf::from(text))
    }

    fn existing(&self, dest: &Destination) -> Result<Option<String>, SourceError> {
        let Destination::Path(p) = dest else {
            return Err(SourceError::Invalid(
                "an SQLite export restores into a file".into(),
            ));
        };
        Ok(std::fs::metadata(p).ok().map(|m| {
            format!(
                "SQLite database {} ({})",
                p.display(),
                crate::config::units::format_bytes(m.len())
            )
        }))
    }

    fn kept_as(&self, dest: &Destination) -> String {
        match dest {
            Destination::Path(p) => format!(
                "a copy of the replaced file is kept as `{}`",
                replaced_pattern(p)
            ),
            Destination::Database(_) => String::new(),
        }
    }

    fn stage(
        &self,
        raw: &mut dyn Read,
        dest: &Destination,
        _workdir: &Path,
    ) -> Result<Box<dyn Staged>, SourceError> {
        let Destination::Path(path) = dest.clone() else {
            return Err(SourceError::Invalid(
                "an SQLite export restores into a file".into(),
            ));
        };
        // Staged next to the destination, so that a new file is renamed into place.
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| SourceError::io(format!("cannot create {}", dir.display()), e))?;
        let file = super::stage_to_file(raw, dir)?;
        Ok(Box::new(StagedSqlite { file, path }))
    }
}

struct StagedSqlite {
    file: tempfile::NamedTempFile,
    path: PathBuf,
}

impl Staged for StagedSqlite {
    fn commit(self: Box<Self>, options: &CommitOptions) -> Result<Committed, SourceError> {
        let staged = self.file.path();
        let check = Connection::open_with_flags(staged, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("pragma quick_check", [], |r| r.get::<_, String>(0)))
            .map_err(|e| sql_err("the restored copy failed its check:", staged, e))?;
        if check != "ok" {
            return Err(SourceError::Invalid(format!(
                "the restored copy failed its check: {check}"
            )));
        }
        options.cancel.check()?;
        if !self.path.exists() {
            return self
                .file
                .persist(&self.path)
                .map(|_| Committed::default())
                .map_err(|e| {
                    SourceError::io(
                        format!("cannot move the restored file to {}", self.path.display()),
                        e.error,
                    )
                });
        }
        // Keep a consistent copy of what is replaced, beside it.
        let kept = replaced_path(&self.path);
        {
            let live = Connection::open_with_flags(&self.path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|e| sql_err("cannot open", &self.path, e))?;
            live.busy_timeout(BUSY_TIMEOUT)
                .map_err(|e| sql_err("cannot open", &self.path, e))?;
            let mut copy =
                Connection::open(&kept).map_err(|e| sql_err("cannot create", &kept, e))?;
            copy_all(&live, &mut copy, &self.path)?;
        }
        // Replace the content in one step under SQLite's own locking, so
        // connections that have the file open see the old or the new data.
        let src = Connection::open_with_flags(staged, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| sql_err("cannot open", staged, e))?;
        let mut dst =
            Connection::open(&self.path).map_err(|e| sql_err("cannot open", &self.path, e))?;
        dst.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sql_err("cannot open", &self.path, e))?;
        copy_all(&src, &mut dst, &self.path)?;
        let what = kept.display().to_string();
        if options.drop_replaced {
            std::fs::remove_file(&kept)
                .map_err(|e| SourceError::io(format!("restored, but cannot remove {what}"), e))?;
            return Ok(Committed::dropped(what));
        }
        Ok(Committed::kept(what))
    }
}
