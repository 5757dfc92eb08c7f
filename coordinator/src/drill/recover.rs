//! The run itself: the drill's set-up and injection (or the incident's
//! confirmation), the main steps, what they restored, the heartbeat read
//! back and the cleanup.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Options;
use super::heartbeat::{self, HeartbeatWriter};
use crate::action::{ActionConfig, Context, RestoredPoint};
use crate::engine::{self, Observer, StepRecord};
use crate::report::{FailureKind, Report};
use crate::runbook::{Drill, Phase, Runbook};
use drp_core::Result;

/// What the recovery left to judge.
pub(super) struct Measured {
    pub t_fail: DateTime<Utc>,
    /// The main steps, for the RTO.
    pub main: Vec<StepRecord>,
    pub restored: Vec<RestoredPoint>,
    /// Whether a heartbeat was written before the failure and must be found.
    pub heartbeat_expected: bool,
    pub newest_heartbeat: Option<DateTime<Utc>>,
    pub last_heartbeat_written: Option<DateTime<Utc>>,
    /// Whether the run must show an RPO: a drill always does (a drill that
    /// shows none proves nothing of the data), a recovery when its runbook
    /// restores something; one that only moves a service (a fence, a DNS
    /// switch) has none to show.
    pub rpo_required: bool,
}

/// Runs the recovery. Step failures are recorded in the report; an error is
/// returned only when the run cannot go on.
pub(super) async fn recover(
    runbook: &Runbook,
    drill: Option<&Drill>,
    options: &Options,
    fleet: Option<std::sync::Arc<crate::fleet::Fleet>>,
    report: &mut Report,
    observe: Observer<'_>,
) -> Result<Measured> {
    let mut ctx = Context {
        policy: runbook.policy.clone(),
        runbook: runbook.name.clone(),
        t_fail: options.failed_at.unwrap_or(report.started_at),
        restored: Mutex::new(Vec::new()),
        workdir: options.workdir.clone(),
        fleet,
        force: options.force,
    };
    if let Some(fleet) = ctx.fleet.clone() {
        // Every host at once, in the background: a step waits only for its
        // own host's session, the others open meanwhile.
        let hosts = runbook.remote_hosts();
        tokio::spawn(async move { fleet.link_all(&hosts).await });
    }
    let last_written = match drill {
        Some(drill) => inject(runbook, drill, &mut ctx, report, observe).await?,
        None => {
            report.t_fail = Some(ctx.t_fail);
            confirm_first_change(runbook, options)?;
            None
        }
    };
    let main = run_main(runbook, &ctx, report, observe).await;
    let mut restored = ctx.restored.lock().expect("restored lock").clone();
    restored.extend(snapshot_points(runbook, &main).await);
    // A failover to a standby restores nothing on the way: its data is
    // read where the service moved (`read_from`).
    let newest = match &runbook.heartbeat {
        Some(hb) if !restored.is_empty() || hb.read_from.is_some() => {
            read_heartbeat(runbook, hb, report).await
        }
        _ => None,
    };
    report.steps.extend(main.iter().cloned());
    report
        .steps
        .extend(engine::run_all("cleanup", &runbook.cleanup, &ctx, observe).await);
    Ok(Measured {
        t_fail: ctx.t_fail,
        main,
        restored,
        heartbeat_expected: last_written.is_some(),
        newest_heartbeat: newest,
        last_heartbeat_written: last_written,
        rpo_required: drill.is_some()
            || runbook.steps.iter().any(|s| {
                matches!(
                    s.action,
                    ActionConfig::RestoreBackup(_) | ActionConfig::RestoreSnapshot(_)
                )
            }),
    })
}

/// The drill's set-up and its failure: the heartbeat written while a fresh
/// backup is taken (if asked) and the drill settles, then the inject steps,
/// the failure's time being when they start. The time of the last heartbeat
/// written, if any.
async fn inject(
    runbook: &Runbook,
    drill: &Drill,
    ctx: &mut Context,
    report: &mut Report,
    observe: Observer<'_>,
) -> Result<Option<DateTime<Utc>>> {
    let heartbeat = match &runbook.heartbeat {
        Some(hb) => Some(HeartbeatWriter::start(runbook, hb)?),
        None => None,
    };
    if drill.backup_first {
        backup_first(runbook, ctx, report).await?;
    }
    tokio::time::sleep(drill.settle).await;
    let last_written = match heartbeat {
        Some(hb) => hb.stop().await,
        None => None,
    };
    ctx.t_fail = Utc::now();
    report.t_fail = Some(ctx.t_fail);
    let outcome = engine::run_steps("inject", &drill.inject, runbook, ctx, observe).await;
    report.steps.extend(outcome.records);
    if let Some(why) = outcome.aborted {
        report.failure = Some(format!("the failure could not be injected: {why}"));
        report.failure_kind = Some(FailureKind::Injection);
    }
    Ok(last_written)
}

