//! The command-line layer shared by `drp-agent` and `drp`: the only code
//! that prints. Tables and progress bars for people, JSON for scripts.

pub mod agent;
pub mod output;
pub mod restore;
pub mod snapshot;

use std::io::IsTerminal;

pub use output::{Output, Table};

use crate::{Error, ExitCode};

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

/// Parses a time given on the command line: RFC 3339 (`2026-11-21T10:00:00Z`)
/// or `YYYY-MM-DD HH:MM[:SS]` in local time.
pub fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, Error> {
    use chrono::{DateTime, Local, NaiveDateTime, TimeZone, Utc};
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, fmt)
            && let Some(t) = Local.from_local_datetime(&naive).earliest()
        {
            return Ok(t.with_timezone(&Utc));
        }
    }
    Err(Error::Usage(format!(
        "invalid time `{text}`: use RFC 3339 (2026-11-21T10:00:00Z) or `2026-11-21 10:00` (local time)"
    )))
}
