//! The archiving an agent does for a policy: `wal push` (PostgreSQL's
//! `archive_command`), `wal get` (its `restore_command`), and the daemon's
//! pushes ahead of PostgreSQL.

use std::path::{Path, PathBuf};

pub use crate::state::ArchiveState;
use crate::state::Kept;
use std::time::Instant;

use chrono::Utc;

use super::ArchiveReach;
use super::archive::{Archive, Got, Inventory, Pushed, Ready};
use super::spool::Spool;
use super::spool::push_waiting;
use crate::config::Policy;
use crate::notify::archive_alert as alert;
use crate::repository::Repository;
use crate::source::SourceConfig;
use crate::source::postgres::cluster::ClusterConfig;
use crate::{Error, Result};

/// A `postgres-cluster` export of a policy and its opened targets.
pub struct ExportArchive<'p> {
    pub policy: &'p Policy,
    /// The host whose archive this is: the policy's own, or for a standby
    /// the primary's.
    pub host: String,
    pub export: String,
    pub cluster: ClusterConfig,
    pub repos: Vec<Repository>,
    /// Targets that could not be opened.
    pub unreachable: Vec<Error>,
    pub(crate) level: i32,
}

/// The export `name` names when `fits` accepts its source, or the policy's
/// only export that it accepts; `what` names such exports in errors.
pub fn export_of<'p>(
    policy: &'p Policy,
    name: Option<&str>,
    fits: impl Fn(&SourceConfig) -> bool,
    what: &str,
) -> Result<&'p crate::config::Export> {
    if let Some(n) = name {
        let e = policy.export(n)?;
        return if fits(&e.source) {
            Ok(e)
        } else {
            Err(Error::Usage(format!(
                "export `{n}` (kind {}) is not {what}",
                e.source.kind()
            )))
        };
    }
    let all: Vec<&crate::config::Export> = policy
        .exports
        .values()
        .filter(|e| fits(&e.source))
        .collect();
    match all[..] {
        [one] => Ok(one),
        [] => Err(Error::Usage(format!(
            "{} has no export that is {what}",
            policy.path.display()
        ))),
        _ => Err(Error::Usage(format!(
            "{} has several exports that are {what}: name one with --export",
            policy.path.display()
        ))),
    }
}

/// The export `name` names, or the policy's only `postgres-cluster` export.
pub fn cluster_export<'p>(
    policy: &'p Policy,
    name: Option<&str>,
) -> Result<(&'p str, &'p ClusterConfig)> {
    let e = export_of(
        policy,
        name,
        |s| matches!(s, SourceConfig::PostgresCluster(_)),
        "a postgres-cluster export (WAL is archived for those)",
    )?;
    match &e.source {
        SourceConfig::PostgresCluster(c) => Ok((e.name.as_str(), c)),
        _ => unreachable!("export_of checked the kind"),
    }
}

impl<'p> ExportArchive<'p> {
    pub async fn open(policy: &'p Policy, export: Option<&str>) -> Result<ExportArchive<'p>> {
        let (name, cluster) = cluster_export(policy, export)?;
        let e = policy.export(name)?;
        let (repos, unreachable) = crate::repository::open_reachable(policy, &e.targets).await;
        Ok(ExportArchive {
            policy,
            host: policy.host.clone(),
            export: name.to_string(),
            cluster: cluster.clone(),
            repos,
            unreachable,
            level: e.compression.level,
        })
    }

    /// The same archive read with these identity files too (`wal get
    /// --identity`, which a restore passes to the server it replays in).
    pub fn with_identities(mut self, files: &[PathBuf]) -> Result<Self> {
        if files.is_empty() {
            return Ok(self);
        }
        let keys = std::sync::Arc::new(self.policy.read_keys()?.with_cli(files, &[])?);
        self.repos = self
            .repos
            .into_iter()
            .map(|r| r.with_keys(keys.clone()))
            .collect();
        Ok(self)
    }

    fn archive(&self) -> Archive<'_> {
        Archive {
            host: &self.host,
            export: &self.export,
            repos: &self.repos,
            level: self.level,
        }
    }

