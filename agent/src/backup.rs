//! `init`, `backup` and `run`: creating repositories, exporting now, and
//! keeping the schedule (once with `--due`, or as a daemon, which also runs
//! the policy's watchdog).

use std::time::Duration;

use chrono::{DateTime, Utc};
use drp_cli::Output;
use drp_core::config::Policy;
use drp_core::config::units::format_bytes;
use drp_core::repository::{Initialised, Repository};
use drp_core::runner;
use drp_core::{Error, ExitCode, Result};

pub async fn init(
    policy_path: &std::path::Path,
    only: &[String],
    out: &Output,
) -> Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    for name in only {
        if !policy.targets.contains_key(name) {
            return Err(Error::NotFound(format!(
                "no target `{name}` in {}; it defines: {}",
                policy.path.display(),
                policy
                    .targets
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let mut code = ExitCode::Ok;
    let mut json = Vec::new();
    for (name, config) in &policy.targets {
        if !only.is_empty() && !only.contains(name) {
            continue;
        }
        let result = Repository::create(name, config, &policy.base_dir)
            .await
            .map(|(_, done)| done);
        let location = config.backend().location();
        match &result {
            Ok(done) if !out.json => println!(
                "target `{name}`: {} at {location}",
                match done {
                    Initialised::Created => "repository created",
                    Initialised::Existing => "repository already there",
                }
            ),
            Err(e) if !out.json => eprintln!("target `{name}`: {e}"),
            _ => {}
        }
        if let Err(e) = &result {
            code = code.worse(e.exit_code());
        }
        json.push(serde_json::json!({
            "target": name, "location": location,
            "created": matches!(result, Ok(Initialised::Created)),
            "error": result.as_ref().err().map(|e| e.to_string()),
        }));
    }
    if out.json {
        out.print_json(&serde_json::json!({ "init": json }));
    }
    Ok(code)
}

pub(crate) fn now_or(text: Option<&str>) -> Result<DateTime<Utc>> {
    text.map(drp_core::time::parse_time)
        .transpose()
        .map(|t| t.unwrap_or_else(Utc::now))
}

pub async fn backup(
    policy_path: &std::path::Path,
    only: &[String],
    wait: Duration,
    out: &Output,
) -> Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    let names = policy.exports_named(only)?;
    run_exports(&policy, &names, wait, Utc::now(), runner::Upkeep::None, out).await
}

/// Runs exports one after the other and reports each; the exit code is the worst.
async fn run_exports(
    policy: &Policy,
    names: &[String],
    wait: Duration,
    now: DateTime<Utc>,
    upkeep: runner::Upkeep,
    out: &Output,
) -> Result<ExitCode> {
    let mut worst = ExitCode::Ok;
    let mut json = Vec::new();
    for name in names {
        let outcome = match runner::run_export(policy, name, wait, now, upkeep, out.progress())
            .await
        {
            Ok(o) => o,
            Err(e) if names.len() > 1 => {
                // One export's failure (e.g. its lock is held) does not stop the others.
                eprintln!("{name}: {e}");
                worst = worst.worse(e.exit_code());
                json.push(serde_json::json!({"export": name, "exit_code": e.exit_code() as u8, "error": e.to_string()}));
                continue;
            }
            Err(e) => return Err(e),
        };
        let report = &outcome.report;
        worst = worst.worse(report.exit_code());
        if !out.json {
            if let Some(e) = &report.source_error {
                eprintln!("{}: export failed, nothing committed: {e}", report.export);
            }
            for t in &report.targets {
                match &t.result {
                    Ok(m) => println!(
                        "{}: committed {} to `{}` ({} raw, {} stored, {:.1}x) in {:.1}s",
                        report.export,
                        m.id,
                        t.target,
                        format_bytes(m.raw.size),
                        format_bytes(m.stored.size),
                        m.ratio(),
                        report.seconds
                    ),
                    Err(e) => eprintln!("{}: target `{}` failed: {e}", report.export, t.target),
                }
            }
            for e in report.hook_errors() {
                eprintln!("{}: {e}", report.export);
            }
            for e in &outcome.notify_errors {
                eprintln!("{}: {e}", report.export);
            }
        }
        json.push(serde_json::json!({
            "export": report.export, "id": report.id, "seconds": report.seconds,
            "exit_code": report.exit_code() as u8,
            "source_error": report.source_error.as_ref().map(|e| e.to_string()),
            "targets": report.targets.iter().map(|t| match &t.result {
                Ok(m) => serde_json::json!({"target": t.target, "committed": true, "manifest": m}),
                Err(e) => serde_json::json!({"target": t.target, "committed": false, "error": e.to_string()}),
            }).collect::<Vec<_>>(),
            "notify_errors": outcome.notify_errors,
            "hooks": report.hooks,
        }));
    }
    if out.json {
        out.print_json(&serde_json::json!({ "backups": json }));
    }
    Ok(worst)
}

pub async fn due(
    policy_path: &std::path::Path,
    now: Option<&str>,
    wait: Duration,
    out: &Output,
) -> Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    let now = now_or(now)?;
    // A fenced host keeps its fenced services down at every turn.
    drp_core::fence::turn(&policy).await;
    drp_core::standby::turn(&policy).await;
    // Continuous archiving has its turn on every call, before any backup;
    // the metrics say what it saw even when nothing else is due.
    drp_core::archiving::run::archive_turn(&policy).await;
    if let Err(e) = drp_core::metrics::write_textfile(&policy, chrono::Utc::now()) {
        tracing::warn!(error = %e, "metrics textfile not written");
    }
    // Restore tests on their own schedule, before the backups due.
    let tested = crate::test_restore::due(&policy, now, out).await;
    let due = runner::due_exports(&policy, now);
    if due.is_empty() {
        if out.json {
            out.print_json(&serde_json::json!({"backups": [], "due": []}));
        } else if !out.quiet {
            println!("nothing due");
        }
        return Ok(tested);
    }
    if !out.json && !out.quiet {
        for (name, slot) in &due {
            println!("{name}: due (slot {})", slot.to_rfc3339());
        }
    }
    let names: Vec<String> = due.into_iter().map(|(n, _)| n).collect();
    let code = run_exports(
        &policy,
        &names,
        wait,
        now,
        runner::Upkeep::VerifyAndPrune,
        out,
    )
    .await;
    runner::expire_snapshots(&policy).await;
    code.map(|c| c.worse(tested))
}

pub async fn daemon(
    policy_path: &std::path::Path,
    wait: Duration,
    stop_timeout: Duration,
    out: &Output,
) -> Result<ExitCode> {
    let options = runner::DaemonOptions {
        stop_timeout,
        lock_wait: wait,
    };
    let json = out.json;
    runner::daemon(policy_path.to_path_buf(), options, out.progress(), move |result, export| match result {
        Ok(o) => {
            let r = &o.report;
            if json {
                println!("{}", serde_json::json!({"export": export, "id": r.id, "exit_code": r.exit_code() as u8}));
            } else {
                println!("{export}: {} ({:?}, {} of {} targets committed)", r.id, r.exit_code(), r.committed().count(), r.targets.len());
            }
        }
        Err(e) => eprintln!("{export}: {e}"),
    }, crate::watch::beside)
    .await?;
    Ok(ExitCode::Ok)
}
