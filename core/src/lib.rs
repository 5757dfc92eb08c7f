//! drp's core: the domain both binaries (and, later, the fleet protocol)
//! call. Policies, sources, backends, repositories, the data path, backups,
//! restores, verification, retention and snapshots.
//!
//! The public API, by what a caller does:
//! - read a policy: [`config::Policy::load`]; pick repositories:
//!   [`scope::Scope`], [`repository::Repository`];
//! - back up: [`runner::run_export`] (lock, export, notify, upkeep) or
//!   [`backup::run`] (the export alone);
//! - restore: [`restore::find`] then [`restore::plan`] and [`restore::execute`];
//!   verify: [`verify::verify`]; apply retention: [`prune`];
//! - snapshots before a change: [`snapshot::create`], [`snapshot::rollback`];
//! - judge objectives: [`posture`] (what the schedules can meet) and
//!   [`export_status`] (where each export stands now); keep the schedule:
//!   [`runner::daemon`].
//!
//! Not public, deliberately: the data path (`pipeline`: compression,
//! fan-out, digests), chunk I/O (`chunk`), the per-export locks (`lock`) and
//! the scheduler's DST handling (`scheduler`). Callers get their effects
//! through the functions above, so commit-last and verify-before-replace
//! cannot be bypassed; [`runner::run_export`] and [`prune`] hold the
//! export's lock ([`backup::run`] alone does not: it is the export itself).
//!
//! Library code never prints and takes no command line: the `drp-cli` crate
//! renders output. Long operations report through [`progress::Progress`].

pub mod backend;
pub mod backup;
mod chunk;
pub mod config;
pub mod error;
pub mod export_status;
pub mod keys;
mod lock;
pub mod manifest;
pub mod metrics;
pub mod notify;
mod pipeline;
pub mod posture;
pub mod progress;
pub mod prune;
pub mod repository;
pub mod restore;
pub mod restore_test;
pub mod retention;
pub mod runner;
mod scheduler;
pub mod scope;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod time;
pub mod verify;
pub mod wal;

pub use error::{Error, ExitCode, Result};
