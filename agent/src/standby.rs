//! `drp-agent standby`: the warm standbys this host keeps for another
//! host's `postgres-cluster` export (`standby:` in its policy).

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use drp_cli::{Output, Table};
use drp_core::config::Policy;
use drp_core::config::standby::Keeps;
use drp_core::config::units::{format_bytes, format_duration};
use drp_core::state::{Kept, StandbyState};
use drp_core::{ExitCode, Result};

#[derive(Debug, clap::Subcommand)]
pub enum StandbyCommand {
    /// Put the primary's newest base backup in place as the standby's data
    /// directory, set to replay the primary's WAL archive once its server
    /// starts. Shows the plan; replaces an existing data directory (kept
    /// aside) only with --yes. Run it as the cluster's owner.
    Init {
        #[arg(long, short)]
        policy: PathBuf,
        /// The standby (default: the policy's only one).
        name: Option<String>,
        /// Replace an existing data directory.
        #[arg(long)]
        yes: bool,
        /// Show the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// How far each standby has replayed against what the archive holds.
    Status {
        #[arg(long, short)]
        policy: PathBuf,
        name: Option<String>,
    },
    /// End the standby's recovery once it has replayed everything the
    /// archive holds: it becomes a primary.
    Promote {
        #[arg(long, short)]
        policy: PathBuf,
        name: Option<String>,
        /// How long to wait for it to replay what the archive holds.
        #[arg(long, default_value = "60s", value_parser = drp_cli::parse_duration)]
        catch_up: Duration,
        /// Promote even when it could not replay everything in time.
        #[arg(long)]
        behind_ok: bool,
    },
}

pub async fn run(cmd: &StandbyCommand, out: &Output) -> Result<ExitCode> {
    match cmd {
        StandbyCommand::Init {
            policy,
            name,
            yes,
            dry_run,
        } => {
            let policy = Policy::load(policy)?;
            let (name, standby) = drp_core::standby::named(&policy, name.as_deref())?;
            let result = drp_core::standby::init(&policy, name, *yes, *dry_run, |plan| {
                let m = &plan.manifest;
                eprintln!("Standby plan");
                eprintln!(
                    "  primary          {}/{} (its WAL archive replayed continuously)",
                    standby.of.host, standby.of.export
                );
                eprintln!(
                    "  base backup      {} on target `{}`, consistent at {} ({} raw)",
                    m.id,
                    plan.repository.name(),
                    m.consistency_time.to_rfc3339(),
                    format_bytes(m.raw.size)
                );
                eprintln!("  data directory   {}", plan.destination);
                match (&plan.replaces, &plan.kept_as) {
                    (Some(what), Some(kept)) => eprintln!("  replaces         {what}; {kept}"),
                    (Some(what), None) => eprintln!("  replaces         {what}"),
                    (None, _) => {
                        eprintln!("  replaces         nothing (the folder does not exist)")
                    }
                }
            })
            .await;
            let Some(report) = result? else {
                return Ok(ExitCode::Ok);
            };
            if out.json {
                out.print_json(&serde_json::json!({
                    "standby": name, "point": report.id, "target": report.target,
                    "data_directory": report.destination, "seconds": report.seconds,
                    "kept": report.replaced.kept,
                }));
            } else if let Keeps::Restored { into, .. } = standby.keeps() {
                println!(
                    "standby `{name}`: {}/{}'s point {} restored into `{into}` in {:.1}s",
                    standby.of.host, standby.of.export, report.id, report.seconds
                );
            } else {
                println!(
                    "standby `{name}` set up from {} in {:.1}s: start its server; it replays {}/{}'s archive \
                     and stays read-only until promoted",
                    report.id, report.seconds, standby.of.host, standby.of.export
                );
            }
            Ok(ExitCode::Ok)
        }
        StandbyCommand::Status { policy, name } => {
            let policy = Policy::load(policy)?;
            let names: Vec<String> = match name {
                Some(n) => vec![drp_core::standby::named(&policy, Some(n))?.0.to_string()],
                None => policy.standby.keys().cloned().collect(),
            };
            let mut rows = Vec::new();
            let mut code = ExitCode::Ok;
            for n in &names {
                let state = match drp_core::standby::observe(&policy, n).await {
                    Ok(s) => s,
                    Err(e) => {
                        code = ExitCode::Partial;
                        StandbyState {
                            checked_at: Some(Utc::now()),
                            error: Some(e.to_string()),
                            ..StandbyState::load(&policy, n)
                        }
                    }
                };
                state.save(&policy, n)?;
                rows.push((n.clone(), state));
            }
            if let Err(e) = drp_core::metrics::write_textfile(&policy, Utc::now()) {
                tracing::warn!(error = %e, "the metrics file is not rewritten");
            }
            if out.json {
                out.print_json(&serde_json::json!({
                    "standbys": rows.iter().map(|(n, s)| serde_json::json!({"name": n, "state": s})).collect::<Vec<_>>(),
                }));
            } else {
                let mut t = Table::new(&["standby", "of", "state", "replayed to", "lag", "behind"]);
                for (n, s) in &rows {
                    let of = &policy.standby[n].of;
                    t.row(vec![
                        n.clone(),
                        format!("{}/{}", of.host, of.export),
                        match (&s.error, s.in_recovery, &s.point) {
                            (Some(e), ..) => format!("down: {e}"),
                            (None, true, _) => "replaying".into(),
                            (None, false, Some(point)) => format!("restored {point}"),
                            (None, false, None) => "promoted".into(),
                        },
                        s.replayed_commit_at.map_or("-".into(), |t| t.to_rfc3339()),
                        s.lag_seconds
                            .map_or("-".into(), |l| format_duration(Duration::from_secs_f64(l))),
                        format!("{} segment(s)", s.behind_segments),
                    ]);
                }
                print!("{}", t.render());
            }
            Ok(code)
        }
        StandbyCommand::Promote {
            policy,
            name,
            catch_up,
            behind_ok,
        } => {
            let policy = Policy::load(policy)?;
            let (name, _) = drp_core::standby::named(&policy, name.as_deref())?;
            let p = drp_core::standby::promote(&policy, name, *catch_up, *behind_ok).await?;
            if out.json {
                out.print_json(&serde_json::json!({
                    "standby": name, "already": p.already, "reached": p.reached, "seconds": p.seconds,
                }));
            } else if p.already {
                println!("standby `{name}` was already promoted");
            } else {
                println!(
                    "standby `{name}` promoted in {:.1}s; it holds every transaction committed up to {}",
                    p.seconds,
                    p.reached.map_or("-".into(), |t| t.to_rfc3339())
                );
            }
            Ok(ExitCode::Ok)
        }
    }
}
