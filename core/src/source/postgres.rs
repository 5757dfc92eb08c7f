//! PostgreSQL: `pg_dump` in custom format (so `pg_restore -j` can load in
//! parallel), loaded back with `pg_restore`.
//!
//! Connection settings follow libpq: a URL or key=value string in `url`,
//! the separate fields, or the usual `PG*` environment and `~/.pgpass`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::Utc;
use serde::Deserialize;

use super::process::{self, ChildExport};
use super::{
    CommitOptions, Destination, ExportInfo, ExportStream, Source, SourceError, Staged, StagedFile,
    sibling_pattern,
};
use crate::config::{SecretRef, resolve_relative};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// libpq connection URI (`postgresql://user@host:5432/db`) or key=value string.
    pub url: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub database: Option<String>,
    pub password: Option<SecretRef>,
    /// Folder of `pg_dump`, `pg_restore` and `psql` matching the server's major version.
    pub bin_dir: Option<PathBuf>,
    /// Parallel `pg_restore` jobs; defaults to the number of cores.
    pub restore_jobs: Option<u32>,
    /// Restore without setting object owners (when the roles do not exist on the new server).
    #[serde(default)]
    pub no_owner: bool,
    /// Carry the roles' password hashes in each point's globals (needs a
    /// superuser login). Off by default: restored roles then have no password.
    #[serde(default)]
    pub include_role_passwords: bool,
}

pub mod cluster;
mod framing;
mod load;
pub mod scratch;

use framing::FRAMING_NAME;

/// PostgreSQL's longest identifier, in bytes.
const NAME_MAX: usize = 63;

/// Database names a restore accepts: not empty, not starting with `-` (it
/// would read as an option), no NUL, at most 63 bytes.
fn check_database_name(db: &str) -> Result<(), SourceError> {
    if db.is_empty() || db.starts_with('-') || db.contains('\0') || db.len() > NAME_MAX {
        return Err(SourceError::Invalid(format!(
            "database name `{db}`: it must be 1 to {NAME_MAX} bytes and not start with `-`"
        )));
    }
    Ok(())
}

pub struct Postgres {
    config: PostgresConfig,
    base_dir: PathBuf,
}

const HINT: &str = "install the PostgreSQL client (Debian: postgresql-client) or set `bin_dir`";

impl Postgres {
    pub fn new(config: PostgresConfig, base_dir: &Path) -> Self {
        Postgres {
            config,
            base_dir: base_dir.to_path_buf(),
        }
    }

    fn tool(&self, name: &str) -> Result<PathBuf, SourceError> {
        let dir = self
            .config
            .bin_dir
            .as_ref()
            .map(|d| resolve_relative(&self.base_dir, d));
        process::find_tool(dir.as_deref(), &[name], HINT)
    }

    fn database(&self) -> String {
        if let Some(db) = &self.config.database {
            return db.clone();
        }
        self.config
            .url
            .as_deref()
            .and_then(url_database)
            .unwrap_or_else(|| std::env::var("PGDATABASE").unwrap_or_else(|_| "postgres".into()))
    }

    /// The libpq connection string for `database`, without any password
    /// (a password written in `url` goes to the tool's environment instead,
    /// so it never shows in the process list).
    fn conninfo(&self, database: &str) -> String {
        match &self.config.url {
            Some(url) if is_uri(url) => match url::Url::parse(url) {
                Ok(mut u) => {
                    u.set_path(&format!("/{}", urlencode(database)));
                    let _ = u.set_password(None);
                    let pairs: Vec<(String, String)> = u
                        .query_pairs()
                        .filter(|(k, _)| k != "password")
                        .map(|(k, v)| (k.into_owned(), v.into_owned()))
                        .collect();
                    u.set_query(None);
                    if !pairs.is_empty() {
                        u.query_pairs_mut().extend_pairs(pairs);
                    }
                    u.to_string()
                }
                Err(_) => url.clone(),
            },
            Some(kv) => {
                let kept: Vec<&str> = kv
                    .split_whitespace()
                    .filter(|w| !w.starts_with("password=") && !w.starts_with("dbname="))
                    .collect();
                format!("{} dbname='{}'", kept.join(" "), quote_kv(database))
            }
            None => format!("dbname='{}'", quote_kv(database)),
        }
    }

