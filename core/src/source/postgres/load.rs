//! Loading a PostgreSQL point without ever making things worse: the point is
//! loaded into a new database beside the live one, and only once
//! `pg_restore` has fully succeeded are the names swapped; the replaced
//! database is kept under a new name.
//!
//! Before anything changes, the load checks what it will need: a server at
//! least as new as the one dumped, the roles the archive's objects belong to
//! (created from the point's globals when missing, or listed and refused),
//! and room for the copy when the data directory is on this host.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use super::super::process::{self, Input};
use super::super::{CommitOptions, Committed, SourceError, sibling_name};
use super::{NAME_MAX, Postgres};

/// How long the swap waits for sessions on the live database to end.
const SWAP_WAIT: Duration = Duration::from_secs(30);

/// The roles a load will create, and those the server already has.
#[derive(Default)]
struct Roles {
    missing: Vec<String>,
    existing: BTreeSet<String>,
}

pub struct Load<'a> {
    pub pg: &'a Postgres,
    pub dump: &'a Path,
    /// `pg_dumpall --globals-only` of the cluster the point came from.
    pub globals: Option<&'a str>,
    /// The database the point replaces (or creates).
    pub live: &'a str,
    pub options: &'a CommitOptions,
}

impl Load<'_> {
    pub fn run(&self) -> Result<Committed, SourceError> {
        if ["postgres", "template0", "template1"].contains(&self.live) {
            return Err(SourceError::Invalid(format!(
                "drp does not swap the maintenance database `{}`: restore into another name with `--to`; nothing was changed",
                self.live
            )));
        }
        let roles = self.preflight()?;
        self.options.cancel.check()?;
        self.create_roles(&roles)?;
        let staged = sibling_name(self.live, "restore", NAME_MAX);
        self.create_database(&staged)?;
        if let Err(e) = self.restore_into(&staged) {
            self.drop_database(&staged);
            return Err(SourceError::load_failed(self.live, &staged, e));
        }
        if let Err(e) = self.options.cancel.check() {
            self.drop_database(&staged);
            return Err(e);
        }
        self.swap(&staged)
    }

    fn psql(&self, sql: &str, vars: &[(&str, &str)]) -> Result<String, SourceError> {
        self.pg.psql("postgres", sql, vars)
    }

    fn live_exists(&self) -> Result<bool, SourceError> {
        let n = self.psql(
            "select count(*) from pg_database where datname = :'db';",
            &[("db", self.live)],
        )?;
        Ok(n == "1")
    }

    /// Checks the server and the roles; returns the roles to create from the
    /// point's globals, and those the server has.
    fn preflight(&self) -> Result<Roles, SourceError> {
        let pg_restore = self.pg.tool("pg_restore")?;
        let toc = process::run(
            self.pg.command(&pg_restore)?.arg("--list").arg(self.dump),
            None,
        )?;
        let server: u32 = self
            .psql("show server_version_num;", &[])?
            .parse()
            .unwrap_or(0);
        if let Some(dumped) = dumped_major(&toc)
            && dumped > server / 10000
        {
            return Err(SourceError::Invalid(format!(
                "the point was dumped from PostgreSQL {dumped}, newer than this server ({}); restore it into PostgreSQL {dumped} or later",
                server / 10000
            )));
        }
        self.check_space()?;
        if self.pg.config.no_owner {
            return Ok(Roles::default());
        }
        let schema = process::run(
            self.pg
                .command(&pg_restore)?
                .args(["--schema-only", "-f", "-"])
                .arg(self.dump),
            None,
        )?;
        let needed = referenced_roles(&schema);
        let existing: BTreeSet<String> = self
            .psql("select rolname from pg_roles;", &[])?
            .lines()
            .map(str::to_string)
            .collect();
        let missing: Vec<String> = needed.difference(&existing).cloned().collect();
        let carried = self.globals.map(created_roles).unwrap_or_default();
        let absent: Vec<&String> = missing.iter().filter(|r| !carried.contains(*r)).collect();
        if !absent.is_empty() {
            let names: Vec<String> = absent.iter().map(|r| format!("`{r}`")).collect();
            return Err(SourceError::Invalid(format!(
                "the point's objects belong to roles this server does not have and the point does not carry: {}; \
                 create them first, or restore without owners (`no_owner: true` on the source); nothing was changed",
                names.join(", ")
            )));
        }
        Ok(Roles { missing, existing })
    }

    /// Refuses when the data directory is on this host and has less room
    /// than the copy will take (about the live database's size, or the
    /// dump's, whichever is larger). Silent when the server is elsewhere.
    fn check_space(&self) -> Result<(), SourceError> {
        if !self.pg.server_is_local() {
            return Ok(());
        }
        let Ok(dir) = self.psql(
            "select setting from pg_settings where name = 'data_directory';",
            &[],
        ) else {
            return Ok(());
        };
        let Some(free) = free_bytes(Path::new(&dir)) else {
            return Ok(());
        };
        let live: u64 = self
            .psql(
                "select coalesce((select pg_database_size(datname) from pg_database where datname = :'db'), 0);",
                &[("db", self.live)],
            )?
            .parse()
            .unwrap_or(0);
        let dump = std::fs::metadata(self.dump).map(|m| m.len()).unwrap_or(0);
        let need = live.max(dump);
        if need > free {
            return Err(SourceError::Invalid(format!(
                "the copy needs about {} beside the live database and {dir} has {} free; make room, nothing was changed",
                crate::config::units::format_bytes(need),
                crate::config::units::format_bytes(free)
            )));
        }
        Ok(())
    }

    fn create_roles(&self, roles: &Roles) -> Result<(), SourceError> {
        let Some(globals) = self.globals else {
            return Ok(());
        };
        if roles.missing.is_empty() {
            return Ok(());
        }
        let sql = role_statements(globals, &roles.missing, &roles.existing);
        tracing::info!(roles = ?roles.missing, "creating the roles the point needs");
        self.psql(&sql, &[]).map(|_| ()).map_err(|e| {
            SourceError::Invalid(format!(
                "cannot create the roles the point needs ({}): {e}",
                roles.missing.join(", ")
            ))
        })
    }

    /// The new database, with the live one's encoding and locale (or the
    /// server's defaults).
    fn create_database(&self, name: &str) -> Result<(), SourceError> {
        self.psql(
            "select format('create database %I template template0 encoding %L lc_collate %L lc_ctype %L', \
                 :'new', pg_encoding_to_char(encoding), datcollate, datctype) \
             from pg_database where datname = coalesce( \
                 (select datname from pg_database where datname = :'live'), 'template1') \\gexec",
            &[("new", name), ("live", self.live)],
        )
        .map(|_| ())
    }

    fn restore_into(&self, database: &str) -> Result<(), SourceError> {
        let pg_restore = self.pg.tool("pg_restore")?;
        let jobs = self.pg.config.restore_jobs.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(2)
        });
        let mut cmd = self.pg.command(&pg_restore)?;
        cmd.args(["--exit-on-error", "--no-password"])
            .arg(format!("--jobs={jobs}"))
            .arg("-d")
            .arg(self.pg.conninfo(database));
        if self.pg.config.no_owner {
            cmd.args(["--no-owner", "--no-privileges"]);
        }
        cmd.arg(self.dump);
        process::run_cancellable(&mut cmd, Input::Bytes(b""), &self.options.cancel).map(|_| ())
    }

    fn drop_database(&self, name: &str) {
        if let Err(e) = self.psql(
            "drop database if exists :\"db\" with (force);",
            &[("db", name)],
        ) {
            tracing::warn!(database = name, error = %e, "cannot drop the staged copy");
        }
    }

    /// Puts the loaded copy in the live database's place, keeping the live
    /// one under a new name. Sessions on the live database are ended first
    /// and new ones refused while the names change.
    fn swap(&self, staged: &str) -> Result<Committed, SourceError> {
        let swapped = self.swap_names(staged);
        if swapped.is_err() {
            self.drop_database(staged);
        }
        swapped
    }

    fn swap_names(&self, staged: &str) -> Result<Committed, SourceError> {
        if !self.live_exists()? {
            self.psql(
                "alter database :\"staged\" rename to :\"live\";",
                &[("staged", staged), ("live", self.live)],
            )?;
            return Ok(Committed::default());
        }
        let replaced = sibling_name(self.live, "replaced", NAME_MAX);
        let vars = [
            ("staged", staged),
            ("live", self.live),
            ("replaced", replaced.as_str()),
        ];
        // The live database's owner, connection limit and privileges (a
        // database restored by `pg_restore` without `--create` has none).
        self.psql(
            "select format('alter database %I owner to %I', :'staged', pg_get_userbyid(datdba)) \
               from pg_database where datname = :'live' \\gexec\n\
             select format('alter database %I connection limit %s', :'staged', datconnlimit) \
               from pg_database where datname = :'live' \\gexec\n\
             select format('revoke all on database %I from public', :'staged') \
               from pg_database where datname = :'live' and datacl is not null \\gexec\n\
             select format('grant %s on database %I to %s', a.privilege_type, :'staged', \
                      case when a.grantee = 0 then 'public' else quote_ident(pg_get_userbyid(a.grantee)) end) \
               from pg_database d, aclexplode(d.datacl) a where d.datname = :'live' \\gexec",
            &vars,
        )?;
        self.psql("alter database :\"live\" allow_connections false;", &vars)?;
        let started = Instant::now();
        let renamed = loop {
            let attempt = self.psql(
                "select pg_terminate_backend(pid) from pg_stat_activity \
                   where datname = :'live' and pid <> pg_backend_pid();\n\
                 begin;\n\
                 alter database :\"live\" rename to :\"replaced\";\n\
                 alter database :\"staged\" rename to :\"live\";\n\
                 commit;",
                &vars,
            );
            match attempt {
                Ok(_) => break Ok(()),
                // Only sessions that have not ended yet are worth waiting for.
                Err(e)
                    if started.elapsed() < SWAP_WAIT
                        && e.to_string().contains("being accessed by other users") =>
                {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = renamed {
            let reopened = self.psql("alter database :\"live\" allow_connections true;", &vars);
            return Err(SourceError::Invalid(format!(
                "the point loaded, but database `{}` could not be swapped for it; it was not changed{} and the copy was dropped: {e}",
                self.live,
                match reopened {
                    Ok(_) => String::new(),
                    Err(_) => " but still refuses connections: run `ALTER DATABASE … ALLOW_CONNECTIONS true`".into(),
                }
            )));
        }
        if let Err(e) = self.psql(
            "alter database :\"replaced\" allow_connections true;",
            &vars,
        ) {
            tracing::warn!(database = %replaced, error = %e, "the kept database still refuses connections");
        }
        if self.options.drop_replaced {
            self.psql("drop database :\"replaced\" with (force);", &vars)?;
            return Ok(Committed::dropped(format!("database `{replaced}`")));
        }
        Ok(Committed::kept(format!("database `{replaced}`")))
    }
}

/// The major version in `pg_restore --list`'s "Dumped from database version".
fn dumped_major(toc: &str) -> Option<u32> {
    let line = toc
        .lines()
        .find(|l| l.contains("Dumped from database version:"))?;
    let version = line.split(':').nth(1)?.trim();
    version
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Reads one SQL identifier at the start of `text` (quoted or bare); returns
/// it and the rest.
fn ident(text: &str) -> Option<(String, &str)> {
    let text = text.trim_start();
    if let Some(rest) = text.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if rest[i + 1..].starts_with('"') {
                    out.push('"');
                    chars.next();
                } else {
                    return Some((out, &rest[i + 1..]));
                }
            } else {
                out.push(c);
            }
        }
        None
    } else {
        let end = text
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(text.len());
        (end > 0).then(|| (text[..end].to_lowercase(), &text[end..]))
    }
}

