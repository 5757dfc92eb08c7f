//! Prune: apply an export's retention to each of its targets, and remove what
//! never got a manifest (uploads of killed runs) once it is older than the
//! grace period.
//!
//! Deleting a point removes its manifest first — the point disappears at once
//! — then its data object. A crash in between leaves an orphan that the next
//! prune removes. A backup still running on another host is protected by the
//! grace period; one running on this host, by the export lock.

use chrono::{DateTime, Utc};

use crate::Result;
use crate::config::{Export, Policy};
use crate::manifest::Manifest;
use crate::repository::Repository;
use crate::repository::binlog::BinlogObject;
use crate::repository::wal::WalObject;
use crate::retention::{self, Decision};

#[derive(Debug)]
pub struct PointVerdict {
    pub decision: Decision,
    /// Its digests were checked by reading it back (`verify`, a restore).
    pub verified: bool,
    pub deleted: bool,
}

#[derive(Debug)]
pub struct TargetPrune {
    pub target: String,
    pub points: Vec<PointVerdict>,
    /// Data objects and temporary files without a manifest, removed (or, in a
    /// dry run, to remove).
    pub orphans: Vec<String>,
    /// Younger orphans left for the grace period.
    pub young_orphans: Vec<String>,
    pub errors: Vec<String>,
    /// Archived WAL files no kept base backup needs (removed unless a dry run).
    pub wal_removed: Vec<String>,
    /// The first WAL segment the oldest kept base backup needs.
    pub wal_kept_from: Option<String>,
    /// An incremental export's restic snapshots that no point names any
    /// more, forgotten and their unshared data pruned (or, in a dry run, to be).
    pub snapshots_forgotten: Vec<String>,
}

impl TargetPrune {
    /// A prune of `target` before anything is decided.
    fn nothing_yet(target: &str) -> TargetPrune {
        TargetPrune {
            target: target.to_string(),
            points: Vec::new(),
            orphans: Vec::new(),
            young_orphans: Vec::new(),
            errors: Vec::new(),
            wal_removed: Vec::new(),
            wal_kept_from: None,
            snapshots_forgotten: Vec::new(),
        }
    }
}

