//! The `drp` command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use drp_cli::Output;
use drp_cli::repo::RepoArgs;
use drp_cli::restore::RestoreArgs;
use drp_core::{ExitCode, Result};

#[derive(Debug, Parser)]
#[command(
    name = "drp",
    version,
    about = "drp coordinator: restores, runbooks, drills and RTO/RPO compliance reports"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: drp_cli::Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Restore a recovery point: pick, preview, confirm, verify, load.
    Restore(RestoreArgs),
    /// The handover page: hosts, exports, targets, where keys and secrets
    /// are, the commands that restore each export from a bare machine, the
    /// runbooks, and what is not protected; written to --out and stored in
    /// the repositories.
    Handover {
        /// Policy files (one per host).
        #[arg(long = "policy", short, required = true)]
        policies: Vec<PathBuf>,
        /// Folder of runbooks to include.
        #[arg(long)]
        runbooks: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Encryption and signing keys: make them, and which points need which.
    #[command(subcommand)]
    Keys(drp_cli::keys::KeysCommand),
    /// List committed recovery points.
    List {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long, short)]
        export: Option<String>,
    },
    /// Run a runbook for a real incident: plan, confirmation, steps, RTO so far.
    Run {
        runbook: PathBuf,
        /// When the failure happened (default: now), for the RTO and the data-loss window:
        /// `YYYY-MM-DD HH:MM` in the policy's `timezone` (UTC when it sets none), with `UTC`, an
        /// offset or a zone name after it if you like; what `date` prints; RFC 3339; or `10 minutes ago`.
        #[arg(long)]
        failed_at: Option<String>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Run a runbook's `failback` section: the way back to the old primary
    /// after a failover, never run by itself; measured like a recovery.
    Failback {
        runbook: PathBuf,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Run a runbook as a drill: preflight, inject the failure, recover, judge.
    /// With --due, each runbook whose `drill.every` says a drill is due, in turn.
    Drill {
        /// The runbook (with --due: any number of runbooks).
        #[arg(required_unless_present = "due")]
        runbooks: Vec<PathBuf>,
        /// Only the runbooks due for a drill (never passed one, changed since
        /// their last passed drill, or `drill.every` gone by), one after the
        /// other; never prompts: without --yes, a step asking for confirmation
        /// is refused.
        #[arg(long)]
        due: bool,
        /// With --due: the runbooks of this folder too.
        #[arg(long = "runbooks", requires = "due", value_name = "DIR")]
        runbooks_dir: Option<PathBuf>,
        /// With --due: only the runbooks of this policy's host.
        #[arg(long, short, requires = "due")]
        policy: Option<PathBuf>,
        /// With --due: say what is due and run nothing.
        #[arg(long, requires = "due")]
        dry_run: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Write a systemd service and timer that run `drill --due` daily, and
    /// print the crontab line.
    Units {
        /// Folder of runbooks the drills are read from.
        #[arg(long, required = true)]
        runbooks: PathBuf,
        /// Only the runbooks of this policy's host (its timezone sets the timer's).
        #[arg(long, short)]
        policy: PathBuf,
        /// Folder to write the unit files into (default: print them).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Path of drp in the units (default: this binary).
        #[arg(long)]
        bin: Option<PathBuf>,
    },
    /// Lift the fence a failover put on a host: a record on the targets of
    /// the runbook's policy, and the host's agent told when it answers. Its
    /// fenced services may then run again.
    Unfence {
        /// The host, as the runbook's inventory names it.
        host: String,
        /// The failover runbook that fenced it (its policy's targets hold the record).
        #[arg(long)]
        runbook: PathBuf,
        /// Why, for the record.
        #[arg(long, default_value = "lifted by an operator")]
        reason: String,
    },
    /// Compliance over a period: every drill against the objectives, trend, exposure.
    Report {
        #[arg(long, short)]
        policy: PathBuf,
        /// A period back from now, e.g. 90d (default).
        #[arg(long, conflicts_with = "quarter")]
        since: Option<String>,
        /// A calendar quarter, e.g. 2026Q4.
        #[arg(long)]
        quarter: Option<String>,
        /// Folder of runbooks, to list those not drilled in the period.
        #[arg(long)]
        runbooks: Option<PathBuf>,
        /// Also write the report as a self-contained HTML page.
        #[arg(long)]
        html: Option<PathBuf>,
        /// Also ask every host of this inventory for its exports' exposure,
        /// and list each host's incidents.
        #[arg(long)]
        inventory: Option<PathBuf>,
        /// Also print the HTML page to PDF, through headless Chromium.
        #[arg(long)]
        pdf: Option<PathBuf>,
    },
    /// Watch the inventory's hosts from outside: each host with a failover
    /// runbook (`drp_failover`) checked every interval; one down by its
    /// witnesses' account too, or whose watchdog asks for help, failed over.
    Watch {
        /// An Ansible YAML inventory (`drp_failover`, `drp_witnesses`, `drp_watch`).
        #[arg(long, short)]
        inventory: PathBuf,
        /// One check of every watched host (and what it asks for), then exit.
        #[arg(long)]
        once: bool,
        /// Say what would be done; run, store and notify nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Every host of an inventory: exports, newest point, RPO exposure,
    /// archive lag and last drill, asking the agents at once over SSH.
    Status {
        /// An Ansible YAML inventory (`ansible_host`, `drp_policy`, …).
        #[arg(long, short)]
        inventory: PathBuf,
        /// The coordinator's policy, whose targets hold the drill reports.
        #[arg(long, short)]
        policy: Option<PathBuf>,
    },
    /// Write man pages and shell completions (for packaging).
    #[command(hide = true)]
    GenerateAssets {
        #[arg(long)]
        out: PathBuf,
    },
    /// Validate policies and runbooks; say which objectives they can meet.
    Check {
        /// Policy and runbook files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run the whole job on an embedded default: a drill of a demo SQLite
    /// application backed up to a local folder acting as the NAS.
    Demo {
        /// Folder for the demo application, policy and NAS.
        #[arg(long, default_value = "demo")]
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Do not ask before changing anything.
    #[arg(long, short)]
    pub yes: bool,
    /// Also write the report (JSON, Markdown, HTML, JUnit) into this folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Scratch folder for database dumps during restores.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Let a `fence` step fence a host that answers neither this
    /// coordinator nor any witness (recorded in the report).
    #[arg(long)]
    pub force: bool,
}

pub async fn run(cli: &Cli) -> Result<ExitCode> {
    let out = cli.global.output();
    match &cli.command {
        Command::Restore(args) => drp_cli::restore::run(args, &out).await,
        Command::Keys(cmd) => drp_cli::keys::run(cmd, &out).await,
        Command::Handover {
            policies,
            runbooks,
            out: dir,
        } => {
            let policies = policies
                .iter()
                .map(|p| drp_core::config::Policy::load(p))
                .collect::<drp_core::Result<Vec<_>>>()?;
            let mut books = Vec::new();
            if let Some(d) = runbooks {
                for f in drp_coordinator::compliance::runbook_files(d)? {
                    books.push(drp_coordinator::runbook::Runbook::load(&f)?);
                }
            }
            let failed = drp_coordinator::handover::write(&policies, &books, dir).await?;
            for f in &failed {
                eprintln!("handover not stored on {f}");
            }
            if !out.quiet {
                println!(
                    "wrote {} and {}",
                    dir.join("handover.md").display(),
                    dir.join("handover.html").display()
                );
            }
            Ok(if failed.is_empty() {
                drp_core::ExitCode::Ok
            } else {
                drp_core::ExitCode::ReportNotStored
            })
        }
        Command::List { repo, export } => drp_cli::repo::list(repo, export.as_deref(), &out).await,
        Command::Demo { dir } => crate::demo::run(dir, &out).await,
        Command::Unfence {
            host,
            runbook,
            reason,
        } => {
            let runbook = drp_coordinator::runbook::Runbook::load(runbook)?;
            let ctx = drp_coordinator::action::Context::for_runbook(&runbook);
            let said = drp_coordinator::action::fence::lift(&ctx, host, reason).await?;
            if out.json {
                out.print_json(&serde_json::json!({"host": host, "lifted": true, "detail": said}));
            } else if !out.quiet {
                println!("{said}");
            }
            Ok(ExitCode::Ok)
        }
        Command::Check { files } => crate::check::run(files, &out).await,
        Command::GenerateAssets { out: dir } => {
            drp_cli::generate::run(<Cli as clap::CommandFactory>::command(), dir, &out)
        }
        Command::Status { inventory, policy } => {
            crate::fleet_status::run(inventory, policy.as_deref(), &out).await
        }
        Command::Watch {
            inventory,
            once,
            dry_run,
        } => crate::watch::run(inventory, *once, *dry_run, &out).await,
        Command::Run {
            runbook,
            failed_at,
            run,
        } => {
            run_runbook(
                drp_coordinator::runbook::Runbook::load(runbook)?,
                drp_coordinator::report::Kind::Incident,
                failed_at.as_deref(),
                run,
                false,
                &out,
            )
            .await
        }
        Command::Failback { runbook, run } => {
            let path = runbook;
            let runbook = drp_coordinator::runbook::Runbook::load(path)?;
            let back = runbook.failback().ok_or_else(|| {
                drp_core::Error::Usage(format!(
                    "runbook `{}` has no `failback` section: nothing to run",
                    runbook.name
                ))
            })?;
            run_runbook(
                back,
                drp_coordinator::report::Kind::Incident,
                None,
                run,
                false,
                &out,
            )
            .await
        }
        Command::Drill {
            runbooks,
            due: false,
            run,
            ..
        } => {
            let [runbook] = runbooks.as_slice() else {
                return Err(drp_core::Error::Usage(
                    "one runbook at a time; several only with --due".into(),
                ));
            };
            run_runbook(
                drp_coordinator::runbook::Runbook::load(runbook)?,
                drp_coordinator::report::Kind::Drill,
                None,
                run,
                false,
                &out,
            )
            .await
        }
        Command::Drill {
            runbooks,
            due: true,
            runbooks_dir,
            policy,
            dry_run,
            run,
        } => {
            let which = crate::due::Which {
                files: runbooks,
                dir: runbooks_dir.as_deref(),
                policy: policy.as_deref(),
            };
            crate::due::run(&which, *dry_run, run, &out).await
        }
        Command::Units {
            runbooks,
            policy,
            out: dir,
            bin,
        } => crate::units::run(runbooks, policy, dir.as_deref(), bin.as_deref(), &out),
        Command::Report {
            policy,
            since,
            quarter,
            runbooks,
            html,
            inventory,
            pdf,
        } => {
            let policy = drp_core::config::Policy::load(policy)?;
            let (from, to, label) = drp_coordinator::compliance::period(
                since.as_deref(),
                quarter.as_deref(),
                chrono::Utc::now(),
            )?;
            let mut c =
                drp_coordinator::compliance::build(&policy, runbooks.as_deref(), from, to, label)
                    .await?;
            if let Some(inv) = inventory {
                let inv = drp_coordinator::fleet::inventory::Inventory::load(inv)?;
                let hosts = drp_coordinator::fleet::status::gather(&inv).await;
                c.fleet = drp_coordinator::fleet::status::rows(&hosts, &c.drills);
                let names: Vec<String> = inv
                    .hosts
                    .keys()
                    .filter(|h| **h != policy.host)
                    .cloned()
                    .collect();
                c.incidents.extend(
                    drp_coordinator::compliance::host_incidents(&policy, &names, &hosts, from, to)
                        .await,
                );
                c.incidents.sort_by_key(|i| i.incident.first_failed);
            }
            if let Some(path) = html {
                std::fs::write(path, drp_coordinator::compliance::html(&c))
                    .map_err(|e| drp_core::Error::io_path("cannot write", path, e))?;
            }
            if let Some(path) = pdf {
                crate::pdf::print_pdf(&drp_coordinator::compliance::html(&c), path)?;
            }
            if out.json {
                out.print_json(&serde_json::to_value(&c).expect("serialises"));
            } else {
                println!("{}", drp_coordinator::compliance::markdown(&c));
            }
            let bad = c.drills.iter().any(|d| !d.passed())
                || c.incidents_missed()
                || c.exposure.iter().any(|e| {
                    e.within_rpo == Some(false)
                        || e.restore_test_overdue
                        || e.last_restore_test.as_ref().is_some_and(|t| !t.passed)
                })
                || !c.not_drilled.is_empty()
                || !c.changed_since_drill.is_empty()
                || !c.overdue.is_empty()
                || c.fleet.iter().any(|r| {
                    !r.reachable
                        || r.export
                            .as_ref()
                            .is_some_and(|e| e.within_rpo == Some(false))
                });
            Ok(if bad {
                ExitCode::ObjectivesMissed
            } else {
                ExitCode::Ok
            })
        }
    }
}

/// Runs one runbook and prints its outcome; `batch`: one of several
/// (`drill --due`): never prompts, and with --json prints nothing (the batch
/// prints its summary).
pub(crate) async fn run_runbook(
    runbook: drp_coordinator::runbook::Runbook,
    kind: drp_coordinator::report::Kind,
    failed_at: Option<&str>,
    args: &RunArgs,
    batch: bool,
    out: &Output,
) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let given_failed_at = failed_at
        .map(|t| drp_core::time::parse_time_in(t, Some(runbook.policy.timezone)))
        .transpose()?;
    let yes = args.yes;
    let interactive = !batch && !out.json && std::io::stdin().is_terminal();
    let prompting = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asking = prompting.clone();
    let confirm = Box::new(move |what: &str| {
        if yes {
            return true;
        }
        if !interactive {
            eprintln!("{what} Not confirmed: pass --yes to proceed without a terminal.");
            return false;
        }
        asking.store(true, std::sync::atomic::Ordering::SeqCst);
        let answer = drp_cli::confirm(what);
        asking.store(false, std::sync::atomic::Ordering::SeqCst);
        answer
    });
    if !out.json {
        eprintln!(
            "{} `{}` on {} (RTO {}, RPO {})",
            match kind {
                drp_coordinator::report::Kind::Drill => "Drill of",
                drp_coordinator::report::Kind::Incident => "Recovery with",
            },
            runbook.name,
            runbook.policy.host,
            drp_core::config::units::format_duration(runbook.rto),
            drp_core::config::units::format_duration(runbook.rpo)
        );
        if let (Some(t), Some(text)) = (&given_failed_at, failed_at) {
            eprintln!("  failure at {}", t.describe(text));
        }
        // A drill's plan: its steps as it runs them, on its drill records.
        let planned = match kind {
            drp_coordinator::report::Kind::Drill => {
                for line in drp_coordinator::drill::drill_record_lines(&runbook) {
                    eprintln!("  {line}");
                }
                runbook.for_drill()
            }
            drp_coordinator::report::Kind::Incident => runbook.clone(),
        };
        for s in &planned.steps {
            eprintln!(
                "  {:<8} {} — {}",
                s.phase.map(|p| p.name()).unwrap_or("-"),
                s.name,
                s.action.action().describe()
            );
        }
    }
    let quiet = out.json || out.quiet;
    let observe = move |e: drp_coordinator::engine::Event| {
        if quiet {
            return;
        }
        match e {
            drp_coordinator::engine::Event::Started { section, step } => {
                eprintln!("-> {section}: {}", step.name)
            }
            drp_coordinator::engine::Event::Finished(r) => {
                eprintln!("   {}", drp_coordinator::drill::summary_line(r))
            }
        }
    };
    let options = drp_coordinator::drill::Options {
        kind,
        failed_at: given_failed_at.map(|t| t.instant),
        confirm,
        workdir: args.workdir.clone(),
        force: args.force,
    };
    // Steps' commands and tools run in process groups of their own, out of
    // reach of the terminal's signals: on Ctrl-C or SIGTERM the run is
    // abandoned (dropping it stops them, here and on remote hosts) and its
    // stored record, never finished, reads as interrupted. At a prompt,
    // nothing has been changed yet: the answer is no.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| drp_core::Error::io("cannot watch SIGTERM", e))?;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        if prompting.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!("\nNot confirmed: nothing was changed.");
            std::process::exit(ExitCode::NotConfirmed as i32);
        }
        let _ = stop.send(());
    });
    let (report, not_stored) = tokio::select! {
        r = drp_coordinator::drill::execute(&runbook, options, &observe) => match r {
            Ok(r) => r,
            // One drill of a batch stopping short is its outcome, not the batch's.
            Err(e) if batch => {
                watch.abort();
                eprintln!("error: {e}");
                return Ok(e.exit_code());
            }
            Err(e) => return Err(e),
        },
        _ = stopped => return Err(drp_core::Error::Failed(format!(
            "`{}` was interrupted: its running steps were stopped, and its report stays as it was when they started (interrupted)",
            runbook.name
        ))),
    };
    // The next run of a batch watches the signals itself.
    watch.abort();
    // Kept locally when asked, and always when a store could not take it.
    let local_dir = match (&args.out, not_stored.is_empty()) {
        (Some(d), _) => Some(d.clone()),
        (None, false) => Some(PathBuf::from("drp-reports")),
        (None, true) => None,
    };
    let html = match &local_dir {
        Some(d) => Some(drp_coordinator::report::write_local(&report, d)?),
        None => None,
    };
    if out.json {
        if !batch {
            let mut v = serde_json::to_value(&report).expect("serialises");
            v["not_stored"] = serde_json::json!(not_stored);
            v["html"] = serde_json::json!(html);
            out.print_json(&v);
        }
    } else {
        let f = drp_coordinator::report::markdown::fmt_secs;
        println!(
            "{} {}: {}",
            match kind {
                drp_coordinator::report::Kind::Drill => "drill",
                drp_coordinator::report::Kind::Incident => "recovery",
            },
            runbook.name,
            report.shown_status().to_uppercase()
        );
        if let Some(rto) = &report.rto {
            match rto.measured_seconds {
                Some(m) => println!(
                    "RTO {} against {} ({})",
                    f(m),
                    f(report.objectives.rto_seconds),
                    if rto.met { "met" } else { "MISSED" }
                ),
                None => println!(
                    "RTO: not recovered (objective {})",
                    f(report.objectives.rto_seconds)
                ),
            }
            let phases: Vec<String> = ["detect", "restore", "restart", "verify"]
                .iter()
                .filter_map(|p| rto.phases.get(*p).map(|s| format!("{p} {}", f(*s))))
                .collect();
            if !phases.is_empty() {
                println!("  phases: {}", phases.join(", "));
            }
        }
        if let Some(rpo) = &report.rpo {
            match rpo.measured_seconds {
                Some(m) => println!(
                    "RPO {} against {} ({})",
                    f(m),
                    f(report.objectives.rpo_seconds),
                    if rpo.met { "met" } else { "MISSED" }
                ),
                None => println!("RPO: nothing was restored"),
            }
            if let Some(hb) = rpo.heartbeat_seconds {
                println!("  from the data (newest heartbeat): {}", f(hb));
            }
        }
        if let Some(why) = &report.failure {
            println!("why: {why}");
        }
        if let Some(h) = &html {
            println!("report: {}", h.display());
        }
        for n in &not_stored {
            eprintln!("report not stored on {n}; kept locally");
        }
    }
    Ok(report.exit_code(not_stored.is_empty()))
}
