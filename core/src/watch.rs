//! The host's watchdog, its decisions: each check's result moves a watched
//! service's [`WatchState`] (hysteresis: `fall` failures before acting,
//! `rise` passes before recovered, no count inside a rung's `grace`), says
//! which rung of the ladder to try next, and when to stop acting (the
//! ladder exhausted, or more escalations than the flap limit allows).
//! Incidents are kept in the state while open and stored, signed, on the
//! policy's targets when they close; alerts name the service, the rung and
//! the outcome.
//!
//! Running a check or a rung is the agent's: the checks and the restart
//! are runbook actions, which the core does not know.

use chrono::{DateTime, Utc};

use crate::config::Policy;
use crate::config::watch::WatchedService;
use crate::records::{Incident, RestoredFrom, RungOutcome, RungTried};
use crate::state::{Kept, WatchState};

/// What a check's result asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Nothing to do now.
    Wait,
    /// Try the ladder's rung at this index (from 0).
    Try(usize),
    /// The service is back: the incident closed, with its RTO.
    Recovered(Box<Incident>),
    /// Stop acting on the service until `resume`, for this reason.
    Stop(String),
}

impl WatchState {
    /// Paused at `now` (`watch pause`).
    pub fn paused(&self, now: DateTime<Utc>) -> bool {
        self.paused_until.is_some_and(|u| u > now)
    }

