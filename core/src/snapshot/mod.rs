//! Pre-change snapshots: point-in-time copies taken in place before a change,
//! grouped in a snapshot set tied to the change, so that rolling the change
//! back is one command.
//!
//! One trait, one provider per file. Sets are recorded in the repository of
//! every target of the policy, next to the exports, so they outlive the host
//! that took them.
//!
//! - `config`: what the policy declares ([`SnapshotConfig`], the registry
//!   of kinds);
//! - `set`: the set model ([`SnapshotSet`], [`Member`], [`SetStatus`]);
//! - `provider`: the [`SnapshotProvider`] trait and the factory;
//! - `error`: [`SnapshotError`], what a provider reports;
//! - `store`: recording and listing sets on the targets;
//! - `ops`: [`create`], [`find`], [`rollback`], [`expire`] and retention;
//! - `aws`, `process`: what the cloud and the local providers share;
//! - one file per kind: `btrfs`, `qcow2`, `lvm`, `directory`, `ebs`, `rds`.
//!
//! The newest snapshot of each name is host state ([`crate::state::newest`]).
//!
//! # To add a snapshot provider
//!
//! 1. Write `snapshot/<kind>.rs`: its config struct (`#[serde(deny_unknown_fields)]`)
//!    and a type implementing [`SnapshotProvider`].
//! 2. Declare it below (`pub mod <kind>;`) and add a variant `<Kind>(<kind>::<Kind>Config)`
//!    to [`SnapshotConfig`].
//! 3. Let the compiler point at the two `match`es to extend:
//!    [`SnapshotConfig::kind`] (its name) and [`provider()`] (its constructor).

#[cfg(feature = "aws")]
pub(crate) mod aws;
pub mod btrfs;
mod config;
pub mod directory;
#[cfg(feature = "aws")]
pub mod ebs;
mod error;
pub mod lvm;
mod ops;
mod process;
mod provider;
pub mod qcow2;
#[cfg(feature = "aws")]
pub mod rds;
mod set;
mod store;

pub use config::{EbsConfig, RdsConfig, SnapshotConfig};
pub use error::SnapshotError;
pub use ops::{create, expire, expire_due, find, rollback, to_expire};
pub use provider::{Created, SnapContext, SnapshotProvider, provider};
pub use set::{GuardOutcome, Member, Rollback, SetStatus, SnapshotSet};
pub use store::{list, save};
