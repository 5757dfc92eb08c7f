//! `drp check`: validate policies before anything runs, and say which
//! objectives their schedules can reach, with what would reach the others.

use std::path::PathBuf;

use chrono::Utc;
use drp_cli::{Output, Table};
use drp_core::config::Policy;
use drp_core::config::units::format_duration;
use drp_core::posture;
use drp_core::{ExitCode, Result};

pub async fn run(files: &[PathBuf], out: &Output) -> Result<ExitCode> {
    let now = Utc::now();
    let mut invalid = false;
    let mut missed = false;
    let mut json = Vec::new();
    let mut table = Table::new(&[
        "POLICY",
        "EXPORT",
        "SCHEDULE",
        "WORST-CASE RPO",
        "OBJECTIVE",
        "VERDICT",
    ]);
    let mut advice = Vec::new();
    for file in files {
        let is_runbook =
            std::fs::read_to_string(file).is_ok_and(|t| t.lines().any(|l| l.starts_with("steps:")));
        if is_runbook {
            match drp_coordinator::runbook::Runbook::load(file) {
                Ok(rb) => {
                    // Steps on other hosts are checked by those hosts.
                    let remote = match &rb.inventory {
                        Some(inv) => {
                            let fleet = drp_coordinator::fleet::Fleet::new(inv.clone());
                            drp_coordinator::drill::hosts_ready(&rb, &fleet).await
                        }
                        None => Vec::new(),
                    };
                    for c in &remote {
                        if !c.ok {
                            invalid = true;
                            eprintln!("{}: {}: {}", file.display(), c.check, c.detail);
                        } else if !out.json {
                            println!("{}: {}: {}", file.display(), c.check, c.detail);
                        }
                    }
                    let budget = rb.worst_case_duration();
                    let fits = budget <= rb.rto;
                    if !fits {
                        missed = true;
                        advice.push(format!(
                            "{}: the steps' timeouts and retries add up to {}, more than the RTO {}: a failing step may hold the recovery past the objective",
                            file.display(),
                            format_duration(budget),
                            format_duration(rb.rto)
                        ));
                    }
                    // A switched name: clients keep the old answer for its TTL.
                    let mut ttl_advice = Vec::new();
                    for s in rb.steps.iter().chain(&rb.failback) {
                        let drp_coordinator::action::ActionConfig::DnsSwitch(d) = &s.action else {
                            continue;
                        };
                        let ttl = std::time::Duration::from_secs(u64::from(d.ttl));
                        let line = if ttl >= rb.rto {
                            missed = true;
                            format!(
                                "{}: step `{}` gives {} a TTL of {}, not less than the RTO {}: clients may keep the old address past the objective",
                                file.display(),
                                s.name,
                                d.record,
                                format_duration(ttl),
                                format_duration(rb.rto)
                            )
                        } else if ttl * 4 > rb.rto {
                            format!(
                                "{}: step `{}` gives {} a TTL of {}, more than a quarter of the RTO {}: clients may keep the old address that long after the switch",
                                file.display(),
                                s.name,
                                d.record,
                                format_duration(ttl),
                                format_duration(rb.rto)
                            )
                        } else {
                            continue;
                        };
                        ttl_advice.push(format!(
                            "{line} (resolvers and clients may cache longer than the TTL, and they hold the old answer for the old record's TTL: lower it well before a failover)"
                        ));
                    }
                    advice.extend(ttl_advice.iter().cloned());
                    // A pass proves the version it ran.
                    let last_pass = last_passed_drill(&rb).await;
                    let changed = last_pass
                        .as_ref()
                        .is_some_and(|r| r.ran_another_version(&rb.digest));
                    if let (true, Some(r)) = (changed, &last_pass) {
                        advice.push(format!(
                            "{}: changed since its last drill ({}): that pass no longer counts; drill it again",
                            file.display(),
                            drp_core::time::shown_in(r.started_at, rb.policy.timezone)
                        ));
                    }
                    // The posture of the exports it restores, against the runbook's RPO.
                    for p in posture::assess(&rb.policy, now) {
                        let restores = rb.steps.iter().any(|s| matches!(&s.action, drp_coordinator::action::ActionConfig::RestoreBackup(r) if r.export == p.export));
                        if restores && p.worst_case_rpo_seconds > rb.rpo.as_secs() {
                            missed = true;
                            advice.push(format!(
                                "{}: restores `{}`, whose schedule `{}` allows {} of loss, more than the runbook's RPO {}",
                                file.display(),
                                p.export,
                                p.schedule,
                                format_duration(std::time::Duration::from_secs(p.worst_case_rpo_seconds)),
                                format_duration(rb.rpo)
                            ));
                        }
                    }
                    json.push(serde_json::json!({
                        "file": file, "valid": remote.iter().all(|c| c.ok), "runbook": rb.name, "steps": rb.steps.len(),
                        "hosts": remote,
                        "worst_case_seconds": budget.as_secs(), "rto_seconds": rb.rto.as_secs(), "timeouts_fit_rto": fits,
                        "dns_ttl": ttl_advice,
                        "changed_since_drill": changed,
                    }));
                    if !out.json {
                        println!(
                            "runbook {} ({}): {} steps, worst case {} against RTO {}{}",
                            rb.name,
                            file.display(),
                            rb.steps.len(),
                            format_duration(budget),
                            format_duration(rb.rto),
                            if fits { "" } else { " — TOO LONG" }
                        );
                    }
                }
                Err(e) => {
                    invalid = true;
                    if out.json {
                        json.push(serde_json::json!({"file": file, "valid": false, "error": e.to_string()}));
                    } else {
                        eprintln!("{}: {e}", file.display());
                    }
                }
            }
            continue;
        }
        let policy = match Policy::load(file) {
            Ok(p) => p,
            Err(e) => {
                invalid = true;
                if out.json {
                    json.push(
                        serde_json::json!({"file": file, "valid": false, "error": e.to_string()}),
                    );
                } else {
                    eprintln!("{}: {e}", file.display());
                }
                continue;
            }
        };
        let assessed = posture::assess(&policy, now);
        if !out.json {
            for w in &policy.warnings {
                eprintln!("warning: {w}");
            }
        }
        let mut predicted = Vec::new();
        for e in policy.exports.values() {
            let status =
                drp_core::export_status::ExportStatus::gather(&policy, e, chrono::Utc::now()).await;
            let (Some(tested), Some(p)) = (status.last_restore_test, status.predicted_restore)
            else {
                continue;
            };
            if !out.json {
                println!(
                    "{}: {}: restoring the newest point would take about {} at the rate its restore test of {} measured{}{}",
                    file.display(),
                    e.name,
                    format_duration(std::time::Duration::from_secs_f64(p.seconds)),
                    tested.at.format("%Y-%m-%d"),
                    match (p.fits, p.rto_seconds) {
                        (Some(true), Some(r)) => format!(
                            ", within the RTO of {}",
                            format_duration(std::time::Duration::from_secs_f64(r))
                        ),
                        (Some(false), Some(r)) => format!(
                            ", OVER the RTO of {}",
                            format_duration(std::time::Duration::from_secs_f64(r))
                        ),
                        _ => String::new(),
                    },
                    p.months_left
                        .map(|m| format!("; at its growth it stops fitting in about {m:.0} months"))
                        .unwrap_or_default()
                );
            }
            if p.fits == Some(false) {
                missed = true;
            }
            predicted.push(
                serde_json::json!({"export": e.name, "tested_at": tested.at, "prediction": p}),
            );
        }
        let immutability = immutability(&policy).await;
        if !out.json {
            for t in &immutability {
                let line = format!(
                    "{}: target `{}`: {}",
                    file.display(),
                    t["target"].as_str().unwrap_or_default(),
                    t["why"].as_str().unwrap_or_default()
                );
                if t["history_deletable"] == true {
                    eprintln!("warning: {line}");
                } else {
                    println!("{line}");
                }
            }
        }
        if !policy.snapshots.is_empty() && !out.json {
            let names: Vec<String> = policy
                .snapshots
                .iter()
                .map(|(n, c)| format!("{n} ({})", c.kind()))
                .collect();
            println!(
                "{}: snapshots before changes: {} — they bound what a planned change can lose, not the loss between exports",
                file.display(),
                names.join(", ")
            );
        }
        if !out.json {
            for e in policy.exports.values() {
                if let Some(h) = &e.hooks {
                    let plan = drp_core::hooks::plan(h, "the backup");
                    println!("{}: {}: hooks: {plan}", file.display(), e.name);
                }
            }
            if let Some(h) = &policy.snapshot_hooks {
                let plan = drp_core::hooks::plan(h, "the set");
                println!("{}: snapshot sets: hooks: {plan}", file.display());
            }
        }
        for p in &assessed {
            let verdict = match p.meets_rpo {
                Some(true) => "ok".to_string(),
                Some(false) => {
                    missed = true;
                    "CANNOT MEET".to_string()
                }
                None => "no objective".to_string(),
            };
            table.row(vec![
                file.display().to_string(),
                p.export.clone(),
                p.schedule.clone(),
                if p.worst_case_rpo_seconds == std::time::Duration::MAX.as_secs() {
                    "unknown".to_string()
                } else {
                    format_duration(std::time::Duration::from_secs(p.worst_case_rpo_seconds))
                },
                p.rpo_objective_seconds
                    .map(|s| format_duration(std::time::Duration::from_secs(s)))
                    .unwrap_or_else(|| "-".into()),
                verdict,
            ]);
            for a in &p.advice {
                advice.push(format!(
                    "{} / {}: to meet the RPO, {a}",
                    file.display(),
                    p.export
                ));
            }
        }
        json.push(serde_json::json!({
            "file": file, "valid": true, "host": policy.host, "exports": assessed,
            "warnings": policy.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
            "targets": immutability,
            "predicted_restore": predicted,
        }));
    }
    if out.json {
        out.print_json(
            &serde_json::json!({"policies": json, "all_objectives_reachable": !missed && !invalid}),
        );
    } else {
        if !table.is_empty() {
            println!("{}", table.render());
        }
        for a in &advice {
            println!("  {a}");
        }
    }
    Ok(if invalid {
        ExitCode::Usage
    } else if missed {
        ExitCode::ObjectivesMissed
    } else {
        ExitCode::Ok
    })
}