/// The main steps, unless the run already failed (the injection); their records.
async fn run_main(
    runbook: &Runbook,
    ctx: &Context,
    report: &mut Report,
    observe: Observer<'_>,
) -> Vec<StepRecord> {
    if report.failure.is_some() {
        return Vec::new();
    }
    let outcome = engine::run_steps("main", &runbook.steps, runbook, ctx, observe).await;
    if let Some(why) = outcome.aborted {
        report.failure = Some(why.to_string());
        report.failure_kind = Some(FailureKind::StepFailed);
    }
    outcome.records
}

/// The newest heartbeat in the restored data; a note when there is none or
/// it cannot be read.
async fn read_heartbeat(
    runbook: &Runbook,
    hb: &crate::runbook::Heartbeat,
    report: &mut Report,
) -> Option<DateTime<Utc>> {
    match heartbeat::newest(runbook, hb).await {
        Ok(Some(t)) => Some(t),
        Ok(None) => {
            report
                .notes
                .push(format!("no heartbeat found in `{}`", hb.read_export()));
            None
        }
        Err(e) => {
            report.notes.push(format!(
                "heartbeat not read from `{}`: {e}",
                hb.read_export()
            ));
            None
        }
    }
}

/// The snapshot sets that passed rollback steps put back, as restored
/// points: their creation time is what the data is as of.
async fn snapshot_points(runbook: &Runbook, main: &[StepRecord]) -> Vec<RestoredPoint> {
    let mut points = Vec::new();
    for step in &runbook.steps {
        let ActionConfig::RestoreSnapshot(a) = &step.action else {
            continue;
        };
        let passed = main
            .iter()
            .any(|r| r.section == "main" && r.name == step.name && r.passed());
        if !passed {
            continue;
        }
        match drp_core::snapshot::find(&runbook.policy, &a.change).await {
            Ok(set) => points.push(RestoredPoint {
                export: format!("snapshots of change `{}`", a.change),
                id: set.id,
                target: "snapshot set".into(),
                consistency_time: set.created_at,
            }),
            Err(e) => tracing::warn!(change = a.change, error = %e, "snapshot set not read back"),
        }
    }
    points
}

/// A fresh recovery point of every export the steps restore, here and on
/// the hosts that restore theirs.
async fn backup_first(runbook: &Runbook, ctx: &Context, report: &mut Report) -> Result<()> {
    let exports = runbook.restored_exports();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for step in runbook.steps.iter() {
        let (Some(host), Some(fleet), ActionConfig::RestoreBackup(r)) =
            (&step.host, &ctx.fleet, &step.action)
        else {
            continue;
        };
        let backup = crate::fleet::protocol::StepRequest {
            name: format!("drill backup of `{}`", r.export),
            action: serde_json::json!({"kind": "backup", "export": r.export}),
        };
        let done = fleet.run(host, backup, ctx).await.map_err(|e| {
            drp_core::Error::Failed(format!("drill backup of `{}` on `{host}`: {e}", r.export))
        })?;
        report.notes.push(format!(
            "drill backup of `{}` on `{host}`: {done}",
            r.export
        ));
    }
    for e in exports {
        let outcome = drp_core::runner::run_export(
            &runbook.policy,
            &e,
            Duration::from_secs(60),
            Utc::now(),
            drp_core::runner::Upkeep::None,
            drp_core::progress::silent(),
        )
        .await?;
        let r = &outcome.report;
        report.notes.push(format!(
            "drill backup of `{e}`: {} ({} of {} targets)",
            r.id,
            r.committed().count(),
            r.targets.len()
        ));
    }
    Ok(())
}

/// For an incident: asks before the first step that changes anything.
fn confirm_first_change(runbook: &Runbook, options: &Options) -> Result<()> {
    let first_destructive = runbook.steps.iter().find(|s| {
        s.action.action().destructive() || matches!(s.phase, Some(Phase::Restore | Phase::Restart))
    });
    match first_destructive {
        Some(step)
            if !(options.confirm)(&format!(
                "Step `{}` will {}.",
                step.name,
                step.action.action().describe()
            )) =>
        {
            Err(super::not_confirmed(runbook))
        }
        _ => Ok(()),
    }
}
