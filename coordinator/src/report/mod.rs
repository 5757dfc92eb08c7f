//! Reports of runs and drills: a stable JSON record (stored in the
//! repositories of the policy's targets, so the history survives the loss of
//! any host), rendered as Markdown, a self-contained HTML page with a
//! timeline, and JUnit XML for CI.

pub mod html;
pub mod junit;
pub mod markdown;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::action::RestoredPoint;
use crate::engine::StepRecord;
use drp_core::repository::Repository;
use drp_core::{Error, ExitCode};

pub const SCHEMA: &str = "drp.run-report/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A failure injected on purpose.
    Drill,
    /// A real incident, run by the on-call engineer.
    Incident,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Started and not finished: if nothing is running, it was interrupted.
    Running,
    Passed,
    Failed,
}

/// Why a run did not pass. Decided once, when the run ends; the exit code
/// follows from it (see [`Report::exit_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// A check before the drill failed: nothing was touched.
    Preflight,
    /// A destructive step was not confirmed: nothing was changed.
    NotConfirmed,
    /// The run stopped before its steps (heartbeat, fresh backup).
    Setup,
    /// The drill's failure could not be injected.
    Injection,
    /// A step failed and the procedure stopped.
    StepFailed,
    /// Every step ran but a verify step did not pass (or there is none).
    NotRecovered,
    /// Recovered, later than the RTO objective (the RPO may be missed too).
    RtoMissed,
    /// Recovered in time, with more data lost than the RPO objective allows.
    RpoMissed,
    /// Recovered in time, but no recovery point was restored: the RPO
    /// objective was not shown to be met.
    NothingRestored,
}

