//! The one restore sequence: plan → the replay's commands → options →
//! execute, in that order and nowhere else. A caller says what is its own
//! (where the point is restored, whether the user said yes, where progress
//! goes) and [`Planned::execute`] applies the rules every restore keeps:
//! nothing that exists is replaced unconfirmed, one restore of a
//! destination runs at a time, the whole point is received and both its
//! digests checked before the destination is touched, the load happens
//! beside the live data and is swapped in only once it has fully succeeded,
//! and what it replaces is kept unless the caller or the policy drops it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::{Plan, ReplayPlan, Report, Selector};
use crate::config::Policy;
use crate::export_lock::ExportLock;
use crate::manifest::Manifest;
use crate::pipeline;
use crate::progress::{Event, Reporter};
use crate::repository::Repository;
use crate::repository::binlog::BinlogObject;
use crate::source::{
    BinlogReplay, Cancel, CommitOptions, Committed, Destination, Replay, ReplayFrom, Source, Staged,
};
use crate::{Error, Result};

/// A restore of one export, before its point is chosen: where from, what
/// into, and what is the caller's own. [`Restore::plan`] chooses the point
/// and says what will change; [`Planned::execute`] applies it.
pub struct Restore<'a> {
    repos: &'a [Repository],
    host: &'a str,
    export: &'a str,
    source: Arc<dyn Source>,
    to: Option<String>,
    policy: Option<&'a Policy>,
    identities: &'a [PathBuf],
    workdir: Option<PathBuf>,
    drop_replaced: bool,
    throwaway: bool,
    /// Set up as a warm standby: `(restore_command, archive_command once promoted)`.
    standby: Option<(String, Option<String>)>,
    progress: Reporter,
}

impl<'a> Restore<'a> {
    /// A restore of `export` (of `host`) from the first of `repos` that
    /// holds the point, into `source` (its own destination unless [`Restore::to`]).
    pub fn new(
        repos: &'a [Repository],
        host: &'a str,
        export: &'a str,
        source: Arc<dyn Source>,
    ) -> Self {
        Restore {
            repos,
            host,
            export,
            source,
            to: None,
            policy: None,
            // The policy's own `keys.identity`, read by `wal get` itself.
            identities: &[],
            workdir: None,
            drop_replaced: false,
            throwaway: false,
            standby: None,
            progress: crate::progress::silent(),
        }
    }

    /// Restore into this database or path instead of the source itself.
    pub fn to(mut self, to: Option<String>) -> Self {
        self.to = to;
        self
    }

    /// The export's policy: its state folder holds the destination's lock,
    /// its `restore: drop_replaced` applies, and a physical restore's replay
    /// reads the archive through it. Without one, a restore that replays is
    /// refused.
    pub fn policy(mut self, policy: Option<&'a Policy>) -> Self {
        self.policy = policy;
        self
    }

    /// The identity files a replay decrypts the archive with (their paths,
    /// never their content, reach `wal get`).
    pub fn identities(mut self, identities: &'a [PathBuf]) -> Self {
        self.identities = identities;
        self
    }

    /// Scratch space for staged dumps (default: the system's temporary folder).
    pub fn workdir(mut self, workdir: Option<PathBuf>) -> Self {
        self.workdir = workdir;
        self
    }

    /// Drop what was replaced once the restore has succeeded, whatever the
    /// policy says (it is kept by default).
    pub fn drop_replaced(mut self, drop: bool) -> Self {
        self.drop_replaced = drop;
        self
    }

    /// Into a throwaway instance (a restore test's): nothing there is worth
    /// keeping, and its replay never archives what it writes.
    pub fn throwaway(mut self) -> Self {
        self.throwaway = true;
        self
    }

    /// A base backup put in place as a warm standby, replaying the archive
    /// through `restore_command` once its server starts, and archiving with
    /// `archive_command` once promoted (none: archiving off): nothing is
    /// replayed before the swap.
    pub fn standby(mut self, restore_command: String, archive_command: Option<String>) -> Self {
        self.standby = Some((restore_command, archive_command));
        self
    }

    pub fn progress(mut self, progress: Reporter) -> Self {
        self.progress = progress;
        self
    }

    /// Whether what the restore replaces is dropped once it has succeeded.
    pub fn drops_replaced(&self) -> bool {
        self.throwaway || self.drop_replaced || self.policy.is_some_and(|p| p.restore.drop_replaced)
    }

    /// Chooses the point `selector` designates and says what restoring it
    /// will do; nothing is changed.
    pub async fn plan(&self, selector: &Selector) -> Result<Planned<'_>> {
        let plan = super::plan(
            self.repos,
            self.host,
            self.export,
            selector,
            self.source.clone(),
            self.to.as_deref(),
        )
        .await?;
        Ok(Planned {
            plan,
            restore: self,
        })
    }
}

