//! Per runbook, the period's drills as inline SVG bars against the
//! objectives.

use super::Compliance;
use crate::report::markdown::fmt_secs;
use crate::report::{Report, escape_markup};

/// Per runbook, every drill of the period as a bar of its measured RTO and
/// RPO against the objective's line (inline SVG), green when met.
pub(super) fn charts(c: &Compliance) -> String {
    let mut out = String::from("<h2>Drills against the objectives</h2>");
    for rb in &c.runbooks {
        let mut drills: Vec<&Report> = c
            .drills
            .iter()
            .filter(|d| d.runbook == rb.runbook)
            .collect();
        drills.sort_by_key(|d| d.started_at);
        if drills.is_empty() {
            continue;
        }
        out += &format!(
            "<h3>{}</h3><div class=\"charts\">",
            escape_markup(&rb.runbook)
        );
        for (measure, label) in [("rto", "RTO"), ("rpo", "RPO")] {
            let points: Vec<(String, Option<f64>, bool, f64)> = drills
                .iter()
                .map(|d| {
                    let (value, met) = match measure {
                        "rto" => (
                            d.rto.as_ref().and_then(|x| x.measured_seconds),
                            d.rto.as_ref().is_some_and(|x| x.met),
                        ),
                        _ => (
                            d.rpo.as_ref().and_then(|x| x.measured_seconds),
                            d.rpo.as_ref().is_some_and(|x| x.met),
                        ),
                    };
                    let objective = match measure {
                        "rto" => d.objectives.rto_seconds,
                        _ => d.objectives.rpo_seconds,
                    };
                    (
                        d.started_at.format("%m-%d %H:%M").to_string(),
                        value,
                        met,
                        objective,
                    )
                })
                .collect();
            out += &chart(&rb.runbook, measure, label, &points);
        }
        out += "</div>";
    }
    out
}

/// One bar chart: (label, measured, met, objective) per drill.
fn chart(
    runbook: &str,
    measure: &str,
    label: &str,
    points: &[(String, Option<f64>, bool, f64)],
) -> String {
    let (w, h, top, bottom, left) = (460.0, 230.0, 44.0, 40.0, 56.0);
    let objective = points.last().map(|p| p.3).unwrap_or(0.0);
    let highest = points.iter().filter_map(|p| p.1).fold(0.0, f64::max);
    // Drills far inside the objective would be slivers under its line: the
    // scale is then theirs, and the objective is said above the chart.
    let zoomed = highest > 0.0 && highest < objective * 0.2;
    let max = if zoomed {
        highest
    } else {
        highest.max(objective)
    }
    .max(0.001)
        * 1.15;
    let y = |v: f64| top + (h - top - bottom) * (1.0 - v / max);
    let slot = (w - left - 10.0) / points.len() as f64;
    let mut svg = format!(
        r##"<svg class="drill-chart" data-runbook="{}" data-measure="{measure}" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{label} of each drill"><rect x="0" y="0" width="{w}" height="{h}" fill="#fafafa"/><text x="{left}" y="16" font-size="13" fill="#333">{label} per drill, objective {}</text>"##,
        escape_markup(runbook),
        fmt_secs(objective)
    );
    for (i, (when, value, met, _)) in points.iter().enumerate() {
        let x = left + slot * i as f64 + slot * 0.2;
        let bw = (slot * 0.6).max(2.0);
        match value {
            Some(v) => {
                let (class, color) = if *met {
                    ("met", "#2eaa6a")
                } else {
                    ("missed", "#d9534f")
                };
                svg += &format!(
                    r#"<rect class="drill-bar {class}" x="{x:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="{color}"><title>{when}: {} ({})</title></rect>"#,
                    y(*v),
                    (y(0.0) - y(*v)).max(1.0),
                    fmt_secs(*v),
                    if *met { "met" } else { "missed" }
                );
                svg += &format!(
                    r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#333" text-anchor="middle">{}</text>"##,
                    x + bw / 2.0,
                    y(*v) - 3.0,
                    fmt_secs(*v)
                );
            }
            None => {
                svg += &format!(
                    r##"<text class="drill-bar none" x="{x:.1}" y="{:.1}" font-size="11" fill="#d9534f">not recovered</text>"##,
                    y(0.0) - 4.0
                );
            }
        }
        svg += &format!(
            r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#555" text-anchor="middle">{when}</text>"##,
            x + bw / 2.0,
            h - bottom + 14.0
        );
    }
    if zoomed {
        svg += &format!(
            r##"<text class="objective" x="{left}" y="{:.1}" font-size="11" fill="#d9534f">objective {} is above, off this scale: every drill is under a fifth of it</text>"##,
            top - 12.0,
            fmt_secs(objective)
        );
    } else {
        let gy = y(objective);
        svg += &format!(
            r##"<line class="objective" x1="{left}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#d9534f" stroke-width="2" stroke-dasharray="5,3"/><text x="4" y="{:.1}" font-size="10" fill="#d9534f">{}</text>"##,
            w - 10.0,
            gy + 3.0,
            fmt_secs(objective)
        );
    }
    svg += &format!(
        r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/></svg>"##,
        y(0.0),
        w - 10.0,
        y(0.0)
    );
    svg
}
