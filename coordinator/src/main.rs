use clap::Parser;
use drp_agent::cli as agent_cli;
use drp_coordinator::cli::{self, Cli};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Recovery points hold whole databases: nothing drp writes is readable
    // by other users (files 0600, folders 0700).
    drp_agent::cli::private_umask();
    let args = Cli::parse();
    agent_cli::init_tracing(args.global.verbose);
    let out = args.global.output();
    let code = match cli::run(&args).await {
        Ok(code) => code,
        Err(e) => agent_cli::report_error(&out, &e),
    };
    agent_cli::exit(code)
}
