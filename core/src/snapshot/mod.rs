//! Pre-change snapshots: point-in-time copies taken in place before a change,
//! grouped in a snapshot set tied to the change, so that rolling the change
//! back is one command.
//!
//! One trait, one provider per file. Sets are recorded in the repository of
//! every target of the policy (`<host>/snapshot-sets/<set id>.json`), next to
//! the exports, so they outlive the host that took them.

pub mod btrfs;
pub mod directory;
#[cfg(feature = "aws")]
pub mod ebs;
pub mod qcow2;
#[cfg(feature = "aws")]
pub mod rds;

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::config::{HumanDuration, Policy};
use crate::repository::Repository;
use crate::{Error, Result};

/// What the policy declares under `snapshots:`. One variant per provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SnapshotConfig {
    /// A btrfs subvolume: read-only snapshots in place.
    Btrfs(btrfs::BtrfsConfig),
    /// A qcow2 disk image: internal snapshots with `qemu-img`.
    Qcow2(qcow2::Qcow2Config),
    /// A directory archived to the policy's targets (any filesystem).
    Directory(directory::DirectorySnapConfig),
    /// An EBS volume (EC2 API).
    Ebs(AwsConfig<EbsTarget>),
    /// An RDS instance (RDS API).
    Rds(AwsConfig<RdsTarget>),
}

/// Settings shared by the AWS providers: as for AWS itself (region,
/// credentials from the environment or profile), with an optional endpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct AwsConfig<T> {
    #[serde(flatten)]
    pub resource: T,
    pub region: String,
    /// An endpoint other than AWS's (a test emulator, a private endpoint).
    pub endpoint: Option<String>,
    /// How long to wait for the snapshot or restore to complete.
    #[serde(default = "default_wait")]
    pub wait_timeout: HumanDuration,
}

fn default_wait() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30 * 60))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EbsTarget {
    pub volume_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RdsTarget {
    pub instance: String,
}

impl SnapshotConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SnapshotConfig::Btrfs(_) => "btrfs",
            SnapshotConfig::Qcow2(_) => "qcow2",
            SnapshotConfig::Directory(_) => "directory",
            SnapshotConfig::Ebs(_) => "ebs",
            SnapshotConfig::Rds(_) => "rds",
        }
    }
}

/// One snapshot of a set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Member {
    pub name: String,
    pub kind: String,
    /// How the provider finds it again: a path, a tag, a snapshot id, a point id.
    pub reference: Option<String>,
    pub created_at: DateTime<Utc>,
    pub ok: bool,
    pub error: Option<String>,
    #[serde(default)]
    pub details: BTreeMap<String, String>,
}

