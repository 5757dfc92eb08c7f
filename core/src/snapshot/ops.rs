//! What the commands do with sets: take one, find the one to roll back to,
//! roll it back, expire what retention no longer keeps.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::set::set_id;
use super::store::{forget, list, save};
use super::{
    Member, Rollback, SetStatus, SnapContext, SnapshotConfig, SnapshotProvider, SnapshotSet,
    provider,
};
use crate::config::Policy;
use crate::state::{self, NewestSnapshot};
use crate::{Error, Result};

/// Takes a snapshot set for `change`: every declared snapshot (or `only`
/// those), in parallel, between the policy's `snapshot_hooks`. A set with
/// a failed member is recorded as failed; when the `before` hook fails, no
/// snapshot is taken and every member says why.
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
            let (reference, details, error) = match p.create(&ctx).await {
                Ok((r, d)) => (Some(r), d, None),
                Err(e) => (None, BTreeMap::new(), Some(e.to_string())),
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
    let hooked = crate::hooks::around(
        policy,
        policy.snapshot_hooks.as_ref(),
        crate::hooks::Around::SnapshotSet { id: &id, change },
        futures::future::join_all(futures),
        |members: &Vec<Member>| {
            let failed: Vec<String> = members
                .iter()
                .filter_map(|m| Some(format!("snapshot `{}`: {}", m.name, m.error.as_ref()?)))
                .collect();
            (!failed.is_empty()).then(|| failed.join("; "))
        },
    )
    .await;
    let refused = hooked.refused().map(str::to_string);
    let members = match hooked.outcome {
        Some(members) => members,
        None => chosen
            .iter()
            .map(|(name, config)| Member {
                name: name.to_string(),
                kind: config.kind().to_string(),
                reference: None,
                created_at: Utc::now(),
                ok: false,
                error: Some(format!(
                    "not taken: {}",
                    refused.as_deref().unwrap_or("the `before` hook failed")
                )),
                details: BTreeMap::new(),
            })
            .collect(),
    };
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
        hooks: hooked.runs,
    };
    save(policy, &set).await?;
    state::record_newest(
        policy,
        set.members.iter().filter(|m| m.ok).map(|m| {
            (
                m.name.clone(),
                NewestSnapshot {
                    kind: m.kind.clone(),
                    set: set.id.clone(),
                    change: set.change.clone(),
                    taken_at: m.created_at,
                },
            )
        }),
        set.members
            .iter()
            .filter(|m| !m.ok)
            .map(|m| (m.name.clone(), m.created_at)),
    );
    if let Err(e) = crate::metrics::write_textfile(policy, Utc::now()) {
        tracing::warn!(error = %e, "metrics textfile not written");
    }
    Ok(set)
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
            Ok((p, ctx)) => p.rollback(&ctx, m).await.map_err(|e| e.to_string()),
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
        forget(policy, set).await;
    }
    Ok(errors)
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
            .map_err(|e| refused(format!("`{reference}`: {e}")))?;
    }
    Ok((p, ctx))
}

#[cfg(test)]
mod tests {
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
            hooks: Vec::new(),
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
