//! `drp-agent`: the host agent's binary.

mod backup;
mod cli;
mod fence;
mod index;
mod prune;
mod serve;
mod standby;
mod status;
mod systemd;
mod test_restore;
mod verify;
mod wal;
mod watch;

use clap::Parser as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Recovery points hold whole databases: nothing drp writes is readable
    // by other users (files 0600, folders 0700).
    drp_cli::private_umask();
    // `wal get` is PostgreSQL's restore_command: any status from 1 to 125
    // reads as "absent" and ends the recovery early, so a bad command line or
    // a panic exits 126 (recovery stops) instead of clap's 2 or Rust's 101.
    let restore_command = std::env::args()
        .collect::<Vec<_>>()
        .windows(2)
        .any(|w| w[0] == "wal" && w[1] == "get");
    if restore_command {
        std::panic::set_hook(Box::new(|info| {
            eprintln!("error: {info}");
            std::process::exit(drp_core::archiving::run::GET_FATAL as i32);
        }));
    }
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) if restore_command && e.use_stderr() => {
            let _ = e.print();
            std::process::exit(drp_core::archiving::run::GET_FATAL as i32);
        }
        Err(e) => e.exit(),
    };
    drp_cli::init_tracing(args.global.verbose);
    let out = args.global.output();
    let code = match cli::run(&args).await {
        Ok(code) => code,
        Err(e) => drp_cli::report_error(&out, &e),
    };
    drp_cli::exit(code)
}
