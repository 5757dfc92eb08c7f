//! The report as JUnit XML, so a drill run from CI shows as tests: one test
//! case per step, plus one for each objective.

use super::markdown::fmt_secs;
use super::{Objective, Report, escape_markup};

pub fn render(r: &Report) -> String {
    let mut cases = String::new();
    let mut failures = 0;
    let mut case = |name: &str, seconds: f64, failure: Option<String>| {
        cases += &format!(
            "    <testcase classname=\"drp.{}\" name=\"{}\" time=\"{seconds:.3}\"",
            escape_markup(&r.runbook),
            escape_markup(name)
        );
        match failure {
            Some(f) => {
                failures += 1;
                cases += &format!(
                    ">\n      <failure message=\"{}\"/>\n    </testcase>\n",
                    escape_markup(&f)
                );
            }
            None => cases += "/>\n",
        }
    };
    for s in &r.steps {
        let failure = (!s.passed()).then(|| s.message.clone());
        let on = s
            .host
            .as_ref()
            .map(|h| format!(" @{h}"))
            .unwrap_or_default();
        case(
            &format!("{}: {}{on}", s.section, s.name),
            s.seconds,
            failure,
        );
    }
    for row in r.objective_rows() {
        let name = row.objective.name();
        let failure = (!row.met).then(|| match (row.objective, row.measured_seconds) {
            (Objective::Rto, None) => row.measured.clone(),
            (_, measured) => format!(
                "{name} {} exceeds the objective {}",
                measured.map(fmt_secs).unwrap_or_default(),
                row.target
            ),
        });
        let seconds = match row.objective {
            Objective::Rto => row.measured_seconds.unwrap_or(0.0),
            Objective::Rpo => 0.0,
        };
        case(&format!("{name} objective"), seconds, failure);
    }
    if r.status == super::Status::Running {
        case("completed", 0.0, Some("the run was interrupted".into()));
    }
    let tests = cases.matches("<testcase").count();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n  <testsuite name=\"drp {} {}\" tests=\"{tests}\" failures=\"{failures}\" timestamp=\"{}\">\n{cases}  </testsuite>\n</testsuites>\n",
        match r.kind {
            super::Kind::Drill => "drill",
            super::Kind::Incident => "recovery",
        },
        escape_markup(&r.runbook),
        r.started_at.to_rfc3339()
    )
}
