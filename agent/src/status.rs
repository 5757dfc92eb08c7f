//! `status`: per export, the last and next run, the exposure against the
//! RPO, upkeep, target health and the newest snapshots.

use chrono::{DateTime, Utc};
use drp_cli::{Output, Table};
use drp_core::config::Policy;
use drp_core::config::units::format_duration;
use drp_core::repository::Repository;
use drp_core::{Error, ExitCode, Result, runner, state};

/// What `status` reports of one host: its exports against the RPO, its
/// targets, restore tests and snapshots.
struct Gathered<'a> {
    policy: &'a Policy,
    now: DateTime<Utc>,
    rpo: Option<std::time::Duration>,
    rows: Vec<Row<'a>>,
    health: Vec<(String, String)>,
    tests: Vec<serde_json::Value>,
    over: bool,
}

/// One export: its state, exposure, whether within the RPO, and for an
/// archived cluster how far its WAL archive reaches.
struct Row<'a> {
    export: &'a drp_core::config::Export,
    st: state::ExportState,
    exposure: Option<std::time::Duration>,
    within: Option<bool>,
    recoverable_until: Option<DateTime<Utc>>,
}

async fn gather(policy: &Policy) -> Gathered<'_> {
    let now = Utc::now();
    let rpo = policy.objectives.rpo.map(|d| d.as_duration());
    let mut rows = Vec::new();
    let mut health = Vec::new();
    for (name, config) in &policy.targets {
        let status = match Repository::open(name, config, &policy.base_dir).await {
            Ok(_) => "ok".to_string(),
            Err(Error::NotFound(_)) => {
                "no repository (not initialised, or the share is not mounted)".to_string()
            }
            Err(e) => format!("unreachable: {e}"),
        };
        health.push((name.clone(), status));
    }
    let mut over = false;
    for e in policy.exports.values() {
        let mut st = state::load(&policy.state_dir, &policy.host, &e.name);
        runner::refresh_points(policy, &e.name, &mut st).await;
        // An archived cluster's loss is bounded by its WAL, not its base backups.
        let archived = e.source.archives_continuously().then(|| {
            drp_core::wal::run::ArchiveState::load(&policy.state_dir, &e.name).recoverable_until
        });
        let newest = match archived {
            Some(until) => until,
            None => st.newest_consistency,
        };
        let exposure = newest.map(|t| (now - t).to_std().unwrap_or_default());
        let within = match (exposure, rpo) {
            (Some(x), Some(r)) => Some(x <= r),
            (None, Some(_)) => Some(false),
            _ => None,
        };
        if within == Some(false) {
            over = true;
        }
        rows.push(Row {
            export: e,
            st,
            exposure,
            within,
            recoverable_until: archived.flatten(),
        });
    }
    let tests = restore_tests(policy, now).await;
    Gathered {
        policy,
        now,
        rpo,
        rows,
        health,
        tests,
        over,
    }
}

/// The status of the host as `status --json` prints it (and `serve` answers).
pub async fn json(policy: &Policy) -> serde_json::Value {
    to_json(&gather(policy).await)
}

fn to_json(g: &Gathered) -> serde_json::Value {
    let Gathered {
        policy,
        now,
        rpo,
        rows,
        health,
        tests,
        ..
    } = g;
    let (now, rpo) = (*now, *rpo);
    serde_json::json!({
        "host": policy.host,
        "rpo_objective_seconds": rpo.map(|r| r.as_secs()),
        "exports": rows.iter().map(|Row { export: e, st, exposure, within, recoverable_until }| serde_json::json!({
            "export": e.name, "schedule": e.schedule.expression,
            "last_attempt": st.last_attempt, "last_result": st.last_result, "last_error": st.last_error,
            "last_success": st.last_success, "next_run": e.schedule.next(now),
            "points": st.points, "newest_consistency": st.newest_consistency,
            "rpo_exposure_seconds": exposure.map(|x| x.as_secs()), "within_rpo": within,
            "recoverable_until": recoverable_until,
            "last_maintenance": st.last_maintenance,
        })).collect::<Vec<_>>(),
        "targets": health.iter().map(|(n, s)| serde_json::json!({"target": n, "status": s})).collect::<Vec<_>>(),
        "snapshots": snapshots_status(&policy, now),
        "restore_tests": tests,
    })
}

