//! `drp-agent snapshot …` and `drp-agent guard`: snapshot sets tied to a
//! change, one-command rollback, and a change run under a snapshot.

use std::path::{Path, PathBuf};

use chrono::Utc;
use clap::Subcommand;

use crate::{Output, Table};
use drp_core::config::Policy;
use drp_core::snapshot::{self, GuardOutcome, SetStatus, SnapshotSet};
use drp_core::{Error, ExitCode, Result};

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot everything the policy declares (or --only some), as one set for a change.
    Create {
        #[arg(long, short)]
        policy: PathBuf,
        /// The change this protects (ticket, deploy id).
        #[arg(long)]
        change: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        only: Vec<String>,
    },
    /// List snapshot sets (by change, time, provider).
    List {
        #[arg(long, short)]
        policy: PathBuf,
        #[arg(long)]
        change: Option<String>,
        /// Only sets with a snapshot of this kind (btrfs, qcow2, directory, ebs, rds).
        #[arg(long)]
        provider: Option<String>,
    },
    /// Roll back to a change's snapshot set (shows what it will do, then asks).
    Rollback {
        #[arg(long, short)]
        policy: PathBuf,
        #[arg(long)]
        change: String,
        #[arg(long, short)]
        yes: bool,
    },
    /// Delete snapshot sets beyond `snapshot_retention`.
    Expire {
        #[arg(long, short)]
        policy: PathBuf,
        #[arg(long)]
        dry_run: bool,
    },
}

fn print_set(set: &SnapshotSet) {
    println!(
        "snapshot set {} for change `{}` ({}): {:?}",
        set.id, set.change, set.reason, set.status
    );
    for m in &set.members {
        match (&m.error, &m.reference) {
            (Some(e), _) => println!("  {} ({}): FAILED: {e}", m.name, m.kind),
            (None, Some(r)) => println!("  {} ({}): {r}", m.name, m.kind),
            (None, None) => println!("  {} ({})", m.name, m.kind),
        }
    }
    for h in &set.hooks {
        if let Some(e) = &h.error {
            println!("  FAILED: {e}");
        }
    }
}

pub async fn run(cmd: &SnapshotCommand, out: &Output) -> Result<ExitCode> {
    match cmd {
        SnapshotCommand::Create {
            policy,
            change,
            reason,
            only,
        } => {
            let policy = Policy::load(policy)?;
            let set = snapshot::create(&policy, change, reason, only).await?;
            if out.json {
                out.print_json(&serde_json::to_value(&set).expect("serialises"));
            } else {
                print_set(&set);
            }
            Ok(if set.status == SetStatus::Complete {
                ExitCode::Ok
            } else {
                ExitCode::Failed
            })
        }
        SnapshotCommand::List {
            policy,
            change,
            provider,
        } => {
            let policy = Policy::load(policy)?;
            let sets: Vec<SnapshotSet> = snapshot::list(&policy)
                .await?
                .into_iter()
                .filter(|s| change.as_ref().is_none_or(|c| &s.change == c))
                .filter(|s| {
                    provider
                        .as_ref()
                        .is_none_or(|p| s.members.iter().any(|m| &m.kind == p))
                })
                .collect();
            if out.json {
                out.print_json(&serde_json::json!({ "sets": sets }));
            } else {
                let mut t = Table::new(&[
                    "SET",
                    "CHANGE",
                    "TAKEN (UTC)",
                    "STATUS",
                    "SNAPSHOTS",
                    "REASON",
                ]);
                for s in &sets {
                    t.row(vec![
                        s.id.clone(),
                        s.change.clone(),
                        s.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                        format!("{:?}", s.status).to_lowercase(),
                        s.members
                            .iter()
                            .map(|m| format!("{}:{}", m.kind, m.name))
                            .collect::<Vec<_>>()
                            .join(" "),
                        s.reason.clone(),
                    ]);
                }
                println!(
                    "{}",
                    if t.is_empty() {
                        "no snapshot set".into()
                    } else {
                        t.render()
                    }
                );
            }
            Ok(ExitCode::Ok)
        }
        SnapshotCommand::Rollback {
            policy,
            change,
            yes,
        } => {
            let policy = Policy::load(policy)?;
            let mut set = snapshot::find(&policy, change).await?;
            if !out.json {
                eprintln!(
                    "Rollback plan: put back the state of change `{}` taken {}:",
                    set.change,
                    set.created_at.to_rfc3339()
                );
                for m in &set.members {
                    eprintln!(
                        "  {} ({}) ← {}",
                        m.name,
                        m.kind,
                        m.reference.clone().unwrap_or_default()
                    );
                }
            }
            if !yes && (out.json || !crate::confirm("This replaces the current state.")) {
                return Err(Error::NotConfirmed {
                    destination: format!("the snapshots of change `{change}`"),
                });
            }
            rollback_and_report(&policy, &mut set, out).await
        }
        SnapshotCommand::Expire { policy, dry_run } => {
            let policy = Policy::load(policy)?;
            let sets = snapshot::list(&policy).await?;
            let doomed = snapshot::to_expire(&policy, &sets);
            let mut failed = false;
            for id in &doomed {
                let set = sets.iter().find(|s| &s.id == id).expect("listed");
                if *dry_run {
                    println!("would expire {} (change `{}`)", set.id, set.change);
                    continue;
                }
                let errors = snapshot::expire(&policy, set).await?;
                if errors.is_empty() {
                    println!("expired {} (change `{}`)", set.id, set.change);
                } else {
                    failed = true;
                    eprintln!("{} not expired: {}", set.id, errors.join("; "));
                }
            }
            if doomed.is_empty() {
                println!("nothing to expire ({} sets kept)", sets.len());
            }
            Ok(if failed {
                ExitCode::Failed
            } else {
                ExitCode::Ok
            })
        }
    }
}

