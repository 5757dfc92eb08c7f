//! `restore`, shared by `drp-agent restore` (on the host) and `drp restore`
//! (for the on-call engineer): one library path, one behaviour.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;

use crate::Output;
use crate::repo::RepoArgs;
use drp_core::config::units::{format_bytes, format_duration};
use drp_core::restore::{self, Restore, Selector};
use drp_core::scope::Scope;
use drp_core::source::{self, Source};
use drp_core::time::{GivenTime, parse_time_in};
use drp_core::{Error, ExitCode, Result};

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The export to restore.
    #[arg(long, short, required_unless_present = "change", default_value = "")]
    pub export: String,
    /// Instead of an export: roll back to the snapshot set taken before this change.
    #[arg(long, conflicts_with_all = ["point", "before", "to"])]
    pub change: Option<String>,
    /// Restore this recovery point (default: the newest).
    #[arg(long, conflicts_with_all = ["before", "to_time"])]
    pub point: Option<String>,
    /// Point-in-time restore (exports that archive continuously: postgres-cluster's WAL, MariaDB's
    /// binary logs): replay the archive up to this instant, read as --before is, from the newest
    /// point that ended before it.
    #[arg(long, conflicts_with_all = ["before", "latest"])]
    pub to_time: Option<String>,
    /// Restore to the newest instant there is (the default): for exports that archive continuously,
    /// the end of the archive.
    #[arg(long, conflicts_with_all = ["point", "before"])]
    pub latest: bool,
    /// Restore the newest point consistent strictly before this time: `YYYY-MM-DD HH:MM[:SS]` in the
    /// policy's `timezone` (UTC when it sets none; with --target, the machine's zone), optionally
    /// followed by `UTC`, an offset or a zone name; what `date` prints; RFC 3339; or `10 minutes ago`.
    #[arg(long)]
    pub before: Option<String>,
    /// Where to restore: a database name or a path (default: the source itself).
    #[arg(long)]
    pub to: Option<String>,
    /// An incremental tree export: restore only this path of the tree (a folder or file relative to
    /// its root; repeatable), into --to or, by default, a new folder beside the tree.
    #[arg(long = "path", value_name = "PATH", conflicts_with = "change")]
    pub paths: Vec<String>,
    /// When the failure happened, to state the data-loss window (default: now); read as --before is.
    #[arg(long)]
    pub failed_at: Option<String>,
    /// Replace existing data without asking.
    #[arg(long, short)]
    pub yes: bool,
    /// Show the plan and stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Scratch folder for database dumps while they are verified (default: the system's).
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Drop the data this restore replaces once it has succeeded (by default
    /// it is kept beside the destination, renamed; or set `restore:
    /// drop_replaced` in the policy).
    #[arg(long)]
    pub drop_replaced: bool,
}

