//! `drp-agent wal`: PostgreSQL's `archive_command` and `restore_command`,
//! and the archive's inventory.

use std::path::{Path, PathBuf};

use chrono::Utc;
use drp_cli::{Output, Table};
use drp_core::archiving::archive::{Got, Pushed};
use drp_core::archiving::run::{ExportArchive, GET_FATAL, get_status};
use drp_core::archiving::ship::BinlogArchive;
use drp_core::config::Policy;
use drp_core::config::units::format_duration;
use drp_core::source::SourceConfig;
use drp_core::{ExitCode, Result};

#[derive(Debug, clap::Subcommand)]
pub enum WalCommand {
    /// archive_command: store one WAL file on every target of the export
    /// (`archive_command = 'drp-agent wal push --policy FILE %p'`).
    Push {
        #[arg(long, short)]
        policy: PathBuf,
        /// The postgres-cluster export (default: the policy's only one).
        #[arg(long, short)]
        export: Option<String>,
        /// The file, as PostgreSQL gives it (%p).
        path: PathBuf,
    },
    /// restore_command: fetch one WAL file (`restore_command = 'drp-agent wal
    /// get --policy FILE %f %p'`). Exits 1 only when no target holds it, and
    /// 126 (recovery stops) when a target fails or a copy is damaged. For a
    /// warm standby (`--standby NAME`), from the primary's archive, and 1 on
    /// any failure: the standby waits and retries, its lag tells.
    Get {
        #[arg(long, short)]
        policy: PathBuf,
        #[arg(long, short, conflicts_with = "standby")]
        export: Option<String>,
        /// A standby of this policy: read the primary's archive it replays.
        #[arg(long)]
        standby: Option<String>,
        /// An age identity file, to fetch from an encrypted archive.
        #[arg(long = "identity", value_name = "FILE")]
        identities: Vec<PathBuf>,
        /// The file's name (%f).
        name: String,
        /// Where PostgreSQL wants it (%p).
        path: PathBuf,
    },
    /// MariaDB: close the server's binary log (FLUSH BINARY LOGS) and ship
    /// every closed one not shipped yet (the daemon does it every
    /// `binlog.rotate_every`).
    Ship {
        #[arg(long, short)]
        policy: PathBuf,
        /// The mariadb export with `binlog:` (default: the policy's only one).
        #[arg(long, short)]
        export: Option<String>,
    },
    /// What the archive holds: timelines, gaps, and the newest instant each
    /// base backup can be restored to.
    Status {
        #[arg(long, short)]
        policy: PathBuf,
        #[arg(long, short)]
        export: Option<String>,
    },
}

