//! The extension point: one [`SnapshotProvider`] per kind, chosen from the
//! policy's [`SnapshotConfig`] by [`provider`], the one `match` on kinds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;

use super::{Member, SnapshotConfig, SnapshotError, btrfs, directory, lvm, qcow2};
#[cfg(feature = "aws")]
use super::{ebs, rds};
use crate::config::Policy;

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
    ) -> BoxFuture<'a, Result<Created, SnapshotError>>;
    /// Puts the snapshotted state back; says what was done (and where the
    /// replaced state was kept, if it was).
    fn rollback<'a>(
        &'a self,
        ctx: &'a SnapContext<'a>,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<String, SnapshotError>>;
    /// Deletes the snapshot (expiry).
    fn delete<'a>(
        &'a self,
        ctx: &'a SnapContext<'a>,
        member: &'a Member,
    ) -> BoxFuture<'a, Result<(), SnapshotError>>;
    /// Checks that `reference`, read from a set record in a repository,
    /// names a snapshot this provider took of the resource the policy
    /// declares, for this set. A record is data: rollback and expiry act
    /// only on what passes.
    fn owns<'a>(
        &'a self,
        ctx: &'a SnapContext<'a>,
        reference: &'a str,
    ) -> BoxFuture<'a, Result<(), SnapshotError>>;
}

/// The provider for `config`; relative paths in it resolve against `base_dir`.
pub fn provider(config: &SnapshotConfig, base_dir: &Path) -> Box<dyn SnapshotProvider> {
    match config {
        SnapshotConfig::Btrfs(c) => Box::new(btrfs::Btrfs::new(c, base_dir)),
        SnapshotConfig::Qcow2(c) => Box::new(qcow2::Qcow2::new(c, base_dir)),
        SnapshotConfig::Lvm(c) => Box::new(lvm::Lvm::new(c)),
        SnapshotConfig::Directory(c) => Box::new(directory::DirectorySnap::new(c)),
        #[cfg(feature = "aws")]
        SnapshotConfig::Ebs(c) => Box::new(ebs::Ebs::new(c.clone())),
        #[cfg(feature = "aws")]
        SnapshotConfig::Rds(c) => Box::new(rds::Rds::new(c.clone())),
        #[cfg(not(feature = "aws"))]
        SnapshotConfig::Ebs(_) | SnapshotConfig::Rds(_) => Box::new(Unavailable(config.kind())),
    }
}

/// A path from the policy, relative to its folder.
pub(super) fn resolve(base: &Path, p: &Path) -> PathBuf {
    crate::config::resolve_relative(base, p)
}

/// A kind this build does not include: every call says so.
#[cfg(not(feature = "aws"))]
struct Unavailable(&'static str);

#[cfg(not(feature = "aws"))]
impl Unavailable {
    fn error(&self) -> SnapshotError {
        SnapshotError::Unavailable { kind: self.0 }
    }
}

#[cfg(not(feature = "aws"))]
impl SnapshotProvider for Unavailable {
    fn create<'a>(
        &'a self,
        _: &'a SnapContext<'a>,
    ) -> BoxFuture<'a, Result<Created, SnapshotError>> {
        Box::pin(async { Err(self.error()) })
    }
    fn rollback<'a>(
        &'a self,
        _: &'a SnapContext<'a>,
        _: &'a Member,
    ) -> BoxFuture<'a, Result<String, SnapshotError>> {
        Box::pin(async { Err(self.error()) })
    }
    fn delete<'a>(
        &'a self,
        _: &'a SnapContext<'a>,
        _: &'a Member,
    ) -> BoxFuture<'a, Result<(), SnapshotError>> {
        Box::pin(async { Err(self.error()) })
    }
    fn owns<'a>(
        &'a self,
        _: &'a SnapContext<'a>,
        _: &'a str,
    ) -> BoxFuture<'a, Result<(), SnapshotError>> {
        Box::pin(async { Err(self.error()) })
    }
}
