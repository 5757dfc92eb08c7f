//! What drp reads of an RDB file: its keys and keys with a time to live,
//! counted per database, and its CRC-64 checksum, read in one pass without
//! keeping any value. A backup counts the stream on its way to the targets;
//! a restore checks the staged file before it is put in place.
//!
//! Values are skipped by their encoding, as Redis writes them up to RDB
//! version 11 (Redis 7.2); a value type this build does not know (a module
//! type of the first format, hash fields with their own time to live) ends
//! the count, not the check: the point is kept with its keys unknown.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;

/// Keys of one database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DbKeys {
    pub keys: u64,
    /// Of `keys`, those with a time to live.
    pub expires: u64,
}

/// The keys an RDB holds, per database number.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keyspace(pub BTreeMap<u64, DbKeys>);

impl Keyspace {
    pub fn keys(&self) -> u64 {
        self.0.values().map(|d| d.keys).sum()
    }

    /// Keys without a time to live: every one of them is in the restored
    /// server (a key with one may have expired since).
    pub fn persistent(&self) -> u64 {
        self.0.values().map(|d| d.keys - d.expires).sum()
    }

    /// Read back from what [`fmt::Display`] writes (and what Redis's
    /// `INFO keyspace` prints, line by line): `db0:keys=2,expires=1;db2:…`.
    pub fn parse(text: &str) -> Option<Keyspace> {
        let mut out = BTreeMap::new();
        for part in text
            .split([';', '\n'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            if part.starts_with('#') {
                continue;
            }
            let (db, fields) = part.split_once(':')?;
            let db: u64 = db.strip_prefix("db")?.parse().ok()?;
            let mut keys = DbKeys::default();
            for field in fields.split(',') {
                match field.split_once('=')? {
                    ("keys", v) => keys.keys = v.parse().ok()?,
                    ("expires", v) => keys.expires = v.parse().ok()?,
                    _ => {}
                }
            }
            if keys.expires > keys.keys {
                return None;
            }
            out.insert(db, keys);
        }
        Some(Keyspace(out))
    }
}

impl fmt::Display for Keyspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(db, k)| format!("db{db}:keys={},expires={}", k.keys, k.expires))
            .collect();
        f.write_str(&parts.join(";"))
    }
}

/// What a read of an RDB found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    /// The RDB version (`REDIS0010`: 10).
    pub version: u32,
    /// `None` when a value of a type this build cannot skip stopped the count.
    pub keyspace: Option<Keyspace>,
    /// Why the count stopped, when it did.
    pub uncounted: Option<String>,
    /// Whether its checksum was there to check (Redis writes zeros with
    /// `rdbchecksum no`).
    pub checksum_checked: bool,
    /// Where the RDB ends (`u64::MAX` when the count stopped): what follows
    /// is the 40-byte end mark of a diskless transfer, which `redis-cli
    /// --rdb -` writes on its stdout after the RDB (Redis 7.0), and which a
    /// restore cuts off.
    pub len: u64,
}

/// The length of the mark that ends a diskless transfer.
const EOF_MARK: usize = 40;

/// Why an RDB is not one: truncated, damaged, or not an RDB at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged(pub String);

impl fmt::Display for Damaged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// CRC-64 with Jones' polynomial, reflected, as Redis computes it.
fn crc64_table() -> &'static [u64; 256] {
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        const POLY: u64 = 0x95ac_9329_ac4b_c9b5;
        let mut t = [0u64; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u64;
            for _ in 0..8 {
                c = if c & 1 == 1 { (c >> 1) ^ POLY } else { c >> 1 };
            }
            *slot = c;
        }
        t
    })
}

