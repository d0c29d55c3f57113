//! `cloister`: runs the enclave service runtime, and talks to a running one.

mod accounts;
mod cli;
mod client;
mod clusters;
mod gramine;
mod logs;
mod oracles;
mod probe;
mod quotes;
mod serve;
mod synthetic;
mod watch;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // One TLS crypto provider for every HTTP client in the process (the oracle's, the CLI's): reqwest
    // is built without a default one, so it must be installed before the first client.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
