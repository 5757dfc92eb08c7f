//! MariaDB and MySQL: `mariadb-dump` (or `mysqldump`) in one consistent
//! transaction with routines, triggers and events, behind the accounts with
//! a privilege on the database (`mysql/dump.rs`, `mysql/accounts.rs`);
//! loaded with the client after every statement was checked.
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
mod dump;
mod sql;

pub struct Mysql {
    config: MysqlConfig,
    base_dir: PathBuf,
}

/// A point received for a restore: what its stream said ahead of the dump,
/// and why its dump is refused, if it is.
struct Received {
    head: dump::Head,
    refusal: Option<String>,
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

    /// Loads a received point as `live`: refused (nothing changed) when its
    /// dump or its accounts are not what drp writes; otherwise the accounts
    /// the server lacks are created first (so that the definers of views,
    /// routines and triggers exist), the dump is loaded and swapped in, and
    /// the grants on its tables and routines follow.
    fn load(
        &self,
        dump: &Path,
        live: &str,
        options: &CommitOptions,
        point: &Received,
    ) -> Result<Committed, SourceError> {
        if let Some(why) = &point.refusal {
            return Err(SourceError::Invalid(format!(
                "the point was not loaded, so database `{live}` was not touched: {why} (loaded, it could act outside the staged copy)"
            )));
        }
        let source = point.head.database.as_deref().unwrap_or(live);
        let carried = match &point.head.accounts {
            Some(text) => Some(accounts::read(text, source).map_err(SourceError::Invalid)?),
            None => None,
        };
        let after = match &carried {
            Some(all) => self.create_accounts(all, source, live)?,
            None => {
                self.say(format_args!(
                    "this point carries no accounts (it was taken before points carried them): create the accounts the application uses by hand if this server lacks them"
                ));
                Vec::new()
            }
        };
        let committed = self.load_dump(dump, live, options)?;
        if !after.is_empty()
            && let Err(e) = self.query(None, &accounts::write(&after, live))
        {
            tracing::warn!(
                "the grants on tables and routines of the accounts created were not all given: {e}"
            );
        }
        Ok(committed)
    }

    /// A note on accounts for whoever restores (logged only on a restore
    /// test's private server).
    fn say(&self, args: std::fmt::Arguments) {
        if self.config.throwaway {
            tracing::info!("{args}");
        } else {
            tracing::warn!("{args}");
        }
    }

    /// The accounts and roles the server has (a role has no host).
    fn server_accounts(
        &self,
    ) -> Result<std::collections::BTreeSet<accounts::Account>, SourceError> {
        let out = self.query(
            None,
            "select hex(user), hex(host), is_role from mysql.user;",
        )?;
        Ok(super::postgres::rows(&out)
            .iter()
            .filter(|r| r.len() == 3)
            .map(|r| accounts::Account {
                user: unhex(&r[0]).unwrap_or_default(),
                host: (r[2] != "Y").then(|| unhex(&r[1]).unwrap_or_default()),
            })
            .collect())
    }

