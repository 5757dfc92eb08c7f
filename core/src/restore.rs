//! Restore: choose a recovery point, show what will be replaced, receive it
//! next to the destination, check both digests, and only then apply it.
//! `drp-agent restore` and `drp restore` both go through here.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::lock::ExportLock;
use crate::manifest::Manifest;
use crate::pipeline;
use crate::progress::{Event, Reporter};
use crate::repository::Repository;
use crate::repository::binlog::BinlogObject;
use crate::source::{
    BinlogReplay, Cancel, CommitOptions, Committed, Destination, Replay, ReplayFrom, Source,
};
use crate::wal::archive::Inventory;
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

/// How a plan is applied.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Existing data may be replaced (the user said yes).
    pub confirmed: bool,
    /// Scratch space for staged dumps (default: the system's temporary folder).
    pub workdir: Option<PathBuf>,
    /// Drop what was replaced once the restore has succeeded (kept by default).
    pub drop_replaced: bool,
    /// Where the per-destination restore locks live (the policy's state folder).
    pub lock_dir: Option<PathBuf>,
    /// For a physical restore: the `restore_command` and, in place, the
    /// `archive_command` its replay runs (see [`crate::source::Replay`]).
    pub restore_command: Option<String>,
    pub archive_command: Option<String>,
}

