//! `status`: per export, the last and next run, the exposure against the
//! RPO, upkeep, restore tests, target health and the newest snapshots; per
//! warm standby, its last look's replay lag; per watched service, how the
//! watchdog left it. What it shows is
//! [`HostStatus`], the one assessment every view reads.

use chrono::{DateTime, Utc};
use drp_cli::{Output, Table};
use drp_core::config::Policy;
use drp_core::config::units::{format_bytes, format_duration};
use drp_core::export_status::{ExportRow, HostStatus, StandbyCondition, StandbyRow, WatchRow};
use drp_core::{ExitCode, Result};

/// The status of the host as `status --json` prints it (and `serve` answers).
pub async fn gather(policy: &Policy) -> HostStatus {
    HostStatus::gather(policy, Utc::now()).await
}

pub async fn run(policy_path: &std::path::Path, out: &Output) -> Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    let now = Utc::now();
    let g = HostStatus::gather(&policy, now).await;
    if out.json {
        out.print_json(&serde_json::to_value(&g).expect("status serialises"));
    } else {
        print!("{}", render(&g, now));
    }
    Ok(if g.over_objective() || g.standby_alerting() {
        ExitCode::ObjectivesMissed
    } else {
        ExitCode::Ok
    })
}

fn ago(now: DateTime<Utc>, t: DateTime<Utc>) -> String {
    format!(
        "{} ago",
        format_duration((now - t).to_std().unwrap_or_default())
    )
}

fn secs(s: f64) -> String {
    format_duration(std::time::Duration::from_secs_f64(s.max(0.0)))
}

fn render(g: &HostStatus, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    let mut table = Table::new(&[
        "EXPORT", "LAST RUN", "RESULT", "NEXT RUN", "POINTS", "EXPOSURE", "RPO",
    ]);
    for e in &g.exports {
        let s = &e.status;
        table.row(vec![
            s.export.clone(),
            e.last_attempt
                .map(|t| ago(now, t))
                .unwrap_or_else(|| "never".into()),
            e.last_result.map_or("-", |r| r.name()).to_string(),
            e.next_run
                .map(|t| {
                    format!(
                        "in {}",
                        format_duration((t - now).to_std().unwrap_or_default())
                    )
                })
                .unwrap_or_else(|| "-".into()),
            s.points.values().sum::<usize>().to_string(),
            s.rpo_exposure_seconds
                .map(secs)
                .unwrap_or_else(|| "nothing restorable".into()),
            match (s.within_rpo, s.rpo_objective_seconds) {
                (Some(true), Some(r)) => format!("ok (objective {})", secs(r)),
                (Some(false), Some(r)) => format!("OVER objective {}", secs(r)),
                _ => "no objective".into(),
            },
        ]);
    }
    out += &table.render();
    out += "\n";
    for e in &g.exports {
        if let Some(line) = reach_line(e) {
            out += &line;
        }
        out += &maintenance_line(e, now);
        out += &restore_test_line(e, now);
    }
    for t in &g.targets {
        out += &format!("target `{}`: {}\n", t.target, t.status);
    }
    for v in &g.snapshots {
        match (v.taken_at, &v.change) {
            (Some(at), Some(change)) => {
                out += &format!(
                    "snapshot `{}` ({}): newest {}, for change `{change}`\n",
                    v.snapshot,
                    v.kind,
                    ago(now, at)
                )
            }
            _ => out += &format!("snapshot `{}` ({}): none taken yet\n", v.snapshot, v.kind),
        }
    }
    if !g.standbys.is_empty() {
        out += "\n";
        out += &standbys(&g.standbys, now);
    }
    if !g.watched.is_empty() {
        out += "\n";
        out += &watched(&g.watched, now);
    }
    out
}

/// The services the watchdog checks, as it last left them.
fn watched(rows: &[WatchRow], now: DateTime<Utc>) -> String {
    let mut table = Table::new(&["WATCHED", "CHECK", "CHECKED", "WATCHDOG"]);
    for w in rows {
        table.row(vec![
            w.service.clone(),
            match w.up {
                Some(true) => "up".into(),
                Some(false) => "DOWN".into(),
                None => "-".into(),
            },
            w.checked_at.map_or("never".into(), |t| ago(now, t)),
            match (&w.stopped, w.paused_until, w.incident_open) {
                (Some(why), ..) => format!("stopped: {why} (`watch resume`)"),
                (None, Some(until), _) => format!("paused until {}", until.to_rfc3339()),
                (None, None, true) => "acting on an incident".into(),
                (None, None, false) => "watching".into(),
            },
        ]);
    }
    table.render()
}

