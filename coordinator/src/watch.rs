//! `drp watch --inventory FILE`: the coordinator's watch. Every host of
//! the inventory that names a failover runbook (`drp_failover`) is checked
//! from here, as a witness from outside: its `drp_watch` check (or, without
//! one, whether its agent answers over SSH) every `interval`. After `fall`
//! consecutive failures the host is *seen* down from here, which alone
//! proves nothing, so the fence's rule decides
//! ([`drp_coordinator::action::fence::verdict`]):
//!
//! - its agent still answers over SSH: the host is up and the service
//!   fails; that is the host's own watchdog's to handle (its `handover`
//!   brings the coordinator in): no failover;
//! - a witness reaches it: the link from the coordinator is cut, not the
//!   host: no failover;
//! - no witness answers (or none is named): no second vantage point: no
//!   failover;
//! - at least one witness answers and none reaches it: the failover
//!   runbook runs, as `drp run --yes` would (its `fence` step asks the
//!   witnesses again and fences by record).
//!
//! A host whose own watchdog handed over (an incident record of the host
//! with `needs_coordinator` and no recovery, on the targets of the runbook's
//! policy) has its failover runbook run at once: it asked.
//!
//! Every decision is an incident record of the coordinator's (its policy's
//! host, the watched host as the service), stored where the runbook's
//! policy stores them, and an alert naming the host, the action and the
//! outcome. A failover's RTO runs from the first failed check to the end of
//! the runbook's last verify step, its RPO from its restore. A host failed
//! over, or fenced, is not failed over again until its fence is lifted
//! (`drp unfence`, or a failback's `unfence`). What a host's watch has seen
//! is the coordinator's state (`<state_dir>/<host>/coordinator-watch/`),
//! so `--once` from cron counts failures across runs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use drp_cli::Output;
use drp_coordinator::action::fence::{Verdict, ask_witnesses, verdict};
use drp_coordinator::action::{ActionConfig, Context};
use drp_coordinator::fleet::Fleet;
use drp_coordinator::fleet::inventory::{Inventory, WatchEntry};
use drp_coordinator::runbook::Runbook;
use drp_core::config::Policy;
use drp_core::records::{Fence, Incident, RestoredFrom, RungOutcome, RungTried, Witnessed};
use drp_core::state::Kept;
use drp_core::{Error, ExitCode, Result};
use serde::{Deserialize, Serialize};

/// One watched host, read and checked.
struct Watched {
    host: String,
    settings: WatchEntry,
    runbook: Runbook,
    /// `None`: the check is whether the agent answers.
    check: Option<ActionConfig>,
}

/// What the coordinator's watch has seen of one host, kept between turns
/// (and between `--once` runs) in the state of the runbook's policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostWatch {
    pub checked_at: Option<DateTime<Utc>>,
    /// Whether the last check passed.
    pub up: Option<bool>,
    pub detail: Option<String>,
    /// Consecutive failed checks that count.
    #[serde(default)]
    pub fails: u32,
    /// Consecutive passed checks while an incident is open.
    #[serde(default)]
    pub passes: u32,
    /// The first failed check of the current run of failures.
    pub failing_since: Option<DateTime<Utc>>,
    /// The host seen down and not failed over (the record says why),
    /// until `rise` passes close it.
    pub incident: Option<Incident>,
    /// When its failover runbook ran: not again until a fence lift newer
    /// than this.
    pub failed_over_at: Option<DateTime<Utc>>,
    /// The host's own incidents that asked for help and were answered.
    #[serde(default)]
    pub answered: Vec<String>,
}

impl Kept for HostWatch {
    const FOLDER: &'static str = "coordinator-watch";
}

/// What one check's result asks for.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// Nothing to decide now.
    Wait,
    /// `fall` consecutive failures since this instant: decide.
    Down(DateTime<Utc>),
    /// `rise` passes after an incident without failover: it closed.
    Back(Box<Incident>),
}

