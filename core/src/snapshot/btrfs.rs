//! btrfs: a read-only snapshot of a subvolume, next to it. Rollback puts a
//! writable copy of the snapshot in the subvolume's place and keeps the
//! replaced state aside (nothing is deleted without the operator).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use serde::Deserialize;

use super::process::run;
use super::provider::resolve;
use super::{Created, Member, SnapContext, SnapshotError, SnapshotProvider};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BtrfsConfig {
    /// The subvolume to snapshot.
    pub subvolume: PathBuf,
    /// Where snapshots go (same filesystem); default `.drp-snapshots` beside the subvolume.
    pub snapshot_dir: Option<PathBuf>,
}

pub struct Btrfs {
    subvolume: PathBuf,
    snapshot_dir: PathBuf,
}

impl Btrfs {
    pub fn new(c: &BtrfsConfig, base: &Path) -> Self {
        let subvolume = resolve(base, &c.subvolume);
        let snapshot_dir = c
            .snapshot_dir
            .as_ref()
            .map(|d| resolve(base, d))
            .unwrap_or_else(|| {
                subvolume
                    .parent()
                    .unwrap_or(Path::new("/"))
                    .join(".drp-snapshots")
            });
        Btrfs {
            subvolume,
            snapshot_dir,
        }
    }

    /// Where the snapshot of a set goes: `<snapshot_dir>/<subvolume>@<set id>`.
    fn snapshot_path(&self, ctx: &SnapContext<'_>) -> PathBuf {
        let name = self
            .subvolume
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| ctx.name.to_string());
        self.snapshot_dir.join(format!("{name}@{}", ctx.set_id))
    }

    async fn check_subvolume(&self) -> Result<(), SnapshotError> {
        let p = self.subvolume.to_string_lossy();
        is_subvolume(&p)
            .await
            .map(|_| ())
            .map_err(|e| SnapshotError::NotASubvolume {
                path: p.into_owned(),
                source: Box::new(e),
            })
    }
}

/// Succeeds on a subvolume, fails on anything else. `property get -ts`
/// needs no privilege (`subvolume show` needs CAP_SYS_ADMIN), so an agent
/// running as the subvolume's owner (the `drp` or `postgres` user) can
/// snapshot it and roll it back: btrfs lets the owner do both.
async fn is_subvolume(path: &str) -> Result<String, SnapshotError> {
    run("btrfs", &["property", "get", "-ts", path, "ro"]).await
}

impl SnapshotProvider for Btrfs {
    fn create<'a>(
        &'a self,
        ctx: &'a SnapContext<'a>,
    ) -> BoxFuture<'a, Result<Created, SnapshotError>> {
        Box::pin(async move {
            self.check_subvolume().await?;
            std::fs::create_dir_all(&self.snapshot_dir).map_err(|e| {
                SnapshotError::failed(format!(
                    "cannot create {}: {e}",
                    self.snapshot_dir.display()
                ))
            })?;
            let snap = self.snapshot_path(ctx);
            run(
                "btrfs",
                &[
                    "subvolume",
                    "snapshot",
                    "-r",
                    &self.subvolume.to_string_lossy(),
                    &snap.to_string_lossy(),
                ],
            )
            .await?;
            Ok((
                snap.display().to_string(),
                BTreeMap::from([(
                    "subvolume".to_string(),
                    self.subvolume.display().to_string(),
                )]),
            ))
        })
    }

    fn rollback<'a>(
        &'a self,
        ctx: &'a SnapContext<'a>,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<String, SnapshotError>> {
        Box::pin(async move {
            let snap = member.snapshot_ref()?;
            is_subvolume(snap).await.map_err(|e| SnapshotError::Gone {
                snapshot: snap.to_string(),
                source: Box::new(e),
            })?;
            let sub = self.subvolume.to_string_lossy().into_owned();
            let fresh = format!("{sub}.drp-rollback-{}", ctx.set_id);
            let aside = format!(
                "{sub}.drp-replaced-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
            );
            // A writable copy of the snapshot, then two renames.
            run("btrfs", &["subvolume", "snapshot", snap, &fresh]).await?;
            if let Err(e) = std::fs::rename(&sub, &aside) {
                let _ = run("btrfs", &["subvolume", "delete", &fresh]).await;
                return Err(SnapshotError::failed(format!(
                    "cannot move {sub} aside ({e}); if it is a mount point, unmount it and roll back again"
                )));
            }
            if let Err(e) = std::fs::rename(&fresh, &sub) {
                let _ = std::fs::rename(&aside, &sub);
                return Err(SnapshotError::failed(format!(
                    "cannot put the snapshot in place of {sub}: {e}"
                )));
            }
            Ok(format!(
                "{sub} restored from {snap}; the replaced state is kept at {aside}"
            ))
        })
    }

    fn delete<'a>(
        &'a self,
        _: &'a SnapContext<'a>,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<(), SnapshotError>> {
        Box::pin(async move {
            let snap = member.snapshot_ref()?;
            if !Path::new(snap).exists() {
                return Ok(());
            }
            run("btrfs", &["subvolume", "delete", snap])
                .await
                .map(|_| ())
        })
    }

    fn owns<'a>(
        &'a self,
        ctx: &'a SnapContext<'a>,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<(), SnapshotError>> {
        Box::pin(async move {
            let expected = self.snapshot_path(ctx);
            if Path::new(reference) == expected {
                Ok(())
            } else {
                Err(SnapshotError::NotOwned(format!(
                    "this set's snapshot of {} is {}, not that path",
                    self.subvolume.display(),
                    expected.display()
                )))
            }
        })
    }
}
