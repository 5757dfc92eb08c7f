//! Pushing WAL files to every target of an export, getting them back for a
//! recovery, and the inventory that tells what a restore can reach.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, Utc};

use super::{ClusterIdentity, Lsn, SegmentHeader, WalFile, WalRange};
use crate::repository::Repository;
use crate::repository::wal::{WalObject, sha256_hex};
use crate::{Error, Result};

/// Which archive: the export's WAL on each of its targets.
pub struct Archive<'a> {
    pub host: &'a str,
    pub export: &'a str,
    pub repos: &'a [Repository],
    /// zstd level for the stored files.
    pub level: i32,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Written to at least one target (the others already held it).
    Stored,
    /// Every target already held exactly this content.
    AlreadyArchived,
}

/// A WAL file read from `pg_wal`, ready to be pushed.
pub struct Ready {
    pub file: WalFile,
    pub sha256: String,
    pub ended: DateTime<Utc>,
    header: Option<SegmentHeader>,
    stored: Vec<u8>,
    pub raw_size: u64,
}

impl Ready {
    /// The cluster's segment size, as the segment's own header gives it.
    pub fn segment_size(&self) -> Option<u64> {
        self.header.as_ref().map(|h| h.segment_size as u64)
    }

    /// Reads and checks the file at `path` (its name must be a WAL file's).
    pub fn read(path: &Path, level: i32) -> Result<Ready> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = WalFile::parse(&name).ok_or_else(|| {
            Error::Usage(format!(
                "`{name}` is not the name of a WAL segment, history or backup file"
            ))
        })?;
        let bytes = std::fs::read(path).map_err(|e| Error::io_path("cannot read", path, e))?;
        let modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(|e| Error::io_path("cannot read the time of", path, e))?;
        let header = if file.is_segment() {
            let header = SegmentHeader::read(&bytes).ok_or_else(|| {
                Error::Failed(format!("{name} does not start with a WAL segment header"))
            })?;
            header.matches(&as_written(&file, &header)).map_err(|e| {
                Error::Failed(format!("{name} is not the segment its name says: {e}"))
            })?;
            if bytes.len() as u64 != header.segment_size as u64 {
                return Err(Error::Failed(format!(
                    "{name} holds {} bytes, its header says segments are {}",
                    bytes.len(),
                    header.segment_size
                )));
            }
            Some(header)
        } else {
            None
        };
        let sha256 = sha256_hex(&bytes);
        let stored = zstd::bulk::compress(&bytes, level)
            .map_err(|e| Error::io(format!("cannot compress {name}"), e))?;
        Ok(Ready {
            file,
            sha256,
            ended: DateTime::<Utc>::from(modified),
            header,
            raw_size: bytes.len() as u64,
            stored,
        })
    }
}

/// The segment `file` as its first page header names it. A timeline that
/// begins in the middle of a segment (a promotion) begins with a copy of
/// its parent's segment up to the switch: that file's first pages still
/// carry an older timeline, which PostgreSQL accepts (a page's timeline
/// may only not be newer than the timeline read).
fn as_written(file: &WalFile, header: &SegmentHeader) -> WalFile {
    match *file {
        WalFile::Segment { timeline, log, seg } if header.timeline < timeline => WalFile::Segment {
            timeline: header.timeline,
            log,
            seg,
        },
        other => other,
    }
}

/// What a `get` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    /// Written to the destination from this target.
    Restored { target: String, size: u64 },
    /// Every target answered that it holds no such file.
    Absent,
}

