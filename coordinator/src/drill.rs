//! Running a runbook: for a real incident (`drp run`) or as a drill
//! (`drp drill`: preflight, heartbeat, injected failure, recovery, cleanup),
//! measured against the objectives as the SPEC defines RTO and RPO.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::action::Context;
use crate::engine::{self, Observer, StepRecord};
use crate::report::{
    self, FailureKind, Kind, Objectives, Report, RpoMeasure, RtoMeasure, Status, Store,
};
use crate::runbook::{Heartbeat, Runbook};
use drp_core::Result;

/// How a run was asked for.
pub struct Options {
    pub kind: Kind,
    /// For an incident: when the failure happened (default: the start of the run).
    pub failed_at: Option<DateTime<Utc>>,
    /// Asked once before the first destructive step (incident) or before the
    /// injection (drill); `true` means go.
    pub confirm: Box<dyn Fn(&str) -> bool + Send + Sync>,
    pub workdir: Option<std::path::PathBuf>,
}

/// A check before anything is touched.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Preflight {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

/// Targets reachable, a recovery point to restore, tools installed.
pub async fn preflight(runbook: &Runbook, backup_first: bool) -> Vec<Preflight> {
    let policy = &runbook.policy;
    let mut out = Vec::new();
    let mut needed: Vec<String> = runbook
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            crate::action::ActionConfig::RestoreBackup(r) => {
                policy.exports.get(&r.export).map(|e| e.targets.clone())
            }
            _ => None,
        })
        .flatten()
        .collect();
    needed.sort();
    needed.dedup();
    // Only the targets a restore reads from must be reachable; the others
    // only keep copies of the report (a failure there is said at the end).
    for (name, opened) in drp_core::backup::open_targets(policy, &needed).await {
        out.push(match opened {
            Ok(_) => Preflight {
                check: format!("target `{name}` reachable"),
                ok: true,
                detail: "ok".into(),
            },
            Err(drp_core::Error::NotFound(m)) => Preflight {
                check: format!("target `{name}` reachable"),
                ok: true,
                detail: m,
            },
            Err(e) => Preflight {
                check: format!("target `{name}` reachable"),
                ok: false,
                detail: e.to_string(),
            },
        });
    }
    let exports = restored_exports(runbook);
    for export in &exports {
        let e = policy.export(export).expect("validated");
        let source = drp_core::source::build(&e.source, &policy.base_dir);
        let tools = tokio::task::spawn_blocking(move || source.check_tools()).await;
        out.push(match tools {
            Ok(Ok(v)) => Preflight {
                check: format!("tools for `{export}`"),
                ok: true,
                detail: if v.is_empty() {
                    "built in".into()
                } else {
                    v.join("; ")
                },
            },
            Ok(Err(err)) => Preflight {
                check: format!("tools for `{export}`"),
                ok: false,
                detail: err.to_string(),
            },
            Err(err) => Preflight {
                check: format!("tools for `{export}`"),
                ok: false,
                detail: err.to_string(),
            },
        });
        if backup_first {
            continue;
        }
        let repos: Vec<_> = drp_core::backup::open_targets(policy, &e.targets)
            .await
            .into_iter()
            .filter_map(|(_, r)| r.ok())
            .collect();
        let found = drp_core::restore::find(
            &repos,
            &policy.host,
            export,
            &drp_core::restore::Selector::Latest,
        )
        .await;
        out.push(match found {
            Ok((repo, m, _)) => Preflight {
                check: format!("recovery point of `{export}`"),
                ok: true,
                detail: format!(
                    "{} on `{}`, consistent at {}",
                    m.id,
                    repo.name(),
                    m.consistency_time.to_rfc3339()
                ),
            },
            Err(err) => Preflight {
                check: format!("recovery point of `{export}`"),
                ok: false,
                detail: err.to_string(),
            },
        });
    }
    out
}

/// Heartbeat rows written into the live database until stopped. Dropping
/// it stops the writer too, so no way out of a run leaves it writing.
struct HeartbeatWriter {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<Option<DateTime<Utc>>>>,
}

impl HeartbeatWriter {
    /// Stops the writer; the time of the last heartbeat it wrote.
    async fn stop(mut self) -> Option<DateTime<Utc>> {
        self.stop.store(true, Ordering::SeqCst);
        let task = self.task.take()?;
        task.await.ok().flatten()
    }
}

