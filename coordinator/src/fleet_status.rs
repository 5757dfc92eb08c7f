//! `drp status --inventory`: the rows the library gathers
//! (`drp_coordinator::fleet::status`), rendered as the fleet's table or as
//! JSON; each warm standby is a row under its host, its replay lag where an
//! export shows its exposure.

use chrono::{DateTime, Utc};
use drp_cli::{Output, Table};
use drp_coordinator::fleet;
use drp_coordinator::fleet::status::{FleetRow, FleetStandby};
use drp_core::config::units::format_duration;
use drp_core::export_status::StandbyCondition;
use drp_core::{ExitCode, Result};

/// The fleet's table (or JSON); unreachable hosts are listed. Exit 8 when
/// an export is over its RPO, a standby is down or lags past its
/// `lag_alert`, or a host did not answer (its exposure is unknown).
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
    let standbys = fleet::status::standby_rows(&hosts);
    let alerting = standbys.iter().filter(|s| s.standby.alerting).count();
    if out.json {
        out.print_json(&serde_json::json!({
            "hosts": hosts.len(), "unreachable": unreachable, "exports_over_rpo": over, "rows": rows,
            "standbys_alerting": alerting, "standbys": standbys,
        }));
    } else {
        println!("{}", table(&rows, &standbys, now));
        println!(
            "{} hosts, {} unreachable, {} exports over their RPO{}",
            hosts.len(),
            unreachable,
            over,
            if standbys.is_empty() {
                String::new()
            } else {
                format!(
                    ", {alerting} of {} standbys down or lagging past their alert",
                    standbys.len()
                )
            }
        );
    }
    Ok(if unreachable + over + alerting > 0 {
        ExitCode::ObjectivesMissed
    } else {
        ExitCode::Ok
    })
}

fn secs(s: Option<f64>) -> String {
    s.map(|s| format_duration(std::time::Duration::from_secs_f64(s.max(0.0))))
        .unwrap_or_else(|| "-".into())
}

/// The rows as a table, each host's standbys under its exports (a host
/// with standbys only is not listed as having no export).
fn table(rows: &[FleetRow], standbys: &[FleetStandby], now: DateTime<Utc>) -> String {
    let mut t = Table::new(&[
        "HOST",
        "EXPORT",
        "RESTORABLE UP TO",
        "EXPOSURE",
        "RPO",
        "LAST DRILL",
    ]);
    for (i, r) in rows.iter().enumerate() {
        let own: Vec<&FleetStandby> = standbys.iter().filter(|s| s.host == r.host).collect();
        if r.export.is_some() || r.error.is_some() || own.is_empty() {
            t.row(export_row(r, now));
        }
        if rows.get(i + 1).is_none_or(|next| next.host != r.host) {
            for s in own {
                t.row(standby_row(s, now));
            }
        }
    }
    t.render()
}

