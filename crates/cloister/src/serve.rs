//! `cloister run`: load the configuration, prepare the data directory, start the runtime and serve the
//! API until SIGINT or SIGTERM; and `cloister config validate`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use runtime::budget::Demand;
use runtime::config::{Config, Platform};
use runtime::journal::{Cause, Event};
use runtime::reconfig::{Controller, Overrides};
use runtime::{Builder, Journal, Spec};
use tokio_util::sync::CancellationToken;

use crate::synthetic::Synthetic;

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Configuration file (TOML). Without it, the built-in defaults.
    #[arg(long, short, env = "CLOISTER_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (journal, admin token); overrides `runtime.data_dir`.
    #[arg(long, env = "CLOISTER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address for the HTTP API; overrides `runtime.listen`.
    #[arg(long, env = "CLOISTER_LISTEN")]
    listen: Option<SocketAddr>,
    /// Accept, once, a storage database at commit SEQ that disagrees with its freshness counter
    /// (a restored backup, a lost counter file). Storage refuses such a database otherwise, and
    /// its refusal names the SEQ to give here. Commits after SEQ are then lost for good.
    #[arg(long, value_name = "SEQ")]
    accept_storage_rollback: Option<u64>,
    /// Accept, once, a keystore at generation N that disagrees with its freshness counter (a
    /// restored backup, a lost counter file; 0 for a keystore written before generations). The
    /// crypto service refuses such a keystore otherwise, and its refusal names the N to give here.
    /// Key changes after N are then lost for good, and keys deleted or rotated since are back.
    #[arg(long, value_name = "N")]
    accept_keystore_rollback: Option<u64>,
}

/// The services built into this binary, with their default specs, dependencies first.
fn catalog() -> Vec<Spec> {
    stack::catalog()
}

fn print_problems(file: &Path, invalid: &runtime::config::Invalid) {
    let mut err = std::io::stderr().lock();
    for p in &invalid.problems {
        let _ = writeln!(err, "{}: {p}", file.display());
    }
    let _ = writeln!(
        err,
        "{} problem(s) found; nothing was started",
        invalid.problems.len()
    );
}

fn read(file: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(file)
        .with_context(|| format!("cannot read config file {}", file.display()))
}

fn load(file: &Path) -> anyhow::Result<Result<Config, runtime::config::Invalid>> {
    Ok(Config::parse(&read(file)?, &catalog()))
}

pub(crate) fn validate(file: &Path) -> anyhow::Result<ExitCode> {
    match load(file)? {
        Ok(config) => {
            let (specs, disabled) = config.resolve(&catalog());
            let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{}: valid; {} service(s) enabled{}{}",
                file.display(),
                names.len(),
                if names.is_empty() {
                    String::new()
                } else {
                    format!(": {}", names.join(", "))
                },
                if disabled.is_empty() {
                    String::new()
                } else {
                    format!("; {} disabled", disabled.len())
                },
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(invalid) => {
            print_problems(file, &invalid);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Whether the log is coloured: only on a terminal, and not when `NO_COLOR` is set to anything
/// but the empty string (<https://no-color.org>).
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

pub(crate) fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CLOISTER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR"),
        ))
        .init();
    // A panicking service task is a service failure that its recovery policy handles; log it as one
    // line instead of the default hook's report.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!("panic{location}: {}", panic_message(info));
    }));
    let text = match &args.config {
        Some(file) => read(file)?,
        None => String::new(),
    };
    let mut config = match Config::parse(&text, &catalog()) {
        Ok(config) => config,
        Err(invalid) => {
            print_problems(
                args.config.as_deref().unwrap_or(Path::new("(defaults)")),
                &invalid,
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let (data_dir, listen) = (args.data_dir.clone(), args.listen);
    let overrides: Overrides = Arc::new(move |c: &mut Config| {
        if let Some(dir) = &data_dir {
            c.runtime.data_dir = dir.clone();
        }
        if let Some(listen) = listen {
            c.runtime.listen = listen;
        }
    });
    overrides(&mut config);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(serve(Start {
        config,
        text,
        overrides,
        file: args.config,
        accept_storage_rollback: args.accept_storage_rollback,
        accept_keystore_rollback: args.accept_keystore_rollback,
    }))?;
    Ok(ExitCode::SUCCESS)
}

/// This build's security version (ISVSVN): raise it with every release that fixes a security bug, so
/// older builds can no longer derive its sealing keys.
const SECURITY_VERSION: u16 = 1;

/// Where Gramine exposes attestation inside an enclave.
const GRAMINE_ATTESTATION: &str = "/dev/attestation";

fn open_platform(config: &Config, dir: &Path) -> anyhow::Result<Arc<dyn enclave::Platform>> {
    Ok(match config.enclave.platform {
        Platform::Simulation => {
            // The start-only settings are part of what is measured, as a manifest is under SGX.
            let measured =
                serde_json::to_vec(&config.enclave).context("measuring the [enclave] table")?;
            Arc::new(
                enclave::Simulation::open_for_current_exe(dir, &measured, SECURITY_VERSION)
                    .context("cannot start the simulation platform")?,
            )
        }
        Platform::Gramine => Arc::new(
            enclave::Gramine::open(Path::new(GRAMINE_ATTESTATION)).context(
                "enclave.platform is \"gramine\", but this process is not inside a Gramine enclave",
            )?,
        ),
    })
}

fn panic_message(info: &std::panic::PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))
}

