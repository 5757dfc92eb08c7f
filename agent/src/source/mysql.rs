//! MariaDB and MySQL: `mariadb-dump` (or `mysqldump`) in one consistent
//! transaction with routines, triggers and events; loaded with the client.
//!
//! Credentials go to the tools through a private option file, never argv.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::Utc;
use serde::Deserialize;

use super::process::{self, ChildExport};
use super::{Destination, ExportInfo, ExportStream, Source, SourceError, Staged, StagedFile};
use crate::config::{SecretRef, resolve_relative};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    pub host: Option<String>,
    pub port: Option<u16>,
    /// Unix socket, instead of host and port.
    pub socket: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<SecretRef>,
    pub database: String,
    /// Folder of the dump tool and client, when not on PATH.
    pub bin_dir: Option<PathBuf>,
}

pub struct Mysql {
    config: MysqlConfig,
    base_dir: PathBuf,
}

const HINT: &str = "install the MariaDB client (Debian: mariadb-client) or set `bin_dir`";

impl Mysql {
    pub fn new(config: MysqlConfig, base_dir: &Path) -> Self {
        Mysql {
            config,
            base_dir: base_dir.to_path_buf(),
        }
    }

    fn tool(&self, names: &[&str]) -> Result<PathBuf, SourceError> {
        let dir = self
            .config
            .bin_dir
            .as_ref()
            .map(|d| resolve_relative(&self.base_dir, d));
        process::find_tool(dir.as_deref(), names, HINT)
    }

    /// A private `[client]` option file with the connection settings.
    fn option_file(&self) -> Result<tempfile::NamedTempFile, SourceError> {
        let mut text = String::from("[client]\n");
        if let Some(h) = &self.config.host {
            text += &format!("host={h}\n");
        }
        if let Some(p) = self.config.port {
            text += &format!("port={p}\n");
        }
        if let Some(s) = &self.config.socket {
            text += &format!("socket={}\n", resolve_relative(&self.base_dir, s).display());
        }
        if let Some(u) = &self.config.user {
            text += &format!("user={u}\n");
        }
        if let Some(secret) = &self.config.password {
            let pw = secret
                .resolve(&self.base_dir)
                .map_err(|e| SourceError::Invalid(format!("MariaDB password: {e}")))?;
            text += &format!(
                "password=\"{}\"\n",
                pw.expose().replace('\\', "\\\\").replace('"', "\\\"")
            );
        }
        // NamedTempFile is created with mode 0600.
        let mut f = tempfile::Builder::new()
            .prefix("drp-my-")
            .tempfile()
            .map_err(|e| SourceError::io("cannot create the client option file", e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| SourceError::io("cannot write the client option file", e))?;
        Ok(f)
    }

    fn command(&self, tool: &Path, options: &tempfile::NamedTempFile) -> Command {
        let mut cmd = Command::new(tool);
        // Must be the first argument.
        cmd.arg(format!(
            "--defaults-extra-file={}",
            options.path().display()
        ));
        cmd
    }

    fn query(&self, database: Option<&str>, sql: &str) -> Result<String, SourceError> {
        let client = self.tool(&["mariadb", "mysql"])?;
        let options = self.option_file()?;
        let mut cmd = self.command(&client, &options);
        cmd.args(["--batch", "--skip-column-names"]);
        if let Some(db) = database {
            cmd.arg(db);
        }
        Ok(process::run(&mut cmd, Some(sql.as_bytes()))?
            .trim()
            .to_string())
    }
}

/// Database names are restricted so they can be quoted safely in SQL.
fn check_name(db: &str) -> Result<(), SourceError> {
    if !db.is_empty()
        && db
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '-'))
    {
        Ok(())
    } else {
        Err(SourceError::Invalid(format!(
            "database name `{db}`: use letters, digits, `_`, `$` or `-`"
        )))
    }
}