    /// Takes one check's result (at `now`) and says what to do.
    pub fn observe(
        &mut self,
        service: &WatchedService,
        name: &str,
        host: &str,
        passed: bool,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Next {
        self.checked_at = Some(now);
        self.up = Some(passed);
        self.detail = Some(detail.to_string());
        if self.paused(now) || self.stopped.is_some() {
            return Next::Wait;
        }
        if self.grace_until.is_some_and(|g| g > now) {
            return Next::Wait;
        }
        if passed {
            self.fails = 0;
            if self.incident.is_none() {
                self.failing_since = None;
                self.passes = 0;
                return Next::Wait;
            }
            self.passes += 1;
            if self.passes < service.rise() {
                return Next::Wait;
            }
            let mut incident = self.incident.take().expect("an open incident");
            incident.recovered_at = Some(now);
            incident.rto_seconds = Some(seconds(now - incident.first_failed));
            if let Some(last) = incident.rungs.last_mut() {
                last.outcome = match last.outcome {
                    RungOutcome::Done => RungOutcome::Recovered,
                    o => o,
                };
            }
            self.failing_since = None;
            self.passes = 0;
            self.grace_until = None;
            self.last_incident = Some(incident.clone());
            return Next::Recovered(Box::new(incident));
        }
        self.passes = 0;
        self.fails += 1;
        let since = *self.failing_since.get_or_insert(now);
        if self.fails < service.fall() {
            return Next::Wait;
        }
        self.fails = 0;
        let incident = self
            .incident
            .get_or_insert_with(|| Incident::open(host, name, since, now));
        incident.failure = detail.to_string();
        if let Some(last) = incident.rungs.last_mut()
            && last.outcome == RungOutcome::Done
        {
            last.outcome = RungOutcome::NotRecovered;
        }
        let next = incident.rungs.len();
        if next >= service.ladder.len() {
            return Next::Stop(format!(
                "every rung of the ladder was tried ({}) and the check still fails",
                ladder_names(service)
            ));
        }
        let limit = service.limit();
        let window =
            chrono::Duration::from_std(limit.per.as_duration()).unwrap_or(chrono::Duration::MAX);
        self.escalations.retain(|at| now - *at < window);
        if self.escalations.len() >= limit.escalations as usize {
            return Next::Stop(format!(
                "{} escalations within {} (the flap limit): no more action until `drp-agent watch resume --service {name}`",
                self.escalations.len(),
                crate::config::units::format_duration(limit.per.as_duration())
            ));
        }
        Next::Try(next)
    }

    /// Records a rung tried (started at `started`, ended `now`); checks do
    /// not count for the service's grace from now.
    #[allow(clippy::too_many_arguments)]
    pub fn tried(
        &mut self,
        service: &WatchedService,
        index: usize,
        started: DateTime<Utc>,
        outcome: RungOutcome,
        detail: String,
        restored: Option<RestoredFrom>,
        now: DateTime<Utc>,
    ) {
        let rung = service.ladder[index].name();
        self.escalations.push(started);
        *self.escalations_total.entry(rung.to_string()).or_default() += 1;
        self.grace_until = Some(
            now + chrono::Duration::from_std(service.grace()).unwrap_or(chrono::Duration::MAX),
        );
        self.fails = 0;
        self.passes = 0;
        let Some(incident) = self.incident.as_mut() else {
            return;
        };
        incident.rungs.push(RungTried {
            number: index + 1,
            rung: rung.to_string(),
            started,
            ended: Some(now),
            outcome,
            detail,
        });
        if outcome == RungOutcome::HandedOver {
            incident.needs_coordinator = true;
        }
        if let Some(r) = restored {
            incident.rpo_seconds = Some(seconds(incident.first_failed - r.consistency_time));
            incident.restored = Some(r);
        }
    }

    /// Stops acting on the service (until `resume`); the open incident, if
    /// any, closed with the reason.
    pub fn stop(&mut self, reason: &str) -> Option<Incident> {
        self.stopped = Some(reason.to_string());
        let mut incident = self.incident.take()?;
        incident.stopped = Some(reason.to_string());
        self.last_incident = Some(incident.clone());
        Some(incident)
    }

    /// `watch resume`: acting again from a clean slate (no pause, no stop,
    /// no counted failures, an empty flap window).
    pub fn resume(&mut self) {
        self.paused_until = None;
        self.stopped = None;
        self.escalations.clear();
        self.fails = 0;
        self.passes = 0;
        self.failing_since = None;
        self.grace_until = None;
        if let Some(open) = self.incident.take() {
            self.last_incident = Some(open);
        }
    }
}

fn seconds(d: chrono::Duration) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

fn ladder_names(service: &WatchedService) -> String {
    service
        .ladder
        .iter()
        .map(|r| r.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The state of `service` on the policy's host.
pub fn load(policy: &Policy, service: &str) -> WatchState {
    WatchState::load(policy, service)
}

/// Stores `incident` on every target of the policy; the targets that could
/// not take it, with why.
pub async fn save_incident(policy: &Policy, incident: &Incident) -> Vec<String> {
    let names: Vec<String> = policy.targets.keys().cloned().collect();
    let (repos, unreachable) = crate::repository::open_reachable(policy, &names).await;
    let mut failed: Vec<String> = unreachable.iter().map(|e| e.to_string()).collect();
    for repo in &repos {
        if let Err(e) = repo.save_incident(incident).await {
            failed.push(e.to_string());
        }
    }
    for f in &failed {
        tracing::warn!("the incident record was not stored: {f}");
    }
    failed
}

/// The incident records of this host on its targets, oldest first (each
/// incident once, as the first target that holds it has it).
pub async fn incidents(policy: &Policy) -> Vec<Incident> {
    let names: Vec<String> = policy.targets.keys().cloned().collect();
    let (repos, _) = crate::repository::open_reachable(policy, &names).await;
    let mut by_id = std::collections::BTreeMap::new();
    for repo in &repos {
        match repo.incidents(&policy.host).await {
            Ok(found) => {
                for i in found {
                    by_id.entry(i.id()).or_insert(i);
                }
            }
            Err(e) => tracing::warn!("incident records not read: {e}"),
        }
    }
    by_id.into_values().collect()
}

/// Tells the policy's channels what the watchdog did: the service, the
/// rung and the outcome.
pub async fn alert(policy: &Policy, service: &str, rung: &str, outcome: &str, text: &str) {
    let title = format!(
        "drp watchdog: {service} on {}: {rung} {outcome}",
        policy.host
    );
    tracing::warn!("{title}: {text}");
    crate::notify::alert(policy, &format!("watch:{service}"), &[], title, text).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn service(yaml: &str) -> WatchedService {
        let all: BTreeMap<String, WatchedService> = serde_yaml_ng::from_str(yaml).unwrap();
        all["web"].clone()
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    const WEB: &str = "web:\n  check: {kind: tcp, address: '127.0.0.1:1'}\n  interval: 1s\n  fall: 2\n  rise: 2\n  grace: 5s\n  ladder: [{restart: {unit: web}}, {handover: {}}]\n  limit: {escalations: 2, per: 1h}\n";

    #[test]
    fn fall_failures_act_grace_is_not_counted_and_rise_passes_recover() {
        let s = service(WEB);
        let mut st = WatchState::default();
        assert_eq!(st.observe(&s, "web", "h", false, "down", at(0)), Next::Wait);
        assert_eq!(
            st.observe(&s, "web", "h", false, "down", at(1)),
            Next::Try(0)
        );
        st.tried(&s, 0, at(1), RungOutcome::Done, "ok".into(), None, at(2));
        // Inside the grace, failures do not count.
        for t in 3..7 {
            assert_eq!(st.observe(&s, "web", "h", false, "down", at(t)), Next::Wait);
        }
        assert_eq!(st.observe(&s, "web", "h", true, "up", at(7)), Next::Wait);
        let Next::Recovered(i) = st.observe(&s, "web", "h", true, "up", at(8)) else {
            panic!("recovered")
        };
        assert_eq!(i.rto_seconds, Some(8.0));
        assert_eq!(i.rungs[0].outcome, RungOutcome::Recovered);
        assert_eq!(i.first_failed, at(0));
    }

    #[test]
    fn the_flap_limit_and_the_ladder_stop_action() {
        let s = service(WEB);
        let mut st = WatchState::default();
        let mut t = 0;
        let mut tries = 0;
        loop {
            match st.observe(&s, "web", "h", false, "down", at(t)) {
                Next::Try(i) => {
                    tries += 1;
                    st.tried(&s, i, at(t), RungOutcome::Done, String::new(), None, at(t));
                    t += 6;
                    st.observe(&s, "web", "h", true, "up", at(t));
                    t += 1;
                    assert!(matches!(
                        st.observe(&s, "web", "h", true, "up", at(t)),
                        Next::Recovered(_)
                    ));
                }
                Next::Stop(why) => {
                    assert!(why.contains("flap limit"), "{why}");
                    break;
                }
                _ => {}
            }
            t += 1;
        }
        assert_eq!(tries, 2);
        assert!(st.stop("limit").is_some());
        assert_eq!(
            st.observe(&s, "web", "h", false, "down", at(t + 1)),
            Next::Wait
        );
        st.resume();
        assert_eq!(
            st.observe(&s, "web", "h", false, "d", at(t + 2)),
            Next::Wait
        );
        assert_eq!(
            st.observe(&s, "web", "h", false, "d", at(t + 3)),
            Next::Try(0)
        );
    }
}