pub async fn run(cmd: &WalCommand, out: &Output) -> Result<ExitCode> {
    match cmd {
        WalCommand::Push {
            policy,
            export,
            path,
        } => {
            let policy = Policy::load(policy)?;
            let archive = ExportArchive::open(&policy, export.as_deref()).await?;
            let report = archive.push(path).await?;
            if report.reach_moved
                && let Err(e) = drp_core::metrics::write_textfile(&policy, chrono::Utc::now())
            {
                tracing::warn!(error = %e, "the metrics file is not rewritten");
            }
            let name = file_name(path);
            match report.pushed {
                None => tracing::info!("{name} was already archived"),
                Some(Pushed::AlreadyArchived) => {
                    tracing::info!("{name} was already archived with this content")
                }
                Some(Pushed::Stored) => tracing::info!(
                    "{name} archived on {} target(s) in {:.2}s ({} more pushed ahead)",
                    archive.repos.len(),
                    report.seconds,
                    report.ahead
                ),
            }
            Ok(ExitCode::Ok)
        }
        WalCommand::Get {
            policy,
            export,
            standby,
            identities,
            name,
            path,
        } => {
            let result = async {
                let policy = Policy::load(policy)?;
                let archive = match standby {
                    Some(s) => drp_core::standby::archive(&policy, s).await?,
                    None => ExportArchive::open(&policy, export.as_deref()).await?,
                };
                archive.with_identities(identities)?.get(name, path).await
            }
            .await;
            // A standby's server stops at a fatal status; it waits instead,
            // and its lag is watched.
            let status = match (&result, standby) {
                (Err(_), Some(_)) => 1,
                _ => get_status(&result),
            };
            match &result {
                Ok(Got::Restored { target, size }) => {
                    tracing::info!("{name} restored from `{target}` ({size} bytes)")
                }
                Ok(Got::Absent) => tracing::info!("{name} is not in the archive"),
                Err(e) if standby.is_some() => {
                    eprintln!("error: {e} (exit 1: the standby tries again)")
                }
                Err(e) => eprintln!("error: {e} (exit {GET_FATAL}: recovery stops here)"),
            }
            std::process::exit(status as i32);
        }
        WalCommand::Ship { policy, export } => {
            let policy = Policy::load(policy)?;
            let name = binlog_export(&policy, export.as_deref())?;
            let archive = BinlogArchive::open(&policy, &name).await?;
            let turn = archive.ship(true).await;
            let shipped = match &turn {
                Ok(s) => s.shipped.clone(),
                Err(_) => Vec::new(),
            };
            let state = archive.record(Some(turn)).await?;
            if out.json {
                out.print_json(&serde_json::json!({
                    "export": name, "shipped": shipped,
                    "recoverable_until": state.recoverable_until,
                }));
            } else {
                println!(
                    "{name}: shipped {} binary log(s){}; recoverable until {}",
                    shipped.len(),
                    if shipped.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", shipped.join(", "))
                    },
                    state
                        .recoverable_until
                        .map_or("-".into(), |t| t.to_rfc3339())
                );
            }
            Ok(ExitCode::Ok)
        }
        WalCommand::Status { policy, export } => {
            let policy = Policy::load(policy)?;
            if let Ok(name) = binlog_export(&policy, export.as_deref()) {
                return binlog_status(&policy, &name, out).await;
            }
            status(&policy, export.as_deref(), out).await
        }
    }
}

/// The export `name` names when it ships binary logs, or the policy's only
/// one that does.
fn binlog_export(policy: &Policy, name: Option<&str>) -> Result<String> {
    drp_core::archiving::run::export_of(
        policy,
        name,
        |s| matches!(s, SourceConfig::Mysql(c) if c.binlog.is_some()),
        "a mariadb export with `binlog:`",
    )
    .map(|e| e.name.clone())
}

