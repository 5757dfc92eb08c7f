//! `drp status --inventory`: every host's exports, one row each, as each
//! agent assessed them (the one `ExportStatus`, typed over the protocol),
//! asked at once, with the newest drill that restored each export from the
//! coordinator's report store; and every warm standby, one row each, as its
//! agent last saw it. A host that does not answer is listed with why; it
//! does not stop the others. The binary renders the rows.

use drp_core::export_status::{ExportStatus, LastDrill, StandbyRow};
use serde::{Deserialize, Serialize};

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
    /// The agent's status, or why it could not be had.
    pub status: Result<drp_core::export_status::HostStatus, String>,
}

/// Asks every host of `inventory` for its status, all at once.
pub async fn gather(inventory: &Inventory) -> Vec<HostStatus> {
    let asks = inventory.hosts.values().map(|h| async move {
        let status = async {
            let remote = Remote::connect(h).await.map_err(|e| e.to_string())?;
            match remote.call(Op::Status).await.map_err(|e| e.to_string())? {
                Reply::Status { status } => Ok(*status),
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
        }
    });
    futures::future::join_all(asks).await
}

/// The newest drill that restored `export` on `host` (a step there, or
/// the drill's own host).
pub fn last_drill(reports: &[Report], host: &str, export: &str) -> Option<LastDrill> {
    reports
        .iter()
        .filter(|r| r.kind == Kind::Drill)
        .filter(|r| r.host == host || r.steps.iter().any(|s| s.host.as_deref() == Some(host)))
        .filter(|r| {
            r.rpo
                .as_ref()
                .is_some_and(|m| m.restored.iter().any(|p| p.export == export))
        })
        .max_by_key(|r| r.started_at)
        .map(|r| LastDrill {
            at: r.started_at,
            runbook: r.runbook.clone(),
            passed: r.passed(),
            rto_seconds: r.rto.as_ref().and_then(|x| x.measured_seconds),
        })
}

/// One export of one host, or a host that did not answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetRow {
    pub host: String,
    pub address: String,
    pub reachable: bool,
    /// Why the host did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The export as its agent assessed it (none: the host has no export).
    #[serde(flatten)]
    pub export: Option<ExportStatus>,
}

/// One row per export (one per unreachable host), each with the newest
/// drill that restored it.
pub fn rows(hosts: &[HostStatus], reports: &[Report]) -> Vec<FleetRow> {
    let mut out = Vec::new();
    for h in hosts {
        let row = |error: Option<String>, export: Option<ExportStatus>| FleetRow {
            host: h.host.clone(),
            address: h.address.clone(),
            reachable: error.is_none(),
            error,
            export,
        };
        let status = match &h.status {
            Ok(s) => s,
            Err(why) => {
                out.push(row(Some(why.clone()), None));
                continue;
            }
        };
        if status.exports.is_empty() {
            out.push(row(None, None));
        }
        for e in &status.exports {
            let mut export = e.status.clone();
            export.last_drill = last_drill(reports, &h.host, &export.export);
            out.push(row(None, Some(export)));
        }
    }
    out
}

/// One warm standby of one host, as its agent last saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetStandby {
    pub host: String,
    pub address: String,
    #[serde(flatten)]
    pub standby: StandbyRow,
}

/// One row per standby of every host that answered.
pub fn standby_rows(hosts: &[HostStatus]) -> Vec<FleetStandby> {
    hosts
        .iter()
        .filter_map(|h| Some((h, h.status.as_ref().ok()?)))
        .flat_map(|(h, status)| {
            status.standbys.iter().map(|s| FleetStandby {
                host: h.host.clone(),
                address: h.address.clone(),
                standby: s.clone(),
            })
        })
        .collect()
}
