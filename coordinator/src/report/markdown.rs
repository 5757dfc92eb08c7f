//! The report as Markdown, for a ticket or a wiki page.

use super::Report;
use drp_core::time::shown;

pub fn fmt_secs(s: f64) -> String {
    if s.abs() < 1.0 {
        format!("{:.0}ms", s * 1000.0)
    } else if s.abs() < 60.0 {
        format!("{s:.1}s")
    } else {
        let total = s.abs().round() as u64;
        let sign = if s < 0.0 { "-" } else { "" };
        if total >= 3600 {
            format!(
                "{sign}{}h {}m {}s",
                total / 3600,
                total / 60 % 60,
                total % 60
            )
        } else {
            format!("{sign}{}m {}s", total / 60, total % 60)
        }
    }
}

pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

pub fn render(r: &Report) -> String {
    let mut s = format!(
        "# {} of `{}` on {}: {}\n\n",
        match r.kind {
            super::Kind::Drill => "Drill",
            super::Kind::Incident => "Recovery",
        },
        r.runbook,
        r.host,
        r.shown_status().to_uppercase()
    );
    s += &format!("- Report: `{}` (runbook file `{}`)\n", r.id, r.runbook_file);
    s += &format!("- Started: {}\n", shown(r.started_at));
    if let Some(t) = r.t_fail {
        s += &format!("- Failure at (T_fail): {}\n", shown(t));
    }
    if let Some(e) = r.ended_at {
        s += &format!("- Ended: {}\n", shown(e));
    }
    if let Some(f) = &r.failure {
        s += &format!("- **Why it failed:** {f}\n");
    }
    s +=
        "\n| objective | target | measured | margin | verdict |\n| --- | --- | --- | --- | --- |\n";
    for row in r.objective_rows() {
        s += &format!(
            "| {} | {} | {} | {} | {} |\n",
            row.objective.name(),
            row.target,
            row.measured,
            row.margin,
            row.verdict
        );
        if let Some(hb) = &row.heartbeat {
            s += &format!(
                "| RPO (heartbeat, from the data) | {} | {hb} | | |\n",
                row.target
            );
        }
    }
    if let Some(rto) = &r.rto {
        s += "\n## Phases\n\n| phase | time |\n| --- | --- |\n";
        for p in ["detect", "restore", "restart", "verify"] {
            if let Some(v) = rto.phases.get(p) {
                s += &format!("| {p} | {} |\n", fmt_secs(*v));
            }
        }
    }
    s += "\n## Steps\n\n| section | phase | host | step | result | attempts | time | detail |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n";
    for st in &r.steps {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            st.section,
            st.phase.map(|p| p.name()).unwrap_or("-"),
            st.host_or(&r.host),
            st.name,
            crate::engine::status_word(st.status),
            st.attempts,
            fmt_secs(st.seconds),
            st.message.replace('|', "\\|").replace('\n', " ")
        );
    }
    if let Some(rpo) = &r.rpo
        && !rpo.restored.is_empty()
    {
        s += "\n## Restored recovery points\n\n";
        for p in &rpo.restored {
            s += &format!(
                "- `{}` of export `{}` from target `{}`, consistent at {}\n",
                p.id,
                p.export,
                p.target,
                shown(p.consistency_time)
            );
        }
    }
    for n in &r.notes {
        s += &format!("\n> {n}\n");
    }
    s
}
