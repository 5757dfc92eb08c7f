//! `verify`: re-read recovery points and check their sizes and digests.

use drp_cli::repo::RepoArgs;
use drp_cli::{Output, Table};
use drp_core::scope::Scope;
use drp_core::verify::{self, Which};
use drp_core::{ExitCode, Result};

pub async fn run(
    args: &RepoArgs,
    export: Option<&str>,
    which: Which,
    out: &Output,
) -> Result<ExitCode> {
    let scope = Scope::open(&args.selection(), export).await?;
    let mut results = Vec::new();
    for repo in &scope.repos {
        for (host, name) in scope.pairs(repo, export).await? {
            let grace = scope
                .policy
                .as_ref()
                .map(|p| p.prune.grace.as_duration())
                .unwrap_or(std::time::Duration::from_secs(86_400));
            let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::days(1));
            results.extend(verify::verify(repo, &host, &name, which, grace, out.progress()).await);
        }
    }
    let bad = results.iter().filter(|c| c.result.is_err()).count();
    let unreachable = scope.unreachable.len();
    if out.json {
        let items: Vec<_> = results
            .iter()
            .map(|c| serde_json::json!({
                "target": c.target, "host": c.host, "export": c.export, "id": c.id, "object": c.object,
                "ok": c.result.is_ok(), "error": c.result.as_ref().err().map(|e| e.to_string()),
            }))
            .collect();
        out.print_json(&serde_json::json!({
            "checked": items, "failed": bad,
            "unreachable": scope.unreachable.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        }));
    } else {
        let mut table = Table::new(&["EXPORT", "ID", "TARGET", "RESULT"]);
        for c in &results {
            table.row(vec![
                c.export.clone(),
                c.id.clone().unwrap_or_else(|| "-".into()),
                c.target.clone(),
                match &c.result {
                    Ok(()) => "ok".into(),
                    Err(e) => format!("FAILED: {e}"),
                },
            ]);
        }
        println!(
            "{}",
            if table.is_empty() {
                "nothing to verify".into()
            } else {
                table.render()
            }
        );
        for e in &scope.unreachable {
            eprintln!("not verified: {e}");
        }
        println!("{} checked, {bad} failed", results.len());
    }
    Ok(if bad > 0 {
        ExitCode::Integrity
    } else if unreachable > 0 {
        ExitCode::Failed
    } else {
        ExitCode::Ok
    })
}