impl Drop for HeartbeatWriter {
    fn drop(&mut self) {
        // The writer's thread sees this within its 20 ms poll and ends.
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn heartbeat_sql(kind: &str, table: &str) -> String {
    let id = match kind {
        "postgres" => "id bigserial primary key",
        "mysql" => "id bigint auto_increment primary key",
        _ => "id integer primary key",
    };
    format!("create table if not exists {table} ({id}, beat_at varchar(40) not null)")
}

fn beat_stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn start_heartbeat(runbook: &Runbook, hb: &Heartbeat) -> Result<HeartbeatWriter> {
    let policy = &runbook.policy;
    let export = policy.export(&hb.export)?;
    let source = drp_core::source::build(&export.source, &policy.base_dir);
    source.sql(None, &heartbeat_sql(export.source.kind(), &hb.table))?;
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, table, interval) = (stop.clone(), hb.table.clone(), hb.interval.as_duration());
    let task = tokio::task::spawn_blocking(move || {
        let mut last = None;
        while !flag.load(Ordering::SeqCst) {
            let at = Utc::now();
            match source.sql(
                None,
                &format!(
                    "insert into {table} (beat_at) values ('{}')",
                    beat_stamp(at)
                ),
            ) {
                Ok(_) => last = Some(at),
                Err(e) => tracing::warn!(error = %e, "heartbeat not written"),
            }
            let until = std::time::Instant::now() + interval;
            while std::time::Instant::now() < until && !flag.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        last
    });
    Ok(HeartbeatWriter {
        stop,
        task: Some(task),
    })
}

/// The newest heartbeat in the (restored) database.
async fn newest_heartbeat(
    runbook: &Runbook,
    hb: &Heartbeat,
) -> std::result::Result<Option<DateTime<Utc>>, String> {
    let policy = &runbook.policy;
    let export = policy.export(&hb.export).map_err(|e| e.to_string())?;
    let source = drp_core::source::build(&export.source, &policy.base_dir);
    let sql = format!("select max(beat_at) from {}", hb.table);
    let rows = tokio::task::spawn_blocking(move || source.sql(None, &sql))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let v = rows
        .first()
        .and_then(|r| r.first())
        .cloned()
        .unwrap_or_default();
    if v.is_empty() || v == "NULL" {
        return Ok(None);
    }
    DateTime::parse_from_rfc3339(&v)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|e| format!("heartbeat `{v}`: {e}"))
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
    let drill = runbook
        .drill
        .clone()
        .filter(|_| options.kind == Kind::Drill);
    if options.kind == Kind::Drill && drill.is_none() {
        return Err(drp_core::Error::Usage(format!(
            "runbook `{}` has no `drill` section: nothing to inject",
            runbook.name
        )));
    }
    let mut report = new_report(runbook, options.kind);
    let store = Store::open(&runbook.policy).await;

    if let Some(drill) = &drill {
        let checks = preflight(runbook, drill.backup_first).await;
        let failed: Vec<_> = checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.check, c.detail))
            .collect();
        report.notes.extend(
            checks
                .iter()
                .map(|c| format!("preflight {}: {}", c.check, c.detail)),
        );
        if !failed.is_empty() {
            fail(
                &mut report,
                FailureKind::Preflight,
                format!("preflight failed: {}", failed.join("; ")),
            );
            let not_stored = store.save(&report).await;
            return Ok((report, not_stored));
        }
        if !(options.confirm)(&format!(
            "Drill `{}` will inject a failure into {} and recover it.",
            runbook.name, runbook.policy.host
        )) {
            return Err(drp_core::Error::NotConfirmed {
                destination: format!("the systems of runbook `{}`", runbook.name),
            });
        }
    }
    // Recorded before anything changes: a coordinator killed from here on
    // leaves a `running` record that reports show as interrupted.
    // (Where this first save fails, the final one reports it.)
    let _ = store.save(&report).await;

    match recover(runbook, drill.as_ref(), &options, &mut report, observe).await {
        Ok(measured) => judge(runbook, &mut report, measured),
        Err(err) => {
            let (kind, why) = match &err {
                drp_core::Error::NotConfirmed { .. } => (
                    FailureKind::NotConfirmed,
                    "not confirmed: nothing was changed".to_string(),
                ),
                e => (
                    FailureKind::Setup,
                    format!("the run stopped before its steps: {e}"),
                ),
            };
            fail(&mut report, kind, why);
            // The error is what the caller reports; the record only has to
            // stop reading as running.
            let _ = store.save(&report).await;
            return Err(err);
        }
    }
    let not_stored = store.save(&report).await;
    Ok((report, not_stored))
}

