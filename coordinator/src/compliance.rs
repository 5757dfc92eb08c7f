//! `drp report`: compliance over a period, from the stored history — each
//! drill with its verdict and margins, the trend, runbooks not drilled, and
//! each export's live RPO exposure.

use crate::report::escape_markup;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use drp_core::export_status::ExportStatus;
use serde::Serialize;

use crate::report::markdown::fmt_secs;
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
            let last_pass = every_drill
                .iter()
                .filter(|r| r.runbook == rb.name && r.passed() && r.started_at < to)
                .max_by_key(|r| r.started_at);
            if let Some(r) = last_pass
                && r.runbook_digest.as_ref().is_some_and(|d| *d != rb.digest)
            {
                changed_since_drill.push(rb.name.clone());
            }
            if let Some(every) = rb.drill.as_ref().and_then(|d| d.every) {
                let due = last_pass
                    .map(|r| {
                        r.started_at
                            + chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX)
                    })
                    .unwrap_or(DateTime::<Utc>::MIN_UTC);
                if due < to {
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

pub fn markdown(c: &Compliance) -> String {
    let mut s = format!("# Recovery compliance of {} — {}\n\n", c.host, c.period);
    s += &format!(
        "From {} to {}.\n\n",
        c.from.format("%Y-%m-%d"),
        c.to.format("%Y-%m-%d")
    );
    s += "| runbook | drills | passed | failed | interrupted | best RTO | worst RTO | worst RPO | trend |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    for r in &c.runbooks {
        let f = |v: Option<f64>| v.map(fmt_secs).unwrap_or_else(|| "-".into());
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.runbook,
            r.drills,
            r.passed,
            r.failed,
            r.interrupted,
            f(r.best_rto_seconds),
            f(r.worst_rto_seconds),
            f(r.worst_rpo_seconds),
            r.trend
        );
    }
    if !c.not_drilled.is_empty() {
        s += &format!(
            "\n**Not drilled in the period:** {}\n",
            c.not_drilled.join(", ")
        );
    }
    if !c.changed_since_drill.is_empty() {
        s += &format!(
            "\n**Changed since its last drill** (the runbook, its policy or its inventory; that pass no longer counts): {}\n",
            c.changed_since_drill.join(", ")
        );
    }
    if !c.overdue.is_empty() {
        s += &format!("\n**Drill overdue:** {}\n", c.overdue.join(", "));
    }
    s += "\n## Drills\n\n| date | runbook | result | RTO (margin) | RPO (margin) | why |\n| --- | --- | --- | --- | --- | --- |\n";
    for d in &c.drills {
        let rto = d
            .rto
            .as_ref()
            .map(|r| match (r.measured_seconds, r.margin_seconds) {
                (Some(m), Some(x)) => format!("{} ({})", fmt_secs(m), fmt_secs(x)),
                _ => "not recovered".into(),
            });
        let rpo = d
            .rpo
            .as_ref()
            .map(|r| match (r.measured_seconds, r.margin_seconds) {
                (Some(m), Some(x)) => format!("{} ({})", fmt_secs(m), fmt_secs(x)),
                _ => "-".into(),
            });
        s += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            d.started_at.format("%Y-%m-%d %H:%M"),
            d.runbook,
            d.shown_status(),
            rto.unwrap_or_else(|| "-".into()),
            rpo.unwrap_or_else(|| "-".into()),
            d.failure.clone().unwrap_or_default().replace('|', "\\|")
        );
    }
    s += "\n## Per export\n\n| export | last drill | drill RTO | last restore test | result | measured restore | predicted restore of the newest point | RTO |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n";
    for e in &c.exposure {
        let test = e.last_restore_test.as_ref();
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            e.export,
            e.last_drill
                .as_ref()
                .map(|d| format!(
                    "{} ({})",
                    d.at.format("%Y-%m-%d"),
                    if d.passed { "passed" } else { "failed" }
                ))
                .unwrap_or_else(|| "none in the period".into()),
            e.last_drill
                .as_ref()
                .and_then(|d| d.rto_seconds)
                .map(fmt_secs)
                .unwrap_or_else(|| "-".into()),
            test.map(|t| drp_core::time::shown_in(t.at, c.timezone))
                .unwrap_or_else(|| "never".into())
                + if e.restore_test_overdue {
                    " (OVERDUE)"
                } else {
                    ""
                },
            match test.map(|t| t.passed) {
                Some(true) => "passed",
                Some(false) => "FAILED",
                None => "-",
            },
            test.map(|t| fmt_secs(t.restore_seconds))
                .unwrap_or_else(|| "-".into()),
            e.predicted_restore
                .as_ref()
                .map(|p| fmt_secs(p.seconds))
                .unwrap_or_else(|| "-".into()),
            e.rto_objective_seconds
                .map(fmt_secs)
                .unwrap_or_else(|| "-".into()),
        );
    }
    s += "\n## Live RPO exposure\n\n| export | restorable up to | exposure | objective | |\n| --- | --- | --- | --- | --- |\n";
    for e in &c.exposure {
        s += &exposure_row(e, c.timezone, None);
    }
    if !c.fleet.is_empty() {
        s += "\n## Fleet\n\n| host | export | restorable up to | exposure | objective | | last drill that restored it |\n| --- | --- | --- | --- | --- | --- | --- |\n";
        for r in &c.fleet {
            s += &match (&r.export, &r.error) {
                (Some(e), _) => exposure_row(e, c.timezone, Some(&r.host)),
                (None, Some(why)) => format!(
                    "| {} | UNREACHABLE: {} | | | | | |\n",
                    r.host,
                    why.replace('|', "\\|")
                ),
                (None, None) => format!("| {} | (no export) | | | | | |\n", r.host),
            };
        }
    }
    s
}

