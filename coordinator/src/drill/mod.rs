//! Running a runbook: for a real incident (`drp run`) or as a drill
//! (`drp drill`: preflight, heartbeat, injected failure, recovery, cleanup),
//! measured against the objectives: the RTO from the failure to the end of
//! the last verify step, the RPO from the consistency time of the oldest
//! point restored, and from the newest heartbeat restored, to the failure.
//!
//! [`execute`] holds the order; each job is its own module: `preflight`
//! (checks before anything is touched), `recover` (set-up, injection, the
//! steps, cleanup), `heartbeat` (the rows that measure the RPO from the
//! data), `judge` (the measures and the verdict) and `record` (the report
//! as it starts and ends).

mod heartbeat;
mod judge;
mod preflight;
mod record;
mod recover;

use chrono::{DateTime, Utc};

use crate::engine::{self, Observer, StepRecord};
use crate::report::{self, Kind, Report, Store};
use crate::runbook::{Drill, Runbook};
use drp_core::Result;

pub use preflight::{Preflight, hosts_ready, preflight};

/// How a run was asked for.
pub struct Options {
    pub kind: Kind,
    /// For an incident: when the failure happened (default: the start of the run).
    pub failed_at: Option<DateTime<Utc>>,
    /// Asked once before the first destructive step (incident) or before the
    /// injection (drill); `true` means go.
    pub confirm: Box<dyn Fn(&str) -> bool + Send + Sync>,
    pub workdir: Option<std::path::PathBuf>,
    /// `--force`: fences without a witness's agreement.
    pub force: bool,
}

/// Runs the runbook and returns its report (stored, or with a note saying where it could not be).
///
/// Once the `running` record is stored, every way out replaces it with a
/// final one: an error before or between the steps is recorded as the
/// failure, then returned.
pub async fn execute(
    runbook: &Runbook,
    options: Options,
    observe: Observer<'_>,
) -> Result<(Report, Vec<String>)> {
    // A drill runs the runbook with its drill records in place of
    // production's names; an incident, as written.
    let drilled = match options.kind {
        Kind::Drill => Some(runbook.for_drill()),
        Kind::Incident => None,
    };
    let runbook = drilled.as_ref().unwrap_or(runbook);
    let drill = drill_of(runbook, options.kind)?;
    let mut report = record::new_report(runbook, options.kind);
    let store = Store::open(&runbook.policy).await;
    let fleet = runbook
        .inventory
        .clone()
        .map(|i| std::sync::Arc::new(crate::fleet::Fleet::new(i)));

    if let Some(drill) = drill {
        if !preflight::passes(runbook, drill.backup_first, fleet.as_deref(), &mut report).await {
            let not_stored = store.save(&report).await;
            return Ok((report, not_stored));
        }
        confirm_injection(runbook, &options)?;
    }
    // Recorded before anything changes: a coordinator killed from here on
    // leaves a `running` record that reports show as interrupted.
    // (Where this first save fails, the final one reports it.)
    let _ = store.save(&report).await;

    match recover::recover(runbook, drill, &options, fleet, &mut report, observe).await {
        Ok(measured) => judge::judge(runbook, &mut report, measured),
        Err(err) => {
            record::stopped(&mut report, &err);
            // The error is what the caller reports; the record only has to
            // stop reading as running.
            let _ = store.save(&report).await;
            return Err(err);
        }
    }
    let not_stored = store.save(&report).await;
    Ok((report, not_stored))
}

/// The drill section for a drill (an error if the runbook has none);
/// `None` for an incident.
fn drill_of(runbook: &Runbook, kind: Kind) -> Result<Option<&Drill>> {
    match (kind, &runbook.drill) {
        (Kind::Incident, _) => Ok(None),
        (Kind::Drill, Some(drill)) => Ok(Some(drill)),
        (Kind::Drill, None) => Err(drp_core::Error::Usage(format!(
            "runbook `{}` has no `drill` section: nothing to inject",
            runbook.name
        ))),
    }
}

/// For a drill: asks before the failure is injected.
fn confirm_injection(runbook: &Runbook, options: &Options) -> Result<()> {
    if (options.confirm)(&format!(
        "Drill `{}` will inject a failure into {} and recover it.",
        runbook.name, runbook.policy.host
    )) {
        Ok(())
    } else {
        Err(not_confirmed(runbook))
    }
}

/// The run was not confirmed: nothing of the runbook's systems was changed.
fn not_confirmed(runbook: &Runbook) -> drp_core::Error {
    drp_core::Error::NotConfirmed {
        destination: format!("the systems of runbook `{}`", runbook.name),
    }
}

/// What a drill says of its drill records, in its plan and its report:
/// one line per name it moves instead of production's.
pub fn drill_record_lines(runbook: &Runbook) -> Vec<String> {
    runbook
        .drill_records()
        .iter()
        .map(|r| format!("drill: {r}, production untouched"))
        .collect()
}

/// Steps of a report, for callers that print them.
pub fn summary_line(r: &StepRecord) -> String {
    format!(
        "{:<8} {:<8} {:<40} {:<9} {:>7}  {}",
        r.section,
        r.phase.map(|p| p.name()).unwrap_or("-"),
        match &r.host {
            Some(h) => format!("{} @{h}", r.name),
            None => r.name.clone(),
        },
        engine::status_word(r.status),
        report::markdown::fmt_secs(r.seconds),
        r.message
    )
}