async fn binlog_status(policy: &Policy, name: &str, out: &Output) -> Result<ExitCode> {
    let archive = BinlogArchive::open(policy, name).await?;
    let mut code = ExitCode::Ok;
    for e in &archive.unreachable {
        eprintln!("warning: {e}");
        code = ExitCode::Partial;
    }
    let state = archive.record(None).await?;
    let mut targets = Vec::new();
    for repo in &archive.repos {
        let objects = repo.binlog_list(&policy.host, name).await?;
        let newest = match objects.last() {
            Some(o) => repo.binlog_facts(&policy.host, name, o).await,
            None => None,
        };
        targets.push((repo.name().to_string(), objects, newest));
    }
    if out.json {
        out.print_json(&serde_json::json!({
            "export": name,
            "targets": targets.iter().map(|(t, objects, newest)| serde_json::json!({
                "target": t, "files": objects.len(),
                "first": objects.first().map(|o| &o.name), "last": objects.last().map(|o| &o.name),
                "last_closed_at": objects.last().map(|o| o.closed_at),
                "last_gtid": newest.as_ref().and_then(|f| f.last_gtid.clone()),
            })).collect::<Vec<_>>(),
            "recoverable_until": state.recoverable_until,
            "push_p50_seconds": state.push_p50_seconds,
            "push_p99_seconds": state.push_p99_seconds,
        }));
        return Ok(code);
    }
    for (t, objects, newest) in &targets {
        println!(
            "target `{t}`: {} binary log(s), {} … {}, last closed {}, last GTID {}",
            objects.len(),
            objects.first().map_or("-", |o| o.name.as_str()),
            objects.last().map_or("-", |o| o.name.as_str()),
            objects
                .last()
                .map_or("-".into(), |o| o.closed_at.to_rfc3339()),
            newest
                .as_ref()
                .and_then(|f| f.last_gtid.clone())
                .unwrap_or_else(|| "-".into())
        );
    }
    println!(
        "recoverable until {}",
        state
            .recoverable_until
            .map_or("nothing yet".into(), |t| t.to_rfc3339())
    );
    Ok(code)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

async fn status(policy: &Policy, export: Option<&str>, out: &Output) -> Result<ExitCode> {
    let archive = ExportArchive::open(policy, export).await?;
    let mut code = ExitCode::Ok;
    for e in &archive.unreachable {
        eprintln!("warning: {e}");
        code = ExitCode::Partial;
    }
    let state = archive.record(None, true).await?;
    let mut json_targets = Vec::new();
    for (target, inv) in archive.inventories().await {
        let inv = inv?;
        let timelines = inv.timelines();
        if out.json {
            json_targets.push(serde_json::json!({
                "target": target,
                "files": inv.files,
                "system_identifier": inv.identity.as_ref().map(|i| &i.system_identifier),
                "conflicts": inv.conflicts,
                "timelines": timelines.iter().map(|t| serde_json::json!({
                    "timeline": t.timeline, "first": t.first, "last": t.last,
                    "segments": t.segments, "gaps": t.gaps, "newest_end": t.newest_end,
                })).collect::<Vec<_>>(),
            }));
            continue;
        }
        println!(
            "target `{target}`: {} files, cluster {}",
            inv.files,
            inv.identity
                .as_ref()
                .map_or("(none yet)", |i| i.system_identifier.as_str())
        );
        let mut table = Table::new(&["timeline", "first", "last", "segments", "gaps", "newest"]);
        for t in &timelines {
            table.row(vec![
                t.timeline.to_string(),
                t.first.clone(),
                t.last.clone(),
                t.segments.to_string(),
                if t.gaps.is_empty() {
                    "none".into()
                } else {
                    t.gaps
                        .iter()
                        .map(|(a, b)| {
                            if a == b {
                                a.clone()
                            } else {
                                format!("{a}…{b}")
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                },
                t.newest_end.map_or("-".into(), |e| e.to_rfc3339()),
            ]);
        }
        println!("{}", table.render());
        for c in &inv.conflicts {
            println!("  CONFLICT: {c} is archived with two different contents");
            code = code.worse(ExitCode::Integrity);
        }
    }
    if out.json {
        out.print_json(&serde_json::json!({
            "export": archive.export,
            "targets": json_targets,
            "recoverable_until": state.recoverable_until,
            "restorable_base_backups": state.restorable_base_backups,
            "backlog_files": state.backlog_files,
            "pg_wal_free_bytes": state.pg_wal_free_bytes,
            "push_p50_seconds": state.push_p50_seconds,
            "push_p99_seconds": state.push_p99_seconds,
        }));
        return Ok(code);
    }
    match state.recoverable_until {
        Some(until) => println!(
            "recoverable until {} ({} ago)",
            until.to_rfc3339(),
            format_duration((Utc::now() - until).to_std().unwrap_or_default())
        ),
        None => println!("recoverable until: nothing yet (no base backup with its WAL archived)"),
    }
    println!("waiting to be archived: {} file(s)", state.backlog_files);
    if let (Some(p50), Some(p99)) = (state.push_p50_seconds, state.push_p99_seconds) {
        println!("push latency: p50 {p50:.3}s, p99 {p99:.3}s");
    }
    Ok(code)
}