pub async fn run(policy_path: &std::path::Path, out: &Output) -> Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    let g = gather(&policy).await;
    if out.json {
        out.print_json(&to_json(&g));
    } else {
        let Gathered {
            now,
            rpo,
            rows,
            health,
            tests,
            ..
        } = &g;
        let (now, rpo) = (*now, *rpo);
        let mut table = Table::new(&[
            "EXPORT", "LAST RUN", "RESULT", "NEXT RUN", "POINTS", "EXPOSURE", "RPO",
        ]);
        for Row {
            export: e,
            st,
            exposure,
            within,
            ..
        } in rows.iter()
        {
            let ago = |t: Option<DateTime<Utc>>| {
                t.map(|t| {
                    format!(
                        "{} ago",
                        format_duration((now - t).to_std().unwrap_or_default())
                    )
                })
                .unwrap_or_else(|| "never".into())
            };
            table.row(vec![
                e.name.clone(),
                ago(st.last_attempt),
                st.last_result.map_or("-", |r| r.name()).to_string(),
                e.schedule
                    .next(now)
                    .map(|t| {
                        format!(
                            "in {}",
                            format_duration((t - now).to_std().unwrap_or_default())
                        )
                    })
                    .unwrap_or_else(|| "-".into()),
                st.points.values().sum::<usize>().to_string(),
                exposure
                    .map(format_duration)
                    .unwrap_or_else(|| "no point".into()),
                match (within, rpo) {
                    (Some(true), Some(r)) => format!("ok (objective {})", format_duration(r)),
                    (Some(false), Some(r)) => format!("OVER objective {}", format_duration(r)),
                    _ => "no objective".into(),
                },
            ]);
        }
        println!("{}", table.render());
        for Row { export: e, st, .. } in rows.iter() {
            match &st.last_maintenance {
                Some(m) => println!(
                    "{}: after the last scheduled run{}: newest point read back on {}, retention kept {} and deleted {} points, {} orphans removed{}",
                    e.name,
                    m.at.map(|t| format!(
                        " ({} ago)",
                        format_duration((now - t).to_std().unwrap_or_default())
                    ))
                    .unwrap_or_default(),
                    if m.verified.is_empty() {
                        "no target".to_string()
                    } else {
                        m.verified.join(", ")
                    },
                    m.kept,
                    m.deleted,
                    m.orphans_removed,
                    if m.errors.is_empty() {
                        String::new()
                    } else {
                        format!("; problems: {}", m.errors.join("; "))
                    }
                ),
                None => println!(
                    "{}: retention not applied yet (`run --due` and the daemon apply it after each backup; or `prune`)",
                    e.name
                ),
            }
        }
        for t in tests.iter() {
            println!("{}", t["line"].as_str().unwrap_or_default());
        }
        for (n, s) in health.iter() {
            println!("target `{n}`: {s}");
        }
        for v in snapshots_status(&policy, now) {
            match v["taken_at"].as_str() {
                Some(_) => println!(
                    "snapshot `{}` ({}): newest {} ago, for change `{}`",
                    v["snapshot"].as_str().unwrap_or_default(),
                    v["kind"].as_str().unwrap_or_default(),
                    format_duration(std::time::Duration::from_secs(
                        v["age_seconds"].as_u64().unwrap_or(0)
                    )),
                    v["change"].as_str().unwrap_or_default()
                ),
                None => {
                    println!(
                        "snapshot `{}` ({}): none taken yet",
                        v["snapshot"].as_str().unwrap_or_default(),
                        v["kind"].as_str().unwrap_or_default()
                    )
                }
            }
        }
    }
    Ok(if g.over {
        ExitCode::ObjectivesMissed
    } else {
        ExitCode::Ok
    })
}

/// The newest snapshot of every declared snapshot, as recorded by this host.
fn snapshots_status(policy: &Policy, now: DateTime<Utc>) -> Vec<serde_json::Value> {
    let newest = drp_core::state::newest(policy);
    policy
        .snapshots
        .iter()
        .map(|(name, config)| match newest.by_name.get(name) {
            Some(n) => serde_json::json!({
                "snapshot": name, "kind": config.kind(), "set": n.set, "change": n.change,
                "taken_at": n.taken_at, "age_seconds": (now - n.taken_at).num_seconds().max(0),
            }),
            None => serde_json::json!({"snapshot": name, "kind": config.kind(), "taken_at": null}),
        })
        .collect()
}

/// Per export: the last restore test on this host, whether one is overdue
/// (never, or older than twice its schedule), and the restore time
/// predicted for the newest point at the throughput that test measured.
async fn restore_tests(policy: &Policy, now: DateTime<Utc>) -> Vec<serde_json::Value> {
    use drp_core::config::units::format_bytes;
    use drp_core::restore_test::{LastTest, predict};
    let rto = policy.objectives.rto.map(|d| d.as_duration());
    let mut out = Vec::new();
    for e in policy.exports.values() {
        let last = LastTest::load(&policy.state_dir, &e.name);
        let every = e.restore_test.as_ref().map(|c| c.every.as_duration());
        let overdue = match (last.at, every) {
            (None, _) => true,
            (Some(at), Some(every)) => {
                now - at > chrono::Duration::from_std(every * 2).unwrap_or(chrono::Duration::MAX)
            }
            (Some(_), None) => false,
        };
        let (repos, _) = drp_core::backup::open_reachable(policy, &e.targets).await;
        let mut points = Vec::new();
        if let Some(repo) = repos.first()
            && let Ok(listing) = repo.list(&policy.host, &e.name).await
        {
            points = listing.points;
        }
        let prediction = predict(&last, &points, rto);
        let mut line = match last.at {
            None => format!(
                "{}: never restore-tested (`drp-agent test-restore`)",
                e.name
            ),
            Some(at) => format!(
                "{}: restore test {} {} ago (point {}, {}/s){}",
                e.name,
                if last.passed { "passed" } else { "FAILED" },
                format_duration((now - at).to_std().unwrap_or_default()),
                last.point.as_deref().unwrap_or("-"),
                format_bytes(last.restore_bytes_per_second as u64),
                if overdue { " — OVERDUE" } else { "" }
            ),
        };
        if let Some(p) = &prediction {
            line += &format!(
                "; restoring the newest point ({}) would take about {}",
                format_bytes(p.raw_bytes),
                format_duration(std::time::Duration::from_secs_f64(p.seconds))
            );
            if let (Some(r), Some(fits)) = (rto, p.fits) {
                line += &format!(
                    " — {} the RTO of {}",
                    if fits { "within" } else { "OVER" },
                    format_duration(r)
                );
            }
            if let (Some(g), Some(m)) = (p.growth_bytes_per_month, p.months_left) {
                line += &format!(
                    "; growing {}/month, it stops fitting in about {m:.0} months",
                    format_bytes(g as u64)
                );
            }
        }
        out.push(serde_json::json!({
            "export": e.name, "last": last, "overdue": overdue,
            "predicted_restore": prediction, "line": line,
        }));
    }
    out
}