fn crc64(mut crc: u64, bytes: &[u8]) -> u64 {
    let t = crc64_table();
    for b in bytes {
        crc = t[((crc ^ *b as u64) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// A reader that sums what passes through it.
struct Summed<R> {
    inner: R,
    crc: u64,
    at: u64,
}

impl<R: Read> Summed<R> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), Damaged> {
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Damaged(format!("the RDB ends early, at byte {}", self.at))
            } else {
                Damaged(format!("cannot read the RDB at byte {}: {e}", self.at))
            }
        })?;
        self.crc = crc64(self.crc, buf);
        self.at += buf.len() as u64;
        Ok(())
    }

    fn byte(&mut self) -> Result<u8, Damaged> {
        let mut b = [0u8; 1];
        self.exact(&mut b)?;
        Ok(b[0])
    }

    fn skip(&mut self, mut n: u64) -> Result<(), Damaged> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            self.exact(&mut buf[..k])?;
            n -= k as u64;
        }
        Ok(())
    }
}

/// A length, or a string's special encoding.
enum Len {
    Plain(u64),
    Encoded(u8),
}

impl<R: Read> Summed<R> {
    fn len_or_encoding(&mut self) -> Result<Len, Damaged> {
        let b = self.byte()?;
        Ok(match b >> 6 {
            0 => Len::Plain((b & 0x3f) as u64),
            1 => Len::Plain((((b & 0x3f) as u64) << 8) | self.byte()? as u64),
            2 if b == 0x80 => {
                let mut x = [0u8; 4];
                self.exact(&mut x)?;
                Len::Plain(u32::from_be_bytes(x) as u64)
            }
            2 if b == 0x81 => {
                let mut x = [0u8; 8];
                self.exact(&mut x)?;
                Len::Plain(u64::from_be_bytes(x))
            }
            2 => {
                return Err(Damaged(format!(
                    "unknown length encoding {b:#x} at byte {}",
                    self.at
                )));
            }
            _ => Len::Encoded(b & 0x3f),
        })
    }

    fn len(&mut self) -> Result<u64, Damaged> {
        match self.len_or_encoding()? {
            Len::Plain(n) => Ok(n),
            Len::Encoded(_) => Err(Damaged(format!(
                "a string where a length belongs, at byte {}",
                self.at
            ))),
        }
    }

    fn skip_string(&mut self) -> Result<(), Damaged> {
        match self.len_or_encoding()? {
            Len::Plain(n) => self.skip(n),
            Len::Encoded(0) => self.skip(1),
            Len::Encoded(1) => self.skip(2),
            Len::Encoded(2) => self.skip(4),
            Len::Encoded(3) => {
                let compressed = self.len()?;
                let _uncompressed = self.len()?;
                self.skip(compressed)
            }
            Len::Encoded(e) => Err(Damaged(format!(
                "unknown string encoding {e} at byte {}",
                self.at
            ))),
        }
    }

    /// A module value or auxiliary field in the second format: opcodes up
    /// to the end marker.
    fn skip_module2(&mut self) -> Result<(), Damaged> {
        loop {
            match self.len()? {
                0 => return Ok(()),
                1 | 2 => {
                    self.len()?;
                }
                3 => self.skip(4)?,
                4 => self.skip(8)?,
                5 => self.skip_string()?,
                op => {
                    return Err(Damaged(format!(
                        "unknown module opcode {op} at byte {}",
                        self.at
                    )));
                }
            }
        }
    }

    fn skip_stream(&mut self, kind: u8) -> Result<(), Damaged> {
        for _ in 0..self.len()? {
            self.skip_string()?;
            self.skip_string()?;
        }
        // length, last id
        for _ in 0..3 {
            self.len()?;
        }
        if kind >= 19 {
            // first id, max deleted id, entries added
            for _ in 0..5 {
                self.len()?;
            }
        }
        for _ in 0..self.len()? {
            self.skip_string()?;
            self.len()?;
            self.len()?;
            if kind >= 19 {
                self.len()?;
            }
            for _ in 0..self.len()? {
                self.skip(16 + 8)?;
                self.len()?;
            }
            for _ in 0..self.len()? {
                self.skip_string()?;
                self.skip(8)?;
                if kind >= 21 {
                    self.skip(8)?;
                }
                let pending = self.len()?;
                self.skip(16 * pending)?;
            }
        }
        Ok(())
    }

