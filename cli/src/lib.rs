//! The command-line layer shared by `drp-agent` and `drp`: the only code
//! that prints. Tables and progress bars for people, JSON for scripts.

pub mod generate;
pub mod keys;
pub mod output;
pub mod repo;
pub mod restore;
pub mod snapshot;

use std::io::IsTerminal;

pub use output::{Output, Table};

use drp_core::{Error, ExitCode};

/// The flags both binaries take on every command.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Machine-readable output (JSON on stdout, JSON progress lines on stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress output.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// More logging (-v, -vv).
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl Global {
    pub fn output(&self) -> Output {
        Output {
            json: self.json,
            quiet: self.quiet,
        }
    }
}

/// Makes every file and folder the process creates private to its user.
pub fn private_umask() {
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// Sets up logging to stderr; `RUST_LOG` overrides the verbosity flags.
pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Asks `question` on the terminal; only `yes` agrees. Without a terminal
/// nothing is asked and the answer is no (scripts pass `--yes`).
pub fn confirm(question: &str) -> bool {
    use std::io::{BufRead, Write};
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("{question} Type `yes` to continue: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).is_ok() && line.trim() == "yes"
}

/// Reads a duration flag (`30s`, `5m`, `1h30m`).
pub fn parse_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    drp_core::config::HumanDuration::parse(text).map(|d| d.as_duration())
}

/// Reports a failed command and gives its exit code.
pub fn report_error(out: &Output, err: &Error) -> ExitCode {
    let code = err.exit_code();
    if out.json {
        let body = serde_json::json!({
            "error": err.to_string(),
            "exit_code": code as u8,
        });
        println!("{body}");
    }
    eprintln!("error: {err}");
    code
}

pub fn exit(code: ExitCode) -> std::process::ExitCode {
    std::process::ExitCode::from(code as u8)
}