/// A restore whose point is chosen: what it will do, shown before anything
/// changes, and the one way to apply it.
pub struct Planned<'a> {
    plan: Plan,
    restore: &'a Restore<'a>,
}

impl Planned<'_> {
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Applies the plan. Existing data is replaced only when `confirmed`;
    /// the point is fully received and verified before the destination is
    /// touched, one restore of a destination runs at a time, and dropping
    /// the returned future stops the restore (its tools are killed and its
    /// staged copy removed).
    pub async fn execute(&self, confirmed: bool) -> Result<Report> {
        let plan = &self.plan;
        let restore = self.restore;
        refuse_unconfirmed(plan, confirmed)?;
        let (restore_command, archive_command) = self.replay_commands()?;
        let options = Options {
            workdir: restore.workdir.clone().unwrap_or_else(std::env::temp_dir),
            drop_replaced: restore.drops_replaced(),
            lock_dir: restore
                .policy
                .map_or_else(std::env::temp_dir, |p| p.state_dir.clone()),
            restore_command,
            archive_command,
            standby: restore.standby.is_some(),
            targets: restore
                .policy
                .map(|p| (p.targets.clone(), p.base_dir.clone())),
        };
        run(
            plan,
            restore.source.clone(),
            options,
            restore.progress.clone(),
        )
        .await
    }

    /// The `restore_command` and, for a restore in place, the
    /// `archive_command` a physical restore's replay runs (see
    /// [`crate::source::Replay`]).
    fn replay_commands(&self) -> Result<(Option<String>, Option<String>)> {
        let restore = self.restore;
        if self.plan.replay.is_none() {
            return Ok((None, None));
        }
        if let Some((restore_command, archive_command)) = &restore.standby {
            return Ok((Some(restore_command.clone()), archive_command.clone()));
        }
        let Some(policy) = restore.policy else {
            return Err(Error::Usage(
                "a physical restore replays WAL through `drp-agent wal get --policy FILE`: give --policy".into(),
            ));
        };
        let in_place = !restore.throwaway
            && super::same_destination(
                &self.plan.destination,
                &restore.source.default_destination(),
            );
        crate::archiving::run::replay_commands(policy, restore.export, in_place, restore.identities)
    }
}