impl Archive<'_> {
    /// Pushes one file to every target; succeeds only once each holds it.
    pub async fn push(&self, ready: &Ready) -> Result<Pushed> {
        let results =
            futures::future::join_all(self.repos.iter().map(|repo| self.push_one(repo, ready)))
                .await;
        let mut stored = false;
        let mut errors = Vec::new();
        for r in results {
            match r {
                Ok(Pushed::Stored) => stored = true,
                Ok(Pushed::AlreadyArchived) => {}
                Err(e) => errors.push(e),
            }
        }
        match errors.into_iter().reduce(|a, b| {
            // A conflict outranks a transient failure in what is reported.
            if matches!(b, Error::Conflict(_)) {
                b
            } else {
                a
            }
        }) {
            Some(e) => Err(e),
            None if stored => Ok(Pushed::Stored),
            None => Ok(Pushed::AlreadyArchived),
        }
    }

    async fn push_one(&self, repo: &Repository, ready: &Ready) -> Result<Pushed> {
        if let Some(header) = &ready.header {
            self.check_identity(repo, header).await?;
        }
        for existing in repo.wal_find(self.host, self.export, &ready.file).await? {
            match repo.wal_intact(&existing).await {
                Ok(()) if existing.sha256 == ready.sha256 => return Ok(Pushed::AlreadyArchived),
                Ok(()) => {
                    return Err(Error::Conflict(format!(
                        "target `{}` already archives a different {} (SHA-256 {}, this one {}): another cluster \
                         is archiving into export `{}`, or a server was promoted without a new timeline; \
                         nothing was overwritten",
                        repo.name(),
                        ready.file,
                        short(&existing.sha256),
                        short(&ready.sha256),
                        self.export
                    )));
                }
                // A copy of this very content that does not match its own
                // digest was never acknowledged (an upload cut short): it is
                // replaced. One of other content is never touched.
                Err(Error::Integrity { .. }) if existing.sha256 == ready.sha256 => {
                    tracing::warn!(target = repo.name(), object = %existing.key, "replacing an incomplete WAL object");
                    repo.wal_delete(&existing).await?;
                }
                Err(Error::Integrity { .. }) => {
                    return Err(Error::Conflict(format!(
                        "target `{}` holds a damaged copy of {} of other content (SHA-256 {}); it is left for \
                         inspection and nothing was overwritten",
                        repo.name(),
                        ready.file,
                        short(&existing.sha256)
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        repo.wal_store(
            self.host,
            self.export,
            &ready.file,
            &ready.sha256,
            ready.ended,
            ready.stored.clone(),
        )
        .await?;
        Ok(Pushed::Stored)
    }

    async fn check_identity(&self, repo: &Repository, header: &SegmentHeader) -> Result<()> {
        let found = header.system_identifier.to_string();
        match repo.wal_identity(self.host, self.export).await? {
            Some(id) if id.system_identifier == found => Ok(()),
            Some(id) => Err(Error::Conflict(format!(
                "target `{}` archives the cluster with system identifier {} for export `{}`; this segment \
                 comes from cluster {found}: a second cluster is using this policy; nothing was written",
                repo.name(),
                id.system_identifier,
                self.export
            ))),
            None => {
                repo.set_wal_identity(
                    self.host,
                    self.export,
                    &ClusterIdentity {
                        system_identifier: found,
                        segment_size: header.segment_size as u64,
                        page_magic: header.magic,
                        created_at: Utc::now(),
                    },
                )
                .await
            }
        }
    }

    /// Fetches `name` into `dest` from the first target holding an intact
    /// copy. "Absent" only when every target answered it holds none; a target
    /// that failed to answer, or a copy that fails its digest, makes it an
    /// error instead, so that a recovery stops rather than ends early.
    pub async fn get(&self, name: &str, dest: &Path, unreachable: usize) -> Result<Got> {
        let file = WalFile::parse(name).ok_or_else(|| {
            Error::Usage(format!(
                "`{name}` is not the name of a WAL segment, history or backup file"
            ))
        })?;
        let mut errors = Vec::new();
        for repo in self.repos {
            let copies = match repo.wal_find(self.host, self.export, &file).await {
                Ok(c) => c,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let digests: BTreeSet<&str> = copies.iter().map(|c| c.sha256.as_str()).collect();
            if digests.len() > 1 {
                errors.push(Error::Conflict(format!(
                    "target `{}` holds {} different copies of {name}; refusing to choose one",
                    repo.name(),
                    digests.len()
                )));
                continue;
            }
            let Some(copy) = copies.first() else { continue };
            match repo.wal_read(copy).await {
                Ok(bytes) => {
                    write_durably(dest, &bytes)?;
                    return Ok(Got::Restored {
                        target: repo.name().to_string(),
                        size: bytes.len() as u64,
                    });
                }
                Err(e) => errors.push(e),
            }
        }
        if unreachable > 0 && errors.is_empty() {
            return Err(Error::Failed(format!(
                "{name} is on no reachable target, and {unreachable} target(s) could not be reached"
            )));
        }
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(Got::Absent),
        }
    }
}

/// Writes `bytes` to `dest` through a temporary file beside it, synced
/// before and after the rename: PostgreSQL reads it as soon as we exit.
fn write_durably(dest: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".drp-wal-")
        .tempfile_in(dir)
        .map_err(|e| Error::io_path("cannot create a file in", dir, e))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| Error::io_path("cannot write", tmp.path(), e))?;
    tmp.persist(dest)
        .map_err(|e| Error::io_path("cannot write", dest, e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// How one timeline branched from its parent (a line of a `.history` file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branch {
    pub parent: u32,
    /// The first position on the new timeline.
    pub switch_lsn: Lsn,
}

/// Parses a `.history` file: `<parent timeline>\t<switch LSN>\t<reason>` lines.
pub fn parse_history(text: &str) -> Vec<Branch> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            Some(Branch {
                parent: fields.next()?.parse().ok()?,
                switch_lsn: Lsn::parse(fields.next()?)?,
            })
        })
        .collect()
}

/// What one target's archive holds for an export.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub segment_size: u64,
    pub identity: Option<ClusterIdentity>,
    /// Segments by timeline, then segment number, with when each ended.
    pub segments: BTreeMap<u32, BTreeMap<u64, DateTime<Utc>>>,
    /// Each timeline's ancestry, from its `.history` file.
    pub histories: BTreeMap<u32, Vec<Branch>>,
    /// Names archived under two different contents.
    pub conflicts: Vec<String>,
    pub files: usize,
}

/// A timeline's segments at a glance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineSummary {
    pub timeline: u32,
    pub first: String,
    pub last: String,
    pub segments: usize,
    /// Missing runs, as `(first missing, last missing)` file names.
    pub gaps: Vec<(String, String)>,
    pub newest_end: Option<DateTime<Utc>>,
}