    pub fn spool(&self) -> Result<Spool> {
        Spool::open(self.policy, &self.export)
    }

    /// The cluster's `pg_wal`.
    pub fn pg_wal(&self) -> PathBuf {
        crate::config::resolve_relative(&self.policy.base_dir, &self.cluster.data_directory)
            .join("pg_wal")
    }

    /// Refuses a file from another data directory than the export's: a
    /// restored copy started with the original's configuration, or a second
    /// cluster, must never write into this archive.
    fn check_comes_from_the_cluster(&self, path: &Path) -> Result<()> {
        let expected = self.pg_wal();
        let from = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .and_then(|d| d.canonicalize().ok());
        let wanted = expected.canonicalize().ok();
        if from.is_some() && from == wanted {
            return Ok(());
        }
        Err(Error::Conflict(format!(
            "{} is not in {} (the `data_directory` of export `{}`): a restored copy or another cluster is running \
             with this policy's archive_command; nothing was archived",
            path.display(),
            expected.display(),
            self.export
        )))
    }

    /// Every target must hold a file before PostgreSQL may recycle it.
    fn require_all_targets(&self) -> Result<()> {
        match self.unreachable.first() {
            Some(e) => Err(Error::Failed(format!(
                "not archived: {} of the export's targets cannot be reached ({e})",
                self.unreachable.len()
            ))),
            None => Ok(()),
        }
    }

    /// `archive_command`: the file at `path` is on every target when this
    /// returns `Ok`. Files already pushed (by the daemon, or ahead by an
    /// earlier push) return at once; meanwhile up to `wal_parallel - 1`
    /// files waiting after it are pushed too.
    pub async fn push(&self, path: &Path) -> Result<PushReport> {
        let started = Instant::now();
        let spool = self.spool()?;
        if spool.is_archived(path) {
            return Ok(PushReport {
                pushed: None,
                ahead: 0,
                seconds: started.elapsed().as_secs_f64(),
                reach_moved: false,
            });
        }
        self.check_comes_from_the_cluster(path)?;
        self.require_all_targets()?;
        let archive = self.archive();
        let level = self.level;
        let p = path.to_path_buf();
        let ready = tokio::task::spawn_blocking(move || Ready::read(&p, level))
            .await
            .map_err(|e| Error::Failed(format!("the read task stopped: {e}")))??;
        let own = async {
            let pushed = archive.push(&ready).await?;
            spool.mark(&ready, started.elapsed().as_secs_f64())?;
            Ok::<_, Error>(pushed)
        };
        let pg_wal = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = ready.file.to_string();
        let ahead = async {
            push_waiting(
                &archive,
                &pg_wal,
                &spool,
                self.cluster.wal_parallel.saturating_sub(1),
                Some(&name),
            )
            .await
        };
        let (pushed, (ahead, _)) = tokio::join!(own, ahead);
        let pushed = match pushed {
            Ok(p) => p,
            Err(e) => {
                if let Error::Conflict(msg) = &e {
                    self.alert("WAL archive conflict", msg).await;
                }
                return Err(e);
            }
        };
        let reach_moved = self.carry_reach(&ready, &spool).await;
        Ok(PushReport {
            pushed: Some(pushed),
            ahead,
            seconds: started.elapsed().as_secs_f64(),
            reach_moved,
        })
    }

    /// Carries the recorded reach over the file just archived (and those
    /// pushed ahead of it), so that `status` and the metrics follow the
    /// archive with `archive_command` alone. The first push after a base
    /// backup reads the archive once to learn where the reach stands.
    /// Returns whether the recorded reach changed.
    async fn carry_reach(&self, ready: &Ready, spool: &Spool) -> bool {
        let mut state = ArchiveState::load(self.policy, &self.export);
        let fresh = state.reach_next.is_none();
        if fresh {
            state.saw(&self.reach().await);
        }
        let name = ready.file.to_string();
        let size = ready.segment_size().unwrap_or(super::DEFAULT_SEGMENT_SIZE);
        let moved = state.extend(size, |n| {
            if n == name {
                Some(ready.ended)
            } else {
                spool.archived_end(n)
            }
        });
        if (moved || fresh)
            && let Err(e) = state.save(self.policy, &self.export)
        {
            tracing::warn!(error = %e, "the archive's reach is not recorded");
            return false;
        }
        moved || fresh
    }

