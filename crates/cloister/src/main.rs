//! `cloister`: runs the enclave service runtime, and talks to a running one.

mod accounts;
mod cli;
mod client;
mod serve;
mod synthetic;
mod watch;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
