//! The `drp-agent` commands: backup, list, verify (restore is in
//! [`super::restore`], shared with `drp`).

use std::path::PathBuf;

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use super::output::{Output, Table};
use super::restore::RestoreArgs;
use crate::config::units::{format_bytes, format_duration};
use crate::config::{Policy, TargetConfig};
use crate::repository::Repository;
use crate::verify::{self, Which};
use crate::{Error, ExitCode, Result};
use crate::{prune, runner, state};

#[derive(Debug, Parser)]
#[command(
    name = "drp-agent",
    version,
    about = "drp host agent: backups of databases and directories to NAS and S3, verified restores"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: super::Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the repository on the policy's targets (all, or --target). A
    /// target without one is otherwise an error: the share may not be mounted.
    Init {
        #[arg(long, short)]
        policy: PathBuf,
        /// Only this target.
        #[arg(long)]
        target: Vec<String>,
    },
    /// Export sources to their targets now.
    Backup {
        #[arg(long, short)]
        policy: PathBuf,
        /// Only these exports (default: all).
        #[arg(long, short)]
        export: Vec<String>,
        /// Wait this long for a running backup of the same export (default: exit at once).
        #[arg(long, value_parser = parse_duration, default_value = "0s")]
        wait: Duration,
    },
    /// Run what the schedules say: with --due, what is due now (for cron or a
    /// systemd timer), then exit; without, as a daemon keeping the schedule.
    Run {
        #[arg(long, short)]
        policy: PathBuf,
        /// Run the exports that are due (and those missed while down, once), then exit.
        #[arg(long)]
        due: bool,
        /// Pretend it is this time when deciding what is due (RFC 3339).
        #[arg(long, hide = true)]
        now: Option<String>,
        /// Wait this long for a running backup of the same export.
        #[arg(long, value_parser = parse_duration, default_value = "0s")]
        wait: Duration,
        /// Daemon: how long SIGTERM waits for a running backup before abandoning it.
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        stop_timeout: Duration,
    },
    /// Apply retention: keep what the rules say, delete the rest and orphans of killed runs.
    Prune {
        #[arg(long, short)]
        policy: PathBuf,
        #[arg(long, short)]
        export: Vec<String>,
        /// Show what would be kept and deleted, and why; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Pretend it is this time (RFC 3339) for the orphans' grace period.
        #[arg(long, hide = true)]
        now: Option<String>,
    },
    /// Per export: last run, next run, RPO exposure against the objective, target health.
    Status {
        #[arg(long, short)]
        policy: PathBuf,
    },
    /// Snapshot sets tied to changes: create, list, rollback, expire.
    #[command(subcommand)]
    Snapshot(super::snapshot::SnapshotCommand),
    /// Snapshot, run a change, and roll back if it fails.
    Guard {
        #[arg(long, short)]
        policy: PathBuf,
        #[arg(long)]
        change: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        only: Vec<String>,
        /// Ask before rolling back a failed change.
        #[arg(long)]
        ask: bool,
        /// The change, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Write a systemd service and timer for this policy, and print the crontab lines.
    Units {
        #[arg(long, short)]
        policy: PathBuf,
        /// Folder to write the unit files into (default: print them).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Path of drp-agent in the units (default: this binary).
        #[arg(long)]
        bin: Option<PathBuf>,
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
                match Repository::open(&name, config, &policy.base_dir).await {
                    Ok(repo) => repos.push(repo),
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
            let repo = Repository::open("target", &config, std::path::Path::new(".")).await?;
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
    let out = cli.global.output();
    match &cli.command {
        Command::Init { policy, target } => run_init(policy, target, &out).await,
        Command::Backup {
            policy,
            export,
            wait,
        } => run_backup(policy, export, *wait, &out).await,
        Command::Run {
            policy,
            due,
            now,
            wait,
            stop_timeout,
        } => {
            if *due {
                run_due(policy, now.as_deref(), *wait, &out).await
            } else {
                run_daemon(policy, *wait, *stop_timeout, &out).await
            }
        }
        Command::Prune {
            policy,
            export,
            dry_run,
            now,
        } => run_prune(policy, export, *dry_run, now.as_deref(), &out).await,
        Command::Status { policy } => run_status(policy, &out).await,
        Command::Snapshot(cmd) => super::snapshot::run(cmd, &out).await,
        Command::Guard {
            policy,
            change,
            reason,
            only,
            ask,
            command,
        } => super::snapshot::guard(policy, change, reason, only, *ask, command, &out).await,
        Command::Units {
            policy,
            out: dir,
            bin,
        } => run_units(policy, dir.as_deref(), bin.as_deref(), &out),
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

async fn run_init(
    policy_path: &std::path::Path,
    only: &[String],
    out: &Output,
) -> Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    for name in only {
        if !policy.targets.contains_key(name) {
            return Err(Error::NotFound(format!(
                "no target `{name}` in {}; it defines: {}",
                policy.path.display(),
                policy
                    .targets
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let mut code = ExitCode::Ok;
    let mut json = Vec::new();
    for (name, config) in &policy.targets {
        if !only.is_empty() && !only.contains(name) {
            continue;
        }
        let result = Repository::create(name, config, &policy.base_dir)
            .await
            .map(|(_, done)| done);
        let location = config.backend().location();
        match &result {
            Ok(done) if !out.json => println!(
                "target `{name}`: {} at {location}",
                match done {
                    crate::repository::Initialised::Created => "repository created",
                    crate::repository::Initialised::Existing => "repository already there",
                }
            ),
            Err(e) if !out.json => eprintln!("target `{name}`: {e}"),
            _ => {}
        }
        if let Err(e) = &result {
            code = worse(code, e.exit_code());
        }
        json.push(serde_json::json!({
            "target": name, "location": location,
            "created": matches!(result, Ok(crate::repository::Initialised::Created)),
            "error": result.as_ref().err().map(|e| e.to_string()),
        }));
    }
    if out.json {
        out.print_json(&serde_json::json!({ "init": json }));
    }
    Ok(code)
}

fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    crate::config::HumanDuration::parse(text).map(|d| d.as_duration())
}

fn now_or(text: Option<&str>) -> Result<DateTime<Utc>> {
    text.map(super::parse_time)
        .transpose()
        .map(|t| t.unwrap_or_else(Utc::now))
}

async fn run_backup(
    policy_path: &std::path::Path,
    only: &[String],
    wait: Duration,
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
    run_exports(&policy, &names, wait, Utc::now(), runner::Upkeep::None, out).await
}

/// Runs exports one after the other and reports each; the exit code is the worst.
async fn run_exports(
    policy: &Policy,
    names: &[String],
    wait: Duration,
    now: DateTime<Utc>,
    upkeep: runner::Upkeep,
    out: &Output,
) -> Result<ExitCode> {
    let mut worst = ExitCode::Ok;
    let mut json = Vec::new();
    for name in names {
        let outcome = match runner::run_export(policy, name, wait, now, upkeep, out.progress())
            .await
        {
            Ok(o) => o,
            Err(e) if names.len() > 1 => {
                // One export's failure (e.g. its lock is held) does not stop the others.
                eprintln!("{name}: {e}");
                worst = worse(worst, e.exit_code());
                json.push(serde_json::json!({"export": name, "exit_code": e.exit_code() as u8, "error": e.to_string()}));
                continue;
            }
            Err(e) => return Err(e),
        };
        let report = &outcome.report;
        worst = worse(worst, report.exit_code());
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
            for e in &outcome.notify_errors {
                eprintln!("{}: {e}", report.export);
            }
        }
        json.push(serde_json::json!({
            "export": report.export, "id": report.id, "seconds": report.seconds,
            "exit_code": report.exit_code() as u8,
            "source_error": report.source_error.as_ref().map(|e| e.to_string()),
            "targets": report.targets.iter().map(|t| match &t.result {
                Ok(m) => serde_json::json!({"target": t.target, "committed": true, "manifest": m}),
                Err(e) => serde_json::json!({"target": t.target, "committed": false, "error": e.to_string()}),
            }).collect::<Vec<_>>(),
            "notify_errors": outcome.notify_errors,
        }));
    }
    if out.json {
        out.print_json(&serde_json::json!({ "backups": json }));
    }
    Ok(worst)
}

fn worse(a: ExitCode, b: ExitCode) -> ExitCode {
    if b as u8 > a as u8 { b } else { a }
}

async fn run_due(
    policy_path: &std::path::Path,
    now: Option<&str>,
    wait: Duration,
    out: &Output,
) -> Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    let now = now_or(now)?;
    let due = runner::due_exports(&policy, now);
    if due.is_empty() {
        if out.json {
            out.print_json(&serde_json::json!({"backups": [], "due": []}));
        } else if !out.quiet {
            println!("nothing due");
        }
        return Ok(ExitCode::Ok);
    }
    if !out.json && !out.quiet {
        for (name, slot) in &due {
            println!("{name}: due (slot {})", slot.to_rfc3339());
        }
    }
    let names: Vec<String> = due.into_iter().map(|(n, _)| n).collect();
    let code = run_exports(
        &policy,
        &names,
        wait,
        now,
        runner::Upkeep::VerifyAndPrune,
        out,
    )
    .await;
    runner::expire_snapshots(&policy).await;
    code
}

async fn run_daemon(
    policy_path: &std::path::Path,
    wait: Duration,
    stop_timeout: Duration,
    out: &Output,
) -> Result<ExitCode> {
    let options = runner::DaemonOptions {
        stop_timeout,
        lock_wait: wait,
    };
    let json = out.json;
    runner::daemon(policy_path.to_path_buf(), options, out.progress(), move |result, export| match result {
        Ok(o) => {
            let r = &o.report;
            if json {
                println!("{}", serde_json::json!({"export": export, "id": r.id, "exit_code": r.exit_code() as u8}));
            } else {
                println!("{export}: {} ({:?}, {} of {} targets committed)", r.id, r.exit_code(), r.committed().count(), r.targets.len());
            }
        }
        Err(e) => eprintln!("{export}: {e}"),
    })
    .await?;
    Ok(ExitCode::Ok)
}

async fn run_prune(
    policy_path: &std::path::Path,
    only: &[String],
    dry_run: bool,
    now: Option<&str>,
    out: &Output,
) -> Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    let now = now_or(now)?;
    let names: Vec<String> = if only.is_empty() {
        policy.exports.keys().cloned().collect()
    } else {
        only.to_vec()
    };
    let mut code = ExitCode::Ok;
    let mut json = Vec::new();
    for name in &names {
        policy.export(name)?;
        // A backup of this export running on this host holds the lock.
        let (dir, host, n) = (policy.state_dir.clone(), policy.host.clone(), name.clone());
        let lock = tokio::task::spawn_blocking(move || {
            crate::lock::ExportLock::acquire(&dir, &host, &n, Duration::from_secs(0))
        })
        .await
        .map_err(|e| Error::Failed(e.to_string()))??;
        let results = prune::prune_export(&policy, name, now, dry_run).await?;
        drop(lock);
        for result in results {
            let t = match result {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{name}: not pruned: {e}");
                    code = worse(code, ExitCode::Failed);
                    continue;
                }
            };
            if !t.errors.is_empty() {
                code = worse(code, ExitCode::Failed);
            }
            if out.json {
                json.push(serde_json::json!({
                    "export": name, "target": t.target, "dry_run": dry_run,
                    "points": t.points.iter().map(|p| serde_json::json!({
                        "id": p.decision.id, "consistency_time": p.decision.consistency_time,
                        "keep": p.decision.keep(), "reasons": p.decision.reasons,
                        "verified": p.verified, "deleted": p.deleted,
                    })).collect::<Vec<_>>(),
                    "orphans": t.orphans, "young_orphans": t.young_orphans, "errors": t.errors,
                }));
                continue;
            }
            let mut table = Table::new(&[
                "EXPORT",
                "TARGET",
                "ID",
                "CONSISTENT AT (UTC)",
                "ACTION",
                "WHY",
            ]);
            for p in &t.points {
                let action = match (p.decision.keep(), p.deleted, dry_run) {
                    (true, _, _) => "keep",
                    (false, true, _) => "deleted",
                    (false, false, true) => "would delete",
                    (false, false, false) => "DELETE FAILED",
                };
                table.row(vec![
                    name.clone(),
                    t.target.clone(),
                    p.decision.id.clone(),
                    p.decision
                        .consistency_time
                        .format("%Y-%m-%d %H:%M:%S")
                        .to_string(),
                    action.into(),
                    p.decision.reasons.join(", "),
                ]);
            }
            if !table.is_empty() {
                println!("{}", table.render());
            }
            for o in &t.orphans {
                println!(
                    "{name} on `{}`: {} orphan {o}",
                    t.target,
                    if dry_run { "would remove" } else { "removed" }
                );
            }
            for o in &t.young_orphans {
                println!(
                    "{name} on `{}`: kept {o} (younger than the grace period: maybe a backup in progress)",
                    t.target
                );
            }
            for e in &t.errors {
                eprintln!("{name} on `{}`: {e}", t.target);
            }
        }
    }
    if out.json {
        out.print_json(&serde_json::json!({"prune": json}));
    }
    Ok(code)
}

async fn run_status(policy_path: &std::path::Path, out: &Output) -> Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    let now = Utc::now();
    let rpo = policy.objectives.rpo.map(|d| d.as_duration());
    let mut rows = Vec::new();
    let mut health = Vec::new();
    for (name, config) in &policy.targets {
        let status = match Repository::open(name, config, &policy.base_dir).await {
            Ok(_) => "ok".to_string(),
            Err(Error::NotFound(_)) => {
                "no repository (not initialised, or the share is not mounted)".to_string()
            }
            Err(e) => format!("unreachable: {e}"),
        };
        health.push((name.clone(), status));
    }
    let mut over = false;
    for e in policy.exports.values() {
        let mut st = state::load(&policy.state_dir, &policy.host, &e.name);
        runner::refresh_points(&policy, &e.name, &mut st).await;
        let exposure = st
            .newest_consistency
            .map(|t| (now - t).to_std().unwrap_or_default());
        let within = match (exposure, rpo) {
            (Some(x), Some(r)) => Some(x <= r),
            (None, Some(_)) => Some(false),
            _ => None,
        };
        if within == Some(false) {
            over = true;
        }
        rows.push((e, st, exposure, within));
    }
    if out.json {
        out.print_json(&serde_json::json!({
            "host": policy.host,
            "rpo_objective_seconds": rpo.map(|r| r.as_secs()),
            "exports": rows.iter().map(|(e, st, exposure, within)| serde_json::json!({
                "export": e.name, "schedule": e.schedule.expression,
                "last_attempt": st.last_attempt, "last_result": st.last_result, "last_error": st.last_error,
                "last_success": st.last_success, "next_run": e.schedule.next(now),
                "points": st.points, "newest_consistency": st.newest_consistency,
                "rpo_exposure_seconds": exposure.map(|x| x.as_secs()), "within_rpo": within,
                "last_maintenance": st.last_maintenance,
            })).collect::<Vec<_>>(),
            "targets": health.iter().map(|(n, s)| serde_json::json!({"target": n, "status": s})).collect::<Vec<_>>(),
            "snapshots": snapshots_status(&policy, now),
        }));
    } else {
        let mut table = Table::new(&[
            "EXPORT", "LAST RUN", "RESULT", "NEXT RUN", "POINTS", "EXPOSURE", "RPO",
        ]);
        for (e, st, exposure, within) in &rows {
            let ago = |t: Option<DateTime<Utc>>| {
                t.map(|t| {
                    format!(
                        "{} ago",
                        format_duration((now - t).to_std().unwrap_or_default())
                    )
                })
                .unwrap_or_else(|| "never".into())
            };
            table.row(vec![
                e.name.clone(),
                ago(st.last_attempt),
                st.last_result.clone().unwrap_or_else(|| "-".into()),
                e.schedule
                    .next(now)
                    .map(|t| {
                        format!(
                            "in {}",
                            format_duration((t - now).to_std().unwrap_or_default())
                        )
                    })
                    .unwrap_or_else(|| "-".into()),
                st.points.values().sum::<usize>().to_string(),
                exposure
                    .map(format_duration)
                    .unwrap_or_else(|| "no point".into()),
                match (within, rpo) {
                    (Some(true), Some(r)) => format!("ok (objective {})", format_duration(r)),
                    (Some(false), Some(r)) => format!("OVER objective {}", format_duration(r)),
                    _ => "no objective".into(),
                },
            ]);
        }
        println!("{}", table.render());
        for (e, st, _, _) in &rows {
            match &st.last_maintenance {
                Some(m) => println!(
                    "{}: after the last scheduled run{}: newest point read back on {}, retention kept {} and deleted {} points, {} orphans removed{}",
                    e.name,
                    m.at.map(|t| format!(
                        " ({} ago)",
                        format_duration((now - t).to_std().unwrap_or_default())
                    ))
                    .unwrap_or_default(),
                    if m.verified.is_empty() {
                        "no target".to_string()
                    } else {
                        m.verified.join(", ")
                    },
                    m.kept,
                    m.deleted,
                    m.orphans_removed,
                    if m.errors.is_empty() {
                        String::new()
                    } else {
                        format!("; problems: {}", m.errors.join("; "))
                    }
                ),
                None => println!(
                    "{}: retention not applied yet (`run --due` and the daemon apply it after each backup; or `prune`)",
                    e.name
                ),
            }
        }
        for (n, s) in &health {
            println!("target `{n}`: {s}");
        }
        for v in snapshots_status(&policy, now) {
            match v["taken_at"].as_str() {
                Some(_) => println!(
                    "snapshot `{}` ({}): newest {} ago, for change `{}`",
                    v["snapshot"].as_str().unwrap_or_default(),
                    v["kind"].as_str().unwrap_or_default(),
                    format_duration(std::time::Duration::from_secs(
                        v["age_seconds"].as_u64().unwrap_or(0)
                    )),
                    v["change"].as_str().unwrap_or_default()
                ),
                None => {
                    println!(
                        "snapshot `{}` ({}): none taken yet",
                        v["snapshot"].as_str().unwrap_or_default(),
                        v["kind"].as_str().unwrap_or_default()
                    )
                }
            }
        }
    }
    Ok(if over {
        ExitCode::ObjectivesMissed
    } else {
        ExitCode::Ok
    })
}

/// The newest snapshot of every declared snapshot, as recorded by this host.
fn snapshots_status(policy: &Policy, now: DateTime<Utc>) -> Vec<serde_json::Value> {
    let newest = crate::snapshot::newest(policy);
    policy
        .snapshots
        .iter()
        .map(|(name, config)| match newest.by_name.get(name) {
            Some(n) => serde_json::json!({
                "snapshot": name, "kind": config.kind(), "set": n.set, "change": n.change,
                "taken_at": n.taken_at, "age_seconds": (now - n.taken_at).num_seconds().max(0),
            }),
            None => serde_json::json!({"snapshot": name, "kind": config.kind(), "taken_at": null}),
        })
        .collect()
}

fn run_units(
    policy_path: &std::path::Path,
    dir: Option<&std::path::Path>,
    bin: Option<&std::path::Path>,
    out: &Output,
) -> Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    let this = std::env::current_exe().unwrap_or_else(|_| "drp-agent".into());
    let units = crate::units::render(&policy, policy_path, bin.unwrap_or(&this));
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io_path("cannot create", dir, e))?;
            for (ext, body) in [("service", &units.service), ("timer", &units.timer)] {
                let p = dir.join(format!("{}.{ext}", units.service_name));
                std::fs::write(&p, body).map_err(|e| Error::io_path("cannot write", &p, e))?;
                if !out.json {
                    println!("wrote {}", p.display());
                }
            }
            if !out.json {
                println!(
                    "enable with: systemctl daemon-reload && systemctl enable --now {}.timer",
                    units.service_name
                );
                println!("\nor, with cron:\n{}", units.crontab);
            }
        }
        None if !out.json => println!(
            "# {name}.service\n{}\n# {name}.timer\n{}\n{}",
            units.service,
            units.timer,
            units.crontab,
            name = units.service_name
        ),
        None => {}
    }
    if out.json {
        out.print_json(&serde_json::json!({
            "name": units.service_name, "service": units.service, "timer": units.timer, "crontab": units.crontab,
        }));
    }
    Ok(ExitCode::Ok)
}

pub async fn run_list(args: &RepoArgs, export: Option<&str>, out: &Output) -> Result<ExitCode> {
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