impl Source for Mysql {
    fn describe(&self) -> BTreeMap<String, String> {
        let mut d = BTreeMap::new();
        d.insert("database".into(), self.config.database.clone());
        if let Some(h) = &self.config.host {
            d.insert("host".into(), h.clone());
        }
        d.insert("format".into(), "sql".into());
        d
    }

    fn export(&self) -> Result<Box<dyn ExportStream>, SourceError> {
        check_name(&self.config.database)?;
        let server = self.query(None, "select version();")?;
        let dump = self.tool(&["mariadb-dump", "mysqldump"])?;
        let mut tools = BTreeMap::new();
        tools.insert("dump".into(), process::version(&dump)?);
        tools.insert("server".into(), server);
        // The dump's transaction starts after this instant: a safe consistency time.
        let info = ExportInfo {
            consistency_time: Utc::now(),
            tools,
        };
        let options = self.option_file()?;
        let mut cmd = self.command(&dump, &options);
        cmd.args([
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            "--default-character-set=utf8mb4",
            "--skip-dump-date",
        ])
        .arg(&self.config.database);
        Ok(Box::new(ChildExport::start(
            &mut cmd,
            info,
            Some(Box::new(options)),
        )?))
    }

    fn default_destination(&self) -> Destination {
        Destination::Database(self.config.database.clone())
    }

    fn sql(&self, database: Option<&str>, sql: &str) -> Result<Vec<Vec<String>>, SourceError> {
        let db = database.unwrap_or(&self.config.database);
        check_name(db)?;
        Ok(super::postgres::rows(&self.query(Some(db), sql)?))
    }

    fn check_tools(&self) -> Result<Vec<String>, SourceError> {
        let client = self.tool(&["mariadb", "mysql"])?;
        let dump = self.tool(&["mariadb-dump", "mysqldump"])?;
        Ok(vec![process::version(&client)?, process::version(&dump)?])
    }

    fn destination(&self, text: &str) -> Destination {
        Destination::Database(text.to_string())
    }

    fn existing(&self, dest: &Destination) -> Result<Option<String>, SourceError> {
        let Destination::Database(db) = dest else {
            return Err(SourceError::Invalid(
                "a MariaDB export restores into a database".into(),
            ));
        };
        check_name(db)?;
        let out = self.query(
            None,
            &format!(
                "select count(*), coalesce(sum(data_length + index_length), 0) from information_schema.tables where table_schema = '{db}'; \
                 select count(*) from information_schema.schemata where schema_name = '{db}';"
            ),
        )?;
        let mut lines = out.lines();
        let tables = lines
            .next()
            .unwrap_or_default()
            .split('\t')
            .map(str::to_string)
            .collect::<Vec<_>>();
        let exists = lines.next().map(str::trim) == Some("1");
        if !exists {
            return Ok(None);
        }
        let bytes: u64 = tables.get(1).and_then(|b| b.parse().ok()).unwrap_or(0);
        Ok(Some(format!(
            "MariaDB database `{db}` ({} tables, {})",
            tables.first().map(String::as_str).unwrap_or("?"),
            crate::config::units::format_bytes(bytes)
        )))
    }

    fn stage(
        &self,
        raw: &mut dyn Read,
        dest: &Destination,
        workdir: &Path,
    ) -> Result<Box<dyn Staged>, SourceError> {
        let Destination::Database(db) = dest.clone() else {
            return Err(SourceError::Invalid(
                "a MariaDB export restores into a database".into(),
            ));
        };
        check_name(&db)?;
        let file = super::stage_to_file(raw, workdir)?;
        let client = self.tool(&["mariadb", "mysql"])?;
        let this = Mysql::new(self.config.clone(), &self.base_dir);
        Ok(Box::new(StagedFile {
            file,
            load: move |path: &Path| {
                this.query(None, &format!("create database if not exists `{db}`;"))?;
                let options = this.option_file()?;
                let mut cmd = this.command(&client, &options);
                cmd.arg(&db);
                process::run_with_stdin_file(&mut cmd, path)
            },
        }))
    }
}
