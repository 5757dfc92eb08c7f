//! MariaDB and MySQL: `mariadb-dump` (or `mysqldump`) in one consistent
//! transaction with routines, triggers and events, behind the accounts with
//! a privilege on the database (`mysql/dump.rs`, `mysql/accounts.rs`);
//! loaded with the client after every statement was checked.
//!
//! Credentials go to the tools through a private option file, never argv.
//!
//! Here: the settings, the connection, the export and the `Source` itself.
//! A restore's receiving and loading is in `mysql/load.rs`, its swap in
//! `mysql/swap.rs`; binary logs in `mysql/binlog.rs`, checked before a
//! replay by `mysql/replay_guard.rs`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::Utc;
use serde::Deserialize;

use super::process::{self, ChildExport};
use super::{
    CommitOptions, Destination, ExportInfo, ExportStream, Replay, ReplayFrom, Replayed, Source,
    SourceError, Staged, StagedFile, sibling_pattern,
};
use crate::config::{SecretRef, resolve_relative};
use binlog::replayed_until;
use load::receive;

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
    /// Ship the server's binary logs too, for point-in-time restores: each
    /// export records its binary-log coordinates, and the agent makes the
    /// server close its log every `rotate_every` and archives it.
    #[serde(default)]
    pub binlog: Option<BinlogConfig>,
    /// Carry the accounts' password hashes in each point (the login needs
    /// to read them: `SHOW CREATE USER`). Off by default: accounts a restore
    /// creates are then locked, to be given a password.
    #[serde(default)]
    pub include_account_passwords: bool,
    /// A restore test's private server: what a restore does with accounts
    /// there is logged, not shown.
    #[serde(skip)]
    pub throwaway: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinlogConfig {
    /// How often the agent closes the binary log (`FLUSH BINARY LOGS`) to
    /// ship it: the worst-case loss, plus the time a shipment takes.
    #[serde(default = "default_rotate")]
    pub rotate_every: crate::config::units::HumanDuration,
}

fn default_rotate() -> crate::config::units::HumanDuration {
    crate::config::units::HumanDuration::parse("60s").expect("a duration")
}

mod accounts;
mod binlog;
mod dump;
mod load;
mod replay_guard;
mod sql;
mod swap;

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

    /// The client, reading SQL only: in sandbox mode it refuses its own
    /// commands (`\!`, `system`, `source`, `tee`…), so neither a dump read
    /// from a repository nor a query can run a shell or touch files here.
    fn client(&self, options: &tempfile::NamedTempFile) -> Result<Command, SourceError> {
        let client = self.tool(&["mariadb", "mysql"])?;
        let mut cmd = self.command(&client, options);
        cmd.arg("--sandbox");
        Ok(cmd)
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

    /// The accounts and roles with a privilege on the database (and the
    /// accounts holding those roles), as a point carries them.
    fn accounts(&self) -> Result<String, SourceError> {
        let db = &self.config.database;
        check_name(db)?;
        // `_` is a wildcard in a database-level grant: `shop\_x` names `shop_x`.
        let names = format!("'{db}', replace('{db}', '_', concat(char(92 using utf8mb4), '_'))");
        let out = self.query(
            None,
            &format!(
                "with a as (select user, host from mysql.db where db in ({names}) \
                   union select user, host from mysql.tables_priv where db = '{db}' \
                   union select user, host from mysql.columns_priv where db = '{db}' \
                   union select user, host from mysql.procs_priv where db = '{db}'), \
                 m as (select user, host from mysql.roles_mapping where role in (select user from a where host = '')) \
                 select hex(u.user), hex(u.host), u.is_role from mysql.user u \
                 where (u.user, u.host) in (select user, host from a union select user, host from m) \
                 order by u.is_role = 'Y' desc, u.user, u.host;"
            ),
        )?;
        let mut found = Vec::new();
        for r in super::postgres::rows(&out) {
            if let [user, host, role] = &r[..]
                && let (Some(user), Some(host)) = (unhex(user), unhex(host))
            {
                found.push(accounts::Account {
                    user,
                    host: (role != "Y").then_some(host),
                });
            }
        }
        let mut carried = Vec::new();
        for account in &found {
            let sql = match account.host {
                Some(_) => format!("show create user {0}; show grants for {0};", account.sql()),
                None => format!("show grants for {};", account.sql()),
            };
            let out = self.query(None, &sql)?;
            let mut lines = out.lines();
            let create = match account.host {
                Some(_) => lines.next(),
                None => None,
            };
            let grants: Vec<&str> = lines.collect();
            carried.extend(accounts::from_server(
                account,
                create,
                &grants,
                db,
                self.config.include_account_passwords,
            ));
        }
        Ok(accounts::write(&accounts::carried(carried), db))
    }

    fn query(&self, database: Option<&str>, sql: &str) -> Result<String, SourceError> {
        let options = self.option_file()?;
        let mut cmd = self.client(&options)?;
        cmd.args([
            "--batch",
            "--raw",
            "--skip-column-names",
            "--default-character-set=utf8mb4",
        ]);
        if let Some(db) = database {
            cmd.arg("--").arg(db);
        }
        Ok(process::run(&mut cmd, Some(sql.as_bytes()))?
            .trim()
            .to_string())
    }
}