fn new_report(runbook: &Runbook, kind: Kind) -> Report {
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
        notes: Vec::new(),
    }
}

/// Ends the report as failed, for this reason.
fn fail(report: &mut Report, kind: FailureKind, why: String) {
    report.status = Status::Failed;
    report.failure = Some(why);
    report.failure_kind = Some(kind);
    report.ended_at = Some(Utc::now());
}

/// What the recovery left to judge.
struct Measured {
    t_fail: DateTime<Utc>,
    /// The main steps, for the RTO.
    main: Vec<StepRecord>,
    restored: Vec<crate::action::RestoredPoint>,
    /// Whether a heartbeat was written before the failure and must be found.
    heartbeat_expected: bool,
    newest_heartbeat: Option<DateTime<Utc>>,
    last_heartbeat_written: Option<DateTime<Utc>>,
}

/// The drill's set-up and injection (or the incident's confirmation), the
/// steps, the heartbeat reading and the cleanup. Step failures are recorded
/// in the report; an error is returned only when the run cannot go on.
async fn recover(
    runbook: &Runbook,
    drill: Option<&crate::runbook::Drill>,
    options: &Options,
    report: &mut Report,
    observe: Observer<'_>,
) -> Result<Measured> {
    let mut ctx = Context {
        policy: runbook.policy.clone(),
        runbook: runbook.name.clone(),
        t_fail: options.failed_at.unwrap_or(report.started_at),
        restored: Mutex::new(Vec::new()),
        workdir: options.workdir.clone(),
    };
    let mut last_written = None;
    match drill {
        Some(drill) => {
            let heartbeat = match &runbook.heartbeat {
                Some(hb) => Some(start_heartbeat(runbook, hb)?),
                None => None,
            };
            if drill.backup_first {
                backup_first(runbook, report).await?;
            }
            tokio::time::sleep(drill.settle).await;
            if let Some(hb) = heartbeat {
                last_written = hb.stop().await;
            }
            ctx.t_fail = Utc::now();
            report.t_fail = Some(ctx.t_fail);
            let inject = engine::run_steps("inject", &drill.inject, runbook, &ctx, observe).await;
            report.steps.extend(inject.records);
            if let Some(why) = inject.aborted {
                report.failure = Some(format!("the failure could not be injected: {why}"));
                report.failure_kind = Some(FailureKind::Injection);
            }
        }
        None => {
            report.t_fail = Some(ctx.t_fail);
            confirm_first_change(runbook, options)?;
        }
    }

    let mut main = Vec::new();
    if report.failure.is_none() {
        let outcome = engine::run_steps("main", &runbook.steps, runbook, &ctx, observe).await;
        main = outcome.records;
        if let Some(why) = outcome.aborted {
            report.failure = Some(why);
            report.failure_kind = Some(FailureKind::StepFailed);
        }
    }
    let mut restored = ctx.restored.lock().expect("restored lock").clone();
    restored.extend(snapshot_points(runbook, &main).await);
    let mut newest = None;
    if let (Some(hb), true) = (&runbook.heartbeat, !restored.is_empty()) {
        match newest_heartbeat(runbook, hb).await {
            Ok(Some(t)) => newest = Some(t),
            Ok(None) => report
                .notes
                .push("no heartbeat found in the restored data".into()),
            Err(e) => report
                .notes
                .push(format!("heartbeat not read after the restore: {e}")),
        }
    }
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
    })
}

