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
use crate::source::{Cancel, CommitOptions, Committed, Destination, Source};
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
}

/// What a restore will do, shown before anything changes.
pub struct Plan {
    pub host: String,
    pub export: String,
    pub manifest: Manifest,
    pub repository: Repository,
    /// Other targets holding the same point (same digests): a copy found
    /// corrupt or missing on one is fetched from the next.
    pub copies: Vec<Repository>,
    pub destination: Destination,
    /// What exists at the destination and would be replaced.
    pub replaces: Option<String>,
    /// Where what is replaced will be kept (when something is replaced).
    pub kept_as: Option<String>,
    /// Targets that could not be searched, damaged manifests: said, not hidden.
    pub notes: Vec<String>,
}

impl Plan {
    /// Data written after the point's consistency time is lost by restoring
    /// it: the window up to `until` (the failure time, or now).
    pub fn data_loss_window(&self, until: DateTime<Utc>) -> chrono::Duration {
        until - self.manifest.consistency_time
    }
}

pub struct Report {
    pub id: String,
    pub target: String,
    pub destination: String,
    pub raw_bytes: u64,
    pub seconds: f64,
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
        }
        let candidate = match selector {
            Selector::Latest => listing.points.last(),
            Selector::Id(id) => listing.points.iter().find(|m| &m.id == id),
            Selector::Before(t) => listing
                .points
                .iter()
                .rev()
                .find(|m| m.consistency_time < *t),
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
        None => {
            let what = match selector {
                Selector::Latest => "no recovery point".to_string(),
                Selector::Id(id) => format!("no recovery point `{id}`"),
                Selector::Before(t) => {
                    format!("no recovery point consistent before {}", t.to_rfc3339())
                }
            };
            let mut msg = format!("{what} for {host}/{export}");
            if !notes.is_empty() {
                msg += &format!(" ({})", notes.join("; "));
            }
            Err(Error::NotFound(msg))
        }
    }
}

/// The repositories other than `chosen` that hold `manifest`'s point with
/// the same digests.
async fn copies(repos: &[Repository], chosen: &Repository, manifest: &Manifest) -> Vec<Repository> {
    let path = crate::repository::layout::manifest(&manifest.host, &manifest.export, &manifest.id);
    let mut out = Vec::new();
    for repo in repos.iter().filter(|r| r.name() != chosen.name()) {
        if let Ok(m) = repo.read_manifest(&path).await
            && m.stored.sha256 == manifest.stored.sha256
            && m.raw.sha256 == manifest.raw.sha256
        {
            out.push(repo.clone());
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
    let holders: Vec<&Repository> = std::iter::once(&plan.repository)
        .chain(&plan.copies)
        .collect();
    let mut staged = None;
    for (i, repo) in holders.iter().enumerate() {
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
        let received =
            pipeline::read_verified(&repo.target, &plan.manifest, progress.clone(), move |raw| {
                src.stage(raw, &destination, &workdir).map_err(Error::from)
            })
            .await;
        progress.event(Event::Finished);
        match received {
            Ok(s) => {
                if let Err(e) = repo.record_verified(&plan.manifest, "restore").await {
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
    let commit = CommitOptions {
        drop_replaced: options.drop_replaced,
        cancel: cancel.0.clone(),
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
        replaced,
    })
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
