//! `drp report`: compliance over a period, from the stored history — each
//! drill with its verdict and margins, the trend, runbooks not drilled (or
//! changed since their last drill, or overdue), and each export's live RPO
//! exposure, and the host watchdog's incidents. This file gathers and
//! measures; `incidents.rs` reads and judges the incidents, `render.rs`
//! writes Markdown and the HTML page, `charts.rs` the drills' SVG charts.

mod charts;
mod incidents;
mod render;

pub use incidents::{IncidentOutcome, IncidentSeen, gather_hosts as host_incidents};
pub use render::{html, markdown, page};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use drp_core::export_status::ExportStatus;
use serde::Serialize;

use crate::report::{Kind, Report, Store};
use drp_core::config::Policy;
use drp_core::{Error, Result};

/// A period: `--since 90d` or `--quarter 2026Q4`.
pub fn period(
    since: Option<&str>,
    quarter: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, DateTime<Utc>, String)> {
    if let Some(q) = quarter {
        let bad = || Error::Usage(format!("invalid quarter `{q}`: write it like 2026Q4"));
        let (y, n) = q.split_once(['Q', 'q']).ok_or_else(bad)?;
        let (y, n): (i32, u32) = (y.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
        if !(1..=4).contains(&n) {
            return Err(bad());
        }
        let start = NaiveDate::from_ymd_opt(y, (n - 1) * 3 + 1, 1).ok_or_else(bad)?;
        let end = if n == 4 {
            NaiveDate::from_ymd_opt(y + 1, 1, 1)
        } else {
            NaiveDate::from_ymd_opt(y, n * 3 + 1, 1)
        }
        .ok_or_else(bad)?;
        let at = |d: NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"));
        return Ok((at(start), at(end), format!("{y}Q{n}")));
    }
    let since = since.unwrap_or("90d");
    let d = drp_core::config::HumanDuration::parse(since).map_err(Error::Usage)?;
    let start = now
        - chrono::Duration::from_std(d.as_duration()).map_err(|e| Error::Usage(e.to_string()))?;
    Ok((start, now, format!("last {since}")))
}

#[derive(Debug, Serialize)]
pub struct RunbookSummary {
    pub runbook: String,
    pub drills: usize,
    pub passed: usize,
    pub failed: usize,
    pub interrupted: usize,
    pub best_rto_seconds: Option<f64>,
    pub worst_rto_seconds: Option<f64>,
    pub worst_rpo_seconds: Option<f64>,
    /// `improving`, `worsening`, `stable` (RTO of the first and last drills
    /// of the period, ±10 %), or `single drill`.
    pub trend: String,
}

#[derive(Debug, Serialize)]
pub struct Compliance {
    pub host: String,
    /// The policy's zone, for the times shown.
    #[serde(skip)]
    pub timezone: chrono_tz::Tz,
    pub period: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub drills: Vec<Report>,
    pub runbooks: Vec<RunbookSummary>,
    pub not_drilled: Vec<String>,
    /// Runbooks whose last passed drill ran another version of them (the
    /// runbook, its policy or its inventory changed since): that pass
    /// proves nothing of the runbook as it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_since_drill: Vec<String>,
    /// Runbooks past their `drill.every` since their last passed drill, in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overdue: Vec<String>,
    /// Each export where it stands now, with the newest drill of the
    /// period that restored it.
    pub exposure: Vec<ExportStatus>,
    /// With an inventory: every host's exports as its agent reports them
    /// (`drp status --inventory` rows), unreachable hosts included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fleet: Vec<crate::fleet::status::FleetRow>,
    /// The incidents of the period, oldest first: the policy host's (its
    /// watchdog's, or a coordinator's watch), and with an inventory every
    /// host's.
    pub incidents: Vec<IncidentSeen>,
}

impl Compliance {
    /// An incident that did not recover or missed its RTO: the objectives
    /// are missed, as with a failed drill.
    pub fn incidents_missed(&self) -> bool {
        self.incidents.iter().any(IncidentSeen::missed)
    }
}

fn trend(rtos: &[f64]) -> String {
    match rtos {
        [] => "no completed drill".into(),
        [_] => "single drill".into(),
        [first, .., last] => {
            if *last < first * 0.9 {
                "improving".into()
            } else if *last > first * 1.1 {
                "worsening".into()
            } else {
                "stable".into()
            }
        }
    }
}

pub async fn build(
    policy: &Policy,
    runbooks_dir: Option<&Path>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    label: String,
) -> Result<Compliance> {
    let store = Store::open(policy).await;
    if store.repos.is_empty() {
        return Err(Error::Failed(format!(
            "no report store reachable: {}",
            store.unreachable.join("; ")
        )));
    }
    let every_drill: Vec<Report> = store
        .load_all()
        .await?
        .into_iter()
        .filter(|r| r.kind == Kind::Drill && r.host == policy.host)
        .collect();
    let drills: Vec<Report> = every_drill
        .iter()
        .filter(|r| r.started_at >= from && r.started_at < to)
        .cloned()
        .collect();
    let mut by_runbook: BTreeMap<String, Vec<&Report>> = BTreeMap::new();
    for r in &drills {
        by_runbook.entry(r.runbook.clone()).or_default().push(r);
    }
    let runbooks = by_runbook
        .iter()
        .map(|(name, rs)| {
            let rtos: Vec<f64> = rs
                .iter()
                .filter_map(|r| r.rto.as_ref().and_then(|x| x.measured_seconds))
                .collect();
            RunbookSummary {
                runbook: name.clone(),
                drills: rs.len(),
                passed: rs.iter().filter(|r| r.shown_status() == "passed").count(),
                failed: rs.iter().filter(|r| r.shown_status() == "failed").count(),
                interrupted: rs
                    .iter()
                    .filter(|r| r.shown_status() == "interrupted")
                    .count(),
                best_rto_seconds: rtos.iter().copied().reduce(f64::min),
                worst_rto_seconds: rtos.iter().copied().reduce(f64::max),
                worst_rpo_seconds: rs
                    .iter()
                    .filter_map(|r| r.rpo.as_ref().and_then(|x| x.measured_seconds))
                    .reduce(f64::max),
                trend: trend(&rtos),
            }
        })
        .collect();
    let (mut not_drilled, mut changed_since_drill, mut overdue) =
        (Vec::new(), Vec::new(), Vec::new());
    if let Some(dir) = runbooks_dir {
        for file in runbook_files(dir)? {
            let Ok(rb) = crate::runbook::Runbook::load(&file) else {
                continue;
            };
            if rb.policy.host != policy.host {
                continue;
            }
            if !by_runbook.contains_key(&rb.name) {
                not_drilled.push(rb.name.clone());
            }
            let last_pass =
                crate::report::last_passed_drill(&every_drill, &rb.name, &policy.host, to);
            if last_pass.is_some_and(|r| r.ran_another_version(&rb.digest)) {
                changed_since_drill.push(rb.name.clone());
            }
            if let Some(every) = rb.drill.as_ref().and_then(|d| d.every)
                && crate::report::next_drill(last_pass, every).is_none_or(|due| due < to)
            {
                overdue.push(format!(
                    "{} (every {}; last passed {})",
                    rb.name,
                    drp_core::config::units::format_duration(every),
                    last_pass
                        .map(|r| r.started_at.format("%Y-%m-%d").to_string())
                        .unwrap_or_else(|| "never".into())
                ));
            }
        }
    }
    let now = Utc::now();
    let mut exposure = Vec::new();
    for e in policy.exports.values() {
        let mut status = ExportStatus::gather(policy, e, now).await;
        status.last_drill = crate::fleet::status::last_drill(&drills, &policy.host, &e.name);
        exposure.push(status);
    }
    Ok(Compliance {
        host: policy.host.clone(),
        timezone: policy.timezone,
        period: label,
        from,
        to,
        drills,
        runbooks,
        not_drilled,
        changed_since_drill,
        overdue,
        exposure,
        fleet: Vec::new(),
        incidents: incidents::gather(policy, from, to).await,
    })
}

pub fn runbook_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io_path("cannot read", dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    v.sort();
    Ok(v)
}
