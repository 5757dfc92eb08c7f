//! `drp drill --due`: the runbooks whose `drill.every` says a drill is due
//! (never passed one, changed since their last passed drill, or `every` gone
//! by since), drilled one after the other; the others skipped with when they
//! are next due. What is due is `report::drill_due`, the rule `drp report`
//! reads for overdue runbooks, from the reports on each runbook's policy's
//! targets.

use std::path::{Path, PathBuf};

use drp_cli::Output;
use drp_coordinator::report::{DrillDue, Kind, Store, drill_due};
use drp_coordinator::runbook::Runbook;
use drp_core::config::Policy;
use drp_core::config::units::format_duration;
use drp_core::time::shown_in;
use drp_core::{ExitCode, Result};

use crate::cli::RunArgs;

/// The runbooks to consider: files, a folder's, of one policy's host.
pub struct Which<'a> {
    pub files: &'a [PathBuf],
    pub dir: Option<&'a Path>,
    pub policy: Option<&'a Path>,
}

/// Drills what is due (or, `dry_run`, only says so). The exit code is the
/// worst of the drills run (0 when none was due); a runbook that cannot be
/// read counts as 2, one whose reports no target holds as 1.
pub async fn run(
    which: &Which<'_>,
    dry_run: bool,
    args: &RunArgs,
    out: &Output,
) -> Result<ExitCode> {
    let host = which
        .policy
        .map(|p| Policy::load(p).map(|p| p.host))
        .transpose()?;
    let mut files = match which.dir {
        Some(d) => drp_coordinator::compliance::runbook_files(d)?,
        None => Vec::new(),
    };
    for f in which.files {
        if !files.contains(f) {
            files.push(f.clone());
        }
    }
    let say = |line: String| {
        if !out.json && !out.quiet {
            println!("{line}");
        }
    };
    let mut worst = ExitCode::Ok;
    let mut rows = Vec::new();
    for file in &files {
        let rb = match Runbook::load(file) {
            Ok(rb) => rb,
            Err(e) => {
                eprintln!("cannot read runbook {}: {e}", file.display());
                rows.push(serde_json::json!({"file": file, "error": e.to_string()}));
                worst = worst.worse(ExitCode::Usage);
                continue;
            }
        };
        if host.as_ref().is_some_and(|h| *h != rb.policy.host) {
            continue;
        }
        let store = Store::open(&rb.policy).await;
        let reports = match store.load_all().await {
            Ok(_) if store.repos.is_empty() => Err(store.unreachable.join("; ")),
            Ok(r) => Ok(r),
            Err(e) => Err(e.to_string()),
        };
        let reports = match reports {
            Ok(r) => r,
            Err(why) => {
                eprintln!(
                    "cannot tell whether `{}` is due: no report store reachable: {why}",
                    rb.name
                );
                rows.push(serde_json::json!({"runbook": rb.name, "file": file, "error": why}));
                worst = worst.worse(ExitCode::Failed);
                continue;
            }
        };
        let due = drill_due(&reports, &rb, chrono::Utc::now());
        let tz = rb.policy.timezone;
        let every = rb.drill.as_ref().and_then(|d| d.every).map(format_duration);
        let every = every.as_deref().unwrap_or("-");
        match due {
            DrillDue::Unscheduled => say(format!(
                "not scheduled: {} (no `drill.every`: drilled only when run by hand)",
                rb.name
            )),
            DrillDue::NotDue { last_passed, next } => say(format!(
                "not due: {}, next due {} (every {every}; last passed {})",
                rb.name,
                shown_in(next, tz),
                shown_in(last_passed, tz)
            )),
            DrillDue::NeverPassed => say(format!(
                "due: {} (every {every}; never passed a drill)",
                rb.name
            )),
            DrillDue::Changed { last_passed } => say(format!(
                "due: {} (changed since its last passed drill, {})",
                rb.name,
                shown_in(last_passed, tz)
            )),
            DrillDue::Overdue { last_passed, since } => say(format!(
                "due: {} (every {every}; last passed {}, due since {})",
                rb.name,
                shown_in(last_passed, tz),
                shown_in(since, tz)
            )),
        }
        let mut row = serde_json::json!({"runbook": rb.name, "file": file, "due": due});
        if due.is_due() && !dry_run {
            let code = crate::cli::run_runbook(rb, Kind::Drill, None, args, true, out).await?;
            row["exit_code"] = serde_json::json!(code as u8);
            worst = worst.worse(code);
        }
        rows.push(row);
    }
    if out.json {
        out.print_json(&serde_json::json!({"dry_run": dry_run, "runbooks": rows}));
    }
    Ok(worst)
}