/// The warm standbys as their last look saw them, then a line for each
/// one that is down, never looked at or not lately.
fn standbys(rows: &[StandbyRow], now: DateTime<Utc>) -> String {
    let mut table = Table::new(&[
        "STANDBY",
        "OF",
        "STATE",
        "REPLAYED TO",
        "LAG",
        "BEHIND",
        "CHECKED",
    ]);
    let mut notes = String::new();
    for s in rows {
        table.row(vec![
            s.name.clone(),
            format!("{}/{}", s.of_host, s.of_export),
            match (s.condition, &s.into) {
                (StandbyCondition::Restored, Some(into)) => format!("restored into `{into}`"),
                (StandbyCondition::Replaying, _) => "replaying".into(),
                (StandbyCondition::Promoted | StandbyCondition::Restored, _) => "promoted".into(),
                (StandbyCondition::Down, _) => "DOWN".into(),
                (StandbyCondition::NeverChecked, _) => "unknown".into(),
            },
            s.replayed_commit_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                .unwrap_or_else(|| "-".into()),
            match (s.condition, s.lag_seconds) {
                (StandbyCondition::Replaying, Some(l)) if s.alerting => {
                    format!("{} OVER alert {}", secs(l), secs(s.lag_alert_seconds))
                }
                (StandbyCondition::Replaying, Some(l)) => {
                    format!("{} (alert {})", secs(l), secs(s.lag_alert_seconds))
                }
                (StandbyCondition::Restored, Some(l)) => format!("{} (its point's age)", secs(l)),
                _ => "-".into(),
            },
            match s.condition {
                StandbyCondition::Replaying | StandbyCondition::Promoted => {
                    format!("{} segment(s)", s.behind_segments)
                }
                StandbyCondition::Restored
                | StandbyCondition::Down
                | StandbyCondition::NeverChecked => "-".into(),
            },
            match s.checked_at {
                None => "never".into(),
                Some(t) if s.stale => format!("{} — STALE", ago(now, t)),
                Some(t) => ago(now, t),
            },
        ]);
        if let Some(e) = &s.error {
            notes += &format!("standby `{}` is down: {e}\n", s.name);
        }
        if s.stale {
            notes += &format!(
                "standby `{}`: {} — nothing looks at it (the daemon and `run --due` do, \
                 as does `drp-agent standby status`); what is shown may no longer hold\n",
                s.name,
                match s.checked_at {
                    None => "never checked".to_string(),
                    Some(t) => format!("last checked {}", ago(now, t)),
                }
            );
        }
    }
    table.render() + "\n" + &notes
}

/// How far a continuously archived export reaches.
fn reach_line(e: &ExportRow) -> Option<String> {
    use drp_core::export_status::Bound;
    let s = &e.status;
    let what = match s.bound {
        Bound::Point => return None,
        Bound::WalArchive => "its WAL archive",
        Bound::BinlogArchive => "its shipped binary logs",
    };
    Some(match s.recoverable_until {
        Some(t) => format!(
            "{}: restorable up to {} through {what}\n",
            s.export,
            t.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        None => format!(
            "{}: nothing restorable yet through {what} (no base point whose archive is complete)\n",
            s.export
        ),
    })
}

fn maintenance_line(e: &ExportRow, now: DateTime<Utc>) -> String {
    let name = &e.status.export;
    match &e.last_maintenance {
        Some(m) => format!(
            "{name}: after the last scheduled run{}: newest point read back on {}, retention kept {} and deleted {} points, {} orphans removed{}\n",
            m.at.map(|t| format!(" ({})", ago(now, t)))
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
        None => format!(
            "{name}: retention not applied yet (`run --due` and the daemon apply it after each backup; or `prune`)\n"
        ),
    }
}

/// The last restore test, and the restore time predicted for the newest
/// point at the throughput it measured.
fn restore_test_line(e: &ExportRow, now: DateTime<Utc>) -> String {
    let s = &e.status;
    let mut line = match &s.last_restore_test {
        None => format!(
            "{}: never restore-tested (`drp-agent test-restore`){}",
            s.export,
            if s.restore_test_overdue {
                " — OVERDUE"
            } else {
                ""
            }
        ),
        Some(t) => format!(
            "{}: restore test {} {} (point {}, {}/s){}",
            s.export,
            if t.passed { "passed" } else { "FAILED" },
            ago(now, t.at),
            t.point.as_deref().unwrap_or("-"),
            format_bytes(t.restore_bytes_per_second as u64),
            if s.restore_test_overdue {
                " — OVERDUE"
            } else {
                ""
            }
        ),
    };
    if let Some(p) = &s.predicted_restore {
        line += &format!(
            "; restoring the newest point ({}) would take about {}",
            format_bytes(p.raw_bytes),
            secs(p.seconds)
        );
        if let (Some(r), Some(fits)) = (p.rto_seconds, p.fits) {
            line += &format!(
                " — {} the RTO of {}",
                if fits { "within" } else { "OVER" },
                secs(r)
            );
        }
        if let (Some(g), Some(m)) = (p.growth_bytes_per_month, p.months_left) {
            line += &format!(
                "; growing {}/month, it stops fitting in about {m:.0} months",
                format_bytes(g as u64)
            );
        }
    }
    line + "\n"
}
