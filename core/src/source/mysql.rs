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
use super::{
    BinlogReplay, CommitOptions, Committed, Destination, ExportInfo, ExportStream, Replay,
    ReplayFrom, Replayed, Source, SourceError, Staged, StagedFile, sibling_name, sibling_pattern,
};
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
    /// Ship the server's binary logs too, for point-in-time restores: each
    /// export records its binary-log coordinates, and the agent makes the
    /// server close its log every `rotate_every` and archives it.
    #[serde(default)]
    pub binlog: Option<BinlogConfig>,
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

    /// Loads a dump into a new database beside `live`, and only once it has
    /// fully loaded moves `live`'s objects aside (into `<live>_drp_replaced_…`)
    /// and the new ones into `live`.
    ///
    /// MariaDB cannot rename a database; tables move between databases with
    /// one atomic `RENAME TABLE`, but tables with triggers and views cannot,
    /// so triggers, views, routines and events are taken out as definitions
    /// (by `mariadb-dump`), dropped, and recreated on the other side.
    fn load(
        &self,
        dump: &Path,
        live: &str,
        options: &CommitOptions,
    ) -> Result<Committed, SourceError> {
        let staged = sibling_name(live, "restore", NAME_MAX);
        let exists = |db: &str| -> Result<bool, SourceError> {
            Ok(self.query(
                None,
                &format!(
                    "select count(*) from information_schema.schemata where schema_name = '{db}';"
                ),
            )? == "1")
        };
        let live_exists = exists(live)?;
        let charset = if live_exists {
            self.query(
                None,
                &format!(
                    "select concat('character set ', default_character_set_name, ' collate ', default_collation_name) \
                     from information_schema.schemata where schema_name = '{live}';"
                ),
            )?
        } else {
            String::new()
        };
        self.query(
            None,
            &format!("create database {} {charset};", quoted(&staged)),
        )?;
        let loaded = (|| {
            let opts = self.option_file()?;
            let mut cmd = self.client(&opts)?;
            cmd.arg("--").arg(&staged);
            process::run_with_stdin_file(&mut cmd, dump, &options.cancel)?;
            options.cancel.check()?;
            if let Some(Replay {
                from: ReplayFrom::Binlogs(replay),
                ..
            }) = &options.replay
            {
                self.replay_binlogs(&staged, replay, options)?;
            }
            options.cancel.check()
        })();
        if let Err(e) = loaded {
            let _ = self.query(
                None,
                &format!("drop database if exists {};", quoted(&staged)),
            );
            return Err(SourceError::load_failed(live, &staged, e));
        }
        if !live_exists {
            self.query(None, &format!("create database {};", quoted(live)))?;
            self.move_objects(&staged, live)?;
            self.query(None, &format!("drop database {};", quoted(&staged)))?;
            return Ok(Committed::default());
        }
        let replaced = sibling_name(live, "replaced", NAME_MAX);
        self.query(
            None,
            &format!("create database {} {charset};", quoted(&replaced)),
        )?;
        if let Err(e) = self.move_objects(live, &replaced) {
            let _ = self.query(
                None,
                &format!("drop database if exists {};", quoted(&staged)),
            );
            return Err(SourceError::Invalid(format!(
                "the point loaded, but the objects of `{live}` could not be moved aside to `{replaced}`; check both: {e}"
            )));
        }
        if let Err(e) = self.move_objects(&staged, live) {
            // Put the live objects back where they were.
            let back = self.move_objects(&replaced, live);
            return Err(SourceError::Invalid(format!(
                "the loaded copy `{staged}` could not be moved into `{live}` ({e}); {}",
                match back {
                    Ok(()) => format!("`{live}` was put back as it was"),
                    Err(b) => format!(
                        "putting `{live}` back failed too ({b}): its objects are in `{replaced}`"
                    ),
                }
            )));
        }
        self.query(None, &format!("drop database {};", quoted(&staged)))?;
        if options.drop_replaced {
            self.query(None, &format!("drop database {};", quoted(&replaced)))?;
            return Ok(Committed::dropped(format!("database `{replaced}`")));
        }
        Ok(Committed::kept(format!("database `{replaced}`")))
    }

    /// Moves every table of `from` into `to` in one atomic `RENAME TABLE`,
    /// with its triggers, and recreates `from`'s views, routines and events
    /// in `to`. On failure before the tables moved, `from` is left as it was.
    fn move_objects(&self, from: &str, to: &str) -> Result<(), SourceError> {
        let list = |sql: String| -> Result<Vec<Vec<String>>, SourceError> {
            Ok(super::postgres::rows(&self.query(None, &sql)?))
        };
        let tables = list(format!(
            "select table_name from information_schema.tables where table_schema = '{from}' and table_type in ('BASE TABLE', 'SEQUENCE', 'SYSTEM VERSIONED') order by table_name;"
        ))?;
        let views = list(format!(
            "select table_name from information_schema.views where table_schema = '{from}' order by table_name;"
        ))?;
        let dump = self.tool(&["mariadb-dump", "mysqldump"])?;
        let opts = self.option_file()?;
        let definitions = |args: &[&str], names: &[String]| -> Result<String, SourceError> {
            let mut cmd = self.command(&dump, &opts);
            cmd.args([
                "--no-data",
                "--single-transaction",
                "--skip-dump-date",
                "--default-character-set=utf8mb4",
            ])
            .args(args)
            .arg("--")
            .arg(from)
            .args(names);
            process::run(&mut cmd, None)
        };
        // Triggers, routines and events; views on their own (a view can
        // only be created once the tables it reads are in place).
        let code = definitions(
            &["--no-create-info", "--triggers", "--routines", "--events"],
            &[],
        )?;
        let view_names: Vec<String> = views.iter().filter_map(|r| r.first().cloned()).collect();
        let view_sql = if view_names.is_empty() {
            String::new()
        } else {
            definitions(&["--skip-triggers"], &view_names)?
        };
        let mut drops = String::new();
        for r in list(format!(
            "select trigger_name from information_schema.triggers where trigger_schema = '{from}';"
        ))? {
            drops += &format!("drop trigger {}.{};\n", quoted(from), quoted(&r[0]));
        }
        for name in &view_names {
            drops += &format!("drop view {}.{};\n", quoted(from), quoted(name));
        }
        for r in list(format!(
            "select routine_type, routine_name from information_schema.routines where routine_schema = '{from}';"
        ))? {
            drops += &format!("drop {} {}.{};\n", r[0], quoted(from), quoted(&r[1]));
        }
        for r in list(format!(
            "select event_name from information_schema.events where event_schema = '{from}';"
        ))? {
            drops += &format!("drop event {}.{};\n", quoted(from), quoted(&r[0]));
        }
        let replay = |db: &str, sql: &str| -> Result<(), SourceError> {
            if sql.trim().is_empty() {
                return Ok(());
            }
            let mut cmd = self.client(&opts)?;
            cmd.arg("--").arg(db);
            process::run(&mut cmd, Some(sql.as_bytes())).map(|_| ())
        };
        if !drops.is_empty()
            && let Err(e) = self.query(None, &drops)
        {
            // Some definitions may be gone: recreate those that are
            // missing (`--force` goes past the ones still there).
            let mut cmd = self.client(&opts)?;
            cmd.args(["--force", "--"]).arg(from);
            let _ = process::run(&mut cmd, Some(format!("{code}\n{view_sql}").as_bytes()));
            return Err(e);
        }
        if !tables.is_empty() {
            let renames: Vec<String> = tables
                .iter()
                .map(|r| {
                    format!(
                        "{}.{} to {}.{}",
                        quoted(from),
                        quoted(&r[0]),
                        quoted(to),
                        quoted(&r[0])
                    )
                })
                .collect();
            let moved = self.query(
                None,
                &format!(
                    "set foreign_key_checks = 0; rename table {};",
                    renames.join(", ")
                ),
            );
            if let Err(e) = moved {
                // The tables stayed: give `from` its definitions back.
                let _ = replay(from, &code);
                let _ = replay(from, &view_sql);
                return Err(e);
            }
        }
        // Routines first: a view may call a function of its database.
        if let Err(e) = replay(to, &code).and_then(|_| replay(to, &view_sql)) {
            // Put the tables back where they were, with their definitions.
            let back: Vec<String> = tables
                .iter()
                .map(|r| {
                    format!(
                        "{}.{} to {}.{}",
                        quoted(to),
                        quoted(&r[0]),
                        quoted(from),
                        quoted(&r[0])
                    )
                })
                .collect();
            if !back.is_empty() {
                let _ = self.query(
                    None,
                    &format!(
                        "set foreign_key_checks = 0; rename table {};",
                        back.join(", ")
                    ),
                );
            }
            let _ = replay(from, &code);
            let _ = replay(from, &view_sql);
            return Err(e);
        }
        Ok(())
    }

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
                crate::wal::binlog::valid_name(name).then(|| (name.to_string(), size))
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
        if !crate::wal::binlog::valid_name(name) {
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
    fn replay_binlogs(
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

/// Refuses a replay that could act outside the staged copy: a statement
/// naming the exported database explicitly (`shop.orders`, `DROP DATABASE
/// shop`: `--rewrite-db` renames only the default database and row events,
/// so it would act on the live database), or one acting on the whole server
/// (accounts, grants, databases, replication). Row events (`BINLOG` blocks)
/// and `use` are safe.
fn refuse_unsafe_statements(script: &Path, database: &str) -> Result<(), SourceError> {
    use std::io::BufRead as _;
    let file = std::fs::File::open(script)
        .map_err(|e| SourceError::io("cannot read the decoded binary logs", e))?;
    let mut reader = std::io::BufReader::new(file);
    let mut line = Vec::new();
    let mut checker = StatementCheck::new(database);
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| SourceError::io("cannot read the decoded binary logs", e))?;
        if n == 0 {
            return Ok(());
        }
        checker.line(&String::from_utf8_lossy(&line))?;
    }
}

