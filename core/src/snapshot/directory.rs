//! A directory, archived through the backup pipeline to the policy's
//! targets: a snapshot on any host, whatever its filesystem. Rollback is a
//! verified restore of that recovery point in place.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::{Created, Member, SnapContext, SnapshotError, SnapshotProvider};
use crate::config::{Compression, Export, Retention, Schedule, SourceConfig};
use crate::restore::{Restore, Selector};
use crate::source::directory::DirectoryConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorySnapConfig {
    pub path: PathBuf,
    /// Targets to archive to (default: every target of the policy).
    #[serde(default)]
    pub targets: Vec<String>,
}

pub struct DirectorySnap {
    config: DirectorySnapConfig,
}

impl DirectorySnap {
    pub fn new(c: &DirectorySnapConfig) -> Self {
        DirectorySnap { config: c.clone() }
    }

    /// The policy, with this snapshot as an export of its own (`snap-<name>`).
    fn policy_with_export(&self, ctx: &SnapContext<'_>) -> (crate::config::Policy, String) {
        let mut policy = ctx.policy.clone();
        let name = format!("snap-{}", ctx.name);
        let targets = if self.config.targets.is_empty() {
            policy.targets.keys().cloned().collect()
        } else {
            self.config.targets.clone()
        };
        policy.exports.insert(
            name.clone(),
            Export {
                name: name.clone(),
                source: SourceConfig::Directory(DirectoryConfig {
                    path: self.config.path.clone(),
                    allow_external_symlinks: true,
                    ..DirectoryConfig::default()
                }),
                schedule: Schedule::parse("0 0 1 1 *", policy.timezone).expect("a valid schedule"),
                targets,
                compression: Compression::default(),
                retention: Retention::default(),
                restore_test: None,
                ping: None,
                objectives: Default::default(),
                // The set's own hooks run around the whole set.
                hooks: None,
            },
        );
        (policy, name)
    }
}

impl SnapshotProvider for DirectorySnap {
    fn create<'a>(
        &'a self,
        ctx: &'a SnapContext<'a>,
    ) -> BoxFuture<'a, Result<Created, SnapshotError>> {
        Box::pin(async move {
            let (policy, export) = self.policy_with_export(ctx);
            let report = crate::backup::run(&policy, &export, crate::progress::silent()).await?;
            if let Some(e) = &report.source_error {
                return Err(SnapshotError::failed(format!(
                    "archiving {} failed: {e}",
                    self.config.path.display()
                )));
            }
            let committed: Vec<String> = report
                .targets
                .iter()
                .filter(|t| t.result.is_ok())
                .map(|t| t.target.clone())
                .collect();
            let failed: Vec<String> = report
                .targets
                .iter()
                .filter_map(|t| t.result.as_ref().err().map(|e| e.to_string()))
                .collect();
            if committed.is_empty() {
                return Err(SnapshotError::failed(format!(
                    "no target took the archive: {}",
                    failed.join("; ")
                )));
            }
            let mut details = BTreeMap::from([
                ("export".to_string(), export),
                ("path".to_string(), self.config.path.display().to_string()),
                ("targets".to_string(), committed.join(",")),
            ]);
            if !failed.is_empty() {
                details.insert("failed_targets".into(), failed.join("; "));
            }
            Ok((report.id, details))
        })
    }

    fn rollback<'a>(
        &'a self,
        ctx: &'a SnapContext<'a>,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<String, SnapshotError>> {
        Box::pin(async move {
            let id = member.snapshot_ref()?.to_string();
            let (policy, export) = self.policy_with_export(ctx);
            let e = policy.export(&export)?;
            let repos: Vec<_> = crate::repository::open_targets(&policy, &e.targets)
                .await
                .into_iter()
                .filter_map(|(_, r)| r.ok())
                .collect();
            let source: Arc<dyn crate::source::Source> =
                Arc::from(crate::source::build(&e.source, &policy.base_dir));
            let restore = Restore::new(&repos, &policy.host, &export, source).policy(Some(&policy));
            let report = restore
                .plan(&Selector::Id(id.clone()))
                .await?
                .execute(true)
                .await?;
            Ok(format!(
                "{} restored from recovery point {id} (target `{}`)",
                self.config.path.display(),
                report.target
            ))
        })
    }

    fn delete<'a>(
        &'a self,
        ctx: &'a SnapContext<'a>,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<(), SnapshotError>> {
        Box::pin(async move {
            let Some(id) = member.reference.as_deref() else {
                return Ok(());
            };
            let (policy, export) = self.policy_with_export(ctx);
            let e = policy.export(&export)?;
            for (_, repo) in crate::repository::open_targets(&policy, &e.targets).await {
                let Ok(repo) = repo else { continue };
                repo.uncommit(&policy.host, &export, id).await?;
                repo.delete_object(&crate::repository::layout::data(&policy.host, &export, id))
                    .await?;
            }
            Ok(())
        })
    }

    fn owns<'a>(
        &'a self,
        _: &'a SnapContext<'a>,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<(), SnapshotError>> {
        Box::pin(async move {
            // A point id of this snapshot's own export: nothing else, and no
            // path into another export's folder.
            if crate::config::is_safe_name(reference) && crate::prune::id_time(reference).is_some()
            {
                Ok(())
            } else {
                Err(SnapshotError::NotOwned("not a recovery point id".into()))
            }
        })
    }
}
