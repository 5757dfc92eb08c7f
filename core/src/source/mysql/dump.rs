//! The raw stream of a MariaDB point, and the dump read back from it.
//!
//! ```text
//! drp-my/1\n
//! database <the exported database>\n
//! accounts <byte length>\n
//! <the account statements (see `accounts`)>
//! <the mariadb-dump output, to the end of the stream>
//! ```
//!
//! Points taken before the framing existed are a bare dump: they carry no
//! accounts, and the exported database's name is read from the dump's own
//! header comment.
//!
//! A dump is data, never a command: before it is loaded into the staged
//! copy, every statement is checked to be one of the shapes `mariadb-dump`
//! writes, acting on the staged database only ([`Filter`]). Qualifications
//! with the exported database's name (`shop.orders` in a trigger written
//! as `create trigger shop.t … on shop.orders`) are taken out, so that the
//! objects are created in the staged copy and refer to their own database
//! wherever it is restored. A trigger, routine, event or view is sent to the
//! server as one prepared statement (`EXECUTE IMMEDIATE` of its text as a
//! hex literal), so that nothing after its body can run as a second
//! statement.

mod filter;
mod out;
mod statement;
#[cfg(test)]
mod tests;

use std::io::{Cursor, Read};

use super::super::{ExportInfo, ExportStream, SourceError};
pub use filter::Filter;

pub const FRAMING_NAME: &str = "drp-my/1";

/// Account statements larger than this are not account statements.
const ACCOUNTS_MAX: usize = 16 << 20;

/// The export stream: the header and accounts, then the dump.
pub struct Framed {
    head: Cursor<Vec<u8>>,
    dump: Box<dyn ExportStream>,
}

impl Framed {
    pub fn new(database: &str, accounts: &str, dump: Box<dyn ExportStream>) -> Self {
        let mut head = format!(
            "{FRAMING_NAME}\ndatabase {database}\naccounts {}\n",
            accounts.len()
        )
        .into_bytes();
        head.extend_from_slice(accounts.as_bytes());
        Framed {
            head: Cursor::new(head),
            dump,
        }
    }
}

impl Read for Framed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.head.read(buf)? {
            0 => self.dump.read(buf),
            n => Ok(n),
        }
    }
}

impl ExportStream for Framed {
    fn finish(self: Box<Self>) -> Result<ExportInfo, SourceError> {
        self.dump.finish()
    }
}

/// What a point's stream says ahead of its dump.
#[derive(Debug, Default)]
pub struct Head {
    /// The exported database.
    pub database: Option<String>,
    /// The account statements; `None` for a point without framing.
    pub accounts: Option<String>,
}

/// Reads the header (if any) ahead of the dump; returns it and the bytes
/// of the dump already read (the rest follows in `raw`). An error says why
/// the stream is not a point drp can read.
pub fn read_head(raw: &mut dyn Read) -> Result<(Head, Vec<u8>), String> {
    let magic = format!("{FRAMING_NAME}\n");
    let mut first = Vec::new();
    (&mut *raw)
        .take(magic.len() as u64)
        .read_to_end(&mut first)
        .map_err(|e| format!("reading the recovery point: {e}"))?;
    if first != magic.as_bytes() {
        // A bare dump: its first lines name the database.
        (&mut *raw)
            .take(8192)
            .read_to_end(&mut first)
            .map_err(|e| format!("reading the recovery point: {e}"))?;
        let head = Head {
            database: dumped_database(&String::from_utf8_lossy(&first)),
            accounts: None,
        };
        return Ok((head, first));
    }
    let database = read_line(raw)?
        .strip_prefix("database ")
        .map(str::to_string)
        .filter(|d| super::check_name(d).is_ok())
        .ok_or("its header does not name a database drp could have exported")?;
    let len: usize = read_line(raw)?
        .strip_prefix("accounts ")
        .and_then(|n| n.parse().ok())
        .filter(|n| *n <= ACCOUNTS_MAX)
        .ok_or("its accounts header is damaged")?;
    let mut accounts = vec![0u8; len];
    raw.read_exact(&mut accounts)
        .map_err(|e| format!("reading the point's accounts: {e}"))?;
    let accounts = String::from_utf8(accounts).map_err(|_| "its accounts are not text")?;
    Ok((
        Head {
            database: Some(database),
            accounts: Some(accounts),
        },
        Vec::new(),
    ))
}

/// One `\n`-terminated header line.
fn read_line(raw: &mut dyn Read) -> Result<String, String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() <= 256 {
        raw.read_exact(&mut byte)
            .map_err(|e| format!("reading the point's header: {e}"))?;
        if byte[0] == b'\n' {
            return String::from_utf8(line).map_err(|_| "its header is not text".into());
        }
        line.push(byte[0]);
    }
    Err("a header line is too long".into())
}

/// The database a bare dump names in its header comment
/// (`-- Host: localhost    Database: shop`).
fn dumped_database(head: &str) -> Option<String> {
    head.lines()
        .take_while(|l| l.is_empty() || l.starts_with("--") || l.starts_with("/*"))
        .find_map(|l| l.strip_prefix("-- Host: "))
        .and_then(|l| l.split_once("Database: "))
        .map(|(_, db)| db.trim().to_string())
        .filter(|db| super::check_name(db).is_ok())
}
