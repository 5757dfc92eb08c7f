//! Continuous archiving of PostgreSQL's write-ahead log: the files
//! `archive_command` hands over, how they are named and checked, and the
//! archive they go to ([`archive`]).
//!
//! PostgreSQL's contract, kept exactly: a file is acknowledged only once every
//! target holds it durably; an archived name is never overwritten (the same
//! content again is success, different content an error); `get` says "absent"
//! only when every target answered that it is.

pub mod archive;
pub mod binlog;
pub mod run;
pub mod ship;
pub mod spool;

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A position in the WAL (`0/2000028` in PostgreSQL's notation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    pub fn parse(text: &str) -> Option<Lsn> {
        let (hi, lo) = text.trim().split_once('/')?;
        let hi = u32::from_str_radix(hi, 16).ok()?;
        let lo = u32::from_str_radix(lo, 16).ok()?;
        Some(Lsn(((hi as u64) << 32) | lo as u64))
    }

    /// The segment holding this position.
    pub fn segment(self, segment_size: u64) -> u64 {
        self.0 / segment_size
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Lsn::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("invalid LSN `{text}`")))
    }
}

/// PostgreSQL's default segment size; the real one is read from each
/// segment's header and recorded with the cluster.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// The files `archive_command` archives, by their names. Anything else is
/// refused: a name is part of an object key, so only these shapes are keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalFile {
    /// `TTTTTTTTXXXXXXXXYYYYYYYY`: timeline, then log and segment numbers.
    Segment { timeline: u32, log: u32, seg: u32 },
    /// `TTTTTTTTXXXXXXXXYYYYYYYY.partial`: the last, incomplete segment of a
    /// timeline a standby was promoted from.
    Partial { timeline: u32, log: u32, seg: u32 },
    /// `TTTTTTTTXXXXXXXXYYYYYYYY.OOOOOOOO.backup`: a base backup's start
    /// and stop positions.
    Backup {
        timeline: u32,
        log: u32,
        seg: u32,
        offset: u32,
    },
    /// `TTTTTTTT.history`: how a timeline branched from its parent.
    History { timeline: u32 },
}

fn hex8(text: &str) -> Option<u32> {
    (text.len() == 8 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(text, 16).ok())
        .flatten()
}

fn hex24(text: &str) -> Option<(u32, u32, u32)> {
    if text.len() != 24 {
        return None;
    }
    Some((hex8(&text[..8])?, hex8(&text[8..16])?, hex8(&text[16..])?))
}

impl WalFile {
    pub fn parse(name: &str) -> Option<WalFile> {
        if let Some(tli) = name.strip_suffix(".history") {
            return Some(WalFile::History {
                timeline: hex8(tli)?,
            });
        }
        if let Some(seg) = name.strip_suffix(".partial") {
            let (timeline, log, seg) = hex24(seg)?;
            return Some(WalFile::Partial { timeline, log, seg });
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (seg, offset) = rest.split_once('.')?;
            let (timeline, log, seg) = hex24(seg)?;
            return Some(WalFile::Backup {
                timeline,
                log,
                seg,
                offset: hex8(offset)?,
            });
        }
        let (timeline, log, seg) = hex24(name)?;
        Some(WalFile::Segment { timeline, log, seg })
    }

    /// The segment file holding `segno` on `timeline`.
    pub fn segment(timeline: u32, segno: u64, segment_size: u64) -> WalFile {
        let per_log = 0x1_0000_0000 / segment_size;
        WalFile::Segment {
            timeline,
            log: (segno / per_log) as u32,
            seg: (segno % per_log) as u32,
        }
    }

    pub fn timeline(&self) -> u32 {
        match *self {
            WalFile::Segment { timeline, .. }
            | WalFile::Partial { timeline, .. }
            | WalFile::Backup { timeline, .. }
            | WalFile::History { timeline } => timeline,
        }
    }