/// A check a host runs for a coordinator: the text, given as a hex literal
/// (never parsed by the client, never quoted by hand), is prepared as one
/// statement (a second one is a syntax error) and runs in a read-only
/// transaction of a read-only session, so that even a statement that commits
/// implicitly (DDL) cannot write.
fn read_only_check(sql: &str) -> String {
    let one = sql.trim().trim_end_matches(';').trim_end();
    format!(
        "SET SESSION TRANSACTION READ ONLY;\nSTART TRANSACTION READ ONLY;\nSET @drp_check = CONVERT(X'{}' USING utf8mb4);\nPREPARE drp_check FROM @drp_check;\nEXECUTE drp_check;\nROLLBACK;\n",
        hex::encode(one)
    )
}

/// Text the server sent as `hex(…)`, when it is UTF-8.
fn unhex(h: &str) -> Option<String> {
    hex::decode(h).ok().and_then(|b| String::from_utf8(b).ok())
}

/// A dump whose first lines carry its binary-log coordinates.
struct WithCoordinates {
    child: ChildExport,
    head: Vec<u8>,
}

/// How much of a dump's start is searched for its coordinates.
const HEAD: usize = 64 * 1024;

impl Read for WithCoordinates {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.child.read(buf)?;
        let room = HEAD.saturating_sub(self.head.len()).min(n);
        self.head.extend_from_slice(&buf[..room]);
        Ok(n)
    }
}

impl ExportStream for WithCoordinates {
    fn finish(self: Box<Self>) -> Result<ExportInfo, SourceError> {
        let this = *self;
        let mut info = Box::new(this.child).finish()?;
        let start = crate::archiving::binlog::start_in_dump(&String::from_utf8_lossy(&this.head))
            .ok_or_else(|| {
                SourceError::Invalid(
                    "the dump gives no binary-log position (is `log_bin` on?): it could not be replayed forward"
                        .into(),
                )
            })?;
        info.binlog = Some(start);
        Ok(info)
    }
}

/// MariaDB's longest identifier, in characters.
const NAME_MAX: usize = 64;

/// Database names are restricted so they can be quoted safely in SQL, and
/// may not start with `-`, which the client tools would read as an option.
fn check_name(db: &str) -> Result<(), SourceError> {
    if !db.is_empty()
        && !db.starts_with('-')
        && db.len() <= NAME_MAX
        && db
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '-'))
    {
        Ok(())
    } else {
        Err(SourceError::Invalid(format!(
            "database name `{db}`: use letters, digits, `_`, `$` or `-` (not first), at most {NAME_MAX}"
        )))
    }
}