/// The admin token: from `CLOISTER_ADMIN_TOKEN`, else from `DATA_DIR/admin.token`, else generated there
/// (readable by the owner only).
fn admin_token(dir: &Path) -> anyhow::Result<(String, String)> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(token) = std::env::var("CLOISTER_ADMIN_TOKEN") {
        if token.trim().len() < 16 {
            bail!("CLOISTER_ADMIN_TOKEN must be at least 16 characters");
        }
        return Ok((
            token.trim().to_owned(),
            "the CLOISTER_ADMIN_TOKEN environment variable".into(),
        ));
    }
    let path = dir.join("admin.token");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            only_the_owner_can_read(&path)?;
            let token = text.trim();
            if token.len() < 16 {
                bail!(
                    "{} is damaged (too short); delete it to have a new token generated",
                    path.display()
                );
            }
            return Ok((token.to_owned(), path.display().to_string()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok((token, path.display().to_string()))
}

/// Refuses a token file that anyone but the user running Cloister could read or replace: a token
/// that others can read is a token others hold.
fn only_the_owner_can_read(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{path} can be read or written by its group or by others (mode {mode:o}): run \
             `chmod 600 {path}`, and consider deleting it instead so that a new admin token is \
             generated, since others may have read this one",
            path = path.display()
        );
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "{path} belongs to user {owner}, not to the user running cloister ({me}): run \
             `chown {me} {path}` if it is yours, or delete it so that a new admin token is generated",
            path = path.display(),
            owner = meta.uid()
        );
    }
    Ok(())
}

/// What `serve` starts from.
struct Start {
    config: Config,
    /// The TOML the configuration came from (empty for the defaults).
    text: String,
    overrides: Overrides,
    /// The file to watch for new versions.
    file: Option<PathBuf>,
    accept_storage_rollback: Option<u64>,
    accept_keystore_rollback: Option<u64>,
}