    /// Whether the server runs on this host (a socket or a loopback address),
    /// so that its data directory's free space can be read here.
    fn server_is_local(&self) -> bool {
        let host = self
            .config
            .host
            .clone()
            .or_else(|| self.config.url.as_deref().and_then(url_host))
            .or_else(|| std::env::var("PGHOST").ok());
        match host.as_deref() {
            None | Some("") => true,
            Some(h) => h.starts_with('/') || h == "localhost" || h == "127.0.0.1" || h == "::1",
        }
    }

    /// A password written inside `url`, if any.
    fn url_password(&self) -> Option<String> {
        let url = self.config.url.as_deref()?;
        if is_uri(url) {
            let u = url::Url::parse(url).ok()?;
            u.password().map(percent_decode).or_else(|| {
                u.query_pairs()
                    .find(|(k, _)| k == "password")
                    .map(|(_, v)| v.into_owned())
            })
        } else {
            url.split_whitespace()
                .find_map(|w| w.strip_prefix("password="))
                .map(|v| v.trim_matches('\'').to_string())
        }
    }

    /// A command for a libpq tool, with connection settings in its environment.
    fn command(&self, tool: &Path) -> Result<Command, SourceError> {
        let mut cmd = Command::new(tool);
        if let Some(h) = &self.config.host {
            cmd.env("PGHOST", h);
        }
        if let Some(p) = self.config.port {
            cmd.env("PGPORT", p.to_string());
        }
        if let Some(u) = &self.config.user {
            cmd.env("PGUSER", u);
        }
        if let Some(pw) = self.url_password() {
            cmd.env("PGPASSWORD", pw);
        }
        if let Some(secret) = &self.config.password {
            let pw = secret
                .resolve(&self.base_dir)
                .map_err(|e| SourceError::Invalid(format!("PostgreSQL password: {e}")))?;
            cmd.env("PGPASSWORD", pw.expose());
        }
        if std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
            cmd.env("PGCONNECT_TIMEOUT", "15");
        }
        cmd.env("PGAPPNAME", "drp");
        Ok(cmd)
    }

    /// Runs SQL through `psql` on `database`; `vars` are psql variables
    /// (referenced as `:'name'` for literals and `:"name"` for identifiers).
    fn psql(
        &self,
        database: &str,
        sql: &str,
        vars: &[(&str, &str)],
    ) -> Result<String, SourceError> {
        let psql = self.tool("psql")?;
        let mut cmd = self.command(&psql)?;
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.conninfo(database));
        for (k, v) in vars {
            cmd.arg("-v").arg(format!("{k}={v}"));
        }
        Ok(process::run(&mut cmd, Some(sql.as_bytes()))?
            .trim()
            .to_string())
    }
}

impl Postgres {
    /// The cluster's globals, as `pg_dumpall --globals-only` writes them.
    fn globals(&self) -> Result<String, SourceError> {
        let pg_dumpall = self.tool("pg_dumpall")?;
        let mut cmd = self.command(&pg_dumpall)?;
        let db = self.database();
        cmd.args(["--globals-only", "--no-password"]);
        if !self.config.include_role_passwords {
            cmd.arg("--no-role-passwords");
        }
        cmd.arg("-l").arg(&db).arg("-d").arg(self.conninfo(&db));
        process::run(&mut cmd, None)
    }
}