/// One export's exposure as a table row (with its host and last drill in
/// the fleet's table).
fn exposure_row(e: &ExportStatus, tz: chrono_tz::Tz, host: Option<&str>) -> String {
    let mut row = String::from("|");
    if let Some(h) = host {
        row += &format!(" {h} |");
    }
    row += &format!(
        " {} | {} | {} | {} | {} |",
        e.export,
        e.recoverable_until
            .map(|t| drp_core::time::shown_in(t, tz))
            .unwrap_or_else(|| "nothing restorable".into()),
        e.rpo_exposure_seconds
            .map(fmt_secs)
            .unwrap_or_else(|| "-".into()),
        e.rpo_objective_seconds
            .map(fmt_secs)
            .unwrap_or_else(|| "-".into()),
        match e.within_rpo {
            Some(true) => "ok",
            Some(false) => "OVER",
            None => "",
        }
    );
    if host.is_some() {
        row += &format!(
            " {} |",
            e.last_drill
                .as_ref()
                .map(|d| format!(
                    "{} {} ({})",
                    drp_core::time::shown_in(d.at, tz),
                    d.runbook,
                    if d.passed { "passed" } else { "FAILED" }
                ))
                .unwrap_or_else(|| "never".into())
        );
    }
    row + "\n"
}

pub fn html(c: &Compliance) -> String {
    let page = page(
        &format!("drp compliance {} {}", c.host, c.period),
        &markdown(c),
        &format!(
            "drp report {} for {}, generated {}",
            c.period,
            c.host,
            drp_core::time::shown_in(chrono::Utc::now(), c.timezone)
        ),
    );
    // The charts go before the footer.
    let at = page.rfind("<p><small>").unwrap_or(page.len());
    format!("{}{}{}", &page[..at], charts(c), &page[at..])
}

/// Per runbook, every drill of the period as a bar of its measured RTO and
/// RPO against the objective's line (inline SVG), green when met.
fn charts(c: &Compliance) -> String {
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

/// A self-contained HTML page of the Markdown drp writes (headings,
/// paragraphs, tables, fenced code).
pub fn page(title: &str, md: &str, footer: &str) -> String {
    let escape = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut body = String::new();
    let mut in_table = false;
    let mut in_code = false;
    for line in md.lines() {
        let esc = escape(line);
        if line.starts_with("```") {
            body += if in_code { "</pre>" } else { "<pre>" };
            in_code = !in_code;
            continue;
        }
        if in_code {
            body += &esc;
            body += "\n";
            continue;
        }
        if line.starts_with('|') {
            if line.starts_with("| ---") {
                continue;
            }
            let header = !in_table;
            if !in_table {
                body += "<table>";
                in_table = true;
            }
            let cells: Vec<&str> = esc.trim_matches('|').split(" | ").collect();
            body += &format!(
                "<tr>{}</tr>",
                cells
                    .iter()
                    .map(|c| {
                        let c = c.trim();
                        let class = match c {
                            _ if header => "",
                            "MISSED" | "OVER" | "FAILED" | "failed" | "interrupted" => {
                                " class=\"bad\""
                            }
                            "met" | "ok" | "passed" => " class=\"good\"",
                            _ if c.starts_with("UNREACHABLE") || c.contains("OVERDUE") => {
                                " class=\"bad\""
                            }
                            _ => "",
                        };
                        format!("<td{class}>{c}</td>")
                    })
                    .collect::<String>()
            );
            continue;
        }
        if in_table {
            body += "</table>";
            in_table = false;
        }
        if let Some(h) = esc.strip_prefix("### ") {
            body += &format!("<h3>{h}</h3>");
        } else if let Some(h) = esc.strip_prefix("## ") {
            body += &format!("<h2>{h}</h2>");
        } else if let Some(h) = esc.strip_prefix("# ") {
            body += &format!("<h1>{h}</h1>");
        } else if let Some(item) = esc.strip_prefix("- ") {
            body += &format!("<p>• {}</p>", item.replace("**", ""));
        } else if !esc.trim().is_empty() {
            body += &format!("<p>{}</p>", esc.replace("**", ""));
        }
    }
    if in_table {
        body += "</table>";
    }
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse}}td{{border:1px solid #ddd;padding:4px 8px}}pre{{background:#f4f4f4;padding:1em;overflow-x:auto}}td.bad{{background:#fbe3e2;color:#a12622;font-weight:600}}td.good{{background:#e3f4ea;color:#1d6b40}}.charts{{display:flex;flex-wrap:wrap;gap:1em}}@media print{{body{{margin:0}}.charts{{break-inside:avoid}}}}</style></head><body>{body}<p><small>{}</small></p></body></html>\n",
        escape(title),
        escape(footer)
    )
}
