//! `drp-agent watch`: the host's watchdog. Each service under the policy's
//! `watch:` is checked every `interval` by its runbook check, in a task of
//! its own; what the results mean and which rung comes next is
//! `drp_core::watch`'s, running a check or a rung is here: a restart is the
//! runbook's `restart`, a restore the runbook's `restore_backup` (the one
//! restore sequence), a rollback the newest complete snapshot set taken
//! before the failure began. `pause` and `resume` write the service's
//! state, which every turn reads. The daemon (`drp-agent run`) runs the
//! same watchdog beside its schedule ([`beside`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use drp_cli::Output;
use drp_coordinator::action::{ActionConfig, Context};
use drp_core::config::Policy;
use drp_core::config::watch::{Rung, WatchedService};
use drp_core::records::{RestoredFrom, RungOutcome};
use drp_core::state::{Kept, WatchState};
use drp_core::watch::Next;
use drp_core::{Error, ExitCode, Result};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct WatchArgs {
    #[command(subcommand)]
    pub command: Option<WatchCommand>,
    /// The host's policy (its `watch:` section).
    #[arg(long, short)]
    pub policy: Option<PathBuf>,
    /// Log what would be done; act on nothing, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// One check of every service (and what it asks for), then exit.
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Subcommand)]
pub enum WatchCommand {
    /// No action on a service for a while (a maintenance window).
    Pause {
        #[arg(long, short)]
        policy: PathBuf,
        #[arg(long)]
        service: String,
        #[arg(long = "for", value_parser = drp_cli::parse_duration)]
        duration: Duration,
    },
    /// Act on a service again: ends a pause, or a stop after the ladder or
    /// the flap limit.
    Resume {
        #[arg(long, short)]
        policy: PathBuf,
        #[arg(long)]
        service: String,
    },
}

pub async fn run(args: &WatchArgs, out: &Output) -> Result<ExitCode> {
    match &args.command {
        Some(WatchCommand::Pause {
            policy,
            service,
            duration,
        }) => pause(policy, service, Some(*duration), out),
        Some(WatchCommand::Resume { policy, service }) => pause(policy, service, None, out),
        None => {
            let Some(path) = &args.policy else {
                return Err(Error::Usage(
                    "give the host's policy: `drp-agent watch --policy FILE`".into(),
                ));
            };
            watch(path, args.dry_run, args.once).await
        }
    }
}

/// One watched service, read and checked against the runbook's actions.
struct Watched {
    name: String,
    settings: WatchedService,
    check: ActionConfig,
    /// The ladder's restart and restore rungs as runbook actions (by index).
    actions: Vec<Option<ActionConfig>>,
}

/// Reads every watched service's check and rungs as the runbook reader
/// does; a check that is not a check, or a rung the runbook refuses, is an
/// error naming the service.
fn load(policy: &Policy) -> Result<Vec<Watched>> {
    let mut out = Vec::new();
    for (name, s) in &policy.watch {
        let refuse = |what: String| Error::Usage(format!("watch.{name}: {what}"));
        let check: ActionConfig = serde_json::from_value(s.check.0.clone())
            .map_err(|e| refuse(format!("the check cannot be read: {e}")))?;
        if !matches!(
            check,
            ActionConfig::Http(_)
                | ActionConfig::Tcp(_)
                | ActionConfig::Sql(_)
                | ActionConfig::Command(_)
        ) {
            return Err(refuse(
                "the check must be an http, tcp, sql or command check".into(),
            ));
        }
        check
            .validate(policy)
            .map_err(|e| refuse(format!("the check is refused: {e}")))?;
        let mut actions = Vec::new();
        for rung in &s.ladder {
            let json = match rung {
                Rung::Restart(r) => Some(match (&r.unit, &r.command) {
                    (Some(u), _) => serde_json::json!({"kind": "restart", "unit": u}),
                    (None, c) => serde_json::json!({"kind": "restart", "command": c}),
                }),
                Rung::Restore(r) => Some(serde_json::json!({
                    "kind": "restore_backup",
                    "export": r.export,
                    "point": "before_failure",
                })),
                Rung::Rollback(_) | Rung::Handover(_) => None,
            };
            let action = match json {
                Some(j) => {
                    let a: ActionConfig = serde_json::from_value(j).map_err(|e| {
                        refuse(format!("the {} rung cannot be read: {e}", rung.name()))
                    })?;
                    a.validate(policy)
                        .map_err(|e| refuse(format!("the {} rung is refused: {e}", rung.name())))?;
                    Some(a)
                }
                None => None,
            };
            if matches!(rung, Rung::Rollback(_)) && policy.snapshots.is_empty() {
                return Err(refuse(
                    "the rollback rung needs snapshots declared under `snapshots:`".into(),
                ));
            }
            actions.push(action);
        }
        out.push(Watched {
            name: name.clone(),
            settings: s.clone(),
            check,
            actions,
        });
    }
    Ok(out)
}

