//! The run's report as it is kept: started as `running`, ended as failed
//! for a reason.

use chrono::Utc;

use crate::report::{self, FailureKind, Kind, Objectives, Report, Status};
use crate::runbook::Runbook;

/// A `running` report of the runbook, started now.
pub(super) fn new_report(runbook: &Runbook, kind: Kind) -> Report {
    let started_at = Utc::now();
    Report {
        schema: report::SCHEMA.into(),
        id: format!("{}-{:04x}", started_at.format("%Y%m%dT%H%M%SZ"), rand_u16()),
        kind,
        runbook: runbook.name.clone(),
        runbook_file: runbook.path.display().to_string(),
        host: runbook.policy.host.clone(),
        status: Status::Running,
        started_at,
        t_fail: None,
        ended_at: None,
        objectives: Objectives {
            rto_seconds: runbook.rto.as_secs_f64(),
            rpo_seconds: runbook.rpo.as_secs_f64(),
        },
        rto: None,
        rpo: None,
        steps: Vec::new(),
        failure: None,
        failure_kind: None,
        notes: match kind {
            Kind::Drill => super::drill_record_lines(runbook),
            Kind::Incident => Vec::new(),
        },
        runbook_digest: Some(runbook.digest.clone()),
    }
}

/// Ends the report as failed, for this reason.
pub(super) fn fail(report: &mut Report, kind: FailureKind, why: String) {
    report.status = Status::Failed;
    report.failure = Some(why);
    report.failure_kind = Some(kind);
    report.ended_at = Some(Utc::now());
}

/// Ends the report of a run that stopped before its steps with `err`.
pub(super) fn stopped(report: &mut Report, err: &drp_core::Error) {
    let (kind, why) = match err {
        drp_core::Error::NotConfirmed { .. } => (
            FailureKind::NotConfirmed,
            "not confirmed: nothing was changed".to_string(),
        ),
        e => (
            FailureKind::Setup,
            format!("the run stopped before its steps: {e}"),
        ),
    };
    fail(report, kind, why);
}

fn rand_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u16
}