async fn rollback_and_report(
    policy: &Policy,
    set: &mut SnapshotSet,
    out: &Output,
) -> Result<ExitCode> {
    let results = snapshot::rollback(policy, set).await?;
    let ok = results.iter().all(|(_, r)| r.is_ok());
    if out.json {
        out.print_json(&serde_json::json!({
            "set": set.id, "change": set.change, "rolled_back": ok,
            "results": results.iter().map(|(n, r)| serde_json::json!({"snapshot": n, "ok": r.is_ok(), "detail": match r { Ok(m) | Err(m) => m }})).collect::<Vec<_>>(),
        }));
    } else {
        for (n, r) in &results {
            match r {
                Ok(m) => println!("{n}: {m}"),
                Err(e) => eprintln!("{n}: rollback FAILED: {e}"),
            }
        }
    }
    Ok(if ok { ExitCode::Ok } else { ExitCode::Failed })
}

/// `guard`: snapshot, run the change, roll back (or ask) if it fails.
pub async fn guard(
    policy_path: &Path,
    change: &str,
    reason: &str,
    only: &[String],
    ask_first: bool,
    command: &[String],
    out: &Output,
) -> Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    if command.is_empty() {
        return Err(Error::Usage("give the change to run after `--`".into()));
    }
    let mut set = snapshot::create(&policy, change, reason, only).await?;
    if set.status != SetStatus::Complete {
        print_set(&set);
        return Err(Error::Failed(format!(
            "the snapshot set for change `{change}` is incomplete: the change was not run"
        )));
    }
    if !out.json {
        eprintln!(
            "snapshot set {} taken; running: {}",
            set.id,
            command.join(" ")
        );
    }
    let status = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .env("DRP_CHANGE", change)
        .env("DRP_SNAPSHOT_SET", &set.id)
        .status()
        .await
        .map_err(|e| Error::Failed(format!("cannot run `{}`: {e}", command[0])))?;
    use std::os::unix::process::ExitStatusExt;
    let (code, signal) = (status.code(), status.signal());
    let mut rolled_back = false;
    let mut result = ExitCode::Ok;
    if !status.success() {
        let why = match (code, signal) {
            (Some(c), _) => format!("exited {c}"),
            (None, Some(s)) => format!("was killed by signal {s}"),
            _ => "failed".into(),
        };
        eprintln!("the change {why}");
        let go = !ask_first || crate::confirm("Roll back to the snapshots taken before it?");
        if go {
            let r = rollback_and_report(&policy, &mut set, out).await?;
            rolled_back = r == ExitCode::Ok;
            if !rolled_back {
                result = ExitCode::Failed;
            }
        } else {
            eprintln!(
                "not rolled back; later: drp-agent snapshot rollback --policy {} --change {change}",
                policy_path.display()
            );
        }
    }
    set.guard = Some(GuardOutcome {
        command: command.to_vec(),
        exit_code: code,
        signal,
        rolled_back,
        finished_at: Utc::now(),
    });
    snapshot::save(&policy, &set).await?;
    if !status.success() && result == ExitCode::Ok {
        // The change failed: say so to the caller (Ansible, CI), rolled back or not.
        return Err(Error::Failed(format!(
            "change `{change}` failed{}",
            if rolled_back {
                "; rolled back to its snapshots"
            } else {
                ""
            }
        )));
    }
    Ok(result)
}