impl Member {
    /// The provider's reference to the snapshot, which rollback needs.
    pub fn snapshot_ref(&self) -> std::result::Result<&str, SnapError> {
        self.reference.as_deref().ok_or_else(|| {
            SnapError(format!(
                "snapshot `{}` has no reference: it was never taken",
                self.name
            ))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetStatus {
    /// Every member was taken.
    Complete,
    /// At least one member failed: never to be rolled back to as a whole.
    Failed,
    /// Rolled back to (it stays usable).
    RolledBack,
}

/// What `guard` recorded about the change it ran.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GuardOutcome {
    pub command: Vec<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub rolled_back: bool,
    pub finished_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rollback {
    pub at: DateTime<Utc>,
    pub results: Vec<(String, std::result::Result<String, String>)>,
}

/// A snapshot set: every snapshot taken for one change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotSet {
    pub format: u32,
    pub id: String,
    pub host: String,
    pub change: String,
    pub reason: String,
    pub created_at: DateTime<Utc>,
    pub status: SetStatus,
    pub members: Vec<Member>,
    pub guard: Option<GuardOutcome>,
    #[serde(default)]
    pub rollbacks: Vec<Rollback>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SnapError(pub String);

/// Context for a provider call.
pub struct SnapContext<'a> {
    pub policy: &'a Policy,
    pub name: &'a str,
    pub set_id: &'a str,
    pub change: &'a str,
    pub reason: &'a str,
}

/// A snapshot's reference and the details recorded with it.
pub type Created = (String, BTreeMap<String, String>);

pub trait SnapshotProvider: Send + Sync {
    /// Takes the snapshot; returns its reference and details.
    fn create<'a>(
        &'a self,
        ctx: &'a SnapContext<'a>,
    ) -> BoxFuture<'a, std::result::Result<Created, SnapError>>;
    /// Puts the snapshotted state back; says what was done (and where the
    /// replaced state was kept, if it was).
    fn rollback<'a>(
        &'a self,
        ctx: &'a SnapContext<'a>,
        member: &'a Member,
    ) -> BoxFuture<'a, std::result::Result<String, SnapError>>;
    /// Deletes the snapshot (expiry).
    fn delete<'a>(
        &'a self,
        ctx: &'a SnapContext<'a>,
        member: &'a Member,
    ) -> BoxFuture<'a, std::result::Result<(), SnapError>>;
    /// Checks that `reference`, read from a set record in a repository,
    /// names a snapshot this provider took of the resource the policy
    /// declares, for this set. A record is data: rollback and expiry act
    /// only on what passes.
    fn owns<'a>(
        &'a self,
        ctx: &'a SnapContext<'a>,
        reference: &'a str,
    ) -> BoxFuture<'a, std::result::Result<(), SnapError>>;
}

/// Checks a set's member against the policy before a provider acts on it:
/// the set is this host's, the snapshot is declared with the same kind, and
/// the provider recognises the reference as its own.
async fn checked<'a>(
    policy: &'a Policy,
    set: &'a SnapshotSet,
    member: &'a Member,
) -> std::result::Result<(Box<dyn SnapshotProvider>, SnapContext<'a>), String> {
    let refused = |why: String| {
        format!(
            "record of set `{}` refused: {why}; a repository record never makes this host act on a resource its policy does not declare",
            set.id
        )
    };
    if !crate::config::is_safe_name(&set.id) {
        return Err(refused("its id is not a set id".into()));
    }
    if set.host != policy.host {
        return Err(refused(format!(
            "it belongs to host `{}`, not `{}`",
            set.host, policy.host
        )));
    }
    let Some(config) = policy.snapshots.get(&member.name) else {
        return Err(format!(
            "snapshot `{}` is no longer declared in the policy",
            member.name
        ));
    };
    if config.kind() != member.kind {
        return Err(refused(format!(
            "snapshot `{}` is a {} in the policy, the record says {}",
            member.name,
            config.kind(),
            member.kind
        )));
    }
    let ctx = SnapContext {
        policy,
        name: &member.name,
        set_id: &set.id,
        change: &set.change,
        reason: &set.reason,
    };
    let p = provider(config, &policy.base_dir);
    if let Some(reference) = member.reference.as_deref() {
        p.owns(&ctx, reference)
            .await
            .map_err(|e| refused(format!("`{reference}`: {}", e.0)))?;
    }
    Ok((p, ctx))
}

pub fn provider(config: &SnapshotConfig, base_dir: &std::path::Path) -> Box<dyn SnapshotProvider> {
    match config {
        SnapshotConfig::Btrfs(c) => Box::new(btrfs::Btrfs::new(c, base_dir)),
        SnapshotConfig::Qcow2(c) => Box::new(qcow2::Qcow2::new(c, base_dir)),
        SnapshotConfig::Directory(c) => Box::new(directory::DirectorySnap::new(c)),
        #[cfg(feature = "aws")]
        SnapshotConfig::Ebs(c) => Box::new(ebs::Ebs::new(c.clone())),
        #[cfg(feature = "aws")]
        SnapshotConfig::Rds(c) => Box::new(rds::Rds::new(c.clone())),
        #[cfg(not(feature = "aws"))]
        SnapshotConfig::Ebs(_) | SnapshotConfig::Rds(_) => Box::new(Unavailable),
    }
}