impl FailureKind {
    /// The objectives were missed, as opposed to the run failing.
    pub fn objective_missed(self) -> bool {
        match self {
            FailureKind::RtoMissed | FailureKind::RpoMissed | FailureKind::NothingRestored => true,
            FailureKind::Preflight
            | FailureKind::NotConfirmed
            | FailureKind::Setup
            | FailureKind::Injection
            | FailureKind::StepFailed
            | FailureKind::NotRecovered => false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Objectives {
    pub rto_seconds: f64,
    pub rpo_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RtoMeasure {
    /// From the failure to the last passed verify step; `None` when the
    /// service was not recovered.
    pub measured_seconds: Option<f64>,
    pub met: bool,
    /// Objective minus measured (negative: missed by that much).
    pub margin_seconds: Option<f64>,
    /// Consecutive segments: detect, restore, restart, verify.
    pub phases: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RpoMeasure {
    /// Failure time minus the consistency time of the restored point (the
    /// oldest, when several were restored); `None` when nothing was restored.
    pub measured_seconds: Option<f64>,
    /// Failure time minus the newest heartbeat found after the restore.
    pub heartbeat_seconds: Option<f64>,
    pub newest_heartbeat: Option<DateTime<Utc>>,
    /// The last heartbeat the drill wrote before the failure.
    pub last_heartbeat_written: Option<DateTime<Utc>>,
    pub met: bool,
    pub margin_seconds: Option<f64>,
    pub restored: Vec<RestoredPoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub schema: String,
    pub id: String,
    pub kind: Kind,
    pub runbook: String,
    pub runbook_file: String,
    pub host: String,
    pub status: Status,
    pub started_at: DateTime<Utc>,
    pub t_fail: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub objectives: Objectives,
    pub rto: Option<RtoMeasure>,
    pub rpo: Option<RpoMeasure>,
    pub steps: Vec<StepRecord>,
    /// Why it failed: the step and its message, or the missed objective.
    pub failure: Option<String>,
    /// What kind of failure `failure` describes; `None` while running, on a
    /// pass, and in records written before kinds were recorded.
    #[serde(default)]
    pub failure_kind: Option<FailureKind>,
    pub notes: Vec<String>,
    /// The digest of the runbook (and the policy and inventory it names)
    /// that ran; absent in records written before it was kept.
    #[serde(default)]
    pub runbook_digest: Option<String>,
}

/// The newest passed drill of `runbook` on `host` among `reports`,
/// started before `before`: what proves the runbook, if its version is the
/// one that ran (see [`Report::ran_another_version`]).
pub fn last_passed_drill<'a>(
    reports: impl IntoIterator<Item = &'a Report>,
    runbook: &str,
    host: &str,
    before: DateTime<Utc>,
) -> Option<&'a Report> {
    reports
        .into_iter()
        .filter(|r| {
            r.kind == Kind::Drill
                && r.runbook == runbook
                && r.host == host
                && r.passed()
                && r.started_at < before
        })
        .max_by_key(|r| r.started_at)
}

/// When a runbook drilled every `every` falls due: `every` after its last
/// passed drill; `None` when it never passed one (due at once). What
/// `drp report` calls overdue and what `drp drill --due` runs.
pub fn next_drill(last_pass: Option<&Report>, every: std::time::Duration) -> Option<DateTime<Utc>> {
    last_pass.map(|r| {
        chrono::Duration::from_std(every)
            .ok()
            .and_then(|d| r.started_at.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    })
}

/// Whether a drill of a runbook is due at some instant, by its
/// `drill.every` (see [`drill_due`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum DrillDue {
    /// No `drill.every`: drilled only when someone runs it.
    Unscheduled,
    /// It never passed a drill.
    NeverPassed,
    /// Its last passed drill ran another version of it: that pass proves
    /// nothing of the runbook as it is.
    Changed { last_passed: DateTime<Utc> },
    /// `every` has gone by since its last passed drill.
    Overdue {
        last_passed: DateTime<Utc>,
        since: DateTime<Utc>,
    },
    /// Its last passed drill still counts until `next`.
    NotDue {
        last_passed: DateTime<Utc>,
        next: DateTime<Utc>,
    },
}

impl DrillDue {
    pub fn is_due(self) -> bool {
        matches!(
            self,
            DrillDue::NeverPassed | DrillDue::Changed { .. } | DrillDue::Overdue { .. }
        )
    }
}

/// Whether `runbook` is due for a drill at `now`, from `reports` (its
/// policy's stored reports): never passed, changed since its last passed
/// drill, or `drill.every` gone by since; never when it has no `every`.
pub fn drill_due(
    reports: &[Report],
    runbook: &crate::runbook::Runbook,
    now: DateTime<Utc>,
) -> DrillDue {
    let Some(every) = runbook.drill.as_ref().and_then(|d| d.every) else {
        return DrillDue::Unscheduled;
    };
    let Some(last) = last_passed_drill(reports, &runbook.name, &runbook.policy.host, now) else {
        return DrillDue::NeverPassed;
    };
    let last_passed = last.started_at;
    if last.ran_another_version(&runbook.digest) {
        return DrillDue::Changed { last_passed };
    }
    match next_drill(Some(last), every) {
        Some(next) if next >= now => DrillDue::NotDue { last_passed, next },
        since => DrillDue::Overdue {
            last_passed,
            since: since.unwrap_or(last_passed),
        },
    }
}

impl Report {
    /// Whether it ran another version of the runbook than the one whose
    /// digest is `digest` (a record kept before digests were stored cannot
    /// say, and counts as the same).
    pub fn ran_another_version(&self, digest: &str) -> bool {
        self.runbook_digest.as_deref().is_some_and(|d| d != digest)
    }

    pub fn passed(&self) -> bool {
        self.status == Status::Passed
    }

    /// The status a reader should see: a record left `running` by a
    /// coordinator that died is an interrupted run, not a pass.
    pub fn shown_status(&self) -> &'static str {
        match self.status {
            Status::Running => "interrupted",
            Status::Passed => "passed",
            Status::Failed => "failed",
        }
    }

    /// The exit code of `drp run` and `drp drill` for this report.
    /// `stored`: the report reached every target of the policy.
    pub fn exit_code(&self, stored: bool) -> ExitCode {
        match (self.status, self.failure_kind) {
            (Status::Passed, _) if stored => ExitCode::Ok,
            (Status::Passed, _) => ExitCode::ReportNotStored,
            (Status::Failed, Some(kind)) if kind.objective_missed() => ExitCode::ObjectivesMissed,
            (Status::Failed, Some(FailureKind::NotConfirmed)) => ExitCode::NotConfirmed,
            (Status::Failed, _) | (Status::Running, _) => ExitCode::Failed,
        }
    }
}

/// An objective a report measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    Rto,
    Rpo,
}

impl Objective {
    pub fn name(self) -> &'static str {
        match self {
            Objective::Rto => "RTO",
            Objective::Rpo => "RPO",
        }
    }
}

