//! `drp status --inventory`: every host's exports in one table, from the
//! agents asked at once, with the last drill that ran steps on each host
//! from the coordinator's report store. A host that does not answer is
//! listed with why; it does not stop the others.

use chrono::{DateTime, Utc};
use drp_core::config::units::format_duration;
use serde_json::{Value, json};

use super::inventory::Inventory;
use super::protocol::{Op, Reply};
use super::remote::Remote;
use crate::report::{Kind, Report};

/// How long one host may take to answer.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// One host as the fleet view shows it.
#[derive(Debug, Clone)]
pub struct HostStatus {
    pub host: String,
    pub address: String,
    /// The agent's `status --json`, or why it could not be had.
    pub status: Result<Value, String>,
    /// The newest drill with a step on this host.
    pub last_drill: Option<(DateTime<Utc>, String, bool)>,
}

/// Asks every host of `inventory` for its status, all at once.
pub async fn gather(inventory: &Inventory, reports: &[Report]) -> Vec<HostStatus> {
    let asks = inventory.hosts.values().map(|h| async move {
        let status = async {
            let remote = Remote::connect(h).await.map_err(|e| e.to_string())?;
            match remote.call(Op::Status).await.map_err(|e| e.to_string())? {
                Reply::Status { status } => Ok(status),
                other => Err(format!("unexpected reply {other:?}")),
            }
        };
        let status = tokio::time::timeout(ANSWER_WITHIN, status)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {}s", ANSWER_WITHIN.as_secs())));
        HostStatus {
            host: h.name.clone(),
            address: h.address.clone(),
            status,
            last_drill: last_drill(reports, &h.name),
        }
    });
    futures::future::join_all(asks).await
}

fn last_drill(reports: &[Report], host: &str) -> Option<(DateTime<Utc>, String, bool)> {
    reports
        .iter()
        .filter(|r| r.kind == Kind::Drill)
        .filter(|r| r.steps.iter().any(|s| s.host.as_deref() == Some(host)))
        .max_by_key(|r| r.started_at)
        .map(|r| (r.started_at, r.runbook.clone(), r.passed()))
}

/// One row per export (one per unreachable host), as JSON.
pub fn rows(hosts: &[HostStatus], now: DateTime<Utc>) -> Vec<Value> {
    let mut out = Vec::new();
    for h in hosts {
        let drill = h
            .last_drill
            .as_ref()
            .map(|(at, runbook, passed)| json!({"at": at, "runbook": runbook, "passed": passed}));
        let status = match &h.status {
            Ok(s) => s,
            Err(why) => {
                out.push(json!({"host": h.host, "address": h.address, "reachable": false, "error": why, "last_drill": drill}));
                continue;
            }
        };
        let exports = status["exports"].as_array().cloned().unwrap_or_default();
        if exports.is_empty() {
            out.push(json!({"host": h.host, "address": h.address, "reachable": true, "export": null, "last_drill": drill}));
        }
        for e in exports {
            let archive_lag = e["recoverable_until"]
                .as_str()
                .and_then(|t| t.parse::<DateTime<Utc>>().ok())
                .map(|t| (now - t).num_seconds().max(0));
            out.push(json!({
                "host": h.host,
                "address": h.address,
                "reachable": true,
                "export": e["export"],
                "newest_point": e["newest_consistency"],
                "last_result": e["last_result"],
                "rpo_exposure_seconds": e["rpo_exposure_seconds"],
                "within_rpo": e["within_rpo"],
                "rpo_objective_seconds": status["rpo_objective_seconds"],
                "archive_lag_seconds": archive_lag,
                "last_drill": drill,
            }));
        }
    }
    out
}

/// The rows as a table.
pub fn table(rows: &[Value], now: DateTime<Utc>) -> String {
    let secs = |v: &Value| {
        v.as_u64()
            .or_else(|| v.as_i64().map(|i| i.max(0) as u64))
            .map(|s| format_duration(std::time::Duration::from_secs(s)))
    };
    let mut t = drp_cli::Table::new(&[
        "HOST",
        "EXPORT",
        "NEWEST POINT",
        "EXPOSURE",
        "RPO",
        "ARCHIVE LAG",
        "LAST DRILL",
    ]);
    for r in rows {
        let drill = match &r["last_drill"] {
            Value::Null => "never".to_string(),
            d => format!(
                "{} ago, {} ({})",
                d["at"]
                    .as_str()
                    .and_then(|t| t.parse::<DateTime<Utc>>().ok())
                    .map(|t| format_duration((now - t).to_std().unwrap_or_default()))
                    .unwrap_or_default(),
                if d["passed"] == true {
                    "passed"
                } else {
                    "FAILED"
                },
                d["runbook"].as_str().unwrap_or_default()
            ),
        };
        if r["reachable"] == false {
            t.row(vec![
                r["host"].as_str().unwrap_or_default().into(),
                format!("UNREACHABLE: {}", r["error"].as_str().unwrap_or_default()),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                drill,
            ]);
            continue;
        }
        t.row(vec![
            r["host"].as_str().unwrap_or_default().into(),
            r["export"].as_str().unwrap_or("(no export)").into(),
            r["newest_point"]
                .as_str()
                .and_then(|t| t.parse::<DateTime<Utc>>().ok())
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_else(|| "none".into()),
            secs(&r["rpo_exposure_seconds"]).unwrap_or_else(|| "-".into()),
            match (&r["within_rpo"], secs(&r["rpo_objective_seconds"])) {
                (Value::Bool(true), Some(o)) => format!("ok ({o})"),
                (Value::Bool(false), Some(o)) => format!("OVER ({o})"),
                _ => "no objective".into(),
            },
            secs(&r["archive_lag_seconds"]).unwrap_or_else(|| "-".into()),
            drill,
        ]);
    }
    t.render()
}