async fn serve(start: Start) -> anyhow::Result<()> {
    let Start {
        config,
        text,
        overrides,
        file,
        accept_storage_rollback,
        accept_keystore_rollback,
    } = start;
    let dir = config.runtime.data_dir.clone();
    prepare_data_dir(&dir)?;
    // The platform first: nothing secret is written where no enclave will run.
    let platform = open_platform(&config, &dir)?;
    let (token, token_source) = admin_token(&dir)?;
    let journal_path = dir.join("journal.log");
    let (journal, report) = Journal::open(&journal_path)
        .with_context(|| format!("cannot open {}", journal_path.display()))?;
    if report.torn_bytes > 0 {
        tracing::warn!(
            bytes = report.torn_bytes,
            "the journal's last entry was torn by a crash and has been cut off"
        );
        journal.append(
            None,
            None,
            Event::JournalIntegrity {
                problem: format!("cut off {} bytes of a torn last entry", report.torn_bytes),
            },
            Cause::Journal,
        );
    }
    if let Some(problem) = &report.violation {
        tracing::error!(%problem, "the journal on disk has been modified");
        journal.append(
            None,
            None,
            Event::JournalIntegrity {
                problem: problem.clone(),
            },
            Cause::Journal,
        );
    }
    // Before anything starts: the connections must fit under the file limit with the reserve.
    let limits = api::Limits::for_this_process(&config.runtime).context("cannot serve the API")?;
    let listener = tokio::net::TcpListener::bind(config.runtime.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another Cloister running? use --listen)",
                config.runtime.listen
            )
        })?;
    let local = listener.local_addr().context("listener address")?;

    let mut builder = Builder::new(journal.clone());
    let (specs, disabled) = config.resolve(&catalog());
    let services = stack::build(
        &mut builder,
        &specs,
        &disabled,
        stack::Options {
            data_dir: dir.clone(),
            platform: platform.clone(),
            journal: journal.clone(),
            accept_storage_rollback,
            accept_keystore_rollback,
        },
    );
    for spec in specs {
        if stack::NAMES.contains(&spec.name) {
            continue;
        }
        match config.testing.services.get(&spec.name) {
            Some(synthetic) => {
                builder.add_with_spec(
                    Synthetic {
                        spec: spec.clone(),
                        work: synthetic.work,
                    },
                    spec,
                );
            }
            None => bail!(
                "service {} is in the catalog but this binary cannot build it",
                spec.name
            ),
        }
    }
    builder.budget(Demand {
        memory_mib: u64::from(config.enclave.memory_mib),
        threads: u64::from(config.enclave.threads),
    });
    builder.monitor(config.runtime.monitor_interval);
    let runtime = builder.start().context("cannot start the runtime")?;
    // The controller and the file watcher end as soon as shutdown begins, so an apply waiting out
    // its watch window does not hold the server's graceful shutdown.
    let shutdown = CancellationToken::new();
    let background = shutdown.child_token();
    let initial_text = text.clone();
    let (configs, controller) = Controller::spawn(
        runtime.client(),
        catalog(),
        text,
        config.clone(),
        overrides,
        background.clone(),
    );
    let watcher = file.map(|f| {
        tokio::spawn(crate::watch::config_file(
            f,
            initial_text,
            configs.clone(),
            background.clone(),
        ))
    });

    let grace = config.runtime.shutdown_grace;
    let state = api::AppState {
        client: runtime.client(),
        admin_token: Arc::from(token.as_str()),
        config: Arc::new(config),
        configs,
        platform: platform.clone(),
        crypto: services.crypto,
        storage: services.storage,
        account: services.account,
        accounts: services.accounts,
        computation: services.computation,
        oracle: services.oracle,
        ai: services.ai,
        shutdown: shutdown.clone(),
    };
    {
        let mut out = std::io::stdout().lock();
        let identity = platform.identity();
        let _ = writeln!(
            out,
            "Cloister {} listening on http://{local} (platform: {})",
            env!("CARGO_PKG_VERSION"),
            match identity.platform {
                enclave::PlatformKind::Simulation =>
                    "SIMULATION: not an enclave, nothing here is confidential",
                enclave::PlatformKind::Gramine => "Gramine SGX enclave",
            }
        );
        let _ = writeln!(out, "measurement: {}", hex::encode(identity.measurement));
        let _ = writeln!(out, "admin token: {token_source}");
        let _ = writeln!(out, "data directory: {}", dir.display());
        let _ = out.flush();
    }
    let signal = shutdown.clone();
    let signal_task = tokio::spawn(async move {
        tokio::select! {
            () = wait_for_signal() => tracing::info!("shutting down"),
            () = signal.cancelled() => {}
        }
        signal.cancel();
    });
    let served = api::serve(listener, state, limits)
        .await
        .context("the API server failed");
    shutdown.cancel();
    let _ = signal_task.await;
    background.cancel();
    let _ = controller.await;
    if let Some(w) = watcher {
        let _ = w.await;
    }
    if tokio::time::timeout(grace, runtime.shutdown())
        .await
        .is_err()
    {
        tracing::error!(grace = %humantime::format_duration(grace), "services did not stop within the shutdown grace; exiting anyway");
    }
    served
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn the_log_is_coloured_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())), "an empty NO_COLOR is unset");
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }
}
