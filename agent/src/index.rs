//! `index`: the catalogue's index of each export, re-derived from its
//! manifests (`rebuild`); `fill`, hidden, copies a committed point into
//! many (the catalogue benchmark's repositories).

use chrono::Duration;
use clap::Subcommand;
use drp_cli::repo::RepoArgs;
use drp_cli::{Output, Table};
use drp_core::scope::Scope;
use drp_core::{Error, ExitCode, Result};

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Re-derive each export's catalogue index from its manifests (the
    /// manifests are the truth; the index only saves reading them all).
    Rebuild {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long, short)]
        export: Option<String>,
    },
    /// Benchmarks: copy the oldest point of an export into COUNT more, each
    /// a real point (its own data object, same bytes and digests; a signed
    /// manifest when the policy signs) one `--every` older than the last.
    #[command(hide = true)]
    Fill {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long, short)]
        export: String,
        #[arg(long)]
        count: usize,
        #[arg(long, value_parser = drp_cli::parse_duration, default_value = "1h")]
        every: std::time::Duration,
    },
}

pub async fn run(cmd: &IndexCommand, out: &Output) -> Result<ExitCode> {
    match cmd {
        IndexCommand::Rebuild { repo, export } => rebuild(repo, export.as_deref(), out).await,
        IndexCommand::Fill {
            repo,
            export,
            count,
            every,
        } => fill(repo, export, *count, *every, out).await,
    }
}

async fn rebuild(args: &RepoArgs, export: Option<&str>, out: &Output) -> Result<ExitCode> {
    let scope = Scope::open(&args.selection(), export).await?;
    let mut code = if scope.unreachable.is_empty() {
        ExitCode::Ok
    } else {
        ExitCode::Partial
    };
    let mut table = Table::new(&["EXPORT", "TARGET", "POINTS", "DAMAGED", "RESULT"]);
    let mut json = Vec::new();
    for repo in &scope.repos {
        for (host, name) in scope.pairs(repo, export).await? {
            let result = repo.rebuild_index(&host, &name).await;
            let (points, damaged) = result
                .as_ref()
                .map(|l| (l.points.len(), l.damaged.len()))
                .unwrap_or_default();
            if result.is_err() {
                code = code.worse(ExitCode::Failed);
            }
            let error = result.as_ref().err().map(|e| e.to_string());
            json.push(serde_json::json!({
                "host": host, "export": name, "target": repo.name(), "points": points,
                "damaged": damaged, "ok": error.is_none(), "error": error,
            }));
            table.row(vec![
                format!("{host}/{name}"),
                repo.name().to_string(),
                points.to_string(),
                damaged.to_string(),
                error.map_or("rebuilt".into(), |e| format!("FAILED: {e}")),
            ]);
        }
    }
    if out.json {
        out.print_json(&serde_json::json!({
            "rebuilt": json,
            "unreachable": scope.unreachable.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
        }));
    } else {
        println!(
            "{}",
            if table.is_empty() {
                "no export to index".into()
            } else {
                table.render()
            }
        );
        for e in &scope.unreachable {
            eprintln!("unreachable: {e}");
        }
    }
    Ok(code)
}

async fn fill(
    args: &RepoArgs,
    export: &str,
    count: usize,
    every: std::time::Duration,
    out: &Output,
) -> Result<ExitCode> {
    let scope = Scope::open(&args.selection(), Some(export)).await?;
    let every = Duration::from_std(every).map_err(|e| Error::Usage(e.to_string()))?;
    let host = scope
        .host
        .clone()
        .ok_or_else(|| Error::Usage("index fill needs --policy or --host".into()))?;
    for repo in &scope.repos {
        let listing = repo.list(&host, export).await?;
        let Some(template) = listing.points.first().cloned() else {
            return Err(Error::NotFound(format!(
                "no point of {host}/{export} on `{}` to copy",
                repo.name()
            )));
        };
        let made = repo
            .fill(&template, count, template.consistency_time, every)
            .await?;
        let listing = repo.rebuild_index(&host, export).await?;
        if !out.quiet {
            eprintln!(
                "{host}/{export} on `{}`: {made} points added, {} in all",
                repo.name(),
                listing.points.len()
            );
        }
    }
    Ok(ExitCode::Ok)
}