/// How long a restore waits for another restore of the same destination
/// (an abandoned one stopping its tools and removing its copy) to end.
const DESTINATION_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Sets the cancel flag when dropped: a restore whose future is dropped (a
/// step's timeout) stops its tools instead of running on beside a retry.
struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
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
        Some((repo, m)) => Ok((repo, m, notes)),
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
                crate::wal::WalFile::segment(w.timeline, w.first_segment(), w.segment_size)
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
        let reach = crate::wal::ship::reach(&objects, start);
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

pub async fn plan(
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

/// Applies a plan. Existing data is replaced only when confirmed; the point
/// is fully received and verified before the destination is touched, one
/// restore of a destination runs at a time, and dropping the returned future
/// stops the restore (its tools are killed and its staged copy removed).
pub async fn execute(
    plan: &Plan,
    source: Arc<dyn Source>,
    options: Options,
    progress: Reporter,
) -> Result<Report> {
    if plan.replaces.is_some() && !options.confirmed {
        return Err(Error::NotConfirmed {
            destination: plan.destination.to_string(),
        });
    }
    let started = Instant::now();
    let cancel = CancelOnDrop(Cancel::default());
    let lock_dir = options.lock_dir.clone().unwrap_or_else(std::env::temp_dir);
    let key = destination_key(&source, &plan.destination);
    let what = plan.destination.to_string();
    let lock = tokio::task::spawn_blocking(move || {
        ExportLock::restore(&lock_dir, &key, &what, DESTINATION_WAIT)
    })
    .await
    .map_err(|e| Error::Failed(format!("locking the destination stopped: {e}")))??;
    let workdir = options.workdir.clone().unwrap_or_else(std::env::temp_dir);
    let holders: Vec<(&Repository, &Manifest)> =
        std::iter::once((&plan.repository, &plan.manifest))
            .chain(plan.copies.iter().map(|(r, m)| (r, m)))
            .collect();
    let mut staged = None;
    for (i, (repo, manifest)) in holders.iter().enumerate() {
        let destination = plan.destination.clone();
        let workdir = workdir.clone();
        progress.event(Event::Started {
            task: format!(
                "restore {} to {} from `{}`",
                plan.manifest.id,
                plan.destination,
                repo.name()
            ),
            total: Some(plan.manifest.stored.size),
        });
        let src = source.clone();
        let received = pipeline::read_verified(
            &repo.target,
            manifest,
            &repo.keys.identities,
            progress.clone(),
            move |raw| src.stage(raw, &destination, &workdir).map_err(Error::from),
        )
        .await;
        progress.event(Event::Finished);
        match received {
            Ok(s) => {
                if let Err(e) = repo.record_verified(manifest, "restore").await {
                    tracing::warn!(error = %e, "the verification of {} is not recorded", plan.manifest.id);
                }
                staged = Some((s, repo.name().to_string()));
                break;
            }
            // This copy is damaged or gone: the next target's may be whole.
            Err(e @ (Error::Integrity { .. } | Error::Target { .. })) if i + 1 < holders.len() => {
                tracing::warn!(target = repo.name(), error = %e, "trying the next copy of the point");
            }
            Err(e) => return Err(e),
        }
    }
    let (staged, target) = staged.expect("the last copy either loads or returns its error");
    let received_seconds = started.elapsed().as_secs_f64();
    let binlog_dir = tempfile::Builder::new()
        .prefix(".drp-binlogs-")
        .tempdir_in(&workdir)
        .map_err(|e| Error::io_path("cannot create a folder in", &workdir, e))?;
    let replay = match &plan.replay {
        None => None,
        Some(ReplayPlan {
            target,
            inclusive,
            binlogs: Some((files, start)),
            ..
        }) => Some(Replay {
            target: *target,
            inclusive: *inclusive,
            from: ReplayFrom::Binlogs(
                fetch_binlogs(&plan.repository, files, *start, *target, &binlog_dir).await?,
            ),
        }),
        Some(r) => Some(Replay {
            target: r.target,
            inclusive: r.inclusive,
            from: ReplayFrom::Archive {
                restore_command: options.restore_command.clone().ok_or_else(|| {
                    Error::Usage(
                        "a physical restore needs the restore_command its replay runs".into(),
                    )
                })?,
                archive_command: options.archive_command.clone(),
                archive_ends_at: Some(r.next_missing.clone()),
                segment_size: r.segment_size,
                timeline: r.timeline,
            },
        }),
    };
    let commit = CommitOptions {
        drop_replaced: options.drop_replaced,
        cancel: cancel.0.clone(),
        replay,
    };
    let replaced = tokio::task::spawn_blocking(move || {
        // The lock is released when the load has really ended, even when
        // this restore was abandoned while it ran.
        let _lock = lock;
        staged.commit(&commit)
    })
    .await
    .map_err(|e| Error::Failed(format!("loading stopped: {e}")))??;
    Ok(Report {
        id: plan.manifest.id.clone(),
        target,
        destination: plan.destination.to_string(),
        raw_bytes: plan.manifest.raw.size,
        seconds: started.elapsed().as_secs_f64(),
        received_seconds,
        replaced,
    })
}

/// Fetches the binary logs a replay needs into `dir`, each checked against
/// its digest.
async fn fetch_binlogs(
    repo: &Repository,
    files: &[BinlogObject],
    start_position: u64,
    target: Option<DateTime<Utc>>,
    dir: &tempfile::TempDir,
) -> Result<BinlogReplay> {
    let mut paths = Vec::new();
    for f in files {
        let bytes = repo.binlog_read(f).await?;
        let path = dir.path().join(&f.name);
        std::fs::write(&path, bytes).map_err(|e| Error::io_path("cannot write", &path, e))?;
        paths.push(path);
    }
    Ok(BinlogReplay {
        files: paths,
        start_position,
        // Binary-log times are whole seconds: stopping at the second the
        // target falls in replays nothing later than it.
        stop: target.and_then(|t| DateTime::from_timestamp(t.timestamp(), 0)),
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

/// The lock name of a destination: the same database on the same server,
/// or the same path, gives the same name.
fn destination_key(source: &Arc<dyn Source>, destination: &Destination) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let facts = source.describe();
    for key in ["host", "port"] {
        if let Some(v) = facts.get(key) {
            h.update(v.as_bytes());
        }
        h.update([0]);
    }
    match destination {
        Destination::Database(db) => h.update(format!("db:{db}")),
        Destination::Path(p) => h.update(format!(
            "path:{}",
            std::path::absolute(p)
                .unwrap_or_else(|_| p.clone())
                .display()
        )),
    }
    format!("restore-{}", &hex::encode(h.finalize())[..16])
}
