//! Restore: choose a recovery point, show what will be replaced, receive it
//! next to the destination, check both digests, and only then apply it.
//! Every restore (`drp-agent restore` and `drp restore`, a runbook's
//! `restore_backup`, a restore test, a directory snapshot's rollback) goes
//! through [`Restore`], the one sequence (`restore/sequence.rs`); this file finds
//! the point and plans what the restore will do.

mod sequence;

use std::sync::Arc;

use chrono::{DateTime, Utc};

pub use sequence::{Planned, Restore};

use crate::archiving::archive::Inventory;
use crate::manifest::Manifest;
use crate::pipeline;
use crate::repository::Repository;
use crate::repository::binlog::BinlogObject;
use crate::source::{Committed, Destination, Source};
use crate::{Error, Result};

/// Which recovery point to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// The newest committed point.
    Latest,
    /// A point by id.
    Id(String),
    /// The newest point consistent strictly before this time (e.g. before a
    /// bad migration ran).
    Before(DateTime<Utc>),
    /// Exactly this instant, by replaying archived WAL from the newest base
    /// backup that ended before it (`postgres-cluster` exports).
    At(DateTime<Utc>),
}

/// What a restore will do, shown before anything changes.
pub struct Plan {
    pub host: String,
    pub export: String,
    pub manifest: Manifest,
    pub repository: Repository,
    /// Other targets holding the same point (the same raw digest; each
    /// stores it as its own manifest says, encrypted or not): a copy found
    /// corrupt or missing on one is fetched from the next.
    pub copies: Vec<(Repository, Manifest)>,
    pub destination: Destination,
    /// What exists at the destination and would be replaced.
    pub replaces: Option<String>,
    /// Where what is replaced will be kept (when something is replaced).
    pub kept_as: Option<String>,
    /// Targets that could not be searched, damaged manifests: said, not hidden.
    pub notes: Vec<String>,
    /// For a physical base backup: how far its WAL replays.
    pub replay: Option<ReplayPlan>,
}

/// How far a physical restore replays, decided before anything changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayPlan {
    /// The instant asked for; `None` is the newest one archived.
    pub target: Option<DateTime<Utc>>,
    /// Whether a transaction committed exactly at `target` is replayed
    /// (`--to-time`), or not (`--before`: strictly before).
    pub inclusive: bool,
    /// The WAL segment size (PostgreSQL), to tell where a replay ended.
    pub segment_size: u64,
    /// The newest instant the archive reaches from this base backup.
    pub until: Option<DateTime<Utc>>,
    /// The timeline the newest instant is on.
    pub timeline: u32,
    /// The first WAL file (or binary log) not (yet) archived after the
    /// unbroken run.
    pub next_missing: String,
    /// For a MariaDB export: the binary logs to replay, and where the dump
    /// stands in the first.
    pub binlogs: Option<(Vec<BinlogObject>, u64)>,
}

impl Plan {
    /// Data written after the point's consistency time is lost by restoring
    /// it: the window up to `until` (the failure time, or now).
    pub fn data_loss_window(&self, until: DateTime<Utc>) -> chrono::Duration {
        until - self.reaches()
    }

    /// The newest instant the restored data holds (never later than the
    /// truth): the point's consistency time, or where its replay stops.
    pub fn reaches(&self) -> DateTime<Utc> {
        let Some(r) = &self.replay else {
            return self.manifest.consistency_time;
        };
        // Binary-log times are whole seconds: a replay stops at the second
        // its target falls in.
        let target = match (r.target, &r.binlogs) {
            (Some(t), Some(_)) => DateTime::from_timestamp(t.timestamp(), 0),
            (t, _) => t,
        };
        let end = match (target, r.until) {
            (Some(t), Some(u)) => t.min(u),
            (t, u) => t.or(u).unwrap_or(self.manifest.consistency_time),
        };
        end.max(self.manifest.consistency_time)
    }
}

pub struct Report {
    pub id: String,
    pub target: String,
    pub destination: String,
    pub raw_bytes: u64,
    pub seconds: f64,
    /// Of `seconds`, receiving the point: fetching, decrypting,
    /// decompressing, both digests and staging (the rest is the load).
    pub received_seconds: f64,
    /// What became of the data the restore replaced.
    pub replaced: Committed,
}

