//! `prune`: retention applied by hand, or shown with `--dry-run`.

use drp_cli::{Output, Table};
use drp_core::config::Policy;
use drp_core::{ExitCode, Result};

pub async fn run(
    policy_path: &std::path::Path,
    only: &[String],
    dry_run: bool,
    now: Option<&str>,
    out: &Output,
) -> Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    let now = crate::backup::now_or(now)?;
    let names = policy.exports_named(only)?;
    let mut code = ExitCode::Ok;
    let mut json = Vec::new();
    for name in &names {
        let results = drp_core::prune::prune_export_locked(&policy, name, now, dry_run).await?;
        for result in results {
            let t = match result {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{name}: not pruned: {e}");
                    code = code.worse(ExitCode::Failed);
                    continue;
                }
            };
            if !t.errors.is_empty() {
                code = code.worse(ExitCode::Failed);
            }
            if out.json {
                json.push(serde_json::json!({
                    "export": name, "target": t.target, "dry_run": dry_run,
                    "points": t.points.iter().map(|p| serde_json::json!({
                        "id": p.decision.id, "consistency_time": p.decision.consistency_time,
                        "keep": p.decision.keep(), "reasons": p.decision.reasons,
                        "verified": p.verified, "deleted": p.deleted,
                    })).collect::<Vec<_>>(),
                    "orphans": t.orphans, "young_orphans": t.young_orphans, "errors": t.errors,
                    "wal_removed": t.wal_removed, "wal_kept_from": t.wal_kept_from,
                    "snapshots_forgotten": t.snapshots_forgotten,
                }));
                continue;
            }
            let mut table = Table::new(&[
                "EXPORT",
                "TARGET",
                "ID",
                "CONSISTENT AT (UTC)",
                "ACTION",
                "WHY",
            ]);
            for p in &t.points {
                let action = match (p.decision.keep(), p.deleted, dry_run) {
                    (true, _, _) => "keep",
                    (false, true, _) => "deleted",
                    (false, false, true) => "would delete",
                    (false, false, false) => "DELETE FAILED",
                };
                table.row(vec![
                    name.clone(),
                    t.target.clone(),
                    p.decision.id.clone(),
                    p.decision
                        .consistency_time
                        .format("%Y-%m-%d %H:%M:%S")
                        .to_string(),
                    action.into(),
                    p.decision.reasons.join(", "),
                ]);
            }
            if !table.is_empty() {
                println!("{}", table.render());
            }
            for o in &t.orphans {
                println!(
                    "{name} on `{}`: {} orphan {o}",
                    t.target,
                    if dry_run { "would remove" } else { "removed" }
                );
            }
            for o in &t.snapshots_forgotten {
                println!(
                    "{name} on `{}`: {} {o}",
                    t.target,
                    if dry_run {
                        "would forget"
                    } else {
                        "forgot and pruned"
                    }
                );
            }
            if let Some(from) = &t.wal_kept_from {
                println!(
                    "{name} on `{}`: archived logs kept from {from} (where the oldest kept point starts); {} {} older file(s)",
                    t.target,
                    if dry_run { "would remove" } else { "removed" },
                    t.wal_removed.len()
                );
            }
            for o in &t.young_orphans {
                println!(
                    "{name} on `{}`: kept {o} (younger than the grace period: maybe a backup in progress)",
                    t.target
                );
            }
            for e in &t.errors {
                eprintln!("{name} on `{}`: {e}", t.target);
            }
        }
    }
    if out.json {
        out.print_json(&serde_json::json!({"prune": json}));
    }
    Ok(code)
}