/// One objective's row as every rendering shows it: the cells as text, and
/// the measure and verdict they come from. Renderers only format the cells.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectiveRow {
    pub objective: Objective,
    /// The objective's target, as a duration.
    pub target: String,
    /// The measure, or why there is none (`not recovered`, `nothing restored`).
    pub measured: String,
    pub measured_seconds: Option<f64>,
    /// Target minus measured, or `-`.
    pub margin: String,
    pub met: bool,
    /// `met` or `MISSED`.
    pub verdict: &'static str,
    /// The RPO measured from the data (the newest heartbeat found after the
    /// restore), shown on a line of its own.
    pub heartbeat: Option<String>,
}

impl Report {
    /// The rows of the objectives measured: RTO, then RPO.
    pub fn objective_rows(&self) -> Vec<ObjectiveRow> {
        use markdown::{fmt_secs, verdict};
        let row =
            |objective, target, measured: Option<f64>, none: &str, margin: Option<f64>, met| {
                ObjectiveRow {
                    objective,
                    target: fmt_secs(target),
                    measured: measured.map(fmt_secs).unwrap_or_else(|| none.into()),
                    measured_seconds: measured,
                    margin: margin.map(fmt_secs).unwrap_or_else(|| "-".into()),
                    met,
                    verdict: verdict(met),
                    heartbeat: None,
                }
            };
        let mut rows = Vec::new();
        if let Some(rto) = &self.rto {
            rows.push(row(
                Objective::Rto,
                self.objectives.rto_seconds,
                rto.measured_seconds,
                "not recovered",
                rto.margin_seconds,
                rto.met,
            ));
        }
        if let Some(rpo) = &self.rpo {
            rows.push(ObjectiveRow {
                heartbeat: rpo.heartbeat_seconds.map(fmt_secs),
                ..row(
                    Objective::Rpo,
                    self.objectives.rpo_seconds,
                    rpo.measured_seconds,
                    "nothing restored",
                    rpo.margin_seconds,
                    rpo.met,
                )
            });
        }
        rows
    }
}

/// Where reports are kept: every repository of the policy's targets.
pub struct Store {
    pub repos: Vec<Repository>,
    /// Targets that could not be opened.
    pub unreachable: Vec<String>,
}

impl Store {
    pub async fn open(policy: &drp_core::config::Policy) -> Store {
        let names: Vec<String> = policy.targets.keys().cloned().collect();
        let mut repos = Vec::new();
        let mut unreachable = Vec::new();
        for (name, opened) in drp_core::repository::open_targets(policy, &names).await {
            match opened {
                Ok(r) => repos.push(r),
                Err(e) => unreachable.push(format!("{name}: {e}")),
            }
        }
        Store { repos, unreachable }
    }

    /// Saves the record (JSON and its HTML page) on every repository;
    /// returns the targets where it could not be saved.
    pub async fn save(&self, report: &Report) -> Vec<String> {
        let mut failed = self.unreachable.clone();
        let json = serde_json::to_vec_pretty(report).expect("report serialises");
        let html = html::render(report);
        for repo in &self.repos {
            if let Err(e) = repo
                .save_report(&report.runbook, &report.id, json.clone(), html.clone())
                .await
            {
                failed.push(e.to_string());
            }
        }
        if self.repos.is_empty() && failed.is_empty() {
            failed.push("no target".into());
        }
        failed
    }

    /// Every stored report, deduplicated by id (the copy on the first target wins).
    pub async fn load_all(&self) -> Result<Vec<Report>, Error> {
        let mut by_id: BTreeMap<String, Report> = BTreeMap::new();
        for repo in &self.repos {
            for record in repo.report_records().await? {
                match serde_json::from_slice::<Report>(&record.bytes) {
                    Ok(r) => {
                        by_id.entry(r.id.clone()).or_insert(r);
                    }
                    Err(e) => {
                        tracing::warn!(object = record.key, error = %e, "unreadable report ignored")
                    }
                }
            }
        }
        let mut v: Vec<Report> = by_id.into_values().collect();
        v.sort_by_key(|r| r.started_at);
        Ok(v)
    }
}