    /// Skips one value of `kind`; `Ok(false)` for a kind this build cannot skip.
    fn skip_value(&mut self, kind: u8) -> Result<bool, Damaged> {
        match kind {
            0 | 9..=13 | 16 | 17 | 20 => self.skip_string()?,
            1 | 2 | 14 => {
                for _ in 0..self.len()? {
                    self.skip_string()?;
                }
            }
            3 => {
                for _ in 0..self.len()? {
                    self.skip_string()?;
                    let n = self.byte()?;
                    if n < 253 {
                        self.skip(n as u64)?;
                    }
                }
            }
            4 => {
                for _ in 0..self.len()? {
                    self.skip_string()?;
                    self.skip_string()?;
                }
            }
            5 => {
                for _ in 0..self.len()? {
                    self.skip_string()?;
                    self.skip(8)?;
                }
            }
            7 => {
                self.len()?;
                self.skip_module2()?;
            }
            15 | 19 | 21 => self.skip_stream(kind)?,
            18 => {
                for _ in 0..self.len()? {
                    self.len()?;
                    self.skip_string()?;
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Reads a whole RDB: its keys per database and its checksum. A damaged or
/// truncated RDB is an error; a value this build cannot skip stops the
/// count, and the rest is read through to its end.
pub fn read(input: impl Read) -> Result<Contents, Damaged> {
    let mut r = Summed {
        inner: input,
        crc: 0,
        at: 0,
    };
    let mut magic = [0u8; 9];
    r.exact(&mut magic)?;
    let version = std::str::from_utf8(&magic[5..])
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|_| &magic[..5] == b"REDIS")
        .ok_or_else(|| {
            Damaged("not an RDB file (it does not start with `REDIS` and a version)".into())
        })?;
    let mut dbs: BTreeMap<u64, DbKeys> = BTreeMap::new();
    let mut db = 0u64;
    let mut expiring = false;
    loop {
        let op = r.byte()?;
        match op {
            0xff => break,
            0xfe => {
                db = r.len()?;
                dbs.entry(db).or_default();
            }
            0xfd => {
                r.skip(4)?;
                expiring = true;
            }
            0xfc => {
                r.skip(8)?;
                expiring = true;
            }
            0xfb => {
                r.len()?;
                r.len()?;
            }
            0xfa => {
                r.skip_string()?;
                r.skip_string()?;
            }
            0xf9 => r.skip(1)?,
            0xf8 => {
                r.len()?;
            }
            0xf7 => {
                r.len()?;
                r.len()?;
                r.len()?;
                r.skip_module2()?;
            }
            0xf5 => r.skip_string()?,
            0xf4 => {
                r.len()?;
                r.len()?;
                r.len()?;
            }
            kind => {
                r.skip_string()?;
                if !r.skip_value(kind)? {
                    let why = format!("a value of type {kind} (unknown to this build)");
                    std::io::copy(&mut r.inner, &mut std::io::sink())
                        .map_err(|e| Damaged(format!("cannot read the RDB: {e}")))?;
                    return Ok(Contents {
                        version,
                        keyspace: None,
                        uncounted: Some(why),
                        checksum_checked: false,
                        len: u64::MAX,
                    });
                }
                let d = dbs.entry(db).or_default();
                d.keys += 1;
                if std::mem::take(&mut expiring) {
                    d.expires += 1;
                }
            }
        }
    }
    let computed = r.crc;
    let mut stored = [0u8; 8];
    let mut checksum_checked = false;
    if version >= 5 {
        r.exact(&mut stored)?;
        let stored = u64::from_le_bytes(stored);
        if stored != 0 && stored != computed {
            return Err(Damaged(format!(
                "the RDB's checksum does not match its content ({stored:016x} written, {computed:016x} read)"
            )));
        }
        checksum_checked = stored != 0;
    }
    let len = r.at;
    let mut rest = Vec::new();
    (&mut r.inner)
        .take(EOF_MARK as u64 + 1)
        .read_to_end(&mut rest)
        .map_err(|e| Damaged(format!("cannot read the RDB: {e}")))?;
    let mark = rest.len() == EOF_MARK && rest.iter().all(u8::is_ascii_alphanumeric);
    if !rest.is_empty() && !mark {
        return Err(Damaged("the RDB goes on after its end marker".into()));
    }
    dbs.retain(|_, d| d.keys > 0);
    Ok(Contents {
        version,
        keyspace: Some(Keyspace(dbs)),
        uncounted: None,
        checksum_checked,
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_redis_crc64_jones() {
        assert_eq!(crc64(0, b"123456789"), 0xe9c6_d914_c4b8_d9ca);
    }

    #[test]
    fn a_keyspace_reads_back_from_its_text_and_from_info_keyspace() {
        let k = Keyspace::parse("db0:keys=2,expires=1;db2:keys=1,expires=0").unwrap();
        assert_eq!(k.keys(), 3);
        assert_eq!(k.persistent(), 2);
        assert_eq!(Keyspace::parse(&k.to_string()).unwrap(), k);
        let info = "# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=97704\r\ndb2:keys=1,expires=0,avg_ttl=0\r\n";
        assert_eq!(Keyspace::parse(info).unwrap(), k);
        assert_eq!(Keyspace::parse("").unwrap().keys(), 0);
        assert!(Keyspace::parse("db0:keys=1,expires=2").is_none());
        assert!(Keyspace::parse("x").is_none());
    }

    /// An RDB as Redis 7.0 writes one: aux fields, two databases, a key
    /// with a time to live, a list, an LZF-compressed string, the checksum.
    fn sample() -> Vec<u8> {
        let mut b = b"REDIS0010".to_vec();
        b.extend([0xfa, 9]);
        b.extend(b"redis-ver");
        b.extend([6]);
        b.extend(b"7.0.15");
        b.extend([0xfe, 0, 0xfb, 3, 1]);
        b.extend([0, 1, b'a', 0xc0, 7]); // a = 7 (int8)
        b.extend([0xfc, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, b'b', 1, b'x']); // b, with a TTL
        b.extend([1, 1, b'l', 2, 1, b'p', 1, b'q']); // list l = [p, q]
        b.extend([0xfe, 2, 0xfb, 1, 0]);
        b.extend([0, 1, b'c', 0xc3, 2, 3, 0, 0]); // c, LZF: 2 compressed bytes
        b.push(0xff);
        let crc = crc64(0, &b);
        b.extend(crc.to_le_bytes());
        b
    }

    #[test]
    fn keys_are_counted_per_database_with_those_that_expire() {
        let read = read(sample().as_slice()).unwrap();
        assert_eq!(read.version, 10);
        assert!(read.checksum_checked);
        assert_eq!(
            read.keyspace.unwrap().to_string(),
            "db0:keys=3,expires=1;db2:keys=1,expires=0"
        );
    }

    #[test]
    fn a_damaged_or_truncated_rdb_is_refused() {
        let good = sample();
        let mut flipped = good.clone();
        // A byte of the server's version, inside a string: only the checksum tells.
        flipped[22] ^= 1;
        assert!(read(flipped.as_slice()).unwrap_err().0.contains("checksum"));
        for cut in [3, 30, good.len() - 3] {
            let err = read(&good[..cut]).unwrap_err().0;
            assert!(
                err.contains("ends early") || err.contains("not an RDB"),
                "{cut}: {err}"
            );
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(read(longer.as_slice()).unwrap_err().0.contains("goes on"));
        // The end mark of a diskless transfer is not part of the RDB.
        let mut marked = good.clone();
        marked.extend(b"2ce44ed8a126abc1859c9c67038e9274f7b7dadf");
        let contents = read(marked.as_slice()).unwrap();
        assert_eq!(contents.len, good.len() as u64);
        marked.push(b'0');
        assert!(read(marked.as_slice()).is_err());
    }

    #[test]
    fn a_value_of_an_unknown_type_leaves_the_keys_uncounted() {
        let mut b = b"REDIS0011".to_vec();
        b.extend([0xfe, 0, 22, 1, b'h', 9, 9, 9]);
        let read = read(b.as_slice()).unwrap();
        assert_eq!(read.keyspace, None);
        assert!(read.uncounted.unwrap().contains("type 22"));
    }
}