/// Finds the point `selector` designates, searching the repositories in order.
pub async fn find(
    repos: &[Repository],
    host: &str,
    export: &str,
    selector: &Selector,
) -> Result<(Repository, Manifest, Vec<String>)> {
    let mut notes = Vec::new();
    let mut best: Option<(Repository, Manifest)> = None;
    // The point asked for by id, found but not to be trusted.
    let mut refused = None;
    for repo in repos {
        let listing = match repo.list(host, export).await {
            Ok(l) => l,
            Err(e) => {
                notes.push(format!("target `{}` skipped: {e}", repo.name()));
                continue;
            }
        };
        for d in &listing.damaged {
            notes.push(format!(
                "target `{}`: damaged manifest {} ignored: {}",
                repo.name(),
                d.object,
                d.message
            ));
            if let Selector::Id(id) = selector
                && d.object == crate::repository::layout::manifest(host, export, id)
            {
                refused.get_or_insert(Error::Manifest {
                    target: repo.name().to_string(),
                    object: d.object.clone(),
                    message: d.message.clone(),
                });
            }
        }
        let points = match restorable(repo, host, export, listing.points, &mut notes).await {
            Ok(p) => p,
            Err(e) => {
                notes.push(format!("target `{}` skipped: {e}", repo.name()));
                continue;
            }
        };
        let candidate = match selector {
            Selector::Latest => points.last(),
            Selector::Id(id) => points.iter().find(|m| &m.id == id),
            // A base backup can be replayed to any instant after it ended.
            Selector::Before(t) => points.iter().rev().find(|m| match &m.wal {
                Some(w) => w.consistent_after <= *t,
                None => m.consistency_time < *t,
            }),
            Selector::At(t) => points.iter().rev().find(|m| match (&m.wal, &m.binlog) {
                (Some(w), _) => w.consistent_after <= *t,
                (None, Some(_)) => m.consistency_time < *t,
                (None, None) => false,
            }),
        };
        if let Some(m) = candidate {
            let better = match &best {
                None => true,
                Some((_, b)) => m.consistency_time > b.consistency_time,
            };
            if better {
                best = Some((repo.clone(), m.clone()));
            }
        }
    }
    match best {
        Some((repo, m)) => {
            // Found through the index: trusted once its manifest is read.
            let m = repo.confirm(&m).await?;
            Ok((repo, m, notes))
        }
        None if refused.is_some() => Err(refused.expect("checked")),
        None => {
            let what = match selector {
                Selector::Latest => "no recovery point".to_string(),
                Selector::Id(id) => format!("no recovery point `{id}`"),
                Selector::Before(t) => {
                    format!("no recovery point consistent before {}", t.to_rfc3339())
                }
                Selector::At(t) => format!(
                    "no base backup or export with shipped logs ended before {} (a point-in-time restore replays \
                     the archived logs from one)",
                    t.to_rfc3339()
                ),
            };
            let mut msg = format!("{what} for {host}/{export}");
            if !notes.is_empty() {
                msg += &format!(" ({})", notes.join("; "));
            }
            Err(Error::NotFound(msg))
        }
    }
}

/// The points that can be restored: all of them, but for physical base
/// backups only those whose WAL range is wholly archived on this target.
async fn restorable(
    repo: &Repository,
    host: &str,
    export: &str,
    points: Vec<Manifest>,
    notes: &mut Vec<String>,
) -> Result<Vec<Manifest>> {
    if points.iter().all(|m| m.wal.is_none()) {
        return Ok(points);
    }
    let inventory = Inventory::read(repo, host, export).await?;
    let mut out = Vec::new();
    for m in points {
        match &m.wal {
            Some(w) if !inventory.reach(w).restorable => notes.push(format!(
                "target `{}`: base backup {} is not restorable yet: its WAL from {} is not all archived",
                repo.name(),
                m.id,
                crate::archiving::WalFile::segment(w.timeline, w.first_segment(), w.segment_size)
            )),
            _ => out.push(m),
        }
    }
    Ok(out)
}

