//! `test-restore`: restore tests by hand (or from the schedule), their
//! verdicts for people and scripts, and a notification when one fails.

use std::path::{Path, PathBuf};

use drp_cli::{Output, Table};
use drp_core::config::Policy;
use drp_core::records::Tested;
use drp_core::{ExitCode, Result};

pub async fn run(
    policy_path: &Path,
    only: &[String],
    identities: &[PathBuf],
    out: &Output,
) -> Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    let names = policy.exports_named(only)?;
    let mut code = ExitCode::Ok;
    let mut all: Vec<Tested> = Vec::new();
    for name in &names {
        let export = policy.export(name)?;
        match drp_core::rehearsal::run(&policy, export, identities, out.progress()).await {
            Ok(tested) => all.extend(tested),
            Err(e) => {
                code = code.worse(e.exit_code());
                eprintln!("{name}: not tested: {e}");
            }
        }
    }
    for t in all.iter().filter(|t| !t.passed) {
        code = code.worse(failure_code(t));
        drp_core::rehearsal::notify_failure(&policy, t).await;
    }
    if let Err(e) = drp_core::metrics::write_textfile(&policy, chrono::Utc::now()) {
        eprintln!("metrics not written: {e}");
    }
    if out.json {
        out.print_json(&serde_json::json!({ "tests": all }));
        return Ok(code);
    }
    let mut table = Table::new(&[
        "EXPORT",
        "POINT",
        "TARGET",
        "RESULT",
        "RECEIVE",
        "LOAD",
        "CHECKS",
        "RESTORE RATE",
    ]);
    for t in &all {
        table.row(vec![
            t.export.clone(),
            t.id.clone(),
            t.target.clone(),
            if t.passed { "passed" } else { "FAILED" }.into(),
            format!("{:.1}s", t.receive_seconds),
            format!("{:.1}s", t.load_seconds),
            format!(
                "{}/{} passed",
                t.checks.iter().filter(|c| c.passed).count(),
                t.checks.len()
            ),
            format!(
                "{}/s",
                drp_core::config::units::format_bytes(t.restore_bytes_per_second as u64)
            ),
        ]);
    }
    if !table.is_empty() {
        println!("{}", table.render());
    }
    for t in &all {
        if let Some(e) = &t.error {
            eprintln!("{} {}: {e}", t.export, t.id);
        }
        for c in t.checks.iter().filter(|c| !c.passed) {
            eprintln!(
                "{} {}: check failed: {}: {}",
                t.export, t.id, c.check, c.detail
            );
        }
    }
    Ok(code)
}

/// The restore tests the policy's schedules say are due, as `run --due`
/// runs them (failures notified): a line each, and their worst exit code.
pub async fn due(policy: &Policy, now: chrono::DateTime<chrono::Utc>, out: &Output) -> ExitCode {
    let mut code = ExitCode::Ok;
    let results = drp_core::rehearsal::run_due(policy, now).await;
    if !results.is_empty()
        && let Err(e) = drp_core::metrics::write_textfile(policy, chrono::Utc::now())
    {
        eprintln!("metrics not written: {e}");
    }
    for (export, result) in results {
        match result {
            Ok(tested) => {
                for t in &tested {
                    if !out.json && !out.quiet {
                        println!(
                            "{}: restore test of {} {}",
                            t.export,
                            t.id,
                            if t.passed { "passed" } else { "FAILED" }
                        );
                    }
                    if !t.passed {
                        code = code.worse(failure_code(t));
                    }
                }
            }
            Err(err) => {
                eprintln!("{export}: restore test not run: {err}");
                code = code.worse(err.exit_code());
            }
        }
    }
    code
}

/// A test that found the point corrupt is an integrity failure (4); any
/// other failure, 1.
fn failure_code(t: &Tested) -> ExitCode {
    match &t.error {
        Some(e) if e.contains("integrity check failed") || e.contains("unreadable") => {
            ExitCode::Integrity
        }
        _ => ExitCode::Failed,
    }
}