pub async fn run(args: &RestoreArgs, out: &Output) -> Result<ExitCode> {
    if let Some(change) = &args.change {
        let Some(policy) = &args.repo.policy else {
            return Err(Error::Usage(
                "rolling back a change's snapshots needs --policy".into(),
            ));
        };
        return crate::snapshot::run(
            &crate::snapshot::SnapshotCommand::Rollback {
                policy: policy.clone(),
                change: change.clone(),
                yes: args.yes,
            },
            out,
        )
        .await;
    }
    let scope = Scope::open(&args.repo.selection(), Some(&args.export)).await?;
    // Wall-clock times are the policy's; without a policy, the machine's.
    let zone = scope.policy.as_ref().map(|p| p.timezone);
    let before: Option<GivenTime> = args
        .before
        .as_deref()
        .map(|t| parse_time_in(t, zone))
        .transpose()?;
    let to_time: Option<GivenTime> = args
        .to_time
        .as_deref()
        .map(|t| parse_time_in(t, zone))
        .transpose()?;
    let selector = match (&args.point, &before, &to_time) {
        (Some(id), _, _) => Selector::Id(id.clone()),
        (None, Some(t), _) => Selector::Before(t.instant),
        (None, None, Some(t)) => Selector::At(t.instant),
        (None, None, None) => Selector::Latest,
    };
    let given_failed_at: Option<GivenTime> = args
        .failed_at
        .as_deref()
        .map(|t| parse_time_in(t, zone))
        .transpose()?;
    let failed_at = given_failed_at.map_or_else(Utc::now, |t| t.instant);
    let host = scope.host_for_restore()?;
    let source: Arc<dyn Source> = match &scope.policy {
        Some(policy) => {
            let mut config = policy.export(&args.export)?.source.clone();
            if !args.paths.is_empty() {
                match &mut config {
                    drp_core::config::SourceConfig::Directory(c)
                        if c.mode == source::directory::Mode::Incremental =>
                    {
                        c.restore_paths = args.paths.clone()
                    }
                    _ => {
                        return Err(Error::Usage(format!(
                            "--path restores part of an incremental tree export; export `{}` is not one",
                            args.export
                        )));
                    }
                }
            }
            Arc::from(source::build(&config, &policy.base_dir))
        }
        None if !args.paths.is_empty() => {
            return Err(Error::Usage(
                "--path needs --policy: an incremental point is read with the export's repository key".into(),
            ));
        }
        None => {
            // Without a policy the manifest says what kind of source it was;
            // connection settings come from the environment and `--to`.
            let (_, m, _) = restore::find(&scope.repos, &host, &args.export, &selector).await?;
            let Some(to) = &args.to else {
                return Err(Error::Usage(
                    "without --policy, give the destination with --to".into(),
                ));
            };
            Arc::from(source::build(
                &bare_source(&m.kind, to)?,
                std::path::Path::new("."),
            ))
        }
    };
    let restore = Restore::new(&scope.repos, &host, &args.export, source)
        .to(args.to.clone())
        .policy(scope.policy.as_ref())
        .identities(&args.repo.identities)
        .workdir(args.workdir.clone())
        .drop_replaced(args.drop_replaced)
        .progress(out.progress());
    let planned = restore.plan(&selector).await?;
    let plan = planned.plan();
    let m = &plan.manifest;
    let window = plan.data_loss_window(failed_at);
    let drop_replaced = restore.drops_replaced();
    if out.json {
        if args.dry_run {
            out.print_json(&serde_json::json!({
                "plan": {
                    "point": m.id, "target": plan.repository.name(), "consistency_time": m.consistency_time,
                    "destination": plan.destination.to_string(), "replaces": plan.replaces,
                    "kept_as": plan.kept_as, "drop_replaced": drop_replaced,
                    "data_loss_window_seconds": window.num_seconds(), "notes": plan.notes,
                    "replay": plan.replay.as_ref().map(|r| serde_json::json!({
                        "target_time": r.target, "recoverable_until": r.until, "timeline": r.timeline,
                    })),
                }
            }));
            return Ok(ExitCode::Ok);
        }
    } else {
        eprintln!("Restore plan");
        eprintln!(
            "  recovery point   {} ({} on target `{}`)",
            m.id,
            m.kind,
            plan.repository.name()
        );
        if let (Some(t), Some(text)) = (&before, &args.before) {
            eprintln!(
                "  chosen as        the newest consistent before {}",
                t.describe(text)
            );
        }
        if let (Some(t), Some(text)) = (&given_failed_at, &args.failed_at) {
            eprintln!("  failure at       {}", t.describe(text));
        }
        eprintln!(
            "  consistent at    {} ({} ago)",
            m.consistency_time.to_rfc3339(),
            format_duration(
                (Utc::now() - m.consistency_time)
                    .to_std()
                    .unwrap_or_default()
            )
        );
        if let Some(r) = &plan.replay {
            let until = r.until.map_or("-".into(), |u| u.to_rfc3339());
            let strictly = if r.inclusive { "" } else { "just before " };
            match (&r.target, &to_time, &args.to_time, &before, &args.before) {
                (Some(_), Some(t), Some(text), _, _) | (Some(_), _, _, Some(t), Some(text)) => {
                    eprintln!(
                        "  replays logs to  {strictly}{} (the archive reaches {until})",
                        t.describe(text)
                    )
                }
                (Some(t), ..) => eprintln!(
                    "  replays logs to  {strictly}{} (the archive reaches {until})",
                    t.to_rfc3339()
                ),
                (None, ..) => eprintln!("  replays logs to  the newest archived instant, {until}"),
            }
        }
        eprintln!(
            "  size             {} raw, {} stored",
            format_bytes(m.raw.size),
            format_bytes(m.stored.size)
        );
        eprintln!("  destination      {}", plan.destination);
        match (&plan.replaces, &plan.kept_as) {
            (Some(what), Some(kept)) => {
                eprintln!("  replaces         {what}");
                if drop_replaced {
                    eprintln!("  afterwards       the replaced data is dropped (--drop-replaced)");
                } else {
                    eprintln!("  keeps            {kept}");
                }
            }
            (Some(what), None) => eprintln!("  replaces         {what}"),
            (None, _) => eprintln!("  replaces         nothing (the destination does not exist)"),
        }
        eprintln!(
            "  data-loss window {} (changes after {} are not in this restore)",
            format_duration(window.to_std().unwrap_or_default()),
            plan.reaches().to_rfc3339()
        );
        for note in &plan.notes {
            eprintln!("  note             {note}");
        }
        if args.dry_run {
            return Ok(ExitCode::Ok);
        }
    }

    let confirmed = args.yes
        || plan.replaces.is_none()
        || (!out.json && crate::confirm(&format!("Replace {}?", plan.destination)));
    // The tools run in process groups of their own, out of reach of the
    // terminal's signals: on Ctrl-C or SIGTERM the restore is abandoned
    // (dropping it stops its tools and removes its copy) before exiting.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("cannot watch SIGTERM", e))?;
    let report = tokio::select! {
        r = planned.execute(confirmed) => r?,
        _ = tokio::signal::ctrl_c() => return Err(Error::Source(drp_core::source::SourceError::Cancelled)),
        _ = term.recv() => return Err(Error::Source(drp_core::source::SourceError::Cancelled)),
    };
    if out.json {
        out.print_json(&serde_json::json!({
            "restored": report.id, "target": report.target, "destination": report.destination,
            "raw_bytes": report.raw_bytes, "seconds": report.seconds,
            "consistency_time": m.consistency_time, "data_loss_window_seconds": window.num_seconds(),
            "verified": true, "kept": report.replaced.kept, "dropped": report.replaced.dropped,
            "reached": report.replaced.replayed.as_ref().map(|r| r.reached),
            "timeline": report.replaced.replayed.as_ref().map(|r| r.timeline),
        }));
    } else {
        println!(
            "restored {} to {} from `{}` in {:.1}s ({}; digests verified)",
            report.id,
            report.destination,
            report.target,
            report.seconds,
            format_bytes(report.raw_bytes)
        );
        if let Some(r) = &report.replaced.replayed {
            println!(
                "replayed the archived logs to {} (the last transaction replayed){}",
                r.reached.map_or("-".into(), |t| t.to_rfc3339()),
                if r.timeline > 0 {
                    format!(", now on timeline {}", r.timeline)
                } else {
                    String::new()
                }
            );
        }
        if let Some(kept) = &report.replaced.kept {
            println!("the replaced data is kept as {kept}; drop it when it is no longer needed");
        }
        if let Some(dropped) = &report.replaced.dropped {
            println!("the replaced data ({dropped}) was dropped");
        }
    }
    Ok(ExitCode::Ok)
}

fn bare_source(kind: &str, to: &str) -> Result<drp_core::config::SourceConfig> {
    let kind = drp_core::source::SourceKind::from_name(kind)
        .ok_or_else(|| Error::Usage(format!("recovery point of unknown kind `{kind}`")))?;
    Ok(drp_core::config::SourceConfig::bare(kind, to))
}