/// One export, or a host that did not answer or has no export.
fn export_row(r: &FleetRow, now: DateTime<Utc>) -> Vec<String> {
    let Some(e) = &r.export else {
        return vec![
            r.host.clone(),
            match &r.error {
                Some(why) => format!("UNREACHABLE: {why}"),
                None => "(no export)".into(),
            },
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ];
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
    vec![
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
    ]
}

/// One standby: what a promotion would hold where an export shows how far
/// a restore reaches, its replay lag as its exposure, against its
/// `lag_alert`.
fn standby_row(f: &FleetStandby, now: DateTime<Utc>) -> Vec<String> {
    let s = &f.standby;
    let replayed = s
        .replayed_commit_at
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string());
    let (reach, state) = match s.condition {
        StandbyCondition::Replaying => (
            replayed.unwrap_or_else(|| "-".into()),
            format!(
                "{} (lag alert {})",
                if s.alerting { "OVER" } else { "ok" },
                secs(Some(s.lag_alert_seconds))
            ),
        ),
        StandbyCondition::Promoted => (replayed.unwrap_or_else(|| "-".into()), "promoted".into()),
        StandbyCondition::Restored => (
            replayed.unwrap_or_else(|| "-".into()),
            format!("restored into {}", s.into.as_deref().unwrap_or("-")),
        ),
        StandbyCondition::Down => (
            format!(
                "DOWN: {}",
                s.error
                    .as_deref()
                    .unwrap_or("-")
                    .lines()
                    .next()
                    .unwrap_or("-")
            ),
            "DOWN".into(),
        ),
        StandbyCondition::NeverChecked => ("never checked".into(), "unknown".into()),
    };
    let mut lag = match s.condition {
        StandbyCondition::Replaying => format!("lag {}", secs(s.lag_seconds)),
        StandbyCondition::Restored => secs(s.lag_seconds),
        _ => "-".into(),
    };
    if let (true, Some(t)) = (s.stale, s.checked_at) {
        lag += &format!(
            ", as of {} ago: STALE",
            format_duration((now - t).to_std().unwrap_or_default())
        );
    }
    vec![
        f.host.clone(),
        format!("standby {} (of {}/{})", s.name, s.of_host, s.of_export),
        reach,
        lag,
        state,
        "-".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use drp_coordinator::fleet::status::{HostStatus, rows, standby_rows};

    /// Three hosts as their agents answer `status --json`: one with an
    /// export, one keeping standbys only (caught up, lagging, down, stale),
    /// one that did not answer.
    fn hosts(now: DateTime<Utc>) -> Vec<HostStatus> {
        let at = |s: i64| (now - chrono::Duration::seconds(s)).to_rfc3339();
        let agent = |json: serde_json::Value| {
            Ok(
                serde_json::from_value::<drp_core::export_status::HostStatus>(json)
                    .expect("an agent's status"),
            )
        };
        let standby = |name: &str, condition: &str, checked: i64, lag: f64, alerting: bool| {
            serde_json::json!({
                "name": name, "of_host": "db1", "of_export": "main", "condition": condition,
                "checked_at": at(checked), "stale": checked > 300,
                "replayed_commit_at": "2026-12-07T18:00:00Z", "lag_seconds": lag,
                "behind_segments": if lag > 0.0 { 3 } else { 0 }, "newest_archived": null,
                "lag_alert_seconds": 60.0, "alerting": alerting,
                "into": if condition == "restored" { serde_json::json!("site") } else { serde_json::Value::Null },
                "error": if condition == "down" { serde_json::json!("standby `old` does not answer: connection refused\nis the server running?") } else { serde_json::Value::Null },
            })
        };
        vec![
            HostStatus {
                host: "db1".into(),
                address: "10.0.0.1".into(),
                status: agent(serde_json::json!({
                    "host": "db1", "targets": [], "snapshots": [],
                    "exports": [{
                        "export": "main", "kind": "postgres-cluster", "schedule": "hourly",
                        "points": {"nas": 2}, "bound": "wal_archive",
                        "recoverable_until": "2026-12-07T18:00:00Z", "rpo_exposure_seconds": 30.0,
                        "rpo_objective_seconds": 900.0, "within_rpo": true,
                        "restore_test_overdue": false,
                    }],
                })),
            },
            HostStatus {
                host: "db2".into(),
                address: "10.0.0.2".into(),
                status: agent(serde_json::json!({
                    "host": "db2", "targets": [], "snapshots": [], "exports": [],
                    "standbys": [
                        standby("main", "replaying", 10, 0.0, false),
                        standby("slow", "replaying", 10, 125.0, true),
                        standby("old", "down", 20, 0.0, true),
                        standby("gone", "replaying", 7200, 0.0, false),
                        standby("copy", "restored", 10, 1800.0, false),
                    ],
                })),
            },
            HostStatus {
                host: "db3".into(),
                address: "10.0.0.3".into(),
                status: Err("connection refused".into()),
            },
        ]
    }

    #[test]
    fn each_standby_is_a_row_under_its_host_with_its_lag_where_an_export_shows_its_exposure() {
        let now = Utc::now();
        let hosts = hosts(now);
        let standbys = standby_rows(&hosts);
        assert_eq!(standbys.len(), 5);
        let text = table(&rows(&hosts, &[]), &standbys, now);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .skip(1)
            .map(|l| {
                l.split("  ")
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .collect();
        let expected: Vec<Vec<&str>> = vec![
            vec![
                "db1",
                "main",
                "2026-12-07 18:00:00 UTC",
                "30s",
                "ok (15m)",
                "never",
            ],
            vec![
                "db2",
                "standby main (of db1/main)",
                "2026-12-07 18:00:00 UTC",
                "lag 0ms",
                "ok (lag alert 1m)",
                "-",
            ],
            vec![
                "db2",
                "standby slow (of db1/main)",
                "2026-12-07 18:00:00 UTC",
                "lag 2m 5s",
                "OVER (lag alert 1m)",
                "-",
            ],
            vec![
                "db2",
                "standby old (of db1/main)",
                "DOWN: standby `old` does not answer: connection refused",
                "-",
                "DOWN",
                "-",
            ],
            vec![
                "db2",
                "standby gone (of db1/main)",
                "2026-12-07 18:00:00 UTC",
                "lag 0ms, as of 2h ago: STALE",
                "ok (lag alert 1m)",
                "-",
            ],
            vec![
                "db2",
                "standby copy (of db1/main)",
                "2026-12-07 18:00:00 UTC",
                "30m",
                "restored into site",
                "-",
            ],
            vec!["db3", "UNREACHABLE: connection refused", "-", "-", "-", "-"],
        ];
        assert_eq!(lines, expected, "{text}");

        // `--json` carries them whole, with their host.
        let json = serde_json::to_value(&standbys).unwrap();
        assert_eq!(json[1]["host"], "db2");
        assert_eq!(json[1]["name"], "slow");
        assert_eq!(json[1]["lag_seconds"], 125.0);
        assert_eq!(json[1]["alerting"], true);
        assert_eq!(json[2]["condition"], "down");
    }
}
