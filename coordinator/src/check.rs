//! `drp check`: validate policies before anything runs, and say which
//! objectives their schedules can reach, with what would reach the others.

use std::path::PathBuf;

use chrono::Utc;
use drp_agent::cli::{Output, Table};
use drp_agent::config::Policy;
use drp_agent::config::units::format_duration;
use drp_agent::posture;
use drp_agent::{ExitCode, Result};

pub fn run(files: &[PathBuf], out: &Output) -> Result<ExitCode> {
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
                format_duration(std::time::Duration::from_secs(p.worst_case_rpo_seconds)),
                p.rpo_objective_seconds
                    .map(|s| format_duration(std::time::Duration::from_secs(s)))
                    .unwrap_or_else(|| "-".into()),
                verdict,
            ]);
            for a in &p.advice {
                advice.push(format!("{} / {}: {a}", file.display(), p.export));
            }
        }
        json.push(serde_json::json!({"file": file, "valid": true, "host": policy.host, "exports": assessed}));
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
            println!("  to meet the RPO, {a}");
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
