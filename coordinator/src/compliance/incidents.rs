//! The host watchdog's incidents of a period, beside the drills: each
//! incident record on the policy's targets, what became of it, and its RTO
//! and RPO against the objectives (those of the export a rung restored,
//! else the host's). An incident that did not recover, or recovered past
//! its RTO, misses the objectives as a failed drill does.
//!
//! The policy's host may be a coordinator: its own incidents are those of
//! its watch (`drp watch`: a host failed over, or not, and why). With an
//! inventory, each host's incidents are read too, from the same targets
//! (`incidents/<host>/`, where the hosts that share them store theirs),
//! judged against the objectives its agent reports for the export a rung
//! restored, else the policy's.

use chrono::{DateTime, Utc};
use drp_core::config::Policy;
use drp_core::records::Incident;
use serde::Serialize;

/// What became of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentOutcome {
    /// The checks passed again after a rung.
    Recovered,
    /// The host asked its coordinator for help.
    HandedOver,
    /// The watchdog stopped acting (the ladder tried, or the flap limit).
    Stopped,
    /// Still being handled when the report was written.
    Open,
}

impl IncidentOutcome {
    pub fn name(self) -> &'static str {
        match self {
            IncidentOutcome::Recovered => "recovered",
            IncidentOutcome::HandedOver => "handed over",
            IncidentOutcome::Stopped => "stopped",
            IncidentOutcome::Open => "open",
        }
    }
}

/// One incident as the report shows it.
#[derive(Debug, Serialize)]
pub struct IncidentSeen {
    #[serde(flatten)]
    pub incident: Incident,
    pub outcome: IncidentOutcome,
    pub rto_objective_seconds: Option<f64>,
    /// `None`: no objective, or not recovered.
    pub within_rto: Option<bool>,
    pub rpo_objective_seconds: Option<f64>,
    pub within_rpo: Option<bool>,
}

impl IncidentSeen {
    fn new(policy: &Policy, incident: Incident) -> IncidentSeen {
        let objectives = incident
            .restored
            .as_ref()
            .filter(|r| r.kind == "point")
            .and_then(|r| policy.export(&r.of).ok())
            .map(|e| e.objectives(&policy.objectives))
            .unwrap_or(policy.objectives);
        let rto = objectives.rto.map(|d| d.as_duration().as_secs_f64());
        let rpo = objectives.rpo.map(|d| d.as_duration().as_secs_f64());
        IncidentSeen::judged(incident, rto, rpo)
    }

    /// An incident against these objectives (seconds).
    fn judged(incident: Incident, rto: Option<f64>, rpo: Option<f64>) -> IncidentSeen {
        let outcome = if incident.recovered_at.is_some() {
            IncidentOutcome::Recovered
        } else if incident.needs_coordinator {
            IncidentOutcome::HandedOver
        } else if incident.stopped.is_some() {
            IncidentOutcome::Stopped
        } else {
            IncidentOutcome::Open
        };
        let within = |measured: Option<f64>, objective: Option<f64>| {
            measured.zip(objective).map(|(m, o)| m <= o)
        };
        IncidentSeen {
            within_rto: within(incident.rto_seconds, rto),
            within_rpo: within(incident.rpo_seconds, rpo),
            rto_objective_seconds: rto,
            rpo_objective_seconds: rpo,
            outcome,
            incident,
        }
    }

    /// Did not recover, or recovered past its RTO objective.
    pub fn missed(&self) -> bool {
        self.outcome != IncidentOutcome::Recovered || self.within_rto == Some(false)
    }

    /// Each rung tried with its outcome (`restart: not recovered`).
    pub fn rungs(&self) -> Vec<String> {
        self.incident
            .rungs
            .iter()
            .map(|r| format!("{}: {}", r.rung, r.outcome.name()))
            .collect()
    }
}

/// The policy host's incidents whose first failed check falls in the
/// period, oldest first.
pub async fn gather(policy: &Policy, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<IncidentSeen> {
    drp_core::watch::incidents(policy)
        .await
        .into_iter()
        .filter(|i| i.first_failed >= from && i.first_failed < to)
        .map(|i| IncidentSeen::new(policy, i))
        .collect()
}

/// The incidents of each of `hosts` (an inventory's hosts) whose first
/// failed check falls in the period, read from the policy's targets,
/// oldest first; `statuses` are their agents' answers (`drp status
/// --inventory`), for the objectives of the export a rung restored.
pub async fn gather_hosts(
    policy: &Policy,
    hosts: &[String],
    statuses: &[crate::fleet::status::HostStatus],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<IncidentSeen> {
    let names: Vec<String> = policy.targets.keys().cloned().collect();
    let (repos, _) = drp_core::repository::open_reachable(policy, &names).await;
    let mut by_id = std::collections::BTreeMap::new();
    for host in hosts {
        for repo in &repos {
            match repo.incidents(host).await {
                Ok(found) => {
                    for i in found {
                        by_id.entry((host.clone(), i.id())).or_insert(i);
                    }
                }
                Err(e) => tracing::warn!(host = %host, "incident records not read: {e}"),
            }
        }
    }
    let mut out: Vec<IncidentSeen> = by_id
        .into_values()
        .filter(|i| i.first_failed >= from && i.first_failed < to)
        .map(|i| {
            let reported = i.restored.as_ref().and_then(|r| {
                statuses
                    .iter()
                    .find(|s| s.host == i.host)
                    .and_then(|s| s.status.as_ref().ok())
                    .and_then(|s| s.exports.iter().find(|e| e.status.export == r.of))
                    .map(|e| {
                        (
                            e.status.rto_objective_seconds,
                            e.status.rpo_objective_seconds,
                        )
                    })
            });
            match reported {
                Some((rto, rpo)) => IncidentSeen::judged(i, rto, rpo),
                None => IncidentSeen::new(policy, i),
            }
        })
        .collect();
    out.sort_by_key(|i| i.incident.first_failed);
    out
}
