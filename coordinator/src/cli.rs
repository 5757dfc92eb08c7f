//! The `drp` command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use drp_agent::cli::Output;
use drp_agent::cli::agent::RepoArgs;
use drp_agent::cli::restore::RestoreArgs;
use drp_agent::{ExitCode, Result};

#[derive(Debug, Parser)]
#[command(
    name = "drp",
    version,
    about = "drp coordinator: restores for on-call engineers, recovery demos"
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
    /// Restore a recovery point: pick, preview, confirm, verify, load.
    Restore(RestoreArgs),
    /// List committed recovery points.
    List {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long, short)]
        export: Option<String>,
    },
    /// Validate policies and say which objectives their schedules can meet.
    Check {
        /// Policy files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run the whole job on an embedded default: a demo SQLite application
    /// backed up to a local folder acting as the NAS, listed, verified and restored.
    Demo {
        /// Folder for the demo application, policy and NAS.
        #[arg(long, default_value = "demo")]
        dir: PathBuf,
    },
}

pub async fn run(cli: &Cli) -> Result<ExitCode> {
    let out = Output {
        json: cli.json,
        quiet: cli.quiet,
    };
    match &cli.command {
        Command::Restore(args) => drp_agent::cli::restore::run(args, &out).await,
        Command::List { repo, export } => {
            let agent_cli = drp_agent::cli::agent::Cli {
                json: cli.json,
                quiet: cli.quiet,
                verbose: cli.verbose,
                command: drp_agent::cli::agent::Command::List {
                    repo: repo.clone(),
                    export: export.clone(),
                },
            };
            drp_agent::cli::agent::run(&agent_cli).await
        }
        Command::Demo { dir } => crate::demo::run(dir, &out).await,
        Command::Check { files } => crate::check::run(files, &out),
    }
}
