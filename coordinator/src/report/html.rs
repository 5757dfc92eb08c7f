//! The report as one self-contained HTML page (no external assets), with an
//! inline SVG timeline of the phases against the RTO objective.

use super::markdown::fmt_secs;
use super::{Report, escape_markup};

const COLORS: [(&str, &str); 4] = [
    ("detect", "#f0ad4e"),
    ("restore", "#5b8def"),
    ("restart", "#9b59b6"),
    ("verify", "#2eaa6a"),
];

/// The timeline: phases as consecutive bars from T_fail, the objective as a line.
pub fn timeline(r: &Report) -> String {
    let (w, h, left, right) = (900.0, 200.0, 20.0, 20.0);
    let rto_goal = r.objectives.rto_seconds;
    let phases = r.rto.as_ref().map(|x| x.phases.clone()).unwrap_or_default();
    let total: f64 = phases.values().sum();
    let span = rto_goal.max(total).max(1.0) * 1.1;
    let x = |t: f64| left + (w - left - right) * t / span;
    let mut svg = format!(
        r#"<svg id="timeline" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="Recovery timeline">"#
    );
    svg += &format!(r##"<rect x="0" y="0" width="{w}" height="{h}" fill="#fafafa"/>"##);
    let mut t = 0.0;
    for (name, color) in COLORS {
        if let Some(d) = phases.get(name) {
            let (x0, x1) = (x(t), x(t + d));
            svg += &format!(
                r#"<rect class="phase" data-phase="{name}" x="{x0:.1}" y="40" width="{:.1}" height="40" fill="{color}"><title>{name}: {}</title></rect>"#,
                (x1 - x0).max(1.0),
                fmt_secs(*d)
            );
            if x1 - x0 > 50.0 {
                svg += &format!(
                    r#"<text x="{:.1}" y="65" font-size="12" fill="white" text-anchor="middle">{name}</text>"#,
                    (x0 + x1) / 2.0
                );
            }
            t += d;
        }
    }
    let gx = x(rto_goal);
    svg += &format!(
        r##"<line id="rto-objective" x1="{gx:.1}" y1="25" x2="{gx:.1}" y2="100" stroke="#d9534f" stroke-width="2" stroke-dasharray="5,3"/>"##
    );
    svg += &format!(
        r##"<text x="{gx:.1}" y="18" font-size="12" fill="#d9534f" text-anchor="middle">RTO objective {}</text>"##,
        fmt_secs(rto_goal)
    );
    svg += &format!(r##"<text x="{left}" y="98" font-size="12" fill="#333">T_fail</text>"##);
    if total > 0.0 {
        svg += &format!(
            r##"<line x1="{0:.1}" y1="35" x2="{0:.1}" y2="85" stroke="#333" stroke-width="1"/>"##,
            x(total)
        );
        svg += &format!(
            r##"<text x="{:.1}" y="118" font-size="12" fill="#333">recovered after {}</text>"##,
            x(total).max(left + 50.0),
            fmt_secs(total)
        );
    }
    // A recovery far shorter than the objective is a sliver at that scale:
    // the phases again, enlarged to the recovery's own length.
    if total > 0.0 && total < span * 0.05 {
        let z = |t: f64| left + (w - left - right) * t / total;
        svg += r#"<g id="timeline-zoom">"#;
        let mut t = 0.0;
        for (name, color) in COLORS {
            if let Some(d) = phases.get(name) {
                let (x0, x1) = (z(t), z(t + d));
                svg += &format!(
                    r#"<rect class="phase-zoom" data-phase="{name}" x="{x0:.1}" y="140" width="{:.1}" height="16" fill="{color}"><title>{name}: {}</title></rect>"#,
                    (x1 - x0).max(1.0),
                    fmt_secs(*d)
                );
                t += d;
            }
        }
        svg += &format!(
            r##"<text x="{left}" y="135" font-size="11" fill="#555">enlarged: the {} of the recovery, the objective being {}</text></g>"##,
            fmt_secs(total),
            fmt_secs(rto_goal)
        );
    }
    // Legend: each phase with its time.
    let mut lx = left;
    for (name, color) in COLORS {
        if let Some(d) = phases.get(name) {
            svg += &format!(r#"<rect x="{lx:.1}" y="172" width="12" height="12" fill="{color}"/>"#);
            svg += &format!(
                r##"<text x="{:.1}" y="183" font-size="12" fill="#333">{name} {}</text>"##,
                lx + 16.0,
                fmt_secs(*d)
            );
            lx += 150.0;
        }
    }
    svg += "</svg>";
    svg
}

pub fn render(r: &Report) -> String {
    let status = r.shown_status();
    let color = if r.passed() { "#2eaa6a" } else { "#d9534f" };
    let mut rows = String::new();
    for s in &r.steps {
        rows += &format!(
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            crate::engine::status_word(s.status).replace(' ', "-"),
            escape_markup(&s.section),
            s.phase.map(|p| p.name()).unwrap_or("-"),
            escape_markup(s.host_or(&r.host)),
            escape_markup(&s.name),
            crate::engine::status_word(s.status),
            s.attempts,
            fmt_secs(s.seconds),
            escape_markup(&s.message)
        );
    }
    let mut objectives = String::new();
    for row in r.objective_rows() {
        objectives += &format!(
            "<tr><th>{}</th><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            row.objective.name(),
            row.target,
            row.measured,
            row.margin,
            row.verdict.to_lowercase(),
            row.verdict
        );
        if let Some(hb) = &row.heartbeat {
            objectives += &format!(
                "<tr><th>RPO from the data (heartbeat)</th><td></td><td>{hb}</td><td></td><td></td></tr>"
            );
        }
    }
    let failure = r
        .failure
        .as_deref()
        .map(|f| {
            format!(
                "<p class=\"why\"><strong>Why it failed:</strong> {}</p>",
                escape_markup(f)
            )
        })
        .unwrap_or_default();
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>drp {kind}: {runbook} — {status}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
h1 .status {{ color: {color}; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ddd; padding: 4px 8px; text-align: left; font-size: 14px; }}
.met {{ color: #2eaa6a; font-weight: bold; }} .missed {{ color: #d9534f; font-weight: bold; }}
tr.failed td, tr.timed-out td {{ background: #fdecea; }}
.why {{ background: #fdecea; padding: 8px; }}
</style></head>
<body>
<h1>drp {kind} of <code>{runbook}</code> on {host}: <span class="status">{status_upper}</span></h1>
<p>Report {id} · started {started} · failure (T_fail) {tfail}</p>
{failure}
<h2>Objectives</h2>
<table><tr><th></th><th>objective</th><th>measured</th><th>margin</th><th>verdict</th></tr>{objectives}</table>
<h2>Timeline</h2>
{timeline}
<h2>Steps</h2>
<table><tr><th>section</th><th>phase</th><th>host</th><th>step</th><th>result</th><th>attempts</th><th>time</th><th>detail</th></tr>
{rows}</table>
</body></html>
"#,
        kind = match r.kind {
            super::Kind::Drill => "drill",
            super::Kind::Incident => "recovery",
        },
        runbook = escape_markup(&r.runbook),
        host = escape_markup(&r.host),
        status_upper = status.to_uppercase(),
        id = escape_markup(&r.id),
        started = drp_core::time::shown(r.started_at),
        tfail = r
            .t_fail
            .map(drp_core::time::shown)
            .unwrap_or_else(|| "-".into()),
        timeline = timeline(r),
    )
}
