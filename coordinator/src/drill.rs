//! Running a runbook: for a real incident (`drp run`) or as a drill
//! (`drp drill`: preflight, heartbeat, injected failure, recovery, cleanup),
//! measured against the objectives as the SPEC defines RTO and RPO.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::action::Context;
use crate::engine::{self, Observer, StepRecord};
use crate::report::{self, Kind, Objectives, Report, RpoMeasure, RtoMeasure, Status, Store};
use crate::runbook::{Heartbeat, Runbook};
use drp_agent::Result;

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
    for (name, opened) in drp_agent::backup::open_targets(policy, &needed, false).await {
        out.push(match opened {
            Ok(_) => Preflight {
                check: format!("target `{name}` reachable"),
                ok: true,
                detail: "ok".into(),
            },
            Err(drp_agent::Error::NotFound(m)) => Preflight {
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
    let mut exports: Vec<String> = runbook
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            crate::action::ActionConfig::RestoreBackup(r) => Some(r.export.clone()),
            _ => None,
        })
        .collect();
    exports.dedup();
    for export in &exports {
        let e = policy.export(export).expect("validated");
        let source = drp_agent::source::build(&e.source, &policy.base_dir);
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
        let repos: Vec<_> = drp_agent::backup::open_targets(policy, &e.targets, false)
            .await
            .into_iter()
            .filter_map(|(_, r)| r.ok())
            .collect();
        let found = drp_agent::restore::find(
            &repos,
            &policy.host,
            export,
            &drp_agent::restore::Selector::Latest,
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

/// Heartbeat rows written into the live database until stopped.
struct HeartbeatWriter {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Option<DateTime<Utc>>>,
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
    let source = drp_agent::source::build(&export.source, &policy.base_dir);
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
    Ok(HeartbeatWriter { stop, task })
}

/// The newest heartbeat in the (restored) database.
async fn newest_heartbeat(
    runbook: &Runbook,
    hb: &Heartbeat,
) -> std::result::Result<Option<DateTime<Utc>>, String> {
    let policy = &runbook.policy;
    let export = policy.export(&hb.export).map_err(|e| e.to_string())?;
    let source = drp_agent::source::build(&export.source, &policy.base_dir);
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
pub async fn execute(
    runbook: &Runbook,
    options: Options,
    observe: Observer<'_>,
) -> Result<(Report, Vec<String>)> {
    let started_at = Utc::now();
    let id = format!("{}-{:04x}", started_at.format("%Y%m%dT%H%M%SZ"), rand_u16());
    let mut report = Report {
        schema: report::SCHEMA.into(),
        id,
        kind: options.kind,
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
        notes: Vec::new(),
    };
    let store = Store::open(&runbook.policy).await;
    let drill = runbook
        .drill
        .clone()
        .filter(|_| options.kind == Kind::Drill);
    if options.kind == Kind::Drill && drill.is_none() {
        return Err(drp_agent::Error::Usage(format!(
            "runbook `{}` has no `drill` section: nothing to inject",
            runbook.name
        )));
    }

    if options.kind == Kind::Drill {
        let checks = preflight(runbook, drill.as_ref().is_some_and(|d| d.backup_first)).await;
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
            report.status = Status::Failed;
            report.failure = Some(format!("preflight failed: {}", failed.join("; ")));
            report.ended_at = Some(Utc::now());
            let not_stored = store.save(&report).await;
            return Ok((report, not_stored));
        }
        if !(options.confirm)(&format!(
            "Drill `{}` will inject a failure into {} and recover it.",
            runbook.name, runbook.policy.host
        )) {
            return Err(drp_agent::Error::NotConfirmed {
                destination: format!("the systems of runbook `{}`", runbook.name),
            });
        }
    }
    // Recorded before anything changes: a coordinator killed from here on
    // leaves a `running` record that reports show as interrupted.
    // (Where this first save fails, the final one reports it.)
    let _ = store.save(&report).await;

    let ctx = Context {
        policy: runbook.policy.clone(),
        runbook: runbook.name.clone(),
        t_fail: options.failed_at.unwrap_or(started_at),
        restored: Mutex::new(Vec::new()),
        workdir: options.workdir.clone(),
    };
    let mut ctx = ctx;

    let mut last_written = None;
    if let Some(drill) = &drill {
        let heartbeat = match &runbook.heartbeat {
            Some(hb) => Some(start_heartbeat(runbook, hb)?),
            None => None,
        };
        if drill.backup_first {
            let mut exports: Vec<String> = runbook
                .steps
                .iter()
                .filter_map(|s| match &s.action {
                    crate::action::ActionConfig::RestoreBackup(r) => Some(r.export.clone()),
                    _ => None,
                })
                .collect();
            exports.dedup();
            tokio::time::sleep(Duration::from_millis(500)).await;
            for e in exports {
                let outcome = drp_agent::runner::run_export(
                    &runbook.policy,
                    &e,
                    Duration::from_secs(60),
                    Utc::now(),
                    drp_agent::progress::silent(),
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
        }
        tokio::time::sleep(drill.settle).await;
        if let Some(hb) = heartbeat {
            hb.stop.store(true, Ordering::SeqCst);
            if let Ok(Some(last)) = hb.task.await {
                last_written = Some(last);
            }
        }
        let t_fail = Utc::now();
        ctx.t_fail = t_fail;
        report.t_fail = Some(t_fail);
        let inject = engine::run_steps("inject", &drill.inject, runbook, &ctx, observe).await;
        report.steps.extend(inject.records);
        if let Some(why) = inject.aborted {
            report.failure = Some(format!("the failure could not be injected: {why}"));
        }
    } else {
        report.t_fail = Some(ctx.t_fail);
        let first_destructive = runbook.steps.iter().find(|s| {
            s.action.action().destructive()
                || matches!(
                    s.phase,
                    Some(crate::runbook::Phase::Restore | crate::runbook::Phase::Restart)
                )
        });
        if let Some(step) = first_destructive
            && !(options.confirm)(&format!(
                "Step `{}` will {}.",
                step.name,
                step.action.action().describe()
            ))
        {
            report.status = Status::Failed;
            report.failure = Some("not confirmed: nothing was changed".into());
            report.ended_at = Some(Utc::now());
            let _ = store.save(&report).await;
            return Err(drp_agent::Error::NotConfirmed {
                destination: format!("the systems of runbook `{}`", runbook.name),
            });
        }
    }

    let mut main = Vec::new();
    if report.failure.is_none() {
        let outcome = engine::run_steps("main", &runbook.steps, runbook, &ctx, observe).await;
        main = outcome.records;
        if let Some(why) = outcome.aborted {
            report.failure = Some(why);
        }
    }
    let t_fail = ctx.t_fail;
    let (rto, phases) = engine::measure_rto(t_fail, &main);
    let restored = ctx.restored.lock().expect("restored lock").clone();
    let mut heartbeat_seconds = None;
    let mut newest = None;
    if let (Some(hb), true) = (&runbook.heartbeat, !restored.is_empty()) {
        match newest_heartbeat(runbook, hb).await {
            Ok(Some(t)) => {
                newest = Some(t);
                heartbeat_seconds = Some(engine::secs(t_fail - t));
            }
            Ok(None) => report
                .notes
                .push("no heartbeat found in the restored data".into()),
            Err(e) => report
                .notes
                .push(format!("heartbeat not read after the restore: {e}")),
        }
    }
    report.steps.extend(main);
    report
        .steps
        .extend(engine::run_all("cleanup", &runbook.cleanup, &ctx, observe).await);

    let rto_goal = runbook.rto.as_secs_f64();
    let rpo_goal = runbook.rpo.as_secs_f64();
    report.rto = Some(RtoMeasure {
        measured_seconds: rto,
        met: rto.is_some_and(|m| m <= rto_goal),
        margin_seconds: rto.map(|m| rto_goal - m),
        phases: phases
            .into_iter()
            .map(|(p, s)| (p.name().to_string(), s))
            .collect(),
    });
    let rpo = restored
        .iter()
        .map(|p| engine::secs(t_fail - p.consistency_time))
        .reduce(f64::max);
    report.rpo = Some(RpoMeasure {
        measured_seconds: rpo,
        heartbeat_seconds,
        newest_heartbeat: newest,
        last_heartbeat_written: last_written,
        met: rpo.is_none_or(|m| m <= rpo_goal),
        margin_seconds: rpo.map(|m| rpo_goal - m),
        restored,
    });
    report.ended_at = Some(Utc::now());
    let rto_m = report.rto.as_ref().expect("set");
    let rpo_m = report.rpo.as_ref().expect("set");
    if report.failure.is_none() {
        if rto.is_none() {
            report.failure =
                Some("the service was not recovered: a verify step did not pass".into());
        } else if !rto_m.met {
            report.failure = Some(format!(
                "RTO objective missed: recovered after {}, objective {}",
                report::markdown::fmt_secs(rto.unwrap_or_default()),
                report::markdown::fmt_secs(rto_goal)
            ));
        } else if !rpo_m.met {
            report.failure = Some(format!(
                "RPO objective missed: {} of data lost, objective {}",
                report::markdown::fmt_secs(rpo.unwrap_or_default()),
                report::markdown::fmt_secs(rpo_goal)
            ));
        }
    }
    report.status = if report.failure.is_none() {
        Status::Passed
    } else {
        Status::Failed
    };
    let not_stored = store.save(&report).await;
    Ok((report, not_stored))
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