/// Parses the start time encoded in a point id (`20261121T060001Z-…`).
pub fn id_time(id: &str) -> Option<DateTime<Utc>> {
    let stamp = id.split('-').next()?;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

pub(crate) async fn prune_target(
    policy: &Policy,
    export: &Export,
    repo: &Repository,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<TargetPrune> {
    let host = &policy.host;
    let listing = repo.list(host, &export.name).await?;
    let mut out = TargetPrune::nothing_yet(repo.name());

    let points: Vec<(String, DateTime<Utc>)> = listing
        .points
        .iter()
        .map(|m| (m.id.clone(), m.consistency_time))
        .collect();
    let mut decisions = retention::apply(&export.retention, &points, policy.timezone);
    let by_id: std::collections::HashMap<&str, &Manifest> =
        listing.points.iter().map(|m| (m.id.as_str(), m)).collect();
    // Which points have a verification record: one listing. The records
    // retention relies on (the newest verified points counted towards
    // min_verified) are read and checked against their manifest; the
    // others are counted by their presence.
    let recorded = repo.verification_records(host, &export.name).await;
    let mut verified: Vec<bool> = decisions.iter().map(|d| recorded.contains(&d.id)).collect();
    let min = export.retention.min_verified.unwrap_or(1) as usize;
    let mut checked = vec![false; decisions.len()];
    let mut check = async |i: usize, verified: &mut Vec<bool>| {
        if verified[i] && !checked[i] {
            checked[i] = true;
            let m = by_id[decisions[i].id.as_str()].clone();
            verified[i] = !repo.verified(&[m]).await.is_empty();
        }
        verified[i]
    };
    // Never fall below the minimum of verified points: keep the next
    // newest verified ones if the rules would not. When there are not
    // enough verified points at all, delete no point.
    let mut have = 0;
    let mut more = Vec::new();
    let keeps: Vec<bool> = decisions.iter().map(|d| d.keep()).collect();
    for (i, keep) in keeps.into_iter().enumerate() {
        if have >= min {
            break;
        }
        if keep {
            have += usize::from(check(i, &mut verified).await);
        } else {
            more.push(i);
        }
    }
    let mut extra = Vec::new();
    for i in more {
        if have >= min {
            break;
        }
        if check(i, &mut verified).await {
            extra.push(i);
            have += 1;
        }
    }
    for i in extra {
        decisions[i].reasons.push(format!("min_verified {min}"));
    }
    if have < min && decisions.iter().any(|d| !d.keep()) {
        let shortfall = format!("only {have} verified (min_verified {min})");
        for d in decisions.iter_mut().filter(|d| !d.keep()) {
            d.reasons.push(shortfall.clone());
        }
        out.errors.push(format!(
            "no point deleted: {shortfall}; run `drp-agent verify --policy FILE --latest` to check the newest point"
        ));
    }
    for (mut decision, verified) in decisions.into_iter().zip(verified) {
        let mut deleted = false;
        if !decision.keep() {
            // A locked point is kept until its lock ends: a delete would
            // only hide it behind a delete marker.
            let m = by_id[decision.id.as_str()];
            match repo.locked_until(&m.stored.object).await {
                Ok(Some(until)) if until > now => decision.reasons.push(format!(
                    "object lock until {}",
                    until.format("%Y-%m-%d %H:%M UTC")
                )),
                Ok(_) => {}
                Err(e) => {
                    out.errors.push(format!("{e}; the point is kept"));
                    decision.reasons.push("object lock unknown".into());
                }
            }
        }
        if !decision.keep() && !dry_run {
            let m = by_id[decision.id.as_str()];
            match repo.uncommit(host, &export.name, &m.id).await {
                Ok(()) => {
                    deleted = true;
                    if let Err(e) = repo.delete_object(&m.stored.object).await {
                        out.errors.push(format!("{e} (removed by the next prune)"));
                    }
                }
                Err(e) => out.errors.push(e.to_string()),
            }
        }
        out.points.push(PointVerdict {
            decision,
            verified,
            deleted,
        });
    }

    // An incremental export's snapshots no point names any more go too,
    // and with them the data no other snapshot shares.
    if let Some(c) = crate::source::directory::incremental::settings(&export.source)
        && let Some(target) = policy.targets.get(repo.name())
        && listing.damaged.is_empty()
    {
        let grace = chrono::Duration::from_std(policy.prune.grace.as_duration())
            .unwrap_or(chrono::Duration::days(1));
        let named = out
            .points
            .iter()
            .filter(|p| p.decision.keep() || (!p.deleted && !dry_run))
            .map(|p| p.decision.id.clone())
            .collect();
        let deleted = out
            .points
            .iter()
            .filter(|p| p.deleted || (dry_run && !p.decision.keep()))
            .map(|p| p.decision.id.clone())
            .collect();
        let (forgotten, errors) = crate::source::directory::incremental::prune(
            c,
            target,
            &policy.base_dir,
            host,
            &export.name,
            named,
            deleted,
            now - grace,
            dry_run,
        )
        .await;
        out.snapshots_forgotten = forgotten;
        out.errors.extend(errors);
    }

    if out.points.iter().any(|p| p.deleted) {
        // The catalogue index follows (the manifests stay the truth).
        let left: Vec<Manifest> = out
            .points
            .iter()
            .filter(|p| !p.deleted)
            .map(|p| by_id[p.decision.id.as_str()].clone())
            .collect();
        if let Err(e) = repo.replace_index(host, &export.name, &left).await {
            tracing::warn!(
                "the catalogue index of {host}/{} is behind: {e}",
                export.name
            );
        }
    }

    let kept: Vec<&Manifest> = out
        .points
        .iter()
        .filter(|p| p.decision.keep())
        .map(|p| by_id[p.decision.id.as_str()])
        .collect();
    for archive in [LogArchive::Wal, LogArchive::Binlog] {
        prune_logs(archive, repo, host, &export.name, &kept, dry_run, &mut out).await?;
    }

    // Orphans: data objects whose manifest is absent (damaged manifests are
    // reported by list and verify, and their data is left for inspection).
    let grace = chrono::Duration::from_std(policy.prune.grace.as_duration())
        .unwrap_or(chrono::Duration::days(1));
    let damaged: Vec<String> = listing.damaged.iter().map(|d| d.object.clone()).collect();
    let known: std::collections::HashSet<&str> =
        listing.points.iter().map(|m| m.id.as_str()).collect();
    for (id, path) in repo.data_objects(host, &export.name).await? {
        if known.contains(id.as_str()) || damaged.iter().any(|d| d.contains(&id)) {
            continue;
        }
        match id_time(&id) {
            Some(t) if now - t > grace => out.orphans.push(path),
            _ => out.young_orphans.push(path),
        }
    }
    // Index segments the index no longer names.
    out.orphans.extend(
        repo.stale_index_segments(host, &export.name, now - grace)
            .await,
    );
    for (path, modified) in repo.temporary_files().await {
        if modified.is_some_and(|t| now - t > grace) {
            out.orphans.push(path);
        } else {
            out.young_orphans.push(path);
        }
    }
    if !dry_run {
        for path in &out.orphans {
            if let Err(e) = repo.delete_object(path).await {
                out.errors.push(e.to_string());
            }
        }
    }
    Ok(out)
}

/// The archived logs a kept point replays from, one walk for both kinds:
/// what comes before the oldest kept point's first file is removed, since
/// no restore or replay starts earlier. Nothing is removed while no point
/// with a start in that archive is kept (the archive is then all there is).
#[derive(Debug, Clone, Copy)]
enum LogArchive {
    /// PostgreSQL's archived WAL; timeline histories are always kept.
    Wal,
    /// MariaDB's shipped binary logs.
    Binlog,
}

/// Where the oldest kept point starts in an archive.
struct ArchiveStart {
    /// The first position still needed: a WAL segment number or a binary
    /// log's sequence number.
    from: u64,
    /// The name of that first file (reported as `wal_kept_from`).
    file: String,
    /// The WAL segment size positions are counted in (unused for binary
    /// logs, whose sequence numbers are positions already).
    segment_size: u64,
}

/// One archived file, of either kind.
enum ArchivedLog {
    Wal(WalObject),
    Binlog(BinlogObject),
}

impl LogArchive {
    /// The oldest kept point's start in this archive, if any kept point has one.
    fn start(self, kept: &[&Manifest]) -> Option<ArchiveStart> {
        match self {
            LogArchive::Wal => {
                let oldest = kept
                    .iter()
                    .filter_map(|m| m.wal.as_ref())
                    .min_by_key(|w| w.first_segment())?;
                let from = oldest.first_segment();
                Some(ArchiveStart {
                    from,
                    file: crate::archiving::WalFile::segment(
                        oldest.timeline,
                        from,
                        oldest.segment_size,
                    )
                    .to_string(),
                    segment_size: oldest.segment_size,
                })
            }
            LogArchive::Binlog => {
                let oldest = kept
                    .iter()
                    .filter_map(|m| m.binlog.as_ref())
                    .min_by_key(|b| crate::archiving::binlog::sequence(&b.file))?;
                Some(ArchiveStart {
                    from: crate::archiving::binlog::sequence(&oldest.file).unwrap_or(0),
                    file: oldest.file.clone(),
                    segment_size: 0,
                })
            }
        }
    }

    async fn list(self, repo: &Repository, host: &str, export: &str) -> Result<Vec<ArchivedLog>> {
        Ok(match self {
            LogArchive::Wal => (repo.wal_list(host, export).await?)
                .into_iter()
                .map(ArchivedLog::Wal)
                .collect(),
            LogArchive::Binlog => (repo.binlog_list(host, export).await?)
                .into_iter()
                .map(ArchivedLog::Binlog)
                .collect(),
        })
    }
}

impl ArchivedLog {
    /// Its position, counted as `start` counts; none for a timeline history.
    fn position(&self, start: &ArchiveStart) -> Option<u64> {
        match self {
            ArchivedLog::Wal(o) => o.file.segno(start.segment_size),
            ArchivedLog::Binlog(o) => Some(o.sequence()),
        }
    }

    fn key(&self) -> &str {
        match self {
            ArchivedLog::Wal(o) => &o.key,
            ArchivedLog::Binlog(o) => &o.key,
        }
    }

    fn name(&self) -> String {
        match self {
            ArchivedLog::Wal(o) => o.file.to_string(),
            ArchivedLog::Binlog(o) => o.name.clone(),
        }
    }

    async fn delete(&self, repo: &Repository, host: &str, export: &str) -> Result<()> {
        match self {
            ArchivedLog::Wal(o) => repo.wal_delete(o).await,
            ArchivedLog::Binlog(o) => repo.binlog_delete(host, export, o).await,
        }
    }
}

/// Removes the files of `archive` that no kept point needs (see [`LogArchive`]).
async fn prune_logs(
    archive: LogArchive,
    repo: &Repository,
    host: &str,
    export: &str,
    kept: &[&Manifest],
    dry_run: bool,
    out: &mut TargetPrune,
) -> Result<()> {
    let Some(start) = archive.start(kept) else {
        return Ok(());
    };
    out.wal_kept_from = Some(start.file.clone());
    for object in archive.list(repo, host, export).await? {
        let Some(position) = object.position(&start) else {
            continue;
        };
        if position >= start.from || held_by_lock(repo, object.key(), out).await {
            continue;
        }
        if !dry_run && let Err(e) = object.delete(repo, host, export).await {
            out.errors.push(e.to_string());
            continue;
        }
        out.wal_removed.push(object.name());
    }
    Ok(())
}

/// Whether an Object Lock still holds the object at `key` (kept until it
/// ends: a delete would only hide it). A lock that cannot be read keeps it.
async fn held_by_lock(repo: &Repository, key: &str, out: &mut TargetPrune) -> bool {
    match repo.locked_until(key).await {
        Ok(until) => until.is_some_and(|t| t > Utc::now()),
        Err(e) => {
            out.errors.push(format!("{e}; kept"));
            true
        }
    }
}

/// Prunes one export on all of its reachable targets, as a command does:
/// holding the export's lock, so a backup of it running on this host is
/// never pruned under (the lock is busy: nothing is done).
pub async fn prune_export_locked(
    policy: &Policy,
    export_name: &str,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Vec<Result<TargetPrune>>> {
    policy.export(export_name)?;
    let (dir, host, n) = (
        policy.state_dir.clone(),
        policy.host.clone(),
        export_name.to_string(),
    );
    let lock = tokio::task::spawn_blocking(move || {
        crate::export_lock::ExportLock::acquire(&dir, &host, &n, std::time::Duration::ZERO)
    })
    .await
    .map_err(|e| crate::Error::Failed(e.to_string()))??;
    let results = prune_export(policy, export_name, now, dry_run).await;
    drop(lock);
    results
}

/// Prunes one export on all of its reachable targets; the caller holds the
/// export's lock.
pub(crate) async fn prune_export(
    policy: &Policy,
    export_name: &str,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Vec<Result<TargetPrune>>> {
    let export = policy.export(export_name)?;
    let mut out = Vec::new();
    for (_, opened) in crate::repository::open_targets(policy, &export.targets).await {
        out.push(match opened {
            Ok(repo) => prune_target(policy, export, &repo, now, dry_run).await,
            Err(e) => Err(e),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archiving::binlog::{BinlogFacts, BinlogStart};
    use crate::archiving::{Lsn, WalFile, WalRange};
    use crate::backend::TargetConfig;
    use crate::backend::local::LocalConfig;

    const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";
    const SIZE: u64 = 16 * 1024 * 1024;

    async fn repository(dir: &std::path::Path) -> Repository {
        let config = TargetConfig::Local(LocalConfig { path: dir.into() });
        Repository::create("t", &config, dir).await.unwrap().0
    }

    #[tokio::test]
    async fn archived_wal_before_the_oldest_kept_base_backup_goes_and_histories_stay() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repository(dir.path()).await;
        let mut files: Vec<WalFile> = (1..=4).map(|n| WalFile::segment(1, n, SIZE)).collect();
        files.push(WalFile::History { timeline: 2 });
        for f in &files {
            repo.wal_store("h", "e", f, SHA, Utc::now(), b"x".to_vec())
                .await
                .unwrap();
        }
        let mut base = crate::rehearsal::tests::point(1, 1);
        base.wal = Some(WalRange {
            timeline: 1,
            start_lsn: Lsn(3 * SIZE + 40),
            stop_lsn: Lsn(4 * SIZE),
            system_identifier: "1".into(),
            segment_size: SIZE,
            consistent_after: Utc::now(),
        });
        let mut out = TargetPrune::nothing_yet("t");
        prune_logs(LogArchive::Wal, &repo, "h", "e", &[&base], false, &mut out)
            .await
            .unwrap();
        let name = |n| WalFile::segment(1, n, SIZE).to_string();
        assert_eq!(out.wal_removed, [name(1), name(2)]);
        assert_eq!(out.wal_kept_from, Some(name(3)));
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let left: Vec<String> = (repo.wal_list("h", "e").await.unwrap())
            .iter()
            .map(|o| o.file.to_string())
            .collect();
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(left.contains(&files[4].to_string()), "{left:?}");
    }

    #[tokio::test]
    async fn binary_logs_before_the_oldest_kept_dump_go_and_nothing_goes_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repository(dir.path()).await;
        let facts = BinlogFacts {
            first_event: None,
            last_event: None,
            closed_at: Some(Utc::now()),
            terminated: true,
            first_gtid: None,
            last_gtid: None,
        };
        for n in 1..=3 {
            let name = format!("mariadb-bin.{n:06}");
            repo.binlog_store("h", "e", &name, SHA, &facts, b"x".to_vec())
                .await
                .unwrap();
        }
        let names = async || -> Vec<String> {
            let listed = repo.binlog_list("h", "e").await.unwrap();
            listed.into_iter().map(|o| o.name).collect()
        };
        let prune = async |kept: &[&Manifest], dry_run| {
            let mut out = TargetPrune::nothing_yet("t");
            prune_logs(LogArchive::Binlog, &repo, "h", "e", kept, dry_run, &mut out)
                .await
                .unwrap();
            out
        };
        let out = prune(&[], false).await;
        assert!(out.wal_removed.is_empty() && out.wal_kept_from.is_none());
        let mut dump = crate::rehearsal::tests::point(1, 1);
        dump.binlog = Some(BinlogStart {
            file: "mariadb-bin.000002".into(),
            position: 4,
            gtid: None,
        });
        let out = prune(&[&dump], true).await;
        assert_eq!(out.wal_removed, ["mariadb-bin.000001"]);
        assert_eq!(names().await.len(), 3, "a dry run removes nothing");
        let out = prune(&[&dump], false).await;
        assert_eq!(out.wal_removed, ["mariadb-bin.000001"]);
        assert_eq!(out.wal_kept_from.as_deref(), Some("mariadb-bin.000002"));
        let left = names().await;
        assert_eq!(left, ["mariadb-bin.000002", "mariadb-bin.000003"]);
    }
}