/// Statements that act on the server, not on one database's tables.
const SERVER_WIDE: [&str; 24] = [
    "create user",
    "drop user",
    "alter user",
    "rename user",
    "grant ",
    "revoke ",
    "set password",
    "create database",
    "drop database",
    "alter database",
    "create schema",
    "drop schema",
    "alter schema",
    "create server",
    "drop server",
    "alter server",
    "install ",
    "uninstall ",
    "flush ",
    "reset ",
    "change master",
    "start slave",
    "stop slave",
    "kill ",
];

struct StatementCheck {
    database: String,
    qualified: [String; 2],
    in_binlog: bool,
}

impl StatementCheck {
    fn new(database: &str) -> Self {
        let db = database.to_ascii_lowercase();
        StatementCheck {
            database: database.to_string(),
            qualified: [format!("{db}."), format!("`{db}`.")],
            in_binlog: false,
        }
    }

    fn line(&mut self, line: &str) -> Result<(), SourceError> {
        let l = line.trim().to_ascii_lowercase();
        if l.starts_with("binlog '") {
            self.in_binlog = true;
        }
        if self.in_binlog {
            if l.ends_with("'/*!*/;") {
                self.in_binlog = false;
            }
            return Ok(());
        }
        if l.starts_with('#') || l.starts_with("use ") {
            return Ok(());
        }
        // `/*!40000 DROP TABLE …*/` runs as well: its text counts.
        let body = match l.strip_prefix("/*!") {
            Some(rest) => rest
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .trim_start(),
            None => l.as_str(),
        };
        let names = self.qualified.iter().any(|q| {
            body.match_indices(q.as_str()).any(|(i, _)| {
                i == 0
                    || !body.as_bytes()[i - 1].is_ascii_alphanumeric()
                        && body.as_bytes()[i - 1] != b'_'
            })
        });
        let server_wide = SERVER_WIDE.iter().find(|s| body.starts_with(*s));
        if !names && server_wide.is_none() {
            return Ok(());
        }
        // The statement's first words only: its values may be secrets.
        let head: String = body
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        let why = match server_wide {
            Some(_) => "acts on the whole server".to_string(),
            None => format!("names database `{}` itself", self.database),
        };
        Err(SourceError::Invalid(format!(
            "the binary logs hold a statement that {why} (`{head} …`): replayed into the staged copy it would act \
             outside it, so nothing was replayed or changed; restore the export alone (--point) and replay that \
             part by hand"
        )))
    }
}