/// How far a restore of one base backup can replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// Every segment the base backup itself needs is archived.
    pub restorable: bool,
    /// The newest instant a restore can reach (the end of the last segment
    /// of the unbroken run from the backup's start).
    pub until: Option<DateTime<Utc>>,
    /// The timeline a restore to the newest instant ends on.
    pub timeline: u32,
    /// The first segment missing after the run (not yet archived, or lost).
    pub next_missing: String,
}

impl Inventory {
    /// Reads the archive of `host`/`export` on one target.
    pub async fn read(repo: &Repository, host: &str, export: &str) -> Result<Inventory> {
        let identity = repo.wal_identity(host, export).await?;
        let segment_size = identity
            .as_ref()
            .map_or(super::DEFAULT_SEGMENT_SIZE, |i| i.segment_size);
        let mut inv = Inventory {
            segment_size,
            identity,
            ..Inventory::default()
        };
        let objects = repo.wal_list(host, export).await?;
        inv.files = objects.len();
        let mut seen: BTreeMap<WalFile, &WalObject> = BTreeMap::new();
        for o in &objects {
            if let Some(prev) = seen.insert(o.file, o)
                && prev.sha256 != o.sha256
            {
                inv.conflicts.push(o.file.to_string());
            }
            match o.file {
                WalFile::Segment { timeline, .. } => {
                    let segno = o.file.segno(segment_size).expect("segments have numbers");
                    inv.segments
                        .entry(timeline)
                        .or_default()
                        .insert(segno, o.ended);
                }
                WalFile::History { timeline } => {
                    let text = repo.wal_read(o).await?;
                    inv.histories
                        .insert(timeline, parse_history(&String::from_utf8_lossy(&text)));
                }
                WalFile::Partial { .. } | WalFile::Backup { .. } => {}
            }
        }
        Ok(inv)
    }

    pub fn timelines(&self) -> Vec<TimelineSummary> {
        let size = self.segment_size;
        self.segments
            .iter()
            .map(|(&tli, segs)| {
                let name = |s: u64| WalFile::segment(tli, s, size).to_string();
                let mut gaps = Vec::new();
                let mut prev: Option<u64> = None;
                for &s in segs.keys() {
                    if let Some(p) = prev
                        && s > p + 1
                    {
                        gaps.push((name(p + 1), name(s - 1)));
                    }
                    prev = Some(s);
                }
                TimelineSummary {
                    timeline: tli,
                    first: segs.keys().next().map(|&s| name(s)).unwrap_or_default(),
                    last: segs.keys().last().map(|&s| name(s)).unwrap_or_default(),
                    segments: segs.len(),
                    gaps,
                    newest_end: segs.values().max().copied(),
                }
            })
            .collect()
    }

    /// The timelines a restore from `base` follows, as `(timeline, first
    /// segment on it)`, oldest first: to the newest timeline descending from
    /// the base's, as PostgreSQL does with `recovery_target_timeline = latest`.
    fn chain(&self, range: &WalRange) -> Vec<(u32, u64)> {
        let base = range.timeline;
        // A timeline that left the base's before the backup was consistent
        // cannot be replayed from it (PostgreSQL: "not a child of this
        // server's history").
        let target = self
            .histories
            .iter()
            .filter(|(_, h)| {
                h.iter()
                    .any(|b| b.parent == base && b.switch_lsn >= range.stop_lsn)
            })
            .map(|(&t, _)| t)
            .max()
            .unwrap_or(base);
        let Some(history) = self.histories.get(&target).filter(|_| target != base) else {
            return vec![(base, 0)];
        };
        let mut chain = Vec::new();
        let mut begin = 0;
        for b in history.iter().skip_while(|b| b.parent != base) {
            chain.push((b.parent, begin));
            begin = b.switch_lsn.segment(self.segment_size);
        }
        chain.push((target, begin));
        chain
    }

