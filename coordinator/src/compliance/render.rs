//! The compliance report as Markdown, and as a self-contained HTML page
//! (the Markdown rendered, with the charts before its footer).

use drp_core::export_status::ExportStatus;

use super::Compliance;
use super::charts::charts;
use crate::report::escape_markup;
use crate::report::markdown::fmt_secs;

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
    if !c.incidents.is_empty() {
        s += &incidents(c);
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

/// The incidents (the hosts' watchdogs', a coordinator's watch), each
/// against the objectives.
fn incidents(c: &Compliance) -> String {
    let mut s = String::from(
        "\n## Incidents\n\n| detected | host | service | rungs tried | outcome | RTO (objective) | RPO (objective) | |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let against = |measured: Option<f64>, objective: Option<f64>| match (measured, objective) {
        (Some(m), Some(o)) => format!("{} ({})", fmt_secs(m), fmt_secs(o)),
        (Some(m), None) => fmt_secs(m),
        (None, _) => "-".into(),
    };
    for i in &c.incidents {
        let rungs = i.rungs();
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            drp_core::time::shown_in(i.incident.detected, c.timezone),
            i.incident.host,
            i.incident.service,
            if rungs.is_empty() {
                "none".into()
            } else {
                rungs.join(", ")
            },
            i.outcome.name(),
            against(i.incident.rto_seconds, i.rto_objective_seconds),
            against(i.incident.rpo_seconds, i.rpo_objective_seconds),
            if i.missed() { "MISSED" } else { "met" },
        );
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

/// A self-contained HTML page of the Markdown drp writes (headings,
/// paragraphs, tables, fenced code).
pub fn page(title: &str, md: &str, footer: &str) -> String {
    let mut body = String::new();
    let mut in_table = false;
    let mut in_code = false;
    for line in md.lines() {
        let esc = escape_markup(line);
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
        escape_markup(title),
        escape_markup(footer)
    )
}