/// Roles the objects of a schema-only script belong to or are granted to.
fn referenced_roles(schema: &str) -> BTreeSet<String> {
    let mut roles = BTreeSet::new();
    for line in schema.lines() {
        if line.starts_with("ALTER ")
            && let Some(at) = line.rfind(" OWNER TO ")
            && let Some((role, _)) = ident(&line[at + 10..])
        {
            roles.insert(role);
        } else if line.starts_with("GRANT ")
            && let Some(at) = line.rfind(" TO ")
        {
            let mut rest = &line[at + 4..];
            while let Some((role, after)) = ident(rest) {
                if role != "public" || rest.trim_start().starts_with('"') {
                    roles.insert(role);
                }
                match after.trim_start().strip_prefix(',') {
                    Some(next) => rest = next,
                    None => break,
                }
            }
        }
    }
    roles
}

/// Roles a globals script creates.
fn created_roles(globals: &str) -> BTreeSet<String> {
    globals
        .lines()
        .filter_map(|l| l.strip_prefix("CREATE ROLE "))
        .filter_map(|rest| ident(rest).map(|(r, _)| r))
        .collect()
}

/// The statements of a globals script that create `roles`: `CREATE ROLE`,
/// its `ALTER ROLE` attributes and settings, and the memberships that
/// involve them and a role that will exist (without `GRANTED BY`, whose
/// grantor may not exist here).
fn role_statements(globals: &str, roles: &[String], existing: &BTreeSet<String>) -> String {
    let wanted = |r: &str| roles.iter().any(|x| x == r);
    let will_exist = |r: &str| wanted(r) || existing.contains(r);
    // One statement per line, as pg_dumpall writes them; a line that could
    // hold a second statement or a psql command is never run.
    let single = |l: &str| !l.contains('\\') && !l.trim_end().trim_end_matches(';').contains(';');
    let mut sql = String::new();
    let mut grants = String::new();
    for line in globals.lines() {
        if !single(line) {
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("CREATE ROLE ")
            .or_else(|| line.strip_prefix("ALTER ROLE "))
            && ident(rest).is_some_and(|(r, _)| wanted(&r))
        {
            sql.push_str(line);
            sql.push('\n');
        } else if let Some(rest) = line.strip_prefix("GRANT ")
            && let Some((granted, after)) = ident(rest)
            && let Some(to) = after.trim_start().strip_prefix("TO ")
            && let Some((member, _)) = ident(to)
            && (wanted(&granted) || wanted(&member))
            && will_exist(&granted)
            && will_exist(&member)
        {
            let statement = match line.find(" GRANTED BY ") {
                Some(at) => format!("{};", &line[..at]),
                None => line.to_string(),
            };
            grants.push_str(&statement);
            grants.push('\n');
        }
    }
    sql + &grants
}

/// Free bytes on the filesystem holding `path`, when it is on this host.
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs fills the struct we own from a NUL-terminated path.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_and_grantees_are_read_from_a_schema_script() {
        let schema = "ALTER TABLE public.orders OWNER TO shop_owner;\n\
                      ALTER FUNCTION public.f() OWNER TO \"Ünïcode Owner\";\n\
                      GRANT SELECT ON TABLE public.orders TO reporting, \"Quoted\"\"Role\";\n\
                      GRANT USAGE ON SCHEMA public TO PUBLIC;\n\
                      CREATE TABLE public.t (id integer);\n";
        let roles: Vec<String> = referenced_roles(schema).into_iter().collect();
        assert_eq!(
            roles,
            ["Quoted\"Role", "reporting", "shop_owner", "Ünïcode Owner"]
        );
    }

    #[test]
    fn only_the_missing_roles_and_their_memberships_are_created() {
        let globals = "SET default_transaction_read_only = off;\n\
                       CREATE ROLE postgres;\n\
                       ALTER ROLE postgres WITH SUPERUSER;\n\
                       CREATE ROLE shop_owner;\n\
                       ALTER ROLE shop_owner WITH NOSUPERUSER INHERIT LOGIN;\n\
                       CREATE ROLE staff;\n\
                       GRANT staff TO shop_owner GRANTED BY postgres;\n\
                       GRANT gone TO shop_owner GRANTED BY postgres;\n\
                       ALTER ROLE shop_owner SET search_path TO 'shop';\n";
        assert!(created_roles(globals).contains("shop_owner"));
        let existing = BTreeSet::from(["postgres".to_string(), "staff".to_string()]);
        let sql = role_statements(globals, &["shop_owner".into()], &existing);
        let hostile = "CREATE ROLE shop_owner; \\! touch /tmp/pwned\nALTER ROLE shop_owner WITH LOGIN; DROP TABLE x;\n";
        assert_eq!(
            role_statements(hostile, &["shop_owner".into()], &existing),
            ""
        );
        assert_eq!(
            sql,
            "CREATE ROLE shop_owner;\n\
             ALTER ROLE shop_owner WITH NOSUPERUSER INHERIT LOGIN;\n\
             ALTER ROLE shop_owner SET search_path TO 'shop';\n\
             GRANT staff TO shop_owner;\n"
        );
    }

    #[test]
    fn the_dumped_version_is_read_from_the_listing() {
        let toc = ";\n;     Dumped from database version: 15.18 (Debian 15.18-0+deb12u1)\n;     Dumped by pg_dump version: 15.18\n";
        assert_eq!(dumped_major(toc), Some(15));
    }
}
