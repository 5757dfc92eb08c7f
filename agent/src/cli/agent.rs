//! The `drp-agent` commands: backup, list, verify (restore is in
//! [`super::restore`], shared with `drp`).

use std::path::PathBuf;

use chrono::Utc;
use clap::{Parser, Subcommand};

use super::output::{Output, Table};
use super::restore::RestoreArgs;
use crate::backup;
use crate::config::units::{format_bytes, format_duration};
use crate::config::{Policy, TargetConfig};
use crate::repository::Repository;
use crate::target::Target;
use crate::verify::{self, Which};
use crate::{Error, ExitCode, Result};

#[derive(Debug, Parser)]
#[command(
    name = "drp-agent",
    version,
    about = "drp host agent: backups of databases and directories to NAS and S3, verified restores"
)]
pub struct Cli {
    /// Machine-readable output (JSON on stdout, JSON progress lines on stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress output.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// More logging (-v, -vv).
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Export sources to their targets now.
    Backup {
        #[arg(long, short)]
        policy: PathBuf,
        /// Only these exports (default: all).
        #[arg(long, short)]
        export: Vec<String>,
    },
    /// List committed recovery points.
    List {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long, short)]
        export: Option<String>,
    },
    /// Re-read recovery points and check their sizes and digests.
    Verify {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long, short)]
        export: Option<String>,
        /// Only the newest point of each export.
        #[arg(long, conflicts_with = "sample")]
        latest: bool,
        /// A random sample of N points per export and target.
        #[arg(long)]
        sample: Option<usize>,
    },
    /// Restore a recovery point (asks before replacing anything).
    Restore(RestoreArgs),
}

/// Where recovery points are looked up: a policy's targets, or one target
/// given by address (from a bare machine).
#[derive(Debug, Clone, clap::Args)]
pub struct RepoArgs {
    /// Policy file.
    #[arg(long, short, required_unless_present = "target")]
    pub policy: Option<PathBuf>,
    /// Target address, without a policy: a path, file://, s3://bucket/prefix?endpoint=…&region=…, sftp://user@host/path?key=…
    #[arg(long, conflicts_with = "policy")]
    pub target: Option<String>,
    /// Only this target of the policy.
    #[arg(long = "from", requires = "policy")]
    pub from: Option<String>,
    /// Host whose recovery points to use (default: the policy's host).
    #[arg(long)]
    pub host: Option<String>,
}

pub struct Scope {
    pub policy: Option<Policy>,
    pub host: Option<String>,
    pub repos: Vec<Repository>,
    /// Targets that could not be opened.
    pub unreachable: Vec<Error>,
}

impl Scope {
    pub async fn open(args: &RepoArgs, export: Option<&str>) -> Result<Scope> {
        if let Some(path) = &args.policy {
            let policy = Policy::load(path)?;
            let mut names: Vec<String> = match (&args.from, export) {
                (Some(t), _) => vec![t.clone()],
                (None, Some(e)) => policy.export(e)?.targets.clone(),
                (None, None) => policy
                    .exports
                    .values()
                    .flat_map(|e| e.targets.clone())
                    .collect(),
            };
            let mut seen = std::collections::HashSet::new();
            names.retain(|n| seen.insert(n.clone()));
            let mut repos = Vec::new();
            let mut unreachable = Vec::new();
            for name in names {
                let config = policy.targets.get(&name).ok_or_else(|| {
                    Error::NotFound(format!("no target `{name}` in {}", policy.path.display()))
                })?;
                let repo = Repository::new(Target::open(&name, config, &policy.base_dir)?);
                match repo.check(false).await {
                    // No backup has reached this target yet: it holds no point.
                    Ok(()) | Err(Error::NotFound(_)) => repos.push(repo),
                    Err(e) => unreachable.push(e),
                }
            }
            if repos.is_empty()
                && let Some(e) = unreachable.pop()
            {
                return Err(e);
            }
            Ok(Scope {
                host: Some(args.host.clone().unwrap_or_else(|| policy.host.clone())),
                policy: Some(policy),
                repos,
                unreachable,
            })
        } else {
            let address = args
                .target
                .as_deref()
                .ok_or_else(|| Error::Usage("give --policy or --target".into()))?;
            let config = TargetConfig::from_address(address)?;
            let repo = Repository::new(Target::open("target", &config, std::path::Path::new("."))?);
            repo.check(false).await?;
            Ok(Scope {
                policy: None,
                host: args.host.clone(),
                repos: vec![repo],
                unreachable: Vec::new(),
            })
        }
    }

    pub fn host_for_restore(&self) -> Result<String> {
        self.host.clone().ok_or_else(|| {
            Error::Usage("without --policy, say whose recovery points with --host".into())
        })
    }

    /// `(host, export)` pairs to look at in `repo`.
    async fn pairs(
        &self,
        repo: &Repository,
        export: Option<&str>,
    ) -> Result<Vec<(String, String)>> {
        match (&self.policy, &self.host) {
            (Some(policy), Some(host)) => Ok(policy
                .exports
                .values()
                .filter(|e| export.is_none_or(|x| x == e.name))
                .filter(|e| e.targets.iter().any(|t| t == repo.name()))
                .map(|e| (host.clone(), e.name.clone()))
                .collect()),
            _ => Ok(repo
                .exports()
                .await?
                .into_iter()
                .filter(|(h, e)| {
                    self.host.as_ref().is_none_or(|x| x == h) && export.is_none_or(|x| x == e)
                })
                .collect()),
        }
    }
}

