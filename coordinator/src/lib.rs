//! drp coordinator: the on-call engineer's restore, and (as runbooks land)
//! runbooks, drills and RTO/RPO reports. Everything that touches recovery
//! points goes through the agent library, so both binaries behave the same.

pub mod check;
pub mod cli;
pub mod demo;