#[cfg(not(feature = "aws"))]
struct Unavailable;

#[cfg(not(feature = "aws"))]
impl SnapshotProvider for Unavailable {
    fn create<'a>(
        &'a self,
        _: &'a SnapContext<'a>,
    ) -> BoxFuture<'a, std::result::Result<Created, SnapError>> {
        Box::pin(async {
            Err(SnapError(
                "this drp-agent was built without the `aws` feature".into(),
            ))
        })
    }
    fn rollback<'a>(
        &'a self,
        _: &'a SnapContext<'a>,
        _: &'a Member,
    ) -> BoxFuture<'a, std::result::Result<String, SnapError>> {
        Box::pin(async {
            Err(SnapError(
                "this drp-agent was built without the `aws` feature".into(),
            ))
        })
    }
    fn delete<'a>(
        &'a self,
        _: &'a SnapContext<'a>,
        _: &'a Member,
    ) -> BoxFuture<'a, std::result::Result<(), SnapError>> {
        Box::pin(async {
            Err(SnapError(
                "this drp-agent was built without the `aws` feature".into(),
            ))
        })
    }
}

/// An AWS API error with its whole chain of causes (codes and messages;
/// requests' credentials are never part of them).
#[cfg(feature = "aws")]
pub fn api_error(op: &str, e: &(dyn std::error::Error + 'static)) -> SnapError {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    SnapError(format!("{op} failed: {msg}"))
}

/// Polls `check` every `interval` until it gives a value or fails, or until
/// `timeout` has passed: then the error says `{what} after {timeout}`.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    timeout: std::time::Duration,
    interval: std::time::Duration,
    mut check: F,
) -> std::result::Result<T, SnapError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<Option<T>, SnapError>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SnapError(format!(
                "{what} after {}",
                crate::config::units::format_duration(timeout)
            )));
        }
        tokio::time::sleep(interval).await;
    }
}