/// How a plan is applied, as [`Planned::execute`] settles it.
struct Options {
    /// Scratch space for staged dumps.
    workdir: PathBuf,
    /// Drop what was replaced once the restore has succeeded.
    drop_replaced: bool,
    /// Where the per-destination restore locks live.
    lock_dir: PathBuf,
    restore_command: Option<String>,
    archive_command: Option<String>,
    /// The replay is the standby's own, after the swap.
    standby: bool,
    /// The policy's targets and folder: where an incremental point's restic
    /// repository is, on the target it is read from.
    targets: Option<(
        std::collections::BTreeMap<String, crate::backend::TargetConfig>,
        PathBuf,
    )>,
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

/// Existing data is replaced only when the user said yes.
fn refuse_unconfirmed(plan: &Plan, confirmed: bool) -> Result<()> {
    if plan.replaces.is_some() && !confirmed {
        return Err(Error::NotConfirmed {
            destination: plan.destination.to_string(),
        });
    }
    Ok(())
}

/// The sequence every restore takes, in this order: lock the destination,
/// receive the whole point beside it with both digests checked, fetch what
/// its replay needs, then load, swap and keep what was replaced.
async fn run(
    plan: &Plan,
    source: Arc<dyn Source>,
    options: Options,
    progress: Reporter,
) -> Result<Report> {
    let started = Instant::now();
    let cancel = CancelOnDrop(Cancel::default());
    let lock = lock_destination(plan, &source, &options.lock_dir).await?;
    let (staged, target) = receive_verified(
        plan,
        &source,
        &options.workdir,
        options.targets.as_ref(),
        &progress,
    )
    .await?;
    let received_seconds = started.elapsed().as_secs_f64();
    let binlog_dir = tempfile::Builder::new()
        .prefix(".drp-binlogs-")
        .tempdir_in(&options.workdir)
        .map_err(|e| Error::io_path("cannot create a folder in", &options.workdir, e))?;
    let commit = CommitOptions {
        drop_replaced: options.drop_replaced,
        cancel: cancel.0.clone(),
        replay: replay(plan, &options, &binlog_dir).await?,
    };
    let replaced = load_and_swap(staged, lock, commit).await?;
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

/// One restore of a destination at a time: waits a while for another one
/// (an abandoned restore stopping its tools) to end.
async fn lock_destination(
    plan: &Plan,
    source: &Arc<dyn Source>,
    lock_dir: &Path,
) -> Result<ExportLock> {
    let lock_dir = lock_dir.to_path_buf();
    let key = destination_key(source, &plan.destination);
    let what = plan.destination.to_string();
    tokio::task::spawn_blocking(move || {
        ExportLock::restore(&lock_dir, &key, &what, DESTINATION_WAIT)
    })
    .await
    .map_err(|e| Error::Failed(format!("locking the destination stopped: {e}")))?
}

/// Receives the whole point beside the destination, staged, from the
/// first target whose copy is whole: kept only when its sizes and both
/// digests match the manifest. The target it came from.
async fn receive_verified(
    plan: &Plan,
    source: &Arc<dyn Source>,
    workdir: &Path,
    targets: Option<&(
        std::collections::BTreeMap<String, crate::backend::TargetConfig>,
        PathBuf,
    )>,
    progress: &Reporter,
) -> Result<(Box<dyn Staged>, String)> {
    let holders: Vec<(&Repository, &Manifest)> =
        std::iter::once((&plan.repository, &plan.manifest))
            .chain(plan.copies.iter().map(|(r, m)| (r, m)))
            .collect();
    for (i, (repo, manifest)) in holders.iter().enumerate() {
        let destination = plan.destination.clone();
        let workdir = workdir.to_path_buf();
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
        // An incremental point's tree is a snapshot in this target's restic repository.
        let at = match &manifest.incremental {
            None => None,
            Some(point) => {
                let Some((config, base_dir)) =
                    targets.and_then(|(t, base)| Some((t.get(repo.name())?, base)))
                else {
                    return Err(Error::Usage(
                        "an incremental point is restored through its policy (--policy): the restic repository's \
                         key is a secret reference of the export"
                            .into(),
                    ));
                };
                Some(crate::source::directory::incremental::At::of(
                    point, config, base_dir,
                )?)
            }
        };
        let received = pipeline::read_verified(
            &repo.target,
            manifest,
            &repo.keys.identities,
            progress.clone(),
            move |raw| {
                match &at {
                    Some(at) => src.stage_incremental(raw, &destination, at),
                    None => src.stage(raw, &destination, &workdir),
                }
                .map_err(Error::from)
            },
        )
        .await;
        progress.event(Event::Finished);
        match received {
            Ok(staged) => {
                if let Err(e) = repo.record_verified(manifest, "restore").await {
                    tracing::warn!(error = %e, "the verification of {} is not recorded", plan.manifest.id);
                }
                return Ok((staged, repo.name().to_string()));
            }
            // This copy is damaged or gone: the next target's may be whole.
            Err(e @ (Error::Integrity { .. } | Error::Target { .. })) if i + 1 < holders.len() => {
                tracing::warn!(target = repo.name(), error = %e, "trying the next copy of the point");
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the last copy either loads or returns its error")
}

/// How the load replays what was archived after the point: the binary
/// logs fetched into `binlog_dir`, or the WAL archive through
/// `restore_command`.
async fn replay(
    plan: &Plan,
    options: &Options,
    binlog_dir: &tempfile::TempDir,
) -> Result<Option<Replay>> {
    Ok(match &plan.replay {
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
                fetch_binlogs(&plan.repository, files, *start, *target, binlog_dir).await?,
            ),
        }),
        Some(r) => Some(Replay {
            target: r.target,
            inclusive: r.inclusive,
            from: match (&options.restore_command, options.standby) {
                (None, _) => {
                    return Err(Error::Usage(
                        "a physical restore needs the restore_command its replay runs".into(),
                    ));
                }
                (Some(restore_command), true) => ReplayFrom::Standby {
                    restore_command: restore_command.clone(),
                    archive_command: options.archive_command.clone(),
                },
                (Some(restore_command), false) => ReplayFrom::Archive {
                    restore_command: restore_command.clone(),
                    archive_command: options.archive_command.clone(),
                    archive_ends_at: Some(r.next_missing.clone()),
                    segment_size: r.segment_size,
                    timeline: r.timeline,
                },
            },
        }),
    })
}

/// Loads the verified copy beside the live data and swaps it in only once
/// the load has fully succeeded, keeping what it replaces unless told to
/// drop it (the source's `commit`), on a blocking thread.
async fn load_and_swap(
    staged: Box<dyn Staged>,
    lock: ExportLock,
    commit: CommitOptions,
) -> Result<Committed> {
    tokio::task::spawn_blocking(move || {
        // The lock is released when the load has really ended, even when
        // this restore was abandoned while it ran.
        let _lock = lock;
        staged.commit(&commit)
    })
    .await
    .map_err(|e| Error::Failed(format!("loading stopped: {e}")))?
    .map_err(Error::from)
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