    /// The daemon's turn: pushes the files waiting in `pg_wal`, alerts on a
    /// conflict and when the backlog passes `wal_backlog_alert`.
    pub async fn archive_waiting(&self) -> Result<Backlog> {
        self.require_all_targets()?;
        let spool = self.spool()?;
        let pg_wal = self.pg_wal();
        let (_, errors) = push_waiting(
            &self.archive(),
            &pg_wal,
            &spool,
            self.cluster.wal_parallel.max(1),
            None,
        )
        .await;
        for e in &errors {
            if let Error::Conflict(msg) = e {
                self.alert("WAL archive conflict", msg).await;
            }
        }
        let backlog = Backlog::read(&pg_wal, &spool);
        if backlog.waiting >= self.cluster.wal_backlog_alert {
            self.alert(
                "WAL archiving is falling behind",
                &format!(
                    "{} WAL files wait to be archived in {} ({} free there); PostgreSQL keeps them until every \
                     target holds them, so pg_wal grows until archiving catches up",
                    backlog.waiting,
                    pg_wal.display(),
                    backlog
                        .free_bytes
                        .map_or("unknown".into(), crate::config::units::format_bytes)
                ),
            )
            .await;
        }
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(backlog),
        }
    }

    /// `restore_command`: fetches `name` into `dest`.
    pub async fn get(&self, name: &str, dest: &Path) -> Result<Got> {
        self.archive().get(name, dest, self.unreachable.len()).await
    }

    /// The archive on each reachable target.
    pub async fn inventories(&self) -> Vec<(String, Result<Inventory>)> {
        let mut out = Vec::new();
        for repo in &self.repos {
            out.push((
                repo.name().to_string(),
                Inventory::read(repo, &self.host, &self.export).await,
            ));
        }
        out
    }

    /// The newest instant a restore can reach, over every reachable target:
    /// from the newest base backup whose own WAL is archived.
    pub async fn reach(&self) -> ArchiveReach {
        let mut best = ArchiveReach::default();
        for repo in &self.repos {
            if let Ok(listing) = repo.list(&self.host, &self.export).await
                && let Ok(r) = wal_reach(repo, &self.host, &self.export, &listing.points).await
            {
                best.merge(r);
            }
        }
        best
    }

    /// Saves what was seen of the archiving: the backlog after a turn (or
    /// its error), the push latencies, and when `reach` is set, how far a
    /// restore reaches now.
    pub async fn record(&self, turn: Option<Result<Backlog>>, reach: bool) -> Result<ArchiveState> {
        let mut state = ArchiveState::load(self.policy, &self.export);
        let spool = self.spool()?;
        // An observation (`wal status`) is not a turn: the last turn's
        // outcome and time stay.
        let backlog = match turn {
            Some(Ok(b)) => {
                state.last_error = None;
                state.checked_at = Some(Utc::now());
                b
            }
            Some(Err(e)) => {
                state.last_error = Some(e.to_string());
                state.checked_at = Some(Utc::now());
                Backlog::read(&self.pg_wal(), &spool)
            }
            None => Backlog::read(&self.pg_wal(), &spool),
        };
        state.backlog_files = backlog.waiting;
        state.pg_wal_free_bytes = backlog.free_bytes;
        (
            state.push_p50_seconds,
            state.push_p99_seconds,
            state.lag_p99_seconds,
        ) = spool.latencies();
        if reach {
            state.saw(&self.reach().await);
        }
        state.save(self.policy, &self.export)?;
        Ok(state)
    }

    async fn alert(&self, title: &str, text: &str) {
        let failed: Vec<String> = self.repos.iter().map(|r| r.name().to_string()).collect();
        alert(self.policy, &self.export, &failed, title, text).await;
    }
}