/// A check a host runs for a coordinator: the text (psql variable
/// `drp_sql`, never part of the script, so never a psql command) runs as one
/// statement — a cursor's, which refuses a second statement and anything that
/// returns no rows, such as `COMMIT` or `SET` — inside a read-only transaction
/// that has taken its snapshot, so nothing in it can make it read-write
/// again. Each row comes back as the hex of its text form.
const READ_ONLY_CHECK: &str = r#"\o /dev/null
BEGIN TRANSACTION READ ONLY;
SELECT set_config('drp.check', :'drp_sql', true);
DO $drp$
DECLARE
  r record;
  found text := '';
BEGIN
  FOR r IN EXECUTE current_setting('drp.check') LOOP
    found := found || encode(convert_to(r::text, 'UTF8'), 'hex') || E'\n';
  END LOOP;
  PERFORM set_config('drp.rows', found, true);
END
$drp$;
\o
SELECT current_setting('drp.rows');
ROLLBACK;
"#;

/// One row of [`READ_ONLY_CHECK`]'s output: the hex of a record's text form.
fn record_row(hex_line: &str) -> Result<Vec<String>, SourceError> {
    let text = hex::decode(hex_line.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| SourceError::Invalid(format!("unreadable check row `{hex_line}`")))?;
    Ok(record_fields(&text))
}

/// The fields of a record's text form (`(1,"a b",)`), as psql prints them:
/// NULL as an empty field.
fn record_fields(text: &str) -> Vec<String> {
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or(text);
    let mut fields = vec![String::new()];
    let mut chars = inner.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        let field = fields.last_mut().expect("one field at least");
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            '"' => quoted = !quoted,
            '\\' => field.extend(chars.next()),
            ',' if !quoted => fields.push(String::new()),
            c => field.push(c),
        }
    }
    fields
}

/// Tab-separated lines into rows of columns.
pub fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

fn is_uri(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// `%XX` escapes decoded, as libpq reads a URI (a `+` stays a `+`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(hex))
                if let Ok(b) = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("x"), 16) =>
            {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A value inside single quotes in a libpq key=value string.
fn quote_kv(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "\\'")
}

fn url_database(url: &str) -> Option<String> {
    if is_uri(url) {
        let u = url::Url::parse(url).ok()?;
        let db = u.path().trim_start_matches('/');
        (!db.is_empty()).then(|| db.to_string())
    } else {
        url.split_whitespace()
            .find_map(|kv| kv.strip_prefix("dbname="))
            .map(|v| v.trim_matches('\'').to_string())
    }
}

fn url_host(url: &str) -> Option<String> {
    if is_uri(url) {
        url::Url::parse(url).ok()?.host_str().map(str::to_string)
    } else {
        url.split_whitespace()
            .find_map(|kv| kv.strip_prefix("host="))
            .map(str::to_string)
    }
}

impl Source for Postgres {
    fn describe(&self) -> BTreeMap<String, String> {
        let mut d = BTreeMap::new();
        d.insert("database".into(), self.database());
        if let Some(h) = self
            .config
            .host
            .clone()
            .or_else(|| self.config.url.as_deref().and_then(url_host))
        {
            d.insert("host".into(), h);
        }
        d.insert(
            "format".into(),
            format!("{FRAMING_NAME} (globals, then pg_dump custom)"),
        );
        d
    }

    fn export(&self) -> Result<Box<dyn ExportStream>, SourceError> {
        let db = self.database();
        // Checks the login before anything is written, and records the server version.
        let server = self.psql(&db, "select current_setting('server_version');", &[])?;
        let pg_dump = self.tool("pg_dump")?;
        let mut tools = BTreeMap::new();
        tools.insert("pg_dump".into(), process::version(&pg_dump)?);
        tools.insert("server".into(), format!("PostgreSQL {server}"));
        // pg_dump takes its snapshot after this instant, so the dump holds every
        // transaction committed before it: a safe (never late) consistency time.
        let info = ExportInfo {
            consistency_time: Utc::now(),
            tools,
            ..ExportInfo::default()
        };
        let globals = self.globals()?;
        let mut cmd = self.command(&pg_dump)?;
        cmd.args(["--format=custom", "--compress=0", "--no-password", "-d"])
            .arg(self.conninfo(&db));
        let dump = ChildExport::start(&mut cmd, info, None)?;
        Ok(Box::new(framing::Framed::new(globals, dump)))
    }

