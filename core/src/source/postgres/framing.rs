//! The raw stream of a PostgreSQL point: the cluster's globals (roles,
//! memberships, role settings, tablespaces, from `pg_dumpall --globals-only`)
//! ahead of the `pg_dump` custom-format archive, so that a point restores on
//! a bare server.
//!
//! ```text
//! drp-pg/1\n
//! globals <byte length>\n
//! <the globals SQL>
//! <the pg_dump custom archive, to the end of the stream>
//! ```
//!
//! Points taken before the framing existed are a bare archive (`PGDMP…`):
//! they are read as an archive without globals.

use std::io::{Cursor, Read};

use super::super::process::ChildExport;
use super::super::{ExportInfo, ExportStream, SourceError};

pub const FRAMING_NAME: &str = "drp-pg/1";

/// Globals larger than this are not globals: the stream is refused.
const GLOBALS_MAX: usize = 64 << 20;

/// The export stream: the header and globals, then the dump tool's output.
pub struct Framed {
    head: Cursor<Vec<u8>>,
    dump: ChildExport,
}

impl Framed {
    pub fn new(globals: String, dump: ChildExport) -> Self {
        let mut head = format!("{FRAMING_NAME}\nglobals {}\n", globals.len()).into_bytes();
        head.extend_from_slice(globals.as_bytes());
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
        Box::new(self.dump).finish()
    }
}

/// Reads the globals ahead of the archive; returns them (none for a point
/// without framing) and the archive's stream.
pub fn read_globals(
    raw: &mut dyn Read,
) -> Result<(Option<String>, Box<dyn Read + '_>), SourceError> {
    let bad = |what: &str| {
        SourceError::Invalid(format!(
            "the recovery point is not a PostgreSQL export drp can read: {what}"
        ))
    };
    let mut first = [0u8; 5];
    raw.read_exact(&mut first)
        .map_err(|e| SourceError::io("reading the recovery point", e))?;
    if &first == b"PGDMP" {
        let archive = Cursor::new(first.to_vec()).chain(raw);
        return Ok((None, Box::new(archive)));
    }
    let magic = format!("{FRAMING_NAME}\n");
    let mut rest = vec![0u8; magic.len() - first.len()];
    raw.read_exact(&mut rest)
        .map_err(|e| SourceError::io("reading the recovery point", e))?;
    if [&first[..], &rest[..]].concat() != magic.as_bytes() {
        return Err(bad(
            "it starts with neither `drp-pg/1` nor a pg_dump archive",
        ));
    }
    let line = read_line(raw, 64).map_err(|e| SourceError::io("reading the recovery point", e))?;
    let len: usize = line
        .strip_prefix("globals ")
        .and_then(|n| n.parse().ok())
        .filter(|n| *n <= GLOBALS_MAX)
        .ok_or_else(|| bad("its globals header is damaged"))?;
    let mut globals = vec![0u8; len];
    raw.read_exact(&mut globals)
        .map_err(|e| SourceError::io("reading the point's globals", e))?;
    let globals = String::from_utf8(globals).map_err(|_| bad("its globals are not text"))?;
    Ok((Some(globals), Box::new(raw)))
}

/// One `\n`-terminated line, at most `max` bytes.
fn read_line(raw: &mut dyn Read, max: usize) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() <= max {
        raw.read_exact(&mut byte)?;
        if byte[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(byte[0]);
    }
    Err(std::io::Error::other("header line too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globals_and_archive_come_back_apart() {
        let globals = "CREATE ROLE \"ünï\";\n";
        let mut stream =
            format!("{FRAMING_NAME}\nglobals {}\n{globals}", globals.len()).into_bytes();
        stream.extend_from_slice(b"PGDMP rest of the archive");
        let mut input = &stream[..];
        let (g, mut archive) = read_globals(&mut input).unwrap();
        assert_eq!(g.as_deref(), Some(globals));
        let mut rest = Vec::new();
        archive.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"PGDMP rest of the archive");
    }

    #[test]
    fn a_bare_archive_has_no_globals_and_keeps_its_first_bytes() {
        let mut input = &b"PGDMP\x01\x0e archive"[..];
        let (g, mut archive) = read_globals(&mut input).unwrap();
        assert!(g.is_none());
        let mut rest = Vec::new();
        archive.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"PGDMP\x01\x0e archive");
    }

    #[test]
    fn anything_else_is_refused() {
        let mut input = &b"SELECT 1; -- not an archive"[..];
        assert!(read_globals(&mut input).is_err());
    }
}