/// How far the WAL archive on `repo` carries a restore of the best of
/// `points` (the export's base backups).
pub async fn wal_reach(
    repo: &Repository,
    host: &str,
    export: &str,
    points: &[crate::manifest::Manifest],
) -> Result<ArchiveReach> {
    let inv = Inventory::read(repo, host, export).await?;
    let mut best = ArchiveReach::default();
    for m in points {
        let Some(range) = &m.wal else { continue };
        let reach = inv.reach(range);
        if !reach.restorable {
            continue;
        }
        best.restorable += 1;
        if reach.until > best.until {
            best.until = reach.until;
            best.next_missing = Some(reach.next_missing);
        }
    }
    Ok(best)
}

impl ArchiveState {
    /// Records a reach computed from the archive itself.
    pub fn saw(&mut self, r: &ArchiveReach) {
        self.recoverable_until = r.until;
        self.reach_next = r.next_missing.clone();
        self.restorable_base_backups = r.restorable;
        self.reach_checked_at = Some(Utc::now());
    }

    /// Carries the recorded reach over the files just archived on every
    /// target, `(name, when its last byte was written)`, for as long as
    /// they continue it without a gap. Returns whether it moved.
    pub fn extend(
        &mut self,
        segment_size: u64,
        archived: impl Fn(&str) -> Option<chrono::DateTime<Utc>>,
    ) -> bool {
        let mut moved = false;
        while let Some(next) = self.reach_next.clone() {
            let Some(ended) = archived(&next) else { break };
            let Some(file @ super::WalFile::Segment { timeline, .. }) =
                super::WalFile::parse(&next)
            else {
                break;
            };
            let size = segment_size;
            let Some(segno) = file.segno(size) else { break };
            // To the second, as the archive's keys record it.
            let ended = chrono::DateTime::from_timestamp(ended.timestamp(), 0);
            self.recoverable_until = self.recoverable_until.max(ended);
            self.reach_next = Some(super::WalFile::segment(timeline, segno + 1, size).to_string());
            moved = true;
        }
        moved
    }
}