    /// The segment number (for segments, partial segments and backup files).
    pub fn segno(&self, segment_size: u64) -> Option<u64> {
        let per_log = 0x1_0000_0000 / segment_size;
        match *self {
            WalFile::Segment { log, seg, .. }
            | WalFile::Partial { log, seg, .. }
            | WalFile::Backup { log, seg, .. } => Some(log as u64 * per_log + seg as u64),
            WalFile::History { .. } => None,
        }
    }

    pub fn is_segment(&self) -> bool {
        matches!(self, WalFile::Segment { .. })
    }

    /// The folder of the archive it is kept in: its timeline and log number
    /// for segments, `history` for timeline histories.
    pub fn folder(&self) -> String {
        match *self {
            WalFile::Segment { timeline, log, .. }
            | WalFile::Partial { timeline, log, .. }
            | WalFile::Backup { timeline, log, .. } => format!("{timeline:08X}{log:08X}"),
            WalFile::History { .. } => "history".into(),
        }
    }
}

impl fmt::Display for WalFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WalFile::Segment { timeline, log, seg } => {
                write!(f, "{timeline:08X}{log:08X}{seg:08X}")
            }
            WalFile::Partial { timeline, log, seg } => {
                write!(f, "{timeline:08X}{log:08X}{seg:08X}.partial")
            }
            WalFile::Backup {
                timeline,
                log,
                seg,
                offset,
            } => write!(f, "{timeline:08X}{log:08X}{seg:08X}.{offset:08X}.backup"),
            WalFile::History { timeline } => write!(f, "{timeline:08X}.history"),
        }
    }
}

/// What the first page of a segment says about the cluster that wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The page format magic (one per PostgreSQL major version).
    pub magic: u16,
    pub timeline: u32,
    /// Position of the segment's first byte.
    pub page_address: u64,
    pub system_identifier: u64,
    pub segment_size: u32,
}

/// `XLP_LONG_HEADER`: the first page of a segment carries the long header.
const XLP_LONG_HEADER: u16 = 0x0002;

impl SegmentHeader {
    /// Reads the long page header at the start of a segment (little-endian,
    /// as on every platform drp runs on).
    pub fn read(bytes: &[u8]) -> Option<SegmentHeader> {
        if bytes.len() < 40 {
            return None;
        }
        let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
        if u16_at(2) & XLP_LONG_HEADER == 0 {
            return None;
        }
        Some(SegmentHeader {
            magic: u16_at(0),
            timeline: u32_at(4),
            page_address: u64_at(8),
            system_identifier: u64_at(24),
            segment_size: u32_at(32),
        })
    }

    /// Whether this header belongs at the start of segment `file`.
    pub fn matches(&self, file: &WalFile) -> Result<(), String> {
        let size = self.segment_size as u64;
        if !size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&size) {
            return Err(format!("its header gives a segment size of {size} bytes"));
        }
        if self.timeline != file.timeline() {
            return Err(format!(
                "its header says timeline {}, its name timeline {}",
                self.timeline,
                file.timeline()
            ));
        }
        let expected = file.segno(size).unwrap_or_default() * size;
        if self.page_address != expected {
            return Err(format!(
                "its header says it starts at {}, its name at {}",
                Lsn(self.page_address),
                Lsn(expected)
            ));
        }
        Ok(())
    }
}

/// The cluster an archive belongs to, recorded with the first file pushed:
/// segments from another cluster are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    /// `pg_controldata`'s "Database system identifier", as text (it exceeds
    /// what JSON numbers carry exactly).
    pub system_identifier: String,
    pub segment_size: u64,
    /// The WAL page magic, which tells the major version.
    pub page_magic: u16,
    pub created_at: DateTime<Utc>,
}

/// What a base backup needs from the archive to be restored: every segment
/// from its start to its stop position, on its timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalRange {
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub system_identifier: String,
    pub segment_size: u64,
    /// When the backup was certainly over: a point-in-time restore can reach
    /// instants from here on.
    pub consistent_after: DateTime<Utc>,
}

