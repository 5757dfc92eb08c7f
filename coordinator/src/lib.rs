//! drp coordinator: the runbook engine. Runbooks, their actions, drills and
//! incident runs, RTO/RPO reports and compliance over a period. Everything
//! that touches recovery points goes through `drp_core`'s public API, so the
//! agent and the coordinator behave the same.

pub mod action;
pub mod compliance;
pub mod drill;
pub mod engine;
pub mod fleet;
pub mod handover;
pub mod report;
pub mod runbook;