    fn default_destination(&self) -> Destination {
        Destination::Database(self.database())
    }

    /// SQL on `database` (default the export's); when `read_only`, exactly
    /// one statement that cannot write (see [`READ_ONLY_CHECK`]).
    fn run_sql(
        &self,
        database: Option<&str>,
        sql: &str,
        read_only: bool,
    ) -> Result<Vec<Vec<String>>, SourceError> {
        let db = database
            .map(str::to_string)
            .unwrap_or_else(|| self.database());
        if read_only {
            let out = self.psql(&db, READ_ONLY_CHECK, &[("drp_sql", sql)])?;
            return out
                .lines()
                .filter(|l| !l.is_empty())
                .map(record_row)
                .collect();
        }
        let psql = self.tool("psql")?;
        let mut cmd = self.command(&psql)?;
        cmd.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-F",
            "\t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
        ])
        .arg(self.conninfo(&db))
        // Given with -c, the text goes to the server as it is: psql reads no
        // command of its own in it (`\!` would run a shell).
        .arg("-c")
        .arg(sql);
        let out = process::run(&mut cmd, None)?;
        Ok(rows(&out))
    }

    fn check_tools(&self) -> Result<Vec<String>, SourceError> {
        ["psql", "pg_dump", "pg_dumpall", "pg_restore"]
            .iter()
            .map(|t| process::version(&self.tool(t)?))
            .collect()
    }

    fn destination(&self, text: &str) -> Destination {
        Destination::Database(text.to_string())
    }

    fn existing(&self, dest: &Destination) -> Result<Option<String>, SourceError> {
        let Destination::Database(db) = dest else {
            return Err(SourceError::Invalid(
                "a PostgreSQL export restores into a database".into(),
            ));
        };
        let exists = self.psql(
            "postgres",
            "select count(*) from pg_database where datname = :'db';",
            &[("db", db)],
        )?;
        if exists != "1" {
            return Ok(None);
        }
        let facts = self.psql(
            db,
            "select count(*) || ' tables, ' || pg_size_pretty(pg_database_size(current_database())) \
             from information_schema.tables where table_schema not in ('pg_catalog', 'information_schema');",
            &[],
        )?;
        Ok(Some(format!("PostgreSQL database `{db}` ({facts})")))
    }

    fn kept_as(&self, dest: &Destination) -> String {
        match dest {
            Destination::Database(db) => format!(
                "the replaced database is kept, renamed to `{}`",
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
                "a PostgreSQL export restores into a database".into(),
            ));
        };
        check_database_name(&db)?;
        let (globals, mut dump) = framing::read_globals(raw)?;
        // pg_restore reads a seekable file to restore with several jobs.
        let file = super::stage_to_file(&mut dump, workdir)?;
        let this = Postgres::new(self.config.clone(), &self.base_dir);
        Ok(Box::new(StagedFile {
            file,
            load: move |path: &Path, options: &CommitOptions| {
                load::Load {
                    pg: &this,
                    dump: path,
                    globals: globals.as_deref(),
                    live: &db,
                    options,
                }
                .run()
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_records_text_form_reads_back_as_psql_prints_its_fields() {
        assert_eq!(record_fields("(1000)"), ["1000"]);
        assert_eq!(
            record_fields(r#"(1,"a, b",,"say ""hi""","back\\slash",ünï)"#),
            ["1", "a, b", "", r#"say "hi""#, r"back\slash", "ünï"]
        );
        assert_eq!(record_fields(r#"("")"#), [""]);
        let hex = hex::encode(r#"(2026-12-03 09:00:00+00,t)"#);
        assert_eq!(record_row(&hex).unwrap(), ["2026-12-03 09:00:00+00", "t"]);
        assert!(record_row("zz").is_err());
    }
}
