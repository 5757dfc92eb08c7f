//! drp coordinator: the on-call engineer's restore, and (as runbooks land)
//! runbooks, drills and RTO/RPO reports. Everything that touches recovery
//! points goes through the agent library, so both binaries behave the same.

pub mod action;
pub mod check;
pub mod cli;
pub mod compliance;
pub mod demo;
pub mod drill;
pub mod engine;
pub mod report;
pub mod runbook;