/// Writes the JSON, Markdown, HTML and JUnit renderings into `dir`; returns
/// the HTML page's path.
pub fn write_local(report: &Report, dir: &Path) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io_path("cannot create", dir, e))?;
    let stem = format!("{}-{}", report.runbook, report.id);
    let files = [
        (
            "json",
            serde_json::to_string_pretty(report).expect("report serialises"),
        ),
        ("md", markdown::render(report)),
        ("html", html::render(report)),
        ("junit.xml", junit::render(report)),
    ];
    for (ext, body) in &files {
        let p = dir.join(format!("{stem}.{ext}"));
        std::fs::write(&p, body).map_err(|e| Error::io_path("cannot write", &p, e))?;
    }
    Ok(dir.join(format!("{stem}.html")))
}

/// Text as HTML or XML character data and attribute values.
pub(crate) fn escape_markup(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(rto: Option<f64>, rpo: Option<f64>, heartbeat: Option<f64>) -> Report {
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        Report {
            schema: SCHEMA.into(),
            id: "r1".into(),
            kind: Kind::Drill,
            runbook: "db-lost".into(),
            runbook_file: "db-lost.yaml".into(),
            host: "h".into(),
            status: Status::Failed,
            started_at: at,
            t_fail: Some(at),
            ended_at: Some(at),
            objectives: Objectives {
                rto_seconds: 600.0,
                rpo_seconds: 300.0,
            },
            rto: Some(RtoMeasure {
                measured_seconds: rto,
                met: rto.is_some_and(|m| m <= 600.0),
                margin_seconds: rto.map(|m| 600.0 - m),
                phases: BTreeMap::new(),
            }),
            rpo: Some(RpoMeasure {
                measured_seconds: rpo,
                heartbeat_seconds: heartbeat,
                newest_heartbeat: None,
                last_heartbeat_written: None,
                met: rpo.is_some_and(|m| m <= 300.0),
                margin_seconds: rpo.map(|m| 300.0 - m),
                restored: Vec::new(),
            }),
            steps: Vec::new(),
            failure: None,
            failure_kind: None,
            notes: Vec::new(),
            runbook_digest: None,
        }
    }

    #[test]
    fn every_rendering_shows_the_same_objective_rows() {
        let r = report(Some(750.0), Some(42.0), Some(30.5));
        let md = markdown::render(&r);
        assert!(
            md.contains("| RTO | 10m 0s | 12m 30s | -2m 30s | MISSED |\n"),
            "{md}"
        );
        assert!(md.contains("| RPO | 5m 0s | 42.0s | 4m 18s | met |\n| RPO (heartbeat, from the data) | 5m 0s | 30.5s | | |\n"), "{md}");
        let html = html::render(&r);
        assert!(html.contains("<tr><th>RTO</th><td>10m 0s</td><td>12m 30s</td><td>-2m 30s</td><td class=\"missed\">MISSED</td></tr><tr><th>RPO</th><td>5m 0s</td><td>42.0s</td><td>4m 18s</td><td class=\"met\">met</td></tr><tr><th>RPO from the data (heartbeat)</th><td></td><td>30.5s</td><td></td><td></td></tr></table>"), "{html}");
        let junit = junit::render(&r);
        assert!(junit.contains("name=\"RTO objective\" time=\"750.000\">\n      <failure message=\"RTO 12m 30s exceeds the objective 10m 0s\"/>"), "{junit}");
        assert!(
            junit.contains("name=\"RPO objective\" time=\"0.000\"/>"),
            "{junit}"
        );
    }

    #[test]
    fn rows_without_a_measure_say_why() {
        let r = report(None, None, None);
        let md = markdown::render(&r);
        assert!(md.contains("| RTO | 10m 0s | not recovered | - | MISSED |\n| RPO | 5m 0s | nothing restored | - | MISSED |\n\n"), "{md}");
        let html = html::render(&r);
        assert!(html.contains("<td>not recovered</td><td>-</td>"), "{html}");
        assert!(
            html.contains(
                "<td>nothing restored</td><td>-</td><td class=\"missed\">MISSED</td></tr></table>"
            ),
            "{html}"
        );
        let junit = junit::render(&r);
        assert!(
            junit.contains(
                "name=\"RTO objective\" time=\"0.000\">\n      <failure message=\"not recovered\"/>"
            ),
            "{junit}"
        );
        assert!(junit.contains("name=\"RPO objective\" time=\"0.000\">\n      <failure message=\"RPO  exceeds the objective 5m 0s\"/>"), "{junit}");
    }
}