async fn watch(path: &Path, dry_run: bool, once: bool) -> Result<ExitCode> {
    let policy = Policy::load(path)?;
    if policy.watch.is_empty() {
        return Err(Error::Usage(format!(
            "{} declares no service under `watch:`",
            path.display()
        )));
    }
    let services = load(&policy)?;
    watch_services(policy, services, dry_run, once).await;
    Ok(ExitCode::Ok)
}

/// The watchdog the daemon (`drp-agent run`) keeps beside its schedule:
/// `None` when the policy watches nothing, an error when a check or a rung
/// cannot be read.
pub(crate) fn beside(policy: &Policy) -> Result<Option<drp_core::runner::Beside>> {
    if policy.watch.is_empty() {
        return Ok(None);
    }
    let services = load(policy)?;
    Ok(Some(Box::pin(watch_services(
        policy.clone(),
        services,
        false,
        false,
    ))))
}

/// Every service in a task of its own, until each is done (`once`) or the
/// future is dropped (which aborts them all).
async fn watch_services(policy: Policy, services: Vec<Watched>, dry_run: bool, once: bool) {
    let mut tasks = tokio::task::JoinSet::new();
    for w in services {
        let policy = policy.clone();
        tasks.spawn(async move {
            // In a dry run nothing is written: the state lives in memory.
            let mut state = WatchState::load(&policy, &w.name);
            loop {
                if !dry_run {
                    state = WatchState::load(&policy, &w.name);
                }
                let before = state.clone();
                turn(&policy, &w, &mut state, dry_run).await;
                if !dry_run {
                    // A `pause` or `resume` written during the turn stands.
                    let disk = WatchState::load(&policy, &w.name);
                    if disk.stopped.is_none() && before.stopped.is_some() {
                        state.resume();
                    }
                    if disk.paused_until != before.paused_until {
                        state.paused_until = disk.paused_until;
                    }
                    if let Err(e) = state.save(&policy, &w.name) {
                        tracing::warn!(service = %w.name, error = %e, "watch state not saved");
                    }
                }
                if once {
                    break;
                }
                tokio::time::sleep(w.settings.interval()).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    if !dry_run && let Err(e) = drp_core::metrics::write_textfile(&policy, Utc::now()) {
        tracing::warn!(error = %e, "metrics textfile not written");
    }
}

/// One check of `w` and what it asks for.
async fn turn(policy: &Policy, w: &Watched, state: &mut WatchState, dry_run: bool) {
    let now = Utc::now();
    let (passed, detail) = check(policy, w, now).await;
    let name = &w.name;
    tracing::info!(service = %name, passed, "{detail}");
    match state.observe(&w.settings, name, &policy.host, passed, &detail, now) {
        Next::Wait => {}
        Next::Recovered(incident) => {
            let rung = incident.rungs.last().map_or("check", |r| r.rung.as_str());
            let text = format!(
                "{name} passes its check again, {:.1} s after its first failed check",
                incident.rto_seconds.unwrap_or(0.0)
            );
            if !dry_run {
                drp_core::watch::save_incident(policy, &incident).await;
                drp_core::watch::alert(policy, name, rung, "recovered", &text).await;
            }
        }
        Next::Stop(why) => {
            // The rung it would have tried (the last, when none is left).
            let ladder = &w.settings.ladder;
            let rung = state
                .incident
                .as_ref()
                .and_then(|i| ladder.get(i.rungs.len()).or(ladder.last()))
                .map_or("ladder", |r| r.name());
            let incident = state.stop(&why);
            tracing::error!(service = %name, "stopped acting: {why}");
            if !dry_run {
                if let Some(i) = &incident {
                    drp_core::watch::save_incident(policy, i).await;
                }
                drp_core::watch::alert(policy, name, rung, "stopped", &why).await;
            }
        }
        Next::Try(index) => {
            let rung = w.settings.ladder[index].name();
            let started = Utc::now();
            let first_failed = state.incident.as_ref().map_or(now, |i| i.first_failed);
            let (outcome, detail, restored) = if dry_run {
                (
                    RungOutcome::Done,
                    format!("would try rung {} ({rung})", index + 1),
                    None,
                )
            } else {
                act(policy, w, index, first_failed).await
            };
            tracing::warn!(service = %name, rung, outcome = outcome.name(), "{detail}");
            state.tried(
                &w.settings,
                index,
                started,
                outcome,
                detail.clone(),
                restored,
                Utc::now(),
            );
            if dry_run {
                return;
            }
            if outcome == RungOutcome::HandedOver {
                let why = "handed over to the coordinator";
                if let Some(i) = state.stop(why) {
                    drp_core::watch::save_incident(policy, &i).await;
                }
            } else if let Some(i) = &state.incident {
                // The record shows the incident while it is being handled.
                drp_core::watch::save_incident(policy, i).await;
            }
            drp_core::watch::alert(policy, name, rung, outcome.name(), &detail).await;
            if let Err(e) = drp_core::metrics::write_textfile(policy, Utc::now()) {
                tracing::warn!(error = %e, "metrics textfile not written");
            }
        }
    }
}

/// Runs the check once, within the interval (at least 2 s).
async fn check(policy: &Policy, w: &Watched, now: DateTime<Utc>) -> (bool, String) {
    let ctx = context(policy, &w.name, now);
    let within = w.settings.interval().max(Duration::from_secs(2));
    match tokio::time::timeout(within, w.check.action().run(&ctx)).await {
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

fn context(policy: &Policy, service: &str, t_fail: DateTime<Utc>) -> Context {
    Context {
        policy: policy.clone(),
        runbook: format!("watch {service}"),
        t_fail,
        restored: Mutex::new(Vec::new()),
        workdir: None,
        fleet: None,
        force: false,
    }
}

/// Tries rung `index` of `w`: its outcome, what it said, and the data it
/// brought back when it restored some.
async fn act(
    policy: &Policy,
    w: &Watched,
    index: usize,
    first_failed: DateTime<Utc>,
) -> (RungOutcome, String, Option<RestoredFrom>) {
    match &w.settings.ladder[index] {
        Rung::Handover(_) => (
            RungOutcome::HandedOver,
            format!(
                "{} asks its coordinator for help: the incident record says so",
                policy.host
            ),
            None,
        ),
        Rung::Rollback(_) => match rollback(policy, first_failed).await {
            Ok((said, restored)) => (RungOutcome::Done, said, Some(restored)),
            Err(e) => (RungOutcome::Failed, e, None),
        },
        Rung::Restart(_) | Rung::Restore(_) => {
            let action = w.actions[index].as_ref().expect("read at load");
            let ctx = context(policy, &w.name, first_failed);
            match action.action().run(&ctx).await {
                Ok(said) => {
                    let restored =
                        ctx.restored
                            .lock()
                            .expect("restored lock")
                            .last()
                            .map(|p| RestoredFrom {
                                kind: "point".into(),
                                of: p.export.clone(),
                                id: p.id.clone(),
                                consistency_time: p.consistency_time,
                            });
                    (RungOutcome::Done, said, restored)
                }
                Err(e) => (RungOutcome::Failed, e.to_string(), None),
            }
        }
    }
}

/// Rolls back the newest complete snapshot set taken before the failure
/// began whose every snapshot the policy still declares.
async fn rollback(
    policy: &Policy,
    first_failed: DateTime<Utc>,
) -> std::result::Result<(String, RestoredFrom), String> {
    let sets = drp_core::snapshot::list(policy)
        .await
        .map_err(|e| e.to_string())?;
    let Some(mut set) = sets.into_iter().rev().find(|s| {
        s.status != drp_core::snapshot::SetStatus::Failed
            && s.created_at < first_failed
            && !s.members.is_empty()
            && s.members
                .iter()
                .all(|m| policy.snapshots.contains_key(&m.name))
    }) else {
        return Err(format!(
            "no complete snapshot set of {} taken before the failure began to roll back to",
            policy.host
        ));
    };
    let results = drp_core::snapshot::rollback(policy, &mut set)
        .await
        .map_err(|e| e.to_string())?;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(n, r)| r.as_ref().err().map(|e| format!("{n}: {e}")))
        .collect();
    if !failed.is_empty() {
        return Err(format!(
            "the rollback to snapshot set {} failed: {}",
            set.id,
            failed.join("; ")
        ));
    }
    Ok((
        format!(
            "rolled back to snapshot set {} of change `{}`",
            set.id, set.change
        ),
        RestoredFrom {
            kind: "snapshot_set".into(),
            of: set.change.clone(),
            id: set.id.clone(),
            consistency_time: set.created_at,
        },
    ))
}

/// `pause` (with a duration) or `resume` (without).
fn pause(path: &Path, service: &str, duration: Option<Duration>, out: &Output) -> Result<ExitCode> {
    let policy = Policy::load(path)?;
    if !policy.watch.contains_key(service) {
        let known: Vec<&str> = policy.watch.keys().map(String::as_str).collect();
        return Err(Error::Usage(format!(
            "`{service}` is not a watched service of {} (watched: {})",
            path.display(),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    let mut state = WatchState::load(&policy, service);
    let said = match duration {
        Some(d) => {
            let until = Utc::now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
            state.paused_until = Some(until);
            format!(
                "{service}: paused until {}",
                until.format("%Y-%m-%d %H:%M:%S UTC")
            )
        }
        None => {
            state.resume();
            format!("{service}: watched and acted on again")
        }
    };
    state.save(&policy, service)?;
    if let Err(e) = drp_core::metrics::write_textfile(&policy, Utc::now()) {
        tracing::warn!(error = %e, "metrics textfile not written");
    }
    if out.json {
        out.print_json(&serde_json::json!({
            "service": service,
            "paused_until": state.paused_until,
            "stopped": state.stopped,
        }));
    } else if !out.quiet {
        println!("{said}");
    }
    Ok(ExitCode::Ok)
}