impl HostWatch {
    /// Takes one check's result (hysteresis: `fall` failures before the
    /// host counts as down, `rise` passes before an open incident closes).
    fn observe(&mut self, w: &WatchEntry, passed: bool, detail: &str, now: DateTime<Utc>) -> Seen {
        self.checked_at = Some(now);
        self.up = Some(passed);
        self.detail = Some(detail.to_string());
        if passed {
            self.fails = 0;
            if self.incident.is_none() {
                self.failing_since = None;
                self.passes = 0;
                return Seen::Wait;
            }
            self.passes += 1;
            if self.passes < w.rise {
                return Seen::Wait;
            }
            let mut incident = self.incident.take().expect("an open incident");
            incident.recovered_at = Some(now);
            incident.rto_seconds = Some(seconds(now - incident.first_failed));
            self.failing_since = None;
            self.passes = 0;
            return Seen::Back(Box::new(incident));
        }
        self.passes = 0;
        self.fails += 1;
        let since = *self.failing_since.get_or_insert(now);
        if self.fails < w.fall {
            return Seen::Wait;
        }
        // Asked again only after `fall` more failures.
        self.fails = 0;
        Seen::Down(since)
    }

    /// The open incident, opened at `since` when there is none.
    fn open(
        &mut self,
        coordinator: &str,
        host: &str,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> &mut Incident {
        self.incident
            .get_or_insert_with(|| Incident::open(coordinator, host, since, now))
    }
}

/// What the watch decides of a host seen down from here.
#[derive(Debug, Clone, PartialEq)]
enum Decision {
    /// Its agent answers: the host is up; its watchdog's business.
    AgentAnswers,
    /// A witness reaches it: the link from the coordinator is cut.
    LinkCut(Witnessed),
    /// No second vantage point answered.
    NoWitness,
    /// Down, as the witnesses agree: run the failover runbook.
    Failover,
}

/// The witness rule for the watch: the agent's answer first (the host is
/// up), then the fence's verdict.
fn decide(agent_answers: bool, seen: &[Witnessed]) -> Decision {
    if agent_answers {
        return Decision::AgentAnswers;
    }
    match verdict(seen) {
        Verdict::Reached(w) => Decision::LinkCut(w),
        Verdict::Unanswered => Decision::NoWitness,
        Verdict::Down => Decision::Failover,
    }
}

/// One host's turn, for the terminal and `--json`.
#[derive(Debug, Clone, Serialize)]
struct Said {
    host: String,
    at: DateTime<Utc>,
    /// Whether its check passed this turn (`None`: not checked).
    up: Option<bool>,
    /// `watching`, `held`, `not_failed_over`, `recovered`, `failover`,
    /// `would_fail_over`.
    action: &'static str,
    said: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    incident: Option<Incident>,
    /// The failover's exit status, when it ran (0: passed).
    #[serde(skip)]
    code: ExitCode,
}

pub async fn run(path: &Path, once: bool, dry_run: bool, out: &Output) -> Result<ExitCode> {
    let inventory = Inventory::load(path)?;
    let watched = load(&inventory)?;
    if !out.json && !out.quiet {
        for w in &watched {
            eprintln!(
                "watching {}: {} every {}, fall {}, rise {}; witnesses {}; failover `{}`{}",
                w.host,
                w.check
                    .as_ref()
                    .map(|c| c.action().describe())
                    .unwrap_or_else(|| "its agent answering over SSH".into()),
                drp_core::config::units::format_duration(w.settings.interval),
                w.settings.fall,
                w.settings.rise,
                if w.settings.witnesses.is_empty() {
                    "none".to_string()
                } else {
                    w.settings.witnesses.join(", ")
                },
                w.runbook.name,
                if dry_run {
                    " (dry run: nothing is done or written)"
                } else {
                    ""
                }
            );
        }
    }
    let fleet = Arc::new(Fleet::new(inventory));
    let mut tasks = tokio::task::JoinSet::new();
    for w in watched {
        let fleet = fleet.clone();
        let out = *out;
        tasks.spawn(async move {
            let policy = &w.runbook.policy;
            // In a dry run nothing is written: the state lives in memory.
            let mut state = HostWatch::load(policy, &w.host);
            let mut code = ExitCode::Ok;
            loop {
                if !dry_run {
                    state = HostWatch::load(policy, &w.host);
                }
                let said = turn(&w, &fleet, &mut state, dry_run).await;
                if !dry_run && let Err(e) = state.save(policy, &w.host) {
                    tracing::warn!(host = %w.host, error = %e, "the watch's state was not saved");
                }
                code = code.worse(said.code);
                show(&out, &said);
                if once {
                    return code;
                }
                tokio::time::sleep(w.settings.interval).await;
            }
        });
    }
    let mut code = ExitCode::Ok;
    while let Some(done) = tasks.join_next().await {
        code = code.worse(done.map_err(|e| Error::Failed(format!("a host's watch ended: {e}")))?);
    }
    Ok(code)
}

fn show(out: &Output, said: &Said) {
    if out.json {
        out.print_json(&serde_json::to_value(said).expect("serialises"));
    } else if !out.quiet {
        println!("{}: {}", said.host, said.said);
    }
}

/// Every watched host's runbook and check, read and validated; an error
/// naming the host when one cannot be.
fn load(inventory: &Inventory) -> Result<Vec<Watched>> {
    let mut out = Vec::new();
    for (name, entry) in &inventory.hosts {
        let Some(settings) = &entry.watch else {
            continue;
        };
        let runbook = Runbook::load(&settings.failover).map_err(|e| {
            Error::Usage(format!(
                "host `{name}`: its failover runbook {} (drp_failover) cannot be used: {e}",
                settings.failover.display()
            ))
        })?;
        let check = match &settings.check {
            None => None,
            Some(json) => {
                let check: ActionConfig = serde_json::from_value(json.clone()).map_err(|e| {
                    Error::Usage(format!(
                        "host `{name}`: drp_watch.check cannot be read: {e}"
                    ))
                })?;
                check.validate(&runbook.policy).map_err(|e| {
                    Error::Usage(format!(
                        "host `{name}`: drp_watch.check is refused against the policy of runbook `{}`: {e}",
                        runbook.name
                    ))
                })?;
                Some(check)
            }
        };
        out.push(Watched {
            host: name.clone(),
            settings: settings.clone(),
            runbook,
            check,
        });
    }
    if out.is_empty() {
        return Err(Error::Usage(format!(
            "{} names no host to watch: give a host `drp_failover: <runbook>` (and `drp_witnesses`, `drp_watch`)",
            inventory.path.display()
        )));
    }
    Ok(out)
}

/// One turn of host `w`: what held it, what it asked, what the check said,
/// and what was decided.
async fn turn(w: &Watched, fleet: &Fleet, state: &mut HostWatch, dry_run: bool) -> Said {
    let policy = &w.runbook.policy;
    let now = Utc::now();
    let said = |action, up, text: String| Said {
        host: w.host.clone(),
        at: now,
        up,
        action,
        said: text,
        incident: None,
        code: ExitCode::Ok,
    };
    // Fenced, or failed over: not again until the fence is lifted.
    let fence = newest_fence(policy, &w.host).await;
    let lifted_after = |t: DateTime<Utc>| fence.as_ref().is_some_and(|f| !f.fenced && f.at > t);
    if let Some(at) = state.failed_over_at {
        if !lifted_after(at) {
            return said(
                "held",
                None,
                format!(
                    "failed over at {}: not watched again until its fence is lifted (`drp unfence {}`)",
                    drp_core::time::shown(at),
                    w.host
                ),
            );
        }
        *state = HostWatch {
            answered: std::mem::take(&mut state.answered),
            ..HostWatch::default()
        };
    }
    if let Some(f) = fence.as_ref().filter(|f| f.fenced) {
        return said(
            "held",
            None,
            format!(
                "fenced since {} by {} ({}): not failed over again until its fence is lifted",
                drp_core::time::shown(f.at),
                f.by,
                f.reason
            ),
        );
    }
    // The host's own watchdog asked for help.
    let lifted = fence.as_ref().filter(|f| !f.fenced).map(|f| f.at);
    if let Some(asked) = asking(policy, &w.host, state, lifted).await {
        let failure = format!(
            "the watchdog of {} handed service `{}` over to the coordinator (its incident {}): {}",
            w.host,
            asked.service,
            asked.id(),
            asked.failure
        );
        state.answered.push(asked.id());
        return failover(w, state, asked.first_failed, failure, None, dry_run).await;
    }
    // The check from here.
    let (passed, detail) = check(w, fleet).await;
    tracing::info!(host = %w.host, passed, "{detail}");
    match state.observe(&w.settings, passed, &detail, now) {
        Seen::Wait => {
            let text = match (passed, state.incident.is_some()) {
                (true, false) => format!("up: {detail}"),
                (true, true) => format!(
                    "passes again ({} of {} before its incident closes): {detail}",
                    state.passes, w.settings.rise
                ),
                (false, _) => format!(
                    "check failed ({} of {} before it counts as down): {detail}",
                    state.fails, w.settings.fall
                ),
            };
            said("watching", Some(passed), text)
        }
        Seen::Back(incident) => {
            let text = format!(
                "answers again, {:.1} s after its first failed check: incident closed, nothing was failed over",
                incident.rto_seconds.unwrap_or(0.0)
            );
            if !dry_run {
                drp_core::watch::save_incident(policy, &incident).await;
                alert(policy, &w.host, "watch", "recovered", &text, true).await;
            }
            Said {
                incident: Some(*incident),
                ..said("recovered", Some(true), text)
            }
        }
        Seen::Down(since) => {
            let answers = w.check.is_some() && fleet.link(&w.host).await.is_ok();
            let seen = if answers {
                Vec::new()
            } else {
                ask_witnesses(
                    fleet,
                    &w.host,
                    &w.settings.witnesses,
                    &format!("drp watch {}", w.host),
                )
                .await
            };
            let why = match decide(answers, &seen) {
                Decision::Failover => {
                    return failover(w, state, since, detail, Some(seen), dry_run).await;
                }
                Decision::AgentAnswers => "not failed over: its check fails from here, but its agent answers over SSH: the host is up; its own watchdog handles the service (its `handover` rung brings the coordinator in)".to_string(),
                Decision::LinkCut(seen_by) => format!(
                    "not failed over: witness `{}` reaches {} ({}): the link from the coordinator is cut, not the host",
                    seen_by.witness, w.host, seen_by.detail
                ),
                Decision::NoWitness if w.settings.witnesses.is_empty() => format!(
                    "not failed over: {} does not answer the coordinator, and it names no witness (`drp_witnesses`) to agree it is down",
                    w.host
                ),
                Decision::NoWitness => format!(
                    "not failed over: {} does not answer the coordinator, and no witness answered ({}): no second vantage point agrees it is down",
                    w.host,
                    views(&seen)
                ),
            };
            let incident = state.open(&policy.host, &w.host, since, now);
            incident.failure = detail.clone();
            let changed = incident.stopped.as_deref() != Some(why.as_str());
            if !seen.is_empty() {
                incident.rungs.push(RungTried {
                    number: incident.rungs.len() + 1,
                    rung: "witnesses".into(),
                    started: now,
                    ended: Some(Utc::now()),
                    outcome: RungOutcome::Done,
                    detail: views(&seen),
                });
            }
            incident.stopped = Some(why.clone());
            let incident = incident.clone();
            tracing::warn!(host = %w.host, "{why}");
            // Stored and told when the reason changes, not at every turn.
            if !dry_run && changed {
                drp_core::watch::save_incident(policy, &incident).await;
                alert(
                    policy,
                    &w.host,
                    "failover",
                    "refused",
                    &format!("{why}; its check: {detail}"),
                    false,
                )
                .await;
            }
            Said {
                incident: Some(incident),
                ..said("not_failed_over", Some(false), why)
            }
        }
    }
}

/// The host's check, within its interval (at least 2 s): the watch's
/// check, or whether its agent answers over SSH.
async fn check(w: &Watched, fleet: &Fleet) -> (bool, String) {
    let Some(action) = &w.check else {
        return match fleet.link(&w.host).await {
            Ok(r) => (
                true,
                format!("its agent answers (drp-agent {})", r.hello.agent_version),
            ),
            Err(e) => (false, format!("its agent does not answer: {e}")),
        };
    };
    let ctx = Context::for_runbook(&w.runbook);
    let within = w.settings.interval.max(Duration::from_secs(2));
    match tokio::time::timeout(within, action.action().run(&ctx)).await {
        Ok(Ok(said)) => (true, said),
        Ok(Err(e)) => (false, e.to_string()),
        Err(_) => (
            false,
            format!(
                "the check did not answer within {}",
                drp_core::config::units::format_duration(within)
            ),
        ),
    }
}

/// Runs the host's failover runbook for a failure that began at
/// `first_failed`, and records it: the rungs (the witnesses' views, the
/// runbook), its RTO and RPO.
async fn failover(
    w: &Watched,
    state: &mut HostWatch,
    first_failed: DateTime<Utc>,
    failure: String,
    witnesses: Option<Vec<Witnessed>>,
    dry_run: bool,
) -> Said {
    let policy = &w.runbook.policy;
    let now = Utc::now();
    let mut incident = state
        .incident
        .take()
        .unwrap_or_else(|| Incident::open(&policy.host, &w.host, first_failed, now));
    incident.failure = failure;
    incident.stopped = None;
    if let Some(seen) = &witnesses {
        incident.rungs.push(RungTried {
            number: incident.rungs.len() + 1,
            rung: "witnesses".into(),
            started: now,
            ended: Some(now),
            outcome: RungOutcome::Done,
            detail: format!("none reaches it: {}", views(seen)),
        });
    }
    state.fails = 0;
    state.passes = 0;
    state.failing_since = None;
    state.failed_over_at = Some(now);
    let file = w.runbook_file();
    if dry_run {
        let text = format!(
            "would run its failover runbook `{}` ({file}) for a failure since {}: {}",
            w.runbook.name,
            drp_core::time::shown(incident.first_failed),
            incident.failure
        );
        return Said {
            host: w.host.clone(),
            at: now,
            up: Some(false),
            action: "would_fail_over",
            said: text,
            incident: Some(incident),
            code: ExitCode::Ok,
        };
    }
    tracing::warn!(host = %w.host, runbook = %w.runbook.name, "running the failover runbook");
    let options = drp_coordinator::drill::Options {
        kind: drp_coordinator::report::Kind::Incident,
        failed_at: Some(incident.first_failed),
        // The watch acts unattended, as `drp run --yes` would.
        confirm: Box::new(|_: &str| true),
        workdir: None,
        force: false,
    };
    let host = w.host.clone();
    let observe = move |e: drp_coordinator::engine::Event| {
        if let drp_coordinator::engine::Event::Finished(r) = e {
            tracing::info!(host = %host, "{}", drp_coordinator::drill::summary_line(r));
        }
    };
    let started = Utc::now();
    let ran = drp_coordinator::drill::execute(&w.runbook, options, &observe).await;
    let ended = Utc::now();
    let (outcome, detail, code) = match &ran {
        Ok((report, not_stored)) => {
            let code = report.exit_code(not_stored.is_empty());
            let mut detail = format!(
                "runbook `{}` {} (report {})",
                report.runbook,
                report.shown_status(),
                report.id
            );
            if let Some(why) = &report.failure {
                detail += &format!(": {why}");
            }
            if report.passed() {
                (RungOutcome::Recovered, detail, code)
            } else {
                (RungOutcome::Failed, detail, code)
            }
        }
        Err(e) => (
            RungOutcome::Failed,
            format!("runbook `{}` stopped: {e}", w.runbook.name),
            e.exit_code(),
        ),
    };
    incident.rungs.push(RungTried {
        number: incident.rungs.len() + 1,
        rung: "failover".into(),
        started,
        ended: Some(ended),
        outcome,
        detail: detail.clone(),
    });
    if let Ok((report, _)) = &ran {
        if report.passed() {
            let rto = report.rto.as_ref().and_then(|r| r.measured_seconds);
            incident.rto_seconds = rto;
            incident.recovered_at = Some(rto.map_or(ended, |s| {
                incident.first_failed + chrono::Duration::milliseconds((s * 1000.0) as i64)
            }));
        }
        if let Some(rpo) = &report.rpo
            && let Some(point) = rpo.restored.iter().min_by_key(|p| p.consistency_time)
        {
            incident.restored = Some(RestoredFrom {
                kind: "point".into(),
                of: point.export.clone(),
                id: point.id.clone(),
                consistency_time: point.consistency_time,
            });
            incident.rpo_seconds = rpo.measured_seconds;
        }
    }
    if outcome != RungOutcome::Recovered {
        incident.stopped = Some(format!(
            "the failover did not complete: {detail}; it is not run again until the fence of {} is lifted: finish it by hand (`drp run {file}`)",
            w.host
        ));
    }
    let text = match incident.rto_seconds {
        Some(rto) if outcome == RungOutcome::Recovered => {
            format!("failed over: {detail}; RTO {rto:.1} s from the first failed check")
        }
        _ => format!("failover failed: {detail}"),
    };
    let failed: Vec<String> = drp_core::watch::save_incident(policy, &incident).await;
    for f in &failed {
        tracing::warn!(host = %w.host, "incident not stored: {f}");
    }
    alert(
        policy,
        &w.host,
        "failover",
        if outcome == RungOutcome::Recovered {
            "done"
        } else {
            "failed"
        },
        &text,
        outcome == RungOutcome::Recovered,
    )
    .await;
    Said {
        host: w.host.clone(),
        at: now,
        up: Some(false),
        action: "failover",
        said: text,
        incident: Some(incident),
        code,
    }
}

impl Watched {
    fn runbook_file(&self) -> String {
        self.settings.failover.display().to_string()
    }
}

/// The witnesses' views in words.
fn views(seen: &[Witnessed]) -> String {
    seen.iter()
        .map(|w| {
            format!(
                "{} {} ({})",
                w.witness,
                if w.reached { "reaches it" } else { "does not" },
                w.detail
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The newest fence record of `host` on the targets of `policy`.
async fn newest_fence(policy: &Policy, host: &str) -> Option<Fence> {
    let names: Vec<String> = policy.targets.keys().cloned().collect();
    let (repos, _) = drp_core::repository::open_reachable(policy, &names).await;
    let mut newest: Option<Fence> = None;
    for repo in &repos {
        match repo.fences(host).await {
            Ok(found) => {
                for f in found {
                    if newest.as_ref().is_none_or(|n| f.at > n.at) {
                        newest = Some(f);
                    }
                }
            }
            Err(e) => tracing::warn!(host, "fence records not read: {e}"),
        }
    }
    newest
}

/// The oldest incident of `host`'s own watchdog that asks for the
/// coordinator and was not answered: no recovery, not answered before,
/// and newer than the host's last fence lift (a failback answered those).
async fn asking(
    policy: &Policy,
    host: &str,
    state: &HostWatch,
    lifted: Option<DateTime<Utc>>,
) -> Option<Incident> {
    let names: Vec<String> = policy.targets.keys().cloned().collect();
    let (repos, _) = drp_core::repository::open_reachable(policy, &names).await;
    for repo in &repos {
        match repo.incidents(host).await {
            Ok(found) => {
                if let Some(i) = found.into_iter().find(|i| {
                    i.needs_coordinator
                        && i.recovered_at.is_none()
                        && !state.answered.contains(&i.id())
                        && lifted.is_none_or(|t| i.detected > t)
                }) {
                    return Some(i);
                }
            }
            Err(e) => tracing::warn!(host, "incident records not read: {e}"),
        }
    }
    None
}

/// Tells the channels of the runbook's policy what the watch did: the
/// host, the action and the outcome.
async fn alert(policy: &Policy, host: &str, action: &str, outcome: &str, text: &str, good: bool) {
    let title = format!("drp coordinator watch: {host}: {action} {outcome}");
    tracing::warn!("{title}: {text}");
    let message = drp_core::notify::Message {
        host: policy.host.clone(),
        export: format!("watch:{host}"),
        result: if good {
            drp_core::state::RunResult::Ok
        } else {
            drp_core::state::RunResult::Failed
        },
        point: None,
        committed: Vec::new(),
        failed: Vec::new(),
        errors: vec![text.to_string()],
        seconds: 0.0,
        at: Utc::now(),
        title: Some(title),
    };
    for c in drp_core::notify::channels(&policy.notify, &policy.base_dir) {
        if let Err(e) = c.send(&message).await {
            tracing::warn!("the alert was not delivered through {}: {e}", c.name());
        }
    }
}

fn seconds(d: chrono::Duration) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(fall: u32, rise: u32) -> WatchEntry {
        WatchEntry {
            failover: "failover.yaml".into(),
            witnesses: vec!["w".into()],
            check: None,
            interval: Duration::from_secs(1),
            fall,
            rise,
        }
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn witness(reached: bool, detail: &str) -> Witnessed {
        Witnessed {
            witness: "w".into(),
            reached,
            detail: detail.into(),
        }
    }

    #[test]
    fn fall_failures_before_down_and_rise_passes_close_an_open_incident() {
        let w = settings(3, 2);
        let mut st = HostWatch::default();
        assert_eq!(st.observe(&w, false, "down", at(0)), Seen::Wait);
        // A pass in between starts the count again.
        assert_eq!(st.observe(&w, true, "up", at(1)), Seen::Wait);
        assert_eq!(st.observe(&w, false, "down", at(2)), Seen::Wait);
        assert_eq!(st.observe(&w, false, "down", at(3)), Seen::Wait);
        assert_eq!(st.observe(&w, false, "down", at(4)), Seen::Down(at(2)));
        // Asked again only after `fall` more.
        assert_eq!(st.observe(&w, false, "down", at(5)), Seen::Wait);
        st.open("coordinator", "shop-a", at(2), at(4)).stopped = Some("cut".into());
        assert_eq!(st.observe(&w, true, "up", at(6)), Seen::Wait);
        let Seen::Back(i) = st.observe(&w, true, "up", at(7)) else {
            panic!("closed")
        };
        assert_eq!(i.rto_seconds, Some(5.0));
        assert_eq!(
            (i.host.as_str(), i.service.as_str()),
            ("coordinator", "shop-a")
        );
        assert!(st.incident.is_none() && st.failing_since.is_none());
    }

    #[test]
    fn only_witnesses_that_answer_and_do_not_reach_the_host_allow_a_failover() {
        assert_eq!(decide(true, &[]), Decision::AgentAnswers);
        let reaches = witness(true, "connected");
        assert_eq!(
            decide(false, &[witness(false, "refused"), reaches.clone()]),
            Decision::LinkCut(reaches)
        );
        assert_eq!(decide(false, &[]), Decision::NoWitness);
        assert_eq!(
            decide(
                false,
                &[witness(false, drp_coordinator::action::fence::UNANSWERED)]
            ),
            Decision::NoWitness
        );
        assert_eq!(
            decide(false, &[witness(false, "no route to host")]),
            Decision::Failover
        );
    }
}
