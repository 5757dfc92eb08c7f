//! drp host agent: takes recovery points of databases and directories, stores
//! them in self-describing repositories on NAS and S3 targets, verifies and
//! restores them.
//!
//! Library code never prints; only [`cli`] renders output for people and
//! scripts. Long operations report through [`progress::Progress`].

pub mod backup;
pub mod cli;
pub mod config;
pub mod error;
pub mod manifest;
pub mod pipeline;
pub mod progress;
pub mod repository;
pub mod restore;
pub mod source;
pub mod target;
pub mod verify;

pub use error::{Error, ExitCode, Result};
