//! drp host agent: takes recovery points of databases and directories, stores
//! them in self-describing repositories on NAS and S3 targets, verifies and
//! restores them.
//!
//! Library code never prints; only [`cli`] renders output for people and
//! scripts. Long operations report through [`progress::Progress`].

pub mod backend;
pub mod backup;
mod chunk;
pub mod config;
pub mod error;
pub mod lock;
pub mod manifest;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod posture;
pub mod progress;
pub mod prune;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod runner;
pub mod scheduler;
pub mod scope;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod time;
pub mod verify;

pub use error::{Error, ExitCode, Result};