/// The snapshot sets that passed rollback steps put back, as restored
/// points: their creation time is what the data is as of.
async fn snapshot_points(
    runbook: &Runbook,
    main: &[StepRecord],
) -> Vec<crate::action::RestoredPoint> {
    let mut points = Vec::new();
    for step in &runbook.steps {
        let crate::action::ActionConfig::RestoreSnapshot(a) = &step.action else {
            continue;
        };
        let passed = main
            .iter()
            .any(|r| r.section == "main" && r.name == step.name && r.passed());
        if !passed {
            continue;
        }
        match drp_core::snapshot::find(&runbook.policy, &a.change).await {
            Ok(set) => points.push(crate::action::RestoredPoint {
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

/// The exports the runbook's steps restore, each once, in step order.
fn restored_exports(runbook: &Runbook) -> Vec<String> {
    let mut exports: Vec<String> = Vec::new();
    for s in &runbook.steps {
        if let crate::action::ActionConfig::RestoreBackup(r) = &s.action
            && !exports.contains(&r.export)
        {
            exports.push(r.export.clone());
        }
    }
    exports
}

/// A fresh recovery point of every export the steps restore.
async fn backup_first(runbook: &Runbook, report: &mut Report) -> Result<()> {
    let exports = restored_exports(runbook);
    tokio::time::sleep(Duration::from_millis(500)).await;
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
        s.action.action().destructive()
            || matches!(
                s.phase,
                Some(crate::runbook::Phase::Restore | crate::runbook::Phase::Restart)
            )
    });
    match first_destructive {
        Some(step)
            if !(options.confirm)(&format!(
                "Step `{}` will {}.",
                step.name,
                step.action.action().describe()
            )) =>
        {
            Err(drp_core::Error::NotConfirmed {
                destination: format!("the systems of runbook `{}`", runbook.name),
            })
        }
        _ => Ok(()),
    }
}

/// The measures against the objectives, and the verdict. The RPO is met only
/// when a point was restored, its consistency time is within the objective
/// and, when the drill wrote heartbeats, the newest one restored is too.
fn judge(runbook: &Runbook, report: &mut Report, m: Measured) {
    let rto_goal = runbook.rto.as_secs_f64();
    let rpo_goal = runbook.rpo.as_secs_f64();
    let (rto, phases) = engine::measure_rto(m.t_fail, &m.main);
    let rto_met = rto.is_some_and(|s| s <= rto_goal);
    report.rto = Some(RtoMeasure {
        measured_seconds: rto,
        met: rto_met,
        margin_seconds: rto.map(|s| rto_goal - s),
        phases: phases
            .into_iter()
            .map(|(p, s)| (p.name().to_string(), s))
            .collect(),
    });
    let rpo = m
        .restored
        .iter()
        .map(|p| engine::secs(m.t_fail - p.consistency_time))
        .reduce(f64::max);
    let heartbeat = m.newest_heartbeat.map(|t| engine::secs(m.t_fail - t));
    let fmt = report::markdown::fmt_secs;
    // Each way the RPO objective is not met, in words.
    let mut rpo_missed = Vec::new();
    match rpo {
        None => rpo_missed.push(format!(
            "RPO objective not shown: nothing was restored, objective {}",
            fmt(rpo_goal)
        )),
        Some(s) if s > rpo_goal => rpo_missed.push(format!(
            "RPO objective missed: {} of data lost, objective {}",
            fmt(s),
            fmt(rpo_goal)
        )),
        Some(_) => {}
    }
    match heartbeat {
        Some(s) if s > rpo_goal => rpo_missed.push(format!(
            "RPO objective missed: the newest heartbeat restored is {} before the failure, objective {}",
            fmt(s),
            fmt(rpo_goal)
        )),
        None if rpo.is_some() && m.heartbeat_expected => rpo_missed.push(
            "RPO objective not shown: no heartbeat written before the failure was found in the restored data"
                .to_string(),
        ),
        _ => {}
    }
    report.rpo = Some(RpoMeasure {
        measured_seconds: rpo,
        heartbeat_seconds: heartbeat,
        newest_heartbeat: m.newest_heartbeat,
        last_heartbeat_written: m.last_heartbeat_written,
        met: rpo_missed.is_empty(),
        margin_seconds: rpo.map(|s| rpo_goal - s),
        restored: m.restored,
    });
    report.ended_at = Some(Utc::now());
    if let Some(kind) = report.failure_kind {
        // A step or the injection failed: that is the verdict.
        report.status = Status::Failed;
        report.failure_kind = Some(kind);
        return;
    }
    let Some(rto) = rto else {
        let why = "the service was not recovered: a verify step did not pass".to_string();
        fail(report, FailureKind::NotRecovered, why);
        return;
    };
    let mut missed = Vec::new();
    if !rto_met {
        missed.push(format!(
            "RTO objective missed: recovered after {}, objective {}",
            fmt(rto),
            fmt(rto_goal)
        ));
    }
    let kind = if !rto_met {
        Some(FailureKind::RtoMissed)
    } else if rpo.is_none() {
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

fn rand_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u16
}

/// Steps of a report, for callers that print them.
pub fn summary_line(r: &StepRecord) -> String {
    format!(
        "{:<8} {:<8} {:<40} {:<9} {:>7}  {}",
        r.section,
        r.phase.map(|p| p.name()).unwrap_or("-"),
        r.name,
        engine::status_word(r.status),
        report::markdown::fmt_secs(r.seconds),
        r.message
    )
}
