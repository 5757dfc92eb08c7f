//! Where sets are recorded: on every target of the policy, through the
//! repository (which owns the `<host>/snapshot-sets/<set id>.json` layout).

use std::collections::BTreeMap;

use super::SnapshotSet;
use crate::config::Policy;
use crate::repository::Repository;
use crate::{Error, Result};

/// Every target of the policy that opens, and why the others did not.
pub(super) async fn stores(policy: &Policy) -> (Vec<Repository>, Vec<String>) {
    let names: Vec<String> = policy.targets.keys().cloned().collect();
    let mut repos = Vec::new();
    let mut failed = Vec::new();
    for (name, opened) in crate::repository::open_targets(policy, &names).await {
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

/// Deletes `set`'s record from every reachable target, as far as it goes.
pub(super) async fn forget(policy: &Policy, set: &SnapshotSet) {
    let (repos, _) = stores(policy).await;
    for repo in repos {
        let _ = repo.delete_snapshot_set(&set.host, &set.id).await;
    }
}
