//! The measures against the objectives and the run's verdict. The RTO runs
//! from the failure to the end of the last verify step (when every verify
//! step passed); the RPO, from the consistency time of the oldest point
//! restored, and of the newest heartbeat recovered, to the failure (for a
//! failover, which restores no point, from the heartbeat alone).

use chrono::Utc;

use super::record::fail;
use super::recover::Measured;
use crate::engine;
use crate::report::markdown::fmt_secs;
use crate::report::{FailureKind, Report, RpoMeasure, RtoMeasure, Status};
use crate::runbook::Runbook;

/// Measures the RTO and RPO into the report and ends it: failed for the
/// first reason that applies (a step or the injection failed, the service
/// was not recovered, an objective was missed), passed otherwise.
pub(super) fn judge(runbook: &Runbook, report: &mut Report, m: Measured) {
    let rto_goal = runbook.rto.as_secs_f64();
    let rpo_goal = runbook.rpo.as_secs_f64();
    let rto = measure_rto(&m, rto_goal);
    let (rpo, rpo_missed) = measure_rpo(m, rpo_goal);
    let (rto_seconds, rto_met) = (rto.measured_seconds, rto.met);
    let (rpo_seconds, rpo_met) = (rpo.measured_seconds, rpo.met);
    report.rto = Some(rto);
    report.rpo = Some(rpo);
    report.ended_at = Some(Utc::now());
    if let Some(kind) = report.failure_kind {
        // A step or the injection failed: that is the verdict.
        report.status = Status::Failed;
        report.failure_kind = Some(kind);
        return;
    }
    let Some(rto) = rto_seconds else {
        let why = "the service was not recovered: a verify step did not pass".to_string();
        fail(report, FailureKind::NotRecovered, why);
        return;
    };
    let mut missed = Vec::new();
    if !rto_met {
        missed.push(format!(
            "RTO objective missed: recovered after {}, objective {}",
            fmt_secs(rto),
            fmt_secs(rto_goal)
        ));
    }
    let kind = if !rto_met {
        Some(FailureKind::RtoMissed)
    } else if rpo_seconds.is_none() && !rpo_met {
        Some(FailureKind::NothingRestored)
    } else if !rpo_missed.is_empty() {
        Some(FailureKind::RpoMissed)
    } else {
        None
    };
    missed.extend(rpo_missed);
    match kind {
        Some(kind) => fail(report, kind, missed.join("; ")),
        None => report.status = Status::Passed,
    }
}

/// The RTO: from the failure to the end of the last verify step, when every
/// verify step passed; with the time of each phase.
fn measure_rto(m: &Measured, goal: f64) -> RtoMeasure {
    let (rto, phases) = engine::measure_rto(m.t_fail, &m.main);
    RtoMeasure {
        measured_seconds: rto,
        met: rto.is_some_and(|s| s <= goal),
        margin_seconds: rto.map(|s| goal - s),
        phases: phases
            .into_iter()
            .map(|(p, s)| (p.name().to_string(), s))
            .collect(),
    }
}

/// The RPO, and each way its objective is not met, in words. It is met
/// only when a point was restored, its consistency time is within the
/// objective and, when the drill wrote heartbeats, the newest one restored
/// is too. A failover restores no point (the standby already holds the
/// data): its RPO is the newest heartbeat the standby holds. A drill must
/// show an RPO; a recovery that restores nothing has none to show, and is
/// not failed for it.
fn measure_rpo(m: Measured, goal: f64) -> (RpoMeasure, Vec<String>) {
    let points = m
        .restored
        .iter()
        .map(|p| engine::secs(m.t_fail - p.consistency_time))
        .reduce(f64::max);
    let heartbeat = m.newest_heartbeat.map(|t| engine::secs(m.t_fail - t));
    let rpo = points.or(heartbeat);
    let mut missed = Vec::new();
    match (points, heartbeat) {
        (None, None) if m.rpo_required => missed.push(format!(
            "RPO objective not shown: nothing was restored, objective {}",
            fmt_secs(goal)
        )),
        (Some(s), _) if s > goal => missed.push(format!(
            "RPO objective missed: {} of data lost, objective {}",
            fmt_secs(s),
            fmt_secs(goal)
        )),
        _ => {}
    }
    match heartbeat {
        Some(s) if s > goal => missed.push(format!(
            "RPO objective missed: the newest heartbeat restored is {} before the failure, objective {}",
            fmt_secs(s),
            fmt_secs(goal)
        )),
        None if points.is_some() && m.heartbeat_expected => missed.push(
            "RPO objective not shown: no heartbeat written before the failure was found in the restored data"
                .to_string(),
        ),
        _ => {}
    }
    let measure = RpoMeasure {
        measured_seconds: rpo,
        heartbeat_seconds: heartbeat,
        newest_heartbeat: m.newest_heartbeat,
        last_heartbeat_written: m.last_heartbeat_written,
        met: missed.is_empty(),
        margin_seconds: rpo.map(|s| goal - s),
        restored: m.restored,
    };
    (measure, missed)
}
