//! The guard on a binary-log replay: the decoded statements are read
//! before anything is replayed, and a replay that could act outside the
//! staged copy is refused whole.

use std::path::Path;

use crate::source::SourceError;

/// Refuses a replay that could act outside the staged copy: a statement
/// naming the exported database explicitly (`shop.orders`, `DROP DATABASE
/// shop`: `--rewrite-db` renames only the default database and row events,
/// so it would act on the live database), or one acting on the whole server
/// (accounts, grants, databases, replication). Row events (`BINLOG` blocks)
/// and `use` are safe.
pub(super) fn refuse_unsafe_statements(script: &Path, database: &str) -> Result<(), SourceError> {
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

#[cfg(test)]
mod tests {
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
