//! qcow2 images: internal snapshots with `qemu-img`. qemu's image locking
//! makes every operation refuse an image a running VM has open.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use serde::Deserialize;

use super::process::run;
use super::provider::resolve;
use super::{Created, Member, SnapContext, SnapshotError, SnapshotProvider};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Qcow2Config {
    pub image: PathBuf,
}

pub struct Qcow2 {
    image: PathBuf,
}

impl Qcow2 {
    pub fn new(c: &Qcow2Config, base: &Path) -> Self {
        Qcow2 {
            image: resolve(base, &c.image),
        }
    }

    async fn qemu_img(&self, args: &[&str]) -> Result<String, SnapshotError> {
        let image = self.image.to_string_lossy().into_owned();
        let mut all: Vec<&str> = args.to_vec();
        all.push(&image);
        run("qemu-img", &all).await.map_err(|e| match e {
            // qemu-img's own words for an image a running VM has open.
            SnapshotError::Tool { stderr, .. } if stderr.contains("lock") => {
                SnapshotError::InUse { image }
            }
            e => e,
        })
    }
}

/// The tag of a set's snapshot in the image.
fn tag(ctx: &SnapContext<'_>) -> String {
    format!("drp-{}", ctx.set_id)
}

impl SnapshotProvider for Qcow2 {
    fn create<'a>(
        &'a self,
        ctx: &'a SnapContext<'a>,
    ) -> BoxFuture<'a, Result<Created, SnapshotError>> {
        Box::pin(async move {
            let tag = tag(ctx);
            self.qemu_img(&["snapshot", "-c", &tag]).await?;
            let listed = self.qemu_img(&["snapshot", "-l"]).await?;
            if !listed.contains(&tag) {
                return Err(SnapshotError::failed(format!(
                    "qemu-img did not list the new snapshot {tag}"
                )));
            }
            Ok((
                tag,
                BTreeMap::from([("image".to_string(), self.image.display().to_string())]),
            ))
        })
    }

    fn rollback<'a>(
        &'a self,
        _: &'a SnapContext<'a>,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<String, SnapshotError>> {
        Box::pin(async move {
            let tag = member.snapshot_ref()?;
            self.qemu_img(&["snapshot", "-a", tag]).await?;
            Ok(format!(
                "{} reverted to snapshot {tag}",
                self.image.display()
            ))
        })
    }

    fn delete<'a>(
        &'a self,
        _: &'a SnapContext<'a>,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<(), SnapshotError>> {
        Box::pin(async move {
            let tag = member.snapshot_ref()?;
            self.qemu_img(&["snapshot", "-d", tag]).await.map(|_| ())
        })
    }

    fn owns<'a>(
        &'a self,
        ctx: &'a SnapContext<'a>,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<(), SnapshotError>> {
        Box::pin(async move {
            let expected = tag(ctx);
            if reference == expected {
                Ok(())
            } else {
                Err(SnapshotError::NotOwned(format!(
                    "this set's snapshot of {} is tagged `{expected}`",
                    self.image.display()
                )))
            }
        })
    }
}