    /// How far a restore of the base backup `range` can replay.
    pub fn reach(&self, range: &WalRange) -> Reach {
        let chain = self.chain(range);
        let timeline_of = |s: u64| {
            chain
                .iter()
                .rev()
                .find(|(_, begin)| *begin <= s)
                .map_or(range.timeline, |(t, _)| *t)
        };
        let ended = |s: u64| self.segments.get(&timeline_of(s))?.get(&s).copied();
        let mut s = range.first_segment();
        let mut until = None;
        while let Some(t) = ended(s) {
            until = Some(until.map_or(t, |u: DateTime<Utc>| u.max(t)));
            s += 1;
        }
        Reach {
            restorable: s > range.last_segment(),
            until,
            timeline: timeline_of(s),
            next_missing: WalFile::segment(timeline_of(s), s, self.segment_size).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory(segments: &[(u32, u64)], histories: &[(u32, &str)]) -> Inventory {
        let mut inv = Inventory {
            segment_size: super::super::DEFAULT_SEGMENT_SIZE,
            ..Inventory::default()
        };
        for &(tli, s) in segments {
            inv.segments
                .entry(tli)
                .or_default()
                .insert(s, DateTime::from_timestamp(1_000 + s as i64, 0).unwrap());
        }
        for &(tli, text) in histories {
            inv.histories.insert(tli, parse_history(text));
        }
        inv
    }

    fn range(tli: u32, start: &str, stop: &str) -> WalRange {
        WalRange {
            timeline: tli,
            start_lsn: Lsn::parse(start).unwrap(),
            stop_lsn: Lsn::parse(stop).unwrap(),
            system_identifier: "1".into(),
            segment_size: super::super::DEFAULT_SEGMENT_SIZE,
            consistent_after: Utc::now(),
        }
    }

    #[test]
    fn the_first_segment_of_a_timeline_may_start_with_its_parent_s_pages() {
        let header = |timeline| SegmentHeader {
            magic: 0xd110,
            timeline,
            page_address: 3 << 24,
            system_identifier: 1,
            segment_size: 1 << 24,
        };
        let file = WalFile::parse("000000020000000000000003").unwrap();
        // Promoted mid-segment: the parent's segment, copied up to the switch.
        assert!(header(1).matches(&as_written(&file, &header(1))).is_ok());
        assert!(header(2).matches(&as_written(&file, &header(2))).is_ok());
        // Pages from a newer timeline than the name's are not this file's.
        assert!(header(3).matches(&as_written(&file, &header(3))).is_err());
        // Nor is a segment of another position.
        let other = WalFile::parse("000000020000000000000004").unwrap();
        assert!(header(1).matches(&as_written(&other, &header(1))).is_err());
    }

    #[test]
    fn a_gap_ends_the_reach_and_a_missing_stop_segment_means_not_restorable() {
        let inv = inventory(&[(1, 2), (1, 3), (1, 5)], &[]);
        let reach = inv.reach(&range(1, "0/2000028", "0/3000100"));
        assert!(reach.restorable);
        assert_eq!(reach.until, DateTime::from_timestamp(1_003, 0));
        assert_eq!(reach.next_missing, "000000010000000000000004");
        assert!(!inv.reach(&range(1, "0/5000028", "0/6000100")).restorable);
        let tl = &inv.timelines()[0];
        assert_eq!(
            tl.gaps,
            vec![(
                "000000010000000000000004".to_string(),
                "000000010000000000000004".to_string()
            )]
        );
    }

    #[test]
    fn the_reach_follows_a_promotion_onto_the_new_timeline() {
        // Timeline 2 branched at 0/4000100: segment 4 onwards is read from it.
        let inv = inventory(
            &[(1, 2), (1, 3), (1, 4), (2, 4), (2, 5), (2, 6)],
            &[(2, "1\t0/4000100\tno recovery target specified\n")],
        );
        let reach = inv.reach(&range(1, "0/2000028", "0/2000100"));
        assert_eq!(reach.timeline, 2);
        assert_eq!(reach.until, DateTime::from_timestamp(1_006, 0));
        assert_eq!(reach.next_missing, "000000020000000000000007");
    }

    #[test]
    fn a_timeline_that_forked_before_the_backup_ended_is_not_followed() {
        // Timeline 2 left timeline 1 at 0/3000000; a backup of timeline 1
        // taken later (0/5000028 … 0/5000100) cannot replay onto it.
        let inv = inventory(
            &[(1, 5), (1, 6), (2, 3), (2, 4), (2, 5), (2, 6)],
            &[(2, "1\t0/3000000\tbefore the backup\n")],
        );
        let reach = inv.reach(&range(1, "0/5000028", "0/5000100"));
        assert_eq!(reach.timeline, 1);
        assert_eq!(reach.next_missing, "000000010000000000000007");
    }
}