/// The time of the last event a replay of `r` applies (none when it
/// applies none).
fn replayed_until(r: &BinlogReplay) -> Option<chrono::DateTime<Utc>> {
    let files: Vec<(Vec<u8>, u64)> = r
        .files
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            let bytes = std::fs::read(f).ok()?;
            Some((bytes, if i == 0 { r.start_position } else { 0 }))
        })
        .collect();
    crate::wal::binlog::last_event_before(&files, r.stop)
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
        let start = crate::wal::binlog::start_in_dump(&String::from_utf8_lossy(&this.head))
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
            ..ExportInfo::default()
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
        ]);
        if self.config.binlog.is_some() {
            // The binary-log position the dump's snapshot stands at, as a comment.
            cmd.args(["--master-data=2", "--gtid"]);
        }
        cmd.arg("--").arg(&self.config.database);
        let child = ChildExport::start(&mut cmd, info, Some(Box::new(options)))?;
        if self.config.binlog.is_none() {
            return Ok(Box::new(child));
        }
        Ok(Box::new(WithCoordinates {
            child,
            head: Vec::new(),
        }))
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
        let file = super::stage_to_file(raw, workdir)?;
        let this = Mysql::new(self.config.clone(), &self.base_dir);
        Ok(Box::new(StagedFile {
            file,
            load: move |path: &Path, options: &CommitOptions| {
                let mut committed = this.load(path, &db, options)?;
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

#[cfg(test)]
mod replay_tests {
    use super::StatementCheck;

    fn check(script: &str) -> Result<(), super::SourceError> {
        let mut c = StatementCheck::new("shop");
        script.lines().try_for_each(|l| c.line(l))
    }

    #[test]
    fn statements_naming_the_database_or_the_server_are_refused_row_events_and_use_are_not() {
        let safe = "# at 4\nuse `shop`/*!*/;\nBINLOG '\nshop.orders base64\n'/*!*/;\nCOMMIT/*!*/;\ninsert into orders values (1)/*!*/;\n/*!100001 SET @@session.gtid_domain_id=0*//*!*/;\n";
        check(safe).unwrap();
        for bad in [
            "drop table shop.orders/*!*/;",
            "DROP TABLE `shop`.`orders`/*!*/;",
            "drop database shop/*!*/;",
            "DROP DATABASE IF EXISTS `shop`/*!*/;",
            "/*!40000 drop table shop.t*/;",
            "DROP USER app@localhost/*!*/;",
            "ALTER USER app IDENTIFIED BY 'secret'/*!*/;",
            "GRANT ALL ON *.* TO app/*!*/;",
        ] {
            let e = check(bad).unwrap_err().to_string();
            assert!(!e.contains("secret"), "{e}");
        }
        check("insert into myshop.t values (1)/*!*/;").unwrap();
    }
}
