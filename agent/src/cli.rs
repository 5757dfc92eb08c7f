//! The `drp-agent` command line: what each command takes, and which
//! function runs it. `restore`, `list` and `snapshot` are the terminal
//! layer's, shared with `drp`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use drp_cli::Output;
use drp_cli::repo::RepoArgs;
use drp_cli::restore::RestoreArgs;
use drp_core::verify::Which;
use drp_core::{ExitCode, Result};

#[derive(Debug, Parser)]
#[command(
    name = "drp-agent",
    version,
    about = "drp host agent: backups of databases and directories to NAS and S3, verified restores"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: drp_cli::Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum FenceCommand {
    /// Exit 0 when this host is not fenced; when it is, stop what runs of
    /// its fenced services, alert, and exit 10.
    Check {
        #[arg(long, short)]
        policy: PathBuf,
    },
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
        #[arg(long, value_parser = drp_cli::parse_duration, default_value = "0s")]
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
        #[arg(long, value_parser = drp_cli::parse_duration, default_value = "0s")]
        wait: Duration,
        /// Daemon: how long SIGTERM waits for a running backup before abandoning it.
        #[arg(long, value_parser = drp_cli::parse_duration, default_value = "60s")]
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
    /// Serve a coordinator on stdin/stdout (started by sshd for the key
    /// pinned to it in authorized_keys): only the steps this host's policy
    /// allows, checked against it.
    Serve {
        /// Talk over stdin and stdout (the only transport).
        #[arg(long, required = true)]
        stdio: bool,
        #[arg(long, short, default_value = "/etc/drp/policy.yaml")]
        policy: PathBuf,
    },
    /// Write man pages and shell completions (for packaging).
    #[command(hide = true)]
    GenerateAssets {
        #[arg(long)]
        out: PathBuf,
    },
    /// Snapshot sets tied to changes: create, list, rollback, expire.
    #[command(subcommand)]
    Snapshot(drp_cli::snapshot::SnapshotCommand),
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
    /// Read this host's fence records and, when it is fenced after a
    /// failover, stop the services its policy lists under `fencing:`. Exits
    /// 10 while fenced: as a unit's `ExecStartPre=`, it keeps the unit down.
    #[command(subcommand)]
    Fence(FenceCommand),
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
    /// Restore tests: the newest point, and one at random, restored into a
    /// throwaway instance drp starts and removes (never the live service),
    /// checked, and recorded as restore-tested in every target's repository.
    TestRestore {
        #[arg(long, short)]
        policy: PathBuf,
        /// Only these exports (default: all).
        #[arg(long, short)]
        export: Vec<String>,
        /// An age identity file, for encrypted points.
        #[arg(long = "identity", value_name = "FILE")]
        identities: Vec<PathBuf>,
    },
    /// Restore a recovery point (asks before replacing anything).
    Restore(RestoreArgs),
    /// Encryption and signing keys: make them, and which points need which.
    #[command(subcommand)]
    Keys(drp_cli::keys::KeysCommand),
    /// Continuous WAL archiving of postgres-cluster exports: PostgreSQL's
    /// archive_command and restore_command, and the archive's inventory.
    #[command(subcommand)]
    Wal(crate::wal::WalCommand),
    /// Warm standbys of another host's postgres-cluster export: set up,
    /// replay lag, promotion.
    #[command(subcommand)]
    Standby(crate::standby::StandbyCommand),
    /// The host's watchdog: checks the services of the policy's `watch:`
    /// and climbs their ladder when one stays down; `pause`, `resume`.
    Watch(crate::watch::WatchArgs),
    /// The catalogue's index of each export: `rebuild` re-derives it from
    /// the manifests.
    #[command(subcommand)]
    Index(crate::index::IndexCommand),
}

pub async fn run(cli: &Cli) -> Result<ExitCode> {
    let out: Output = cli.global.output();
    match &cli.command {
        Command::Init { policy, target } => crate::backup::init(policy, target, &out).await,
        Command::Backup {
            policy,
            export,
            wait,
        } => crate::backup::backup(policy, export, *wait, &out).await,
        Command::Run {
            policy,
            due,
            now,
            wait,
            stop_timeout,
        } => {
            if *due {
                crate::backup::due(policy, now.as_deref(), *wait, &out).await
            } else {
                crate::backup::daemon(policy, *wait, *stop_timeout, &out).await
            }
        }
        Command::Prune {
            policy,
            export,
            dry_run,
            now,
        } => crate::prune::run(policy, export, *dry_run, now.as_deref(), &out).await,
        Command::Status { policy } => crate::status::run(policy, &out).await,
        Command::Fence(FenceCommand::Check { policy }) => crate::fence::check(policy, &out).await,
        Command::GenerateAssets { out: dir } => {
            drp_cli::generate::run(<Cli as clap::CommandFactory>::command(), dir, &out)
        }
        Command::Serve { policy, .. } => crate::serve::run(policy).await,
        Command::Snapshot(cmd) => drp_cli::snapshot::run(cmd, &out).await,
        Command::Guard {
            policy,
            change,
            reason,
            only,
            ask,
            command,
        } => drp_cli::snapshot::guard(policy, change, reason, only, *ask, command, &out).await,
        Command::Units {
            policy,
            out: dir,
            bin,
        } => crate::systemd::run(policy, dir.as_deref(), bin.as_deref(), &out),
        Command::List { repo, export } => drp_cli::repo::list(repo, export.as_deref(), &out).await,
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
            crate::verify::run(repo, export.as_deref(), which, &out).await
        }
        Command::TestRestore {
            policy,
            export,
            identities,
        } => crate::test_restore::run(policy, export, identities, &out).await,
        Command::Restore(args) => drp_cli::restore::run(args, &out).await,
        Command::Keys(cmd) => drp_cli::keys::run(cmd, &out).await,
        Command::Wal(cmd) => crate::wal::run(cmd, &out).await,
        Command::Standby(cmd) => crate::standby::run(cmd, &out).await,
        Command::Watch(args) => crate::watch::run(args, &out).await,
        Command::Index(cmd) => crate::index::run(cmd, &out).await,
    }
}