/// The newest passed drill of `rb` stored on its policy's targets, if any
/// is reachable.
async fn last_passed_drill(
    rb: &drp_coordinator::runbook::Runbook,
) -> Option<drp_coordinator::report::Report> {
    let store = drp_coordinator::report::Store::open(&rb.policy).await;
    if store.repos.is_empty() {
        return None;
    }
    let reports = store.load_all().await.ok()?;
    drp_coordinator::report::last_passed_drill(
        &reports,
        &rb.name,
        &rb.policy.host,
        chrono::Utc::now(),
    )
    .cloned()
}

/// For each S3 target: whether a stolen agent key could destroy its history,
/// read from the bucket's versioning and Object Lock settings, and whether
/// its lock lasts as long as retention keeps the points written there.
async fn immutability(policy: &Policy) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for (name, config) in &policy.targets {
        let drp_core::config::TargetConfig::S3(s3) = config else {
            continue;
        };
        let mut row = match drp_core::backend::lock_posture(s3, &policy.base_dir).await {
            Ok(p) => {
                let (deletable, why) = p.verdict(s3.lock.as_ref());
                serde_json::json!({"target": name, "history_deletable": deletable, "why": why})
            }
            Err(e) => {
                serde_json::json!({"target": name, "history_deletable": serde_json::Value::Null,
                "why": format!("its Object Lock settings could not be read: {e}")})
            }
        };
        let horizon = policy
            .exports
            .values()
            .filter(|e| e.targets.contains(name))
            .filter_map(|e| e.retention.horizon_days())
            .max();
        if let (Some(lock), Some(days)) = (&s3.lock, horizon)
            && lock.days < days
        {
            row["history_deletable"] = true.into();
            row["why"] = format!(
                "{}; but points are locked for {} days while retention keeps them up to {days}: the older ones stand unprotected",
                row["why"].as_str().unwrap_or_default(),
                lock.days
            )
            .into();
        }
        out.push(row);
    }
    out
}