/// A name quoted as a MariaDB identifier.
fn quoted(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

impl Source for Mysql {
    fn describe(&self) -> BTreeMap<String, String> {
        let mut d = BTreeMap::new();
        d.insert("database".into(), self.config.database.clone());
        if let Some(h) = &self.config.host {
            d.insert("host".into(), h.clone());
        }
        d.insert(
            "format".into(),
            format!("{} (accounts, then mariadb-dump SQL)", dump::FRAMING_NAME),
        );
        d.insert(
            "account_passwords".into(),
            match self.config.include_account_passwords {
                true => "carried",
                false => "not carried",
            }
            .into(),
        );
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
            ..ExportInfo::default()
        };
        let accounts = self.accounts().unwrap_or_else(|e| {
            tracing::warn!(
                "the point carries no accounts: those with a privilege on `{}` cannot be read ({e})",
                self.config.database
            );
            String::new()
        });
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
        ]);
        if self.config.binlog.is_some() {
            // The binary-log position the dump's snapshot stands at, as a comment.
            cmd.args(["--master-data=2", "--gtid"]);
        }
        cmd.arg("--").arg(&self.config.database);
        let child = ChildExport::start(&mut cmd, info, Some(Box::new(options)))?;
        let dump: Box<dyn ExportStream> = match self.config.binlog {
            None => Box::new(child),
            Some(_) => Box::new(WithCoordinates {
                child,
                head: Vec::new(),
            }),
        };
        Ok(Box::new(dump::Framed::new(
            &self.config.database,
            &accounts,
            dump,
        )))
    }

    fn default_destination(&self) -> Destination {
        Destination::Database(self.config.database.clone())
    }

    fn run_sql(
        &self,
        database: Option<&str>,
        sql: &str,
        read_only: bool,
    ) -> Result<Vec<Vec<String>>, SourceError> {
        let db = database.unwrap_or(&self.config.database);
        check_name(db)?;
        let rows = match read_only {
            true => self.query(Some(db), &read_only_check(sql))?,
            false => self.query(Some(db), sql)?,
        };
        Ok(super::postgres::rows(&rows))
    }

    fn check_tools(&self) -> Result<Vec<String>, SourceError> {
        let client = self.tool(&["mariadb", "mysql"])?;
        let dump = self.tool(&["mariadb-dump", "mysqldump"])?;
        // Every load and query needs its sandbox mode (see `client`).
        let version = process::run(Command::new(&client).args(["--sandbox", "--version"]), None)
            .map_err(|_| {
                SourceError::Invalid(format!(
                    "`{}` has no --sandbox mode, so SQL read from a repository could run shell commands here: install MariaDB's client, 10.5.25, 10.6.18, 10.11.8, 11.0.6 or later (it also serves MySQL servers)",
                    client.display()
                ))
            })?;
        let version = version
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        Ok(vec![version, process::version(&dump)?])
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

    fn kept_as(&self, dest: &Destination) -> String {
        match dest {
            Destination::Database(db) => format!(
                "the replaced database is kept: its tables are moved to `{}`",
                sibling_pattern(db, "replaced")
            ),
            Destination::Path(_) => String::new(),
        }
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
        let (file, point) = receive(raw, &db, workdir)?;
        let this = Mysql::new(self.config.clone(), &self.base_dir);
        Ok(Box::new(StagedFile {
            file,
            load: move |path: &Path, options: &CommitOptions| {
                let mut committed = this.load(path, &db, options, &point)?;
                if let Some(Replay {
                    from: ReplayFrom::Binlogs(r),
                    ..
                }) = &options.replay
                {
                    committed.replayed = Some(Replayed {
                        reached: replayed_until(r),
                        timeline: 0,
                    });
                }
                Ok(committed)
            },
        }))
    }
}