/// The daemon's archiver: a turn every second (see [`archive_turn`]).
pub async fn archiver(policy: std::sync::Arc<tokio::sync::RwLock<Policy>>) {
    loop {
        let p = policy.read().await.clone();
        archive_turn(&p).await;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// How often the archive's reach is recomputed for the metrics.
const REACH_EVERY: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// One archiving turn over every export that archives continuously: pushes
/// what waits in each `postgres-cluster` export's `pg_wal` (so
/// `archive_command` finds it done and returns at once), rotates and ships
/// MariaDB binary logs whose `rotate_every` has passed since the last turn,
/// and saves what it saw. The daemon runs one every second, `run --due`
/// one per call.
pub async fn archive_turn(policy: &Policy) {
    for e in policy.exports.values() {
        let name = &e.name;
        let last = ArchiveState::load(policy, name);
        let since = |t: Option<chrono::DateTime<Utc>>| t.map(|t| Utc::now() - t);
        match &e.source {
            SourceConfig::Mysql(c) => {
                let Some(b) = &c.binlog else { continue };
                let every = chrono::TimeDelta::from_std(b.rotate_every.0)
                    .unwrap_or(chrono::TimeDelta::seconds(60));
                // A little early rather than a whole turn late.
                let slack = chrono::TimeDelta::milliseconds(500);
                if since(last.checked_at).is_some_and(|d| d + slack < every) {
                    continue;
                }
                match super::ship::BinlogArchive::open(policy, name).await {
                    Ok(a) => {
                        let turn = a.ship(true).await;
                        if let Err(e) = a.record(Some(turn)).await {
                            tracing::warn!(export = %name, error = %e, "binary logs: the turn failed");
                        }
                    }
                    Err(e) => {
                        tracing::error!(export = %name, error = %e, "cannot ship binary logs")
                    }
                }
            }
            SourceConfig::PostgresCluster(_) => match ExportArchive::open(policy, Some(name)).await
            {
                Ok(a) => {
                    let refresh = since(last.reach_checked_at).is_none_or(|d| d >= REACH_EVERY);
                    let result = a.archive_waiting().await;
                    if let Err(e) = a.record(Some(result), refresh).await {
                        tracing::warn!(export = %name, error = %e, "the archive state is not saved");
                    }
                }
                Err(e) => tracing::error!(export = %name, error = %e, "cannot archive WAL"),
            },
            _ => {}
        }
    }
}

/// What one push did.
#[derive(Debug)]
pub struct PushReport {
    /// `None` when the spool already marked the file archived.
    pub pushed: Option<Pushed>,
    /// Files after it pushed at the same time.
    pub ahead: usize,
    pub seconds: f64,
    /// The recorded reach moved: the metrics file is worth rewriting.
    pub reach_moved: bool,
}

/// The WAL waiting to be archived.
#[derive(Debug, Clone, Default)]
pub struct Backlog {
    /// Files marked ready by PostgreSQL and not yet on every target.
    pub waiting: usize,
    /// Free space where `pg_wal` is.
    pub free_bytes: Option<u64>,
}

impl Backlog {
    pub fn read(pg_wal: &Path, spool: &Spool) -> Backlog {
        Backlog {
            waiting: super::spool::ready_files(pg_wal)
                .iter()
                .filter(|n| !spool.is_marked_name(n))
                .count(),
            free_bytes: free_space(pg_wal),
        }
    }
}

/// Bytes free for unprivileged users on the filesystem of `path`.
pub fn free_space(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs fills the struct we own from a NUL-terminated path.
    (unsafe { libc::statvfs(c.as_ptr(), &mut s) } == 0).then(|| s.f_bavail * s.f_frsize)
}

/// The `restore_command` a physical restore replays with, and in place
/// the `archive_command` (a copy elsewhere does not archive): this agent,
/// the policy's absolute path, the export. Built here, never read from the
/// repository.
pub fn replay_commands(
    policy: &Policy,
    export: &str,
    in_place: bool,
    identities: &[PathBuf],
) -> Result<(Option<String>, Option<String>)> {
    let agent = agent_path();
    let policy_path = std::path::absolute(&policy.path)
        .map_err(|e| Error::io_path("cannot resolve", &policy.path, e))?;
    let command = |verb: &str, args: &str| {
        format!(
            "{} wal {verb} --policy {} --export {} {args}",
            shell_quote(&agent.to_string_lossy()),
            shell_quote(&policy_path.to_string_lossy()),
            shell_quote(export)
        )
    };
    // The identity files' paths (never their content) let the replay
    // decrypt an encrypted archive.
    let mut get = String::new();
    for file in identities {
        let file =
            std::path::absolute(file).map_err(|e| Error::io_path("cannot resolve", file, e))?;
        get += &format!("--identity {} ", shell_quote(&file.to_string_lossy()));
    }
    get += "%f %p";
    Ok((
        Some(command("get", &get)),
        in_place.then(|| command("push", "%p")),
    ))
}

/// `drp-agent`: this binary when it is the agent, else the one beside it,
/// else the one on PATH.
pub fn agent_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    if exe.file_name().is_some_and(|n| n == "drp-agent") {
        return exe;
    }
    let sibling = exe.with_file_name("drp-agent");
    if sibling.is_file() {
        sibling
    } else {
        PathBuf::from("drp-agent")
    }
}

/// `text` as one word for /bin/sh.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// What `get` tells PostgreSQL, as an exit status.
pub fn get_status(result: &Result<Got>) -> u8 {
    match result {
        Ok(Got::Restored { .. }) => 0,
        Ok(Got::Absent) => 1,
        Err(_) => GET_FATAL,
    }
}

/// `wal get`'s status for anything but a file authoritatively absent: above
/// 125, which PostgreSQL treats as fatal, so a recovery stops instead of
/// ending early and promoting without the rest of the WAL.
pub const GET_FATAL: u8 = 126;