/// Runs a command to completion; its stderr explains a failure.
pub async fn run(program: &str, args: &[&str]) -> std::result::Result<String, SnapError> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| SnapError(format!("cannot run `{program}`: {e} (is it installed?)")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(SnapError(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A set id: sortable by time, naming the change.
fn set_id(at: DateTime<Utc>, change: &str) -> String {
    let change: String = change
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    format!("{}-{change}", at.format("%Y%m%dT%H%M%SZ"))
}

/// Where sets are recorded: every target of the policy.
pub async fn stores(policy: &Policy) -> (Vec<Repository>, Vec<String>) {
    let names: Vec<String> = policy.targets.keys().cloned().collect();
    let mut repos = Vec::new();
    let mut failed = Vec::new();
    for (name, opened) in crate::backup::open_targets(policy, &names).await {
        match opened {
            Ok(r) => repos.push(r),
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    (repos, failed)
}

/// Records `set` on every reachable target; fails if none took it.
pub async fn save(policy: &Policy, set: &SnapshotSet) -> Result<Vec<String>> {
    let (repos, mut failed) = stores(policy).await;
    let body = serde_json::to_vec_pretty(set).expect("set serialises");
    let mut saved = 0;
    for repo in &repos {
        match repo
            .save_snapshot_set(&set.host, &set.id, body.clone())
            .await
        {
            Ok(()) => saved += 1,
            Err(e) => failed.push(e.to_string()),
        }
    }
    if saved == 0 {
        return Err(Error::Failed(format!(
            "the snapshot set {} could not be recorded anywhere: {}",
            set.id,
            failed.join("; ")
        )));
    }
    Ok(failed)
}

/// Every recorded set of the policy's host, oldest first.
pub async fn list(policy: &Policy) -> Result<Vec<SnapshotSet>> {
    let (repos, failed) = stores(policy).await;
    if repos.is_empty() {
        return Err(Error::Failed(format!(
            "no target reachable: {}",
            failed.join("; ")
        )));
    }
    let mut by_id: BTreeMap<String, SnapshotSet> = BTreeMap::new();
    for repo in &repos {
        for record in repo.snapshot_set_records(&policy.host).await? {
            let Ok(set) = serde_json::from_slice::<SnapshotSet>(&record.bytes) else {
                continue;
            };
            // A record is only what its own name says it is.
            if !crate::config::is_safe_name(&set.id)
                || record.name() != format!("{}.json", set.id)
                || set.host != policy.host
            {
                tracing::warn!(
                    "snapshot set record {} on target `{}` ignored: its id is not a set id of this host's",
                    record.key,
                    repo.name()
                );
                continue;
            }
            by_id.entry(set.id.clone()).or_insert(set);
        }
    }
    let mut v: Vec<_> = by_id.into_values().collect();
    v.sort_by_key(|s| s.created_at);
    Ok(v)
}

/// Takes a snapshot set for `change`: every declared snapshot (or `only`
/// those), in parallel. A set with a failed member is recorded as failed.
pub async fn create(
    policy: &Policy,
    change: &str,
    reason: &str,
    only: &[String],
) -> Result<SnapshotSet> {
    if policy.snapshots.is_empty() {
        return Err(Error::Usage(format!(
            "{} declares no `snapshots`",
            policy.path.display()
        )));
    }
    for n in only {
        if !policy.snapshots.contains_key(n) {
            return Err(Error::NotFound(format!(
                "no snapshot `{n}` in {}; declared: {}",
                policy.path.display(),
                policy
                    .snapshots
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let created_at = Utc::now();
    let id = set_id(created_at, change);
    let chosen: Vec<(&String, &SnapshotConfig)> = policy
        .snapshots
        .iter()
        .filter(|(n, _)| only.is_empty() || only.contains(n))
        .collect();
    let futures = chosen.iter().map(|(name, config)| {
        let id = id.clone();
        async move {
            let ctx = SnapContext {
                policy,
                name,
                set_id: &id,
                change,
                reason,
            };
            let p = provider(config, &policy.base_dir);
            let result = p.create(&ctx).await;
            let (reference, details, error) = match result {
                Ok((r, d)) => (Some(r), d, None),
                Err(e) => (None, BTreeMap::new(), Some(e.0)),
            };
            Member {
                name: name.to_string(),
                kind: config.kind().to_string(),
                ok: error.is_none(),
                reference,
                created_at: Utc::now(),
                error,
                details,
            }
        }
    });
    let members = futures::future::join_all(futures).await;
    let status = if members.iter().all(|m| m.ok) {
        SetStatus::Complete
    } else {
        SetStatus::Failed
    };
    let set = SnapshotSet {
        format: 1,
        id,
        host: policy.host.clone(),
        change: change.to_string(),
        reason: reason.to_string(),
        created_at,
        status,
        members,
        guard: None,
        rollbacks: Vec::new(),
    };
    save(policy, &set).await?;
    record_newest(policy, &set);
    if let Err(e) = crate::metrics::write_textfile(policy, Utc::now()) {
        tracing::warn!(error = %e, "metrics textfile not written");
    }
    Ok(set)
}

/// The newest complete snapshot of each name, kept in the state for
/// `status` and the metrics (the repository stays the truth).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Newest {
    pub by_name: BTreeMap<String, NewestSnapshot>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewestSnapshot {
    pub kind: String,
    pub set: String,
    pub change: String,
    pub taken_at: DateTime<Utc>,
}

fn newest_path(policy: &Policy) -> PathBuf {
    policy.state_dir.join(&policy.host).join("snapshots.json")
}

pub fn newest(policy: &Policy) -> Newest {
    std::fs::read(newest_path(policy))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn record_newest(policy: &Policy, set: &SnapshotSet) {
    let mut n = newest(policy);
    for m in set.members.iter().filter(|m| m.ok) {
        n.by_name.insert(
            m.name.clone(),
            NewestSnapshot {
                kind: m.kind.clone(),
                set: set.id.clone(),
                change: set.change.clone(),
                taken_at: m.created_at,
            },
        );
    }
    let body = serde_json::to_vec_pretty(&n).expect("serialises");
    if let Err(e) = crate::state::write_atomically(&newest_path(policy), &body) {
        tracing::warn!(error = %e, "snapshot state not recorded");
    }
}

/// The newest usable set of `change`.
pub async fn find(policy: &Policy, change: &str) -> Result<SnapshotSet> {
    let sets = list(policy).await?;
    let of_change: Vec<_> = sets.iter().filter(|s| s.change == change).collect();
    match of_change
        .iter()
        .rev()
        .find(|s| s.status != SetStatus::Failed)
    {
        Some(s) => Ok((*s).clone()),
        None if !of_change.is_empty() => Err(Error::Failed(format!(
            "the snapshot sets of change `{change}` are incomplete (a snapshot failed): nothing to roll back to as a whole"
        ))),
        None => Err(Error::NotFound(format!(
            "no snapshot set for change `{change}` on {}",
            policy.host
        ))),
    }
}

/// Rolls every member of `set` back, in order; records the rollback.
pub async fn rollback(
    policy: &Policy,
    set: &mut SnapshotSet,
) -> Result<Vec<(String, std::result::Result<String, String>)>> {
    let mut results = Vec::new();
    for m in &set.members {
        let r = match checked(policy, set, m).await {
            Ok((p, ctx)) => p.rollback(&ctx, m).await.map_err(|e| e.0),
            Err(why) => Err(why),
        };
        results.push((m.name.clone(), r));
    }
    set.rollbacks.push(Rollback {
        at: Utc::now(),
        results: results.clone(),
    });
    if results.iter().all(|(_, r)| r.is_ok()) {
        set.status = SetStatus::RolledBack;
    }
    save(policy, set).await?;
    Ok(results)
}

/// Sets to expire by the policy's `snapshot_retention`, oldest first. The
/// rules count complete sets only: a failed set never takes the place of one
/// that can be rolled back to, and is expired itself.
pub fn to_expire(policy: &Policy, sets: &[SnapshotSet]) -> Vec<String> {
    let points: Vec<(String, DateTime<Utc>)> = sets
        .iter()
        .filter(|s| s.status != SetStatus::Failed)
        .map(|s| (s.id.clone(), s.created_at))
        .collect();
    let decisions = crate::retention::apply(&policy.snapshot_retention, &points, policy.timezone);
    let kept: std::collections::HashSet<String> = decisions
        .into_iter()
        .filter(|d| d.keep())
        .map(|d| d.id)
        .collect();
    let mut v: Vec<(DateTime<Utc>, String)> = sets
        .iter()
        .filter(|s| !kept.contains(&s.id))
        .map(|s| (s.created_at, s.id.clone()))
        .collect();
    v.sort();
    v.into_iter().map(|(_, id)| id).collect()
}

/// Expires what `snapshot_retention` no longer keeps (after scheduled runs
/// and by `snapshot expire`); returns each expired set's id and the errors
/// that kept it (empty when it went).
pub async fn expire_due(policy: &Policy) -> Result<Vec<(String, Vec<String>)>> {
    if policy.snapshots.is_empty() {
        return Ok(Vec::new());
    }
    let sets = list(policy).await?;
    let mut out = Vec::new();
    for id in to_expire(policy, &sets) {
        let set = sets.iter().find(|s| s.id == id).expect("listed");
        out.push((id.clone(), expire(policy, set).await?));
    }
    Ok(out)
}

/// Deletes a set's snapshots, then its record.
pub async fn expire(policy: &Policy, set: &SnapshotSet) -> Result<Vec<String>> {
    let mut errors = Vec::new();
    for m in set.members.iter().filter(|m| m.ok) {
        if !policy.snapshots.contains_key(&m.name) {
            continue;
        }
        match checked(policy, set, m).await {
            Ok((p, ctx)) => {
                if let Err(e) = p.delete(&ctx, m).await {
                    errors.push(format!("{}: {e}", m.name));
                }
            }
            Err(why) => errors.push(format!("{}: {why}", m.name)),
        }
    }
    if errors.is_empty() {
        let (repos, _) = stores(policy).await;
        for repo in repos {
            let _ = repo.delete_snapshot_set(&set.host, &set.id).await;
        }
    }
    Ok(errors)
}

pub fn resolve(base: &std::path::Path, p: &std::path::Path) -> PathBuf {
    crate::config::resolve_relative(base, p)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::wait_until;

    #[tokio::test]
    async fn a_snapshot_that_never_completes_times_out_with_a_clear_error() {
        let err = wait_until::<(), _, _>(
            "snapshot snap-1 of vol-1 not completed",
            Duration::from_millis(300),
            Duration::from_millis(50),
            || async { Ok(None) },
        )
        .await
        .unwrap_err();
        assert_eq!(err.0, "snapshot snap-1 of vol-1 not completed after 300ms");
    }

    #[tokio::test]
    async fn waiting_stops_at_the_first_answer_or_failure() {
        let mut n = 0;
        let v = wait_until(
            "x",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                n += 1;
                let done = n >= 3;
                async move { Ok(done.then_some(n)) }
            },
        )
        .await
        .unwrap();
        assert_eq!(v, 3);
        let e = wait_until::<(), _, _>(
            "x",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || async { Err(super::SnapError("snapshot failed".into())) },
        )
        .await
        .unwrap_err();
        assert_eq!(e.0, "snapshot failed");
    }
}

#[cfg(test)]
mod retention_tests {
    use super::*;

    fn set(id: &str, minutes: i64, status: SetStatus) -> SnapshotSet {
        SnapshotSet {
            format: 1,
            id: id.into(),
            host: "h".into(),
            change: id.into(),
            reason: "r".into(),
            created_at: DateTime::from_timestamp(1_800_000_000 + minutes * 60, 0).unwrap(),
            status,
            members: Vec::new(),
            guard: None,
            rollbacks: Vec::new(),
        }
    }

    #[test]
    fn failed_sets_never_take_the_place_of_a_set_that_can_be_rolled_back_to() {
        let policy = Policy::parse(
            std::path::Path::new("p.yaml"),
            "host: h\ntargets:\n  nas: {kind: local, path: nas}\nexports:\n  a:\n    source: {kind: sqlite, path: a.db}\n    targets: [nas]\nsnapshot_retention: {keep_last: 2}\n",
        )
        .unwrap();
        let sets = [
            set("old-complete", 0, SetStatus::Complete),
            set("rolled-back", 10, SetStatus::RolledBack),
            set("failed-1", 20, SetStatus::Failed),
            set("failed-2", 30, SetStatus::Failed),
        ];
        // The two newest are failed: they do not count, and they expire;
        // the two sets that can be rolled back to are kept.
        assert_eq!(to_expire(&policy, &sets), ["failed-1", "failed-2"]);
    }
}

#[cfg(test)]
mod unknown_key_probe {
    #[test]
    fn probe_a_typo_in_an_ebs_snapshot_is_refused() {
        let text = "host: h\ntargets:\n  nas: {kind: local, path: nas}\nexports:\n  a:\n    source: {kind: sqlite, path: a.db}\n    targets: [nas]\nsnapshots:\n  vol:\n    kind: ebs\n    volume_id: vol-1\n    region: eu-west-1\n    wait_timout: 5m\n";
        let r = crate::config::Policy::parse(std::path::Path::new("p.yaml"), text);
        let e = r.expect_err("a typo'd key must be refused");
        panic!("{:?}", e);
    }
}
