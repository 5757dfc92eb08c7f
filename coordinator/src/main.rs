//! `drp`: the coordinator's binary. The runbook engine is the
//! `drp_coordinator` library; this adds the command line.

mod check;
mod cli;
mod demo;
mod due;
mod fleet_status;
mod pdf;
mod units;
mod watch;

use clap::Parser;
use cli::Cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Recovery points hold whole databases: nothing drp writes is readable
    // by other users (files 0600, folders 0700).
    drp_cli::private_umask();
    let args = Cli::parse();
    drp_cli::init_tracing(args.global.verbose);
    let out = args.global.output();
    let code = match cli::run(&args).await {
        Ok(code) => code,
        Err(e) => drp_cli::report_error(&out, &e),
    };
    drp_cli::exit(code)
}