/// How far `manifest`'s base backup replays on `repo`, checked against
/// what was asked: a target past the newest archived instant is refused.
async fn replay_plan(
    repo: &Repository,
    manifest: &Manifest,
    selector: &Selector,
) -> Result<Option<ReplayPlan>> {
    if let Some(start) = &manifest.binlog {
        let objects = repo.binlog_list(&manifest.host, &manifest.export).await?;
        let reach = crate::archiving::ship::reach(&objects, start);
        let until = reach.until.map(|u| u.max(manifest.consistency_time));
        let (target, inclusive) = replay_target(selector, until, repo, &reach.next_missing)?;
        // Files closed after the target hold nothing to replay but their start.
        let mut files = reach.files;
        if let Some(t) = target
            && let Some(i) = files.iter().position(|f| f.closed_at >= t)
        {
            files.truncate(i + 1);
        }
        return Ok(Some(ReplayPlan {
            target,
            inclusive,
            segment_size: 0,
            until,
            timeline: 0,
            next_missing: reach.next_missing,
            binlogs: Some((files, start.position)),
        }));
    }
    let Some(range) = &manifest.wal else {
        if let Selector::At(_) = selector {
            return Err(Error::Usage(format!(
                "export `{}` is a {} export without shipped binary logs or a WAL archive: it restores to its \
                 recovery points only (use --before)",
                manifest.export, manifest.kind
            )));
        }
        return Ok(None);
    };
    let inventory = Inventory::read(repo, &manifest.host, &manifest.export).await?;
    let reach = inventory.reach(range);
    let (target, inclusive) = replay_target(selector, reach.until, repo, &reach.next_missing)?;
    Ok(Some(ReplayPlan {
        target,
        inclusive,
        segment_size: range.segment_size,
        until: reach.until,
        timeline: reach.timeline,
        next_missing: reach.next_missing,
        binlogs: None,
    }))
}

/// The instant a replay stops at, and whether a commit exactly then is
/// replayed: the one asked for (refused when later than the archive
/// reaches), or strictly before a time (`--before`, a runbook's failure
/// time) even when the archive ends earlier: files archived while the
/// restore runs are then never replayed past it.
fn replay_target(
    selector: &Selector,
    until: Option<DateTime<Utc>>,
    repo: &Repository,
    next_missing: &str,
) -> Result<(Option<DateTime<Utc>>, bool)> {
    match selector {
        Selector::At(t) if until.is_none_or(|u| *t > u) => Err(Error::NotFound(format!(
            "{} is later than the newest instant the archive reaches ({}; the next file, {next_missing}, is not \
             archived on target `{}`): nothing was restored; ask for an earlier time or use --latest",
            t.to_rfc3339(),
            until.map_or("none".into(), |u| u.to_rfc3339()),
            repo.name()
        ))),
        Selector::At(t) => Ok((Some(*t), true)),
        Selector::Before(t) => Ok((Some(*t), false)),
        Selector::Latest | Selector::Id(_) => Ok((None, true)),
    }
}

/// The repositories other than `chosen` that hold `manifest`'s point with
/// the same raw digest, with their own manifests.
async fn copies(
    repos: &[Repository],
    chosen: &Repository,
    manifest: &Manifest,
) -> Vec<(Repository, Manifest)> {
    let path = crate::repository::layout::manifest(&manifest.host, &manifest.export, &manifest.id);
    let mut out = Vec::new();
    for repo in repos.iter().filter(|r| r.name() != chosen.name()) {
        if let Ok(m) = repo.read_manifest(&path).await
            && m.raw == manifest.raw
        {
            out.push((repo.clone(), m));
        }
    }
    out
}

/// What a restore of the point `selector` designates into `to` (the
/// source itself by default) will do; nothing is changed.
async fn plan(
    repos: &[Repository],
    host: &str,
    export: &str,
    selector: &Selector,
    source: Arc<dyn Source>,
    to: Option<&str>,
) -> Result<Plan> {
    let (repository, manifest, notes) = find(repos, host, export, selector).await?;
    // Said before anything is shown or asked: without an identity it opens,
    // the point cannot be restored.
    pipeline::unsealing(&manifest, &repository.keys.identities)?;
    let destination = match to {
        Some(t) => source.destination(t),
        None => source.default_destination(),
    };
    let (src, dest) = (source.clone(), destination.clone());
    let replaces = tokio::task::spawn_blocking(move || src.existing(&dest))
        .await
        .map_err(|e| Error::Failed(format!("inspecting the destination stopped: {e}")))??;
    let kept_as = replaces.as_ref().map(|_| source.kept_as(&destination));
    let copies = copies(repos, &repository, &manifest).await;
    let replay = replay_plan(&repository, &manifest, selector).await?;
    Ok(Plan {
        host: host.to_string(),
        export: export.to_string(),
        manifest,
        repository,
        copies,
        destination,
        replaces,
        kept_as,
        notes,
        replay,
    })
}

/// Whether two destinations are the same database or the same place on
/// disk, however their paths are spelt (relative, `..`, symbolic links).
pub fn same_destination(a: &Destination, b: &Destination) -> bool {
    let place = |p: &std::path::Path| {
        let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        match (
            abs.parent().and_then(|d| d.canonicalize().ok()),
            abs.file_name(),
        ) {
            (Some(dir), Some(name)) => dir.join(name),
            _ => abs,
        }
    };
    match (a, b) {
        (Destination::Path(x), Destination::Path(y)) => place(x) == place(y),
        _ => a == b,
    }
}
