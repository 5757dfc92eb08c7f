//! `fence check`: whether this host is fenced after a failover. While it is,
//! the services its policy lists under `fencing:` are stopped when found
//! running, an alert goes out, and the command exits 10, so that as a
//! unit's `ExecStartPre=` it keeps the unit from starting.

use std::path::Path;

use drp_cli::Output;
use drp_core::config::Policy;
use drp_core::{Error, ExitCode, Result};

pub async fn check(policy_path: &Path, out: &Output) -> Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    let done = drp_core::fence::enforce(&policy).await;
    if out.json {
        out.print_json(&serde_json::json!({
            "host": policy.host,
            "fenced": done.fenced(),
            "fence": done.fence,
            "stopped": done.stopped,
            "errors": done.errors,
            "unread": done.unread,
        }));
    } else if !out.quiet {
        for u in &done.unread {
            eprintln!("warning: fence records not read: {u}");
        }
        if !done.fenced() {
            println!("{}: not fenced", policy.host);
        }
    }
    if done.fenced() {
        return Err(Error::Fenced(format!(
            "{}; it stays fenced until `drp unfence {}` or a failback lifts it",
            done.summary(),
            policy.host
        )));
    }
    Ok(ExitCode::Ok)
}
