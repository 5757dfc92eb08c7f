//! The swap of a MariaDB restore: the dump loaded into a new database
//! beside the live one, and only once it has fully loaded the live objects
//! moved aside and the new ones in (MariaDB cannot rename a database).

use std::path::Path;

use super::{Mysql, NAME_MAX, accounts, dump, quoted, unhex};
use crate::source::process;
use crate::source::{CommitOptions, Committed, Replay, ReplayFrom, SourceError, sibling_name};

impl Mysql {
    /// Loads a dump into a new database beside `live`, and only once it has
    /// fully loaded moves `live`'s objects aside (into `<live>_drp_replaced_…`)
    /// and the new ones into `live`.
    ///
    /// MariaDB cannot rename a database; tables move between databases with
    /// one atomic `RENAME TABLE`, but tables with triggers and views cannot,
    /// so triggers, views, routines and events are taken out as definitions
    /// (by `mariadb-dump`), dropped, and recreated on the other side.
    pub(super) fn load_dump(
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
            Ok(crate::source::postgres::rows(&self.query(None, &sql)?))
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
        for r in crate::source::postgres::rows(&out) {
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
        for r in crate::source::postgres::rows(&out) {
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
