//! A base backup's export stream: `pg_basebackup`'s tar, watched on its
//! way through for `backup_label` and `backup_manifest`, whose checksum and
//! WAL range are checked once the stream ends.

use std::io::Read;

use chrono::Utc;
use serde::Deserialize;

use super::ServerFacts;
use super::tar_watch::TarWatch;
use crate::archiving::{Lsn, WalRange};
use crate::source::process::ChildExport;
use crate::source::{ExportInfo, ExportStream, SourceError};

/// A base backup's stream, watched for its `backup_label` and
/// `backup_manifest` on the way through.
pub(super) struct BaseBackup {
    pub(super) child: ChildExport,
    pub(super) watch: TarWatch,
    pub(super) facts: ServerFacts,
}

impl Read for BaseBackup {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.child.read(buf)?;
        self.watch.feed(&buf[..n]);
        Ok(n)
    }
}

impl ExportStream for BaseBackup {
    fn finish(self: Box<Self>) -> Result<ExportInfo, SourceError> {
        let this = *self;
        let mut info = Box::new(this.child).finish()?;
        let label = this
            .watch
            .file("backup_label")
            .ok_or_else(|| SourceError::Invalid("the base backup holds no backup_label".into()))?;
        let manifest = this.watch.file("backup_manifest").ok_or_else(|| {
            SourceError::Invalid("the base backup holds no backup_manifest".into())
        })?;
        check_manifest_checksum(manifest)?;
        let (timeline, start_lsn, stop_lsn) = wal_range(manifest)?;
        let label = String::from_utf8_lossy(label);
        let label_start = label
            .lines()
            .find_map(|l| l.strip_prefix("START WAL LOCATION: "))
            .and_then(|l| Lsn::parse(l.split_whitespace().next()?));
        if label_start != Some(start_lsn) {
            return Err(SourceError::Invalid(format!(
                "the base backup's backup_label and backup_manifest disagree on its start ({label_start:?} vs {start_lsn})"
            )));
        }
        info.wal = Some(WalRange {
            timeline,
            start_lsn,
            stop_lsn,
            system_identifier: this.facts.system_identifier,
            segment_size: this.facts.segment_size,
            consistent_after: Utc::now(),
        });
        Ok(info)
    }
}

/// Checks the manifest's own SHA-256 (its last line): the server's record
/// of every file's size and checksum arrived whole.
fn check_manifest_checksum(manifest: &[u8]) -> Result<(), SourceError> {
    use sha2::{Digest as _, Sha256};
    let text = String::from_utf8_lossy(manifest);
    let key = "\"Manifest-Checksum\": \"";
    let at = text
        .rfind(key)
        .ok_or_else(|| SourceError::Invalid("the backup_manifest has no checksum".into()))?;
    let covered = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let expected: String = text[at + key.len()..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    let actual = hex::encode(Sha256::digest(&manifest[..covered]));
    if actual != expected {
        return Err(SourceError::Invalid(format!(
            "the backup_manifest's checksum does not match its content ({actual} vs {expected})"
        )));
    }
    Ok(())
}

/// The timeline and start and stop positions in a backup manifest's
/// `WAL-Ranges` (a backup taken on a primary has exactly one).
fn wal_range(manifest: &[u8]) -> Result<(u32, Lsn, Lsn), SourceError> {
    #[derive(Deserialize)]
    struct Range {
        #[serde(rename = "Timeline")]
        timeline: u32,
        #[serde(rename = "Start-LSN")]
        start: String,
        #[serde(rename = "End-LSN")]
        end: String,
    }
    #[derive(Deserialize)]
    struct Manifest {
        #[serde(rename = "WAL-Ranges")]
        ranges: Vec<Range>,
    }
    let m: Manifest = serde_json::from_slice(manifest)
        .map_err(|e| SourceError::Invalid(format!("the backup_manifest cannot be read: {e}")))?;
    let [r] = &m.ranges[..] else {
        return Err(SourceError::Invalid(format!(
            "the backup spans {} timelines; drp takes base backups from a primary",
            m.ranges.len()
        )));
    };
    let lsn = |t: &str| {
        Lsn::parse(t)
            .ok_or_else(|| SourceError::Invalid(format!("invalid LSN `{t}` in the manifest")))
    };
    Ok((r.timeline, lsn(&r.start)?, lsn(&r.end)?))
}

#[cfg(test)]
mod tests {
    use super::super::parse_size;
    use super::*;

    #[test]
    fn a_manifest_is_checked_against_its_own_checksum() {
        let body = "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n";
        use sha2::{Digest as _, Sha256};
        let sum = hex::encode(Sha256::digest(body.as_bytes()));
        let good = format!("{body}\"Manifest-Checksum\": \"{sum}\"}}\n");
        check_manifest_checksum(good.as_bytes()).unwrap();
        assert_eq!(
            wal_range(good.as_bytes()).unwrap(),
            (
                1,
                Lsn::parse("0/2000028").unwrap(),
                Lsn::parse("0/2000100").unwrap()
            )
        );
        let bad = good.replace("0/2000100", "0/2000108");
        assert!(check_manifest_checksum(bad.as_bytes()).is_err());
        assert_eq!(parse_size("16MB"), Some(16 << 20));
    }
}
