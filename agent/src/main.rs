use clap::Parser;
use drp_agent::cli::{self, Output, agent::Cli};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Cli::parse();
    cli::init_tracing(args.verbose);
    let out = Output {
        json: args.json,
        quiet: args.quiet,
    };
    let code = match cli::agent::run(&args).await {
        Ok(code) => code,
        Err(e) => cli::report_error(&out, &e),
    };
    cli::exit(code)
}
