//! Command-line flags, and dispatch to the server or the client.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::Target;
use crate::{accounts, client, clusters, gramine, oracles, probe, quotes, serve};

/// Cloister: an enclave service runtime. `cloister run` starts it; the other commands talk to a running
/// one over its HTTP API.
#[derive(Debug, Parser)]
#[command(name = "cloister", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the runtime in the foreground (Ctrl-C stops it gracefully).
    Run(serve::RunArgs),
    /// Every service: state, health (with reason), replicas, restarts, uptime; or one service
    /// in full (`cloister status storage`).
    Status {
        /// Show this service only, with its full health reason.
        name: Option<String>,
        /// Do not shorten health reasons in the table.
        #[arg(long)]
        wide: bool,
        #[command(flatten)]
        target: Target,
    },
    /// The dependency graph and its start layers.
    Graph {
        /// Print Graphviz DOT instead of a text listing.
        #[arg(long)]
        dot: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Restart a service (its dependents keep running; their requests wait).
    Restart {
        /// The service to restart, as `cloister status` names it.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Stop a service, after the services that depend on it.
    Stop {
        /// The service to stop, as `cloister status` names it.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Start a service, after the services it depends on.
    Start {
        /// The service to start, as `cloister status` names it.
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// The event journal.
    Events {
        /// Only events after this sequence number.
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// Keep printing new events as they happen.
        #[arg(long, short)]
        follow: bool,
        /// Print raw JSON lines.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// The enclave's identity and a quote binding a fresh nonce, checked here; says whether it is a
    /// simulation.
    Attest {
        /// Hex nonce for the quote's report data (default: 32 random bytes).
        #[arg(long)]
        nonce: Option<String>,
        /// Print the raw JSON answer.
        #[arg(long)]
        json: bool,
        /// Refuse a simulation quote (by default it is accepted and said to be one).
        #[arg(long)]
        require_hardware: bool,
        #[command(flatten)]
        hardware: quotes::HardwareArgs,
        #[command(flatten)]
        target: Target,
    },
    /// Configuration: check a file offline, apply one to a running runtime, history, rollback.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Accounts and their tokens (admin): create, list, show, disable, enable, delete, token,
    /// tokens, revoke.
    #[command(subcommand)]
    Account(accounts::AccountCommand),
    /// The cluster on PostgreSQL (docs/cluster.md): make it on a first node, show its members.
    #[command(subcommand)]
    Cluster(clusters::ClusterCommand),
    /// The oracle: request a signed report, fetch the attested signing key, verify a report
    /// offline.
    #[command(subcommand)]
    Oracle(oracles::OracleCommand),
    /// SGX DCAP quotes: verify one offline against Intel's collateral; fetch that collateral from a
    /// PCCS.
    #[command(subcommand)]
    Quote(quotes::QuoteCommand),
    /// Gramine: the manifest template that runs this binary with a configuration in an SGX
    /// enclave.
    #[command(subcommand)]
    Gramine(GramineCommand),
    /// One unauthenticated GET (the runtime's `/livez` by default); exit 0 on a 2xx answer. The
    /// container image's health check.
    Probe {
        /// The path to get: `/livez`, `/readyz` or `/metrics`.
        #[arg(default_value = api::probes::LIVEZ)]
        path: String,
        /// Base URL of the runtime's API (plain HTTP).
        #[arg(long, env = "CLOISTER_URL", default_value = "http://127.0.0.1:8420")]
        url: String,
    },
}

#[derive(Debug, Subcommand)]
enum GramineCommand {
    /// Print a Gramine manifest template (`.manifest.template`, for `gramine-manifest`) for this
    /// binary and configuration: enclave size and threads from `[enclave]`, DCAP attestation,
    /// `isvprodid`/`isvsvn` from the configuration, the binary, its libraries and the
    /// configuration as trusted files, the data directory as allowed files.
    Manifest {
        /// The configuration the enclave runs with (measured); without it, the built-in defaults.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// A debug enclave (`sgx.debug = true`): the host can read its memory. Not for an
        /// enclave that holds real keys or data.
        #[arg(long)]
        debug: bool,
        /// Pass this variable in from the host (repeatable): only CLOISTER_LOG,
        /// CLOISTER_LOG_FORMAT and NO_COLOR may be; CLOISTER_ADMIN_TOKEN never (use a token file).
        #[arg(long, value_name = "NAME")]
        env: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check a config file offline; lists every problem with its path. Exit code 0 if valid, 1 if not.
    Validate {
        /// The config file (TOML).
        file: PathBuf,
    },
    /// Apply a config file to the running runtime (live where possible, watched, rolled back if
    /// health gets worse). Exit code 0 if applied, 1 if rejected or rolled back. An applied
    /// version lasts until the runtime restarts: save it as the file given to `cloister run
    /// --config` to keep it.
    Apply {
        /// The config file (TOML).
        file: PathBuf,
        /// Wait for the watch window to close and report whether the version stayed.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Go back to the previous good version.
    Rollback {
        #[command(flatten)]
        target: Target,
    },
    /// The kept versions, newest first.
    History {
        #[command(flatten)]
        target: Target,
    },
    /// The running configuration's TOML.
    Show {
        #[command(flatten)]
        target: Target,
    },
}

pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => serve::run(args),
        Command::Config(ConfigCommand::Validate { file }) => serve::validate(&file),
        Command::Config(ConfigCommand::Apply { file, wait, target }) => {
            client::block_on(client::config_apply(target, file, wait))
        }
        Command::Config(ConfigCommand::Rollback { target }) => {
            client::block_on(client::config_rollback(target))
        }
        Command::Config(ConfigCommand::History { target }) => {
            client::block_on(client::config_history(target))
        }
        Command::Config(ConfigCommand::Show { target }) => {
            client::block_on(client::config_show(target))
        }
        Command::Account(command) => client::block_on(accounts::run(command)),
        Command::Oracle(command) => client::block_on(oracles::run(command)),
        Command::Cluster(command) => client::block_on(clusters::run(command)),
        Command::Quote(command) => client::block_on(quotes::run(command)),
        Command::Probe { path, url } => probe::run(&url, &path),
        Command::Gramine(GramineCommand::Manifest { config, debug, env }) => {
            gramine::run(config.as_deref(), debug, &env).map(|()| ExitCode::SUCCESS)
        }
        Command::Status { name, wide, target } => {
            client::block_on(client::status(target, name, wide))
        }
        Command::Graph { dot, target } => client::block_on(client::graph(target, dot)),
        Command::Restart { name, target } => client::block_on(client::command(
            target,
            cloister_sdk::Command::Restart,
            name,
        )),
        Command::Stop { name, target } => {
            client::block_on(client::command(target, cloister_sdk::Command::Stop, name))
        }
        Command::Start { name, target } => {
            client::block_on(client::command(target, cloister_sdk::Command::Start, name))
        }
        Command::Attest {
            nonce,
            json,
            require_hardware,
            hardware,
            target,
        } => {
            let trust = hardware.trust(require_hardware)?;
            client::block_on(client::attest(target, nonce, json, trust))
        }
        Command::Events {
            since,
            follow,
            json,
            target,
        } => client::block_on(client::events(target, since, follow, json)),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }

    /// Every argument of `command` and its subcommands with no help text, by path.
    fn undocumented(command: &clap::Command, path: &str, found: &mut Vec<String>) {
        let path = format!("{path} {}", command.get_name());
        for arg in command.get_arguments() {
            if arg
                .get_help()
                .is_none_or(|h| h.to_string().trim().is_empty())
            {
                found.push(format!("{path} {}", arg.get_id()));
            }
        }
        for sub in command.get_subcommands() {
            undocumented(sub, &path, found);
        }
    }

    #[test]
    fn every_argument_of_every_command_is_described() {
        let mut command = super::Cli::command();
        command.build();
        let mut found = Vec::new();
        undocumented(&command, "", &mut found);
        assert!(found.is_empty(), "arguments without help: {found:#?}");
    }

    #[test]
    fn token_help_lists_every_scope_area() {
        let mut command = super::Cli::command();
        let help = command
            .find_subcommand_mut("account")
            .and_then(|a| a.find_subcommand_mut("token"))
            .expect("`cloister account token`")
            .render_help()
            .to_string();
        for area in account::Area::ALL {
            assert!(
                help.contains(&format!("`{}`", area.as_str())),
                "`account token --help` does not list {}:\n{help}",
                area.as_str()
            );
        }
        assert!(
            help.contains("account token"),
            "--token names account tokens:\n{help}"
        );
    }
}