    /// Creates the point's accounts this server lacks, with their grants on
    /// the database (`live`) and their roles; returns the grants on tables
    /// and routines, to give once those exist. Existing accounts are left
    /// exactly as they are.
    fn create_accounts(
        &self,
        all: &[accounts::Statement],
        source: &str,
        live: &str,
    ) -> Result<Vec<accounts::Statement>, SourceError> {
        if all.is_empty() {
            return Ok(Vec::new());
        }
        let existing = match self.server_accounts() {
            Ok(e) => e,
            Err(e) => {
                self.say(format_args!(
                    "the point's accounts were not created: this login cannot list the server's accounts ({e})"
                ));
                return Ok(Vec::new());
            }
        };
        let plan = accounts::plan(all, &existing);
        let names = |list: &[accounts::Account]| {
            list.iter()
                .map(accounts::Account::shown)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut created = Vec::new();
        for s in &plan.create {
            if let Err(e) = self.query(None, &format!("{};", s.sql(live))) {
                // The client's message may quote the statement, hash and all.
                let code = error_code(&e);
                return Err(SourceError::Invalid(format!(
                    "cannot create the accounts the point carries ({code}); created before the error: {}; the database was not changed",
                    if created.is_empty() {
                        "none".to_string()
                    } else {
                        names(&created)
                    }
                )));
            }
            created.extend(s.creates());
        }
        if !plan.before.is_empty() {
            self.query(None, &accounts::write(&plan.before, live))
                .map_err(|e| {
                    SourceError::Invalid(format!(
                        "created the accounts {}, but their grants on `{live}` failed: {e}; the database was not changed",
                        names(&created)
                    ))
                })?;
        }
        if !created.is_empty() {
            self.say(format_args!(
                "created the accounts the point carries that this server lacked: {}",
                names(&created)
            ));
            if source != live {
                self.say(format_args!(
                    "their grants on `{source}` were given on `{live}`, the name it is restored as"
                ));
            }
        }
        if !plan.need_password.is_empty() {
            self.say(format_args!(
                "these accounts were created locked and need a password (the point carries none: `include_account_passwords` is off on its source): {} — set one with ALTER USER … IDENTIFIED BY '…' ACCOUNT UNLOCK",
                names(&plan.need_password)
            ));
        }
        for (role, to) in &plan.roles_not_granted {
            self.say(format_args!(
                "role `{role}` was not granted to {}: this server has its own role of that name, and drp grants only the roles it creates",
                to.shown()
            ));
        }
        if !plan.existing.is_empty() {
            tracing::info!(
                "accounts the point carries that this server has, left as they are: {}",
                names(&plan.existing)
            );
        }
        Ok(plan.after)
    }

    /// Loads a dump into a new database beside `live`, and only once it has
    /// fully loaded moves `live`'s objects aside (into `<live>_drp_replaced_…`)
    /// and the new ones into `live`.
    ///
    /// MariaDB cannot rename a database; tables move between databases with
    /// one atomic `RENAME TABLE`, but tables with triggers and views cannot,
    /// so triggers, views, routines and events are taken out as definitions
    /// (by `mariadb-dump`), dropped, and recreated on the other side.
    fn load_dump(
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
            // The character set the dump was checked in (see `dump`).
            cmd.arg("--default-character-set=utf8mb4")
                .arg("--")
                .arg(&staged);
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
        // Dropping a routine drops its grants: they are given again to the
        // routines of the same names once the swap is over.
        let routine_grants = self.routine_grants(live).unwrap_or_else(|e| {
            tracing::warn!(
                "the grants on the routines of `{live}` cannot be read, so they are not kept: {e}"
            );
            Vec::new()
        });
        if let Err(e) = self.move_objects(live, &replaced) {
            self.grant_again(&routine_grants, live);
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
            self.grant_again(&routine_grants, live);
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
        self.grant_again(&routine_grants, live);
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
        // only be created once the tables it reads are in place). Names
        // qualified with `from` are made relative to their own database.
        let view_names: Vec<String> = views.iter().filter_map(|r| r.first().cloned()).collect();
        let known: Vec<String> = tables
            .iter()
            .filter_map(|r| r.first().cloned())
            .chain(view_names.iter().cloned())
            .collect();
        let code = requalified(
            &definitions(
                &["--no-create-info", "--triggers", "--routines", "--events"],
                &[],
            )?,
            from,
            &known,
        )?;
        let view_sql = if view_names.is_empty() {
            String::new()
        } else {
            requalified(
                &definitions(&["--skip-triggers"], &view_names)?,
                from,
                &known,
            )?
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
        if let Err(e) = self
            .repoint_defaults(from, to)
            .and_then(|_| replay(to, &code))
            .and_then(|_| replay(to, &view_sql))
        {
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
            let _ = self.repoint_defaults(to, from);
            let _ = replay(from, &code);
            let _ = replay(from, &view_sql);
            return Err(e);
        }
        Ok(())
    }

    /// The grants on `db`'s procedures and functions.
    fn routine_grants(&self, db: &str) -> Result<Vec<accounts::Statement>, SourceError> {
        let out = self.query(
            None,
            &format!(
                "select hex(p.user), hex(p.host), hex(p.routine_name), p.routine_type, p.proc_priv, \
                 coalesce((select u.is_role from mysql.user u where u.user = p.user and u.host = p.host), 'N') \
                 from mysql.procs_priv p where p.db = '{db}';"
            ),
        )?;
        let mut grants = Vec::new();
        for r in super::postgres::rows(&out) {
            let [user, host, name, kind, privs, role] = &r[..] else {
                continue;
            };
            let (Some(user), Some(host), Some(name)) = (unhex(user), unhex(host), unhex(name))
            else {
                continue;
            };
            let privileges: Vec<(String, Vec<String>)> = privs
                .split(',')
                .filter(|p| !p.eq_ignore_ascii_case("grant") && !p.is_empty())
                .map(|p| (p.to_ascii_uppercase(), Vec::new()))
                .collect();
            if privileges.is_empty() {
                continue;
            }
            grants.push(accounts::Statement::Grant {
                privileges,
                on: accounts::Object::Routine {
                    function: kind.eq_ignore_ascii_case("function"),
                    name,
                },
                to: accounts::Account {
                    user,
                    host: (role != "Y").then_some(host),
                },
                grant_option: privs.split(',').any(|p| p.eq_ignore_ascii_case("grant")),
            });
        }
        Ok(grants)
    }

    /// Gives `grants` on `db`'s routines again, each on its own: a routine
    /// the restored database lacks loses its grant, and says so.
    fn grant_again(&self, grants: &[accounts::Statement], db: &str) {
        for g in grants {
            if let Err(e) = self.query(None, &format!("{};", g.sql(db))) {
                tracing::warn!(
                    "a grant on a routine of `{db}` was not given again ({}): {e}",
                    g.sql(db)
                );
            }
        }
    }

    /// Points the column defaults of `to`'s tables that read a sequence of
    /// `from` (the server stores `nextval(`from`.`s`)` with its database)
    /// at `to`, where the sequence moved with the tables.
    fn repoint_defaults(&self, from: &str, to: &str) -> Result<(), SourceError> {
        let out = self.query(
            None,
            &format!(
                "select hex(table_name), hex(column_name), hex(column_default) from information_schema.columns \
                 where table_schema = '{to}' and instr(column_default, '`{from}`.') > 0;"
            ),
        )?;
        let mut alter = String::new();
        for r in super::postgres::rows(&out) {
            if let [table, column, default] = &r[..] {
                alter += &format!(
                    "alter table {}.{} alter column {} set default ({});\n",
                    quoted(to),
                    quoted(&unhex(table).unwrap_or_default()),
                    quoted(&unhex(column).unwrap_or_default()),
                    unhex(default)
                        .unwrap_or_default()
                        .replace(&format!("`{from}`."), &format!("`{to}`."))
                );
            }
        }
        if alter.is_empty() {
            return Ok(());
        }
        self.query(None, &alter).map(|_| ())
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

/// Definitions dumped from database `from` (whose tables and views are
/// `known`), as they load into another: names qualified with `from` made
/// relative, each trigger, routine, event and view one prepared statement.
fn requalified(sql: &str, from: &str, known: &[String]) -> Result<String, SourceError> {
    let out = dump::Filter::new(Some(from), None)
        .knowing(known.iter().cloned())
        .run(sql.as_bytes(), Vec::new())
        .map_err(|e| SourceError::io("cannot read the definitions", e))?
        .map_err(|why| {
            SourceError::Invalid(format!(
                "the definitions of `{from}` cannot be moved: {why}"
            ))
        })?;
    String::from_utf8(out)
        .map_err(|_| SourceError::Invalid(format!("the definitions of `{from}` are not text")))
}

/// The error code a failed client run reports (`ERROR 1396 (HY000)`),
/// without the message, which may quote the statement.
fn error_code(e: &SourceError) -> String {
    let text = e.to_string();
    text.find("ERROR ")
        .map(|at| {
            text[at..]
                .split(" at line")
                .next()
                .unwrap_or_default()
                .split(':')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_else(|| "the client failed".into())
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

/// Receives a point's stream into a private file in `workdir`: the header
/// read, the dump checked and rewritten on its way (see `dump`). A point
/// that is refused is still read to its end, so that its digests are
/// checked before anything is said about its content.
fn receive(
    raw: &mut dyn Read,
    dest: &str,
    workdir: &Path,
) -> Result<(tempfile::NamedTempFile, Received), SourceError> {
    let mut file = super::staging_file(workdir)?;
    let drain = |rest: &mut dyn Read| {
        std::io::copy(rest, &mut std::io::sink())
            .map(|_| ())
            .map_err(|e| SourceError::io("cannot receive the recovery point", e))
    };
    let (head, first) = match dump::read_head(raw) {
        Ok(h) => h,
        Err(why) => {
            drain(raw)?;
            let refusal = Some(format!(
                "the recovery point is not a MariaDB export drp can read: {why}"
            ));
            let head = dump::Head::default();
            return Ok((file, Received { head, refusal }));
        }
    };
    let mut rest = std::io::Cursor::new(first).chain(raw);
    let out = std::io::BufWriter::with_capacity(1 << 20, file.as_file_mut());
    let refusal = dump::Filter::new(head.database.as_deref(), Some(dest))
        .run(&mut rest, out)
        .map_err(|e| SourceError::io("cannot receive the recovery point", e))?
        .err();
    if refusal.is_some() {
        drain(&mut rest)?;
    }
    Ok((file, Received { head, refusal }))
}

/// Text the server sent as `hex(…)`, when it is UTF-8.
fn unhex(h: &str) -> Option<String> {
    hex::decode(h).ok().and_then(|b| String::from_utf8(b).ok())
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
