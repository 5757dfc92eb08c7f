//! `drp status --inventory`: the rows the library gathers
//! (`drp_coordinator::fleet::status`), rendered as the fleet's table or as
//! JSON.

use chrono::{DateTime, Utc};
use drp_cli::{Output, Table};
use drp_coordinator::fleet;
use drp_coordinator::fleet::status::FleetRow;
use drp_core::config::units::format_duration;
use drp_core::{ExitCode, Result};

/// The fleet's table (or JSON); unreachable hosts are listed. Exit 8 when
/// an export is over its RPO or a host did not answer (its exposure is
/// unknown).
pub async fn run(
    inventory: &std::path::Path,
    policy: Option<&std::path::Path>,
    out: &Output,
) -> Result<ExitCode> {
    let inventory = fleet::inventory::Inventory::load(inventory)?;
    let reports = match policy {
        Some(p) => {
            let policy = drp_core::config::Policy::load(p)?;
            drp_coordinator::report::Store::open(&policy)
                .await
                .load_all()
                .await?
        }
        None => Vec::new(),
    };
    let now = chrono::Utc::now();
    let hosts = fleet::status::gather(&inventory).await;
    let rows = fleet::status::rows(&hosts, &reports);
    let unreachable = rows.iter().filter(|r| !r.reachable).count();
    let over = rows
        .iter()
        .filter(|r| {
            r.export
                .as_ref()
                .is_some_and(|e| e.within_rpo == Some(false))
        })
        .count();
    if out.json {
        out.print_json(&serde_json::json!({
            "hosts": hosts.len(), "unreachable": unreachable, "exports_over_rpo": over, "rows": rows,
        }));
    } else {
        println!("{}", table(&rows, now));
        println!(
            "{} hosts, {} unreachable, {} exports over their RPO",
            hosts.len(),
            unreachable,
            over
        );
    }
    Ok(if unreachable + over > 0 {
        ExitCode::ObjectivesMissed
    } else {
        ExitCode::Ok
    })
}

/// The rows as a table.
fn table(rows: &[FleetRow], now: DateTime<Utc>) -> String {
    let secs = |s: Option<f64>| {
        s.map(|s| format_duration(std::time::Duration::from_secs_f64(s.max(0.0))))
            .unwrap_or_else(|| "-".into())
    };
    let mut t = Table::new(&[
        "HOST",
        "EXPORT",
        "RESTORABLE UP TO",
        "EXPOSURE",
        "RPO",
        "LAST DRILL",
    ]);
    for r in rows {
        let Some(e) = &r.export else {
            t.row(vec![
                r.host.clone(),
                match &r.error {
                    Some(why) => format!("UNREACHABLE: {why}"),
                    None => "(no export)".into(),
                },
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
            continue;
        };
        let drill = match &e.last_drill {
            None => "never".to_string(),
            Some(d) => format!(
                "{} ago, {} ({})",
                format_duration((now - d.at).to_std().unwrap_or_default()),
                if d.passed { "passed" } else { "FAILED" },
                d.runbook
            ),
        };
        t.row(vec![
            r.host.clone(),
            e.export.clone(),
            e.recoverable_until
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_else(|| "nothing restorable".into()),
            secs(e.rpo_exposure_seconds),
            match (e.within_rpo, e.rpo_objective_seconds) {
                (Some(true), Some(o)) => format!("ok ({})", secs(Some(o))),
                (Some(false), Some(o)) => format!("OVER ({})", secs(Some(o))),
                _ => "no objective".into(),
            },
            drill,
        ]);
    }
    t.render()
}