pub async fn run(cli: &Cli) -> Result<ExitCode> {
    let out = Output {
        json: cli.json,
        quiet: cli.quiet,
    };
    match &cli.command {
        Command::Backup { policy, export } => run_backup(policy, export, &out).await,
        Command::List { repo, export } => run_list(repo, export.as_deref(), &out).await,
        Command::Verify {
            repo,
            export,
            latest,
            sample,
        } => {
            let which = match (latest, sample) {
                (true, _) => Which::Latest,
                (_, Some(n)) => Which::Sample(*n),
                _ => Which::All,
            };
            run_verify(repo, export.as_deref(), which, &out).await
        }
        Command::Restore(args) => super::restore::run(args, &out).await,
    }
}

async fn run_backup(
    policy_path: &std::path::Path,
    only: &[String],
    out: &Output,
) -> Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    let names: Vec<String> = if only.is_empty() {
        policy.exports.keys().cloned().collect()
    } else {
        for n in only {
            policy.export(n)?;
        }
        only.to_vec()
    };
    let mut worst = ExitCode::Ok;
    let mut reports = Vec::new();
    for name in &names {
        let report = backup::run(&policy, name, out.progress()).await?;
        let code = report.exit_code();
        if code as u8 > worst as u8 {
            worst = code;
        }
        if !out.json {
            if let Some(e) = &report.source_error {
                eprintln!("{}: export failed, nothing committed: {e}", report.export);
            }
            for t in &report.targets {
                match &t.result {
                    Ok(m) => println!(
                        "{}: committed {} to `{}` ({} raw, {} stored, {:.1}x) in {:.1}s",
                        report.export,
                        m.id,
                        t.target,
                        format_bytes(m.raw.size),
                        format_bytes(m.stored.size),
                        m.ratio(),
                        report.seconds
                    ),
                    Err(e) => eprintln!("{}: target `{}` failed: {e}", report.export, t.target),
                }
            }
        }
        reports.push(report);
    }
    if out.json {
        let body: Vec<serde_json::Value> = reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "export": r.export, "id": r.id, "seconds": r.seconds,
                    "exit_code": r.exit_code() as u8,
                    "source_error": r.source_error.as_ref().map(|e| e.to_string()),
                    "targets": r.targets.iter().map(|t| match &t.result {
                        Ok(m) => serde_json::json!({"target": t.target, "committed": true, "manifest": m}),
                        Err(e) => serde_json::json!({"target": t.target, "committed": false, "error": e.to_string()}),
                    }).collect::<Vec<_>>(),
                })
            })
            .collect();
        out.print_json(&serde_json::json!({ "backups": body }));
    }
    Ok(worst)
}

async fn run_list(args: &RepoArgs, export: Option<&str>, out: &Output) -> Result<ExitCode> {
    let scope = Scope::open(args, export).await?;
    let now = Utc::now();
    let mut table = Table::new(&[
        "EXPORT",
        "ID",
        "CONSISTENT AT (UTC)",
        "AGE",
        "RAW",
        "STORED",
        "TARGET",
    ]);
    let mut json = Vec::new();
    let mut damaged = Vec::new();
    let mut failed = scope
        .unreachable
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>();
    for repo in &scope.repos {
        let pairs = match scope.pairs(repo, export).await {
            Ok(p) => p,
            Err(e) => {
                failed.push(e.to_string());
                continue;
            }
        };
        for (host, name) in pairs {
            let listing = match repo.list(&host, &name).await {
                Ok(l) => l,
                Err(e) => {
                    failed.push(e.to_string());
                    continue;
                }
            };
            for m in &listing.points {
                table.row(vec![
                    if scope.policy.is_some() {
                        m.export.clone()
                    } else {
                        format!("{}/{}", m.host, m.export)
                    },
                    m.id.clone(),
                    m.consistency_time.format("%Y-%m-%d %H:%M:%S").to_string(),
                    format_duration((now - m.consistency_time).to_std().unwrap_or_default()),
                    format_bytes(m.raw.size),
                    format_bytes(m.stored.size),
                    repo.name().to_string(),
                ]);
                json.push(serde_json::json!({"target": repo.name(), "manifest": m}));
            }
            damaged.extend(
                listing
                    .damaged
                    .into_iter()
                    .map(|d| format!("target `{}`: {}: {}", repo.name(), d.object, d.message)),
            );
        }
    }
    if out.json {
        out.print_json(
            &serde_json::json!({"points": json, "damaged": damaged, "unreachable": failed}),
        );
    } else {
        if table.is_empty() {
            println!("no recovery points");
        } else {
            println!("{}", table.render());
        }
        for d in &damaged {
            eprintln!("damaged manifest, ignored: {d}");
        }
        for f in &failed {
            eprintln!("not listed: {f}");
        }
    }
    Ok(if !failed.is_empty() {
        ExitCode::Failed
    } else if !damaged.is_empty() {
        ExitCode::Integrity
    } else {
        ExitCode::Ok
    })
}

async fn run_verify(
    args: &RepoArgs,
    export: Option<&str>,
    which: Which,
    out: &Output,
) -> Result<ExitCode> {
    let scope = Scope::open(args, export).await?;
    let mut results = Vec::new();
    for repo in &scope.repos {
        for (host, name) in scope.pairs(repo, export).await? {
            results.extend(verify::verify(repo, &host, &name, which, out.progress()).await);
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