impl WalRange {
    pub fn first_segment(&self) -> u64 {
        self.start_lsn.segment(self.segment_size)
    }

    pub fn last_segment(&self) -> u64 {
        // The stop position is the first byte after the backup's last
        // record; when it opens a new segment, that segment is not needed.
        (self.stop_lsn.0.saturating_sub(1)).max(self.start_lsn.0) / self.segment_size
    }
}

/// How far the archive lets a restore go.
#[derive(Debug, Clone, Default)]
pub struct ArchiveReach {
    /// The newest instant a restore can reach.
    pub until: Option<chrono::DateTime<Utc>>,
    /// Base backups whose WAL is archived (on the target holding the most).
    pub restorable: usize,
    /// The first file missing after the newest reach: archiving it (and
    /// only it) carries the reach further.
    pub next_missing: Option<String>,
}

impl ArchiveReach {
    /// The better of two targets' reaches.
    pub fn merge(&mut self, other: ArchiveReach) {
        self.restorable = self.restorable.max(other.restorable);
        if other.until > self.until {
            self.until = other.until;
            self.next_missing = other.next_missing;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_nothing_else_is_a_name() {
        for name in [
            "000000010000000000000002",
            "0000000200000001000000FF.partial",
            "000000010000000000000002.00000028.backup",
            "00000002.history",
        ] {
            assert_eq!(WalFile::parse(name).unwrap().to_string(), name);
        }
        for bad in [
            "",
            "../../etc/passwd",
            "00000001000000000000000",
            "00000001000000000000000G",
            "000000010000000000000002.backup",
            "0000001.history",
            "RECOVERYXLOG",
        ] {
            assert_eq!(WalFile::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn segment_numbers_follow_the_segment_size() {
        let f = WalFile::parse("0000000100000001000000FF").unwrap();
        assert_eq!(f.segno(DEFAULT_SEGMENT_SIZE), Some(256 + 255));
        assert_eq!(WalFile::segment(1, 511, DEFAULT_SEGMENT_SIZE), f);
        let lsn = Lsn::parse("1/FF000028").unwrap();
        assert_eq!(lsn.segment(DEFAULT_SEGMENT_SIZE), 511);
        assert_eq!(lsn.to_string(), "1/FF000028");
    }

    #[test]
    fn a_backup_ending_on_a_segment_boundary_does_not_need_the_next_one() {
        let range = WalRange {
            timeline: 1,
            start_lsn: Lsn::parse("0/2000028").unwrap(),
            stop_lsn: Lsn::parse("0/3000000").unwrap(),
            system_identifier: "1".into(),
            segment_size: DEFAULT_SEGMENT_SIZE,
            consistent_after: Utc::now(),
        };
        assert_eq!((range.first_segment(), range.last_segment()), (2, 2));
    }

    #[test]
    fn a_header_is_checked_against_its_name() {
        let mut page = vec![0u8; 64];
        page[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        page[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        page[4..8].copy_from_slice(&1u32.to_le_bytes());
        page[8..16].copy_from_slice(&(2 * DEFAULT_SEGMENT_SIZE).to_le_bytes());
        page[24..32].copy_from_slice(&7_312_345_678_901_234_567u64.to_le_bytes());
        page[32..36].copy_from_slice(&(DEFAULT_SEGMENT_SIZE as u32).to_le_bytes());
        let h = SegmentHeader::read(&page).unwrap();
        assert_eq!(h.system_identifier, 7_312_345_678_901_234_567);
        assert!(
            h.matches(&WalFile::parse("000000010000000000000002").unwrap())
                .is_ok()
        );
        let wrong = h
            .matches(&WalFile::parse("000000010000000000000003").unwrap())
            .unwrap_err();
        assert!(wrong.contains("starts at 0/2000000"), "{wrong}");
        assert!(
            h.matches(&WalFile::parse("000000020000000000000002").unwrap())
                .is_err()
        );
    }
}
