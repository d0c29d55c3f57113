//! `cloister run`: load the configuration, prepare the data directory, start the runtime and serve the
//! API until SIGINT or SIGTERM; and `cloister config validate`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, bail};
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
    /// The enclave platform; overrides `enclave.platform` (a Gramine manifest passes `gramine`).
    #[arg(long, value_enum)]
    platform: Option<PlatformArg>,
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
    /// A cluster member to ask for admission (its API address, `http://HOST:PORT`), when this
    /// node's database belongs to a cluster whose key it does not hold yet; repeatable, tried in
    /// order. Replaces `[cluster] join`.
    #[arg(long = "join", value_name = "URL")]
    join: Vec<String>,
    /// This node's API address as other members and operators reach it (`http://HOST:PORT` or
    /// `https://...`), registered in the cluster's database and sent when joining; replaces
    /// `[cluster] advertise`. Without either, the address the API listens on (unroutable for
    /// 0.0.0.0). A `--join` URL equal to it is skipped, so every node can be given the same list.
    #[arg(long, value_name = "URL", env = "CLOISTER_ADVERTISE")]
    advertise: Option<String>,
}

/// `--platform`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum PlatformArg {
    /// No SGX: a simulation that says so in every quote.
    Simulation,
    /// SGX through Gramine's `/dev/attestation`.
    Gramine,
}

impl From<PlatformArg> for Platform {
    fn from(p: PlatformArg) -> Platform {
        match p {
            PlatformArg::Simulation => Platform::Simulation,
            PlatformArg::Gramine => Platform::Gramine,
        }
    }
}

/// The services built into this binary, with their default specs, dependencies first.
fn catalog() -> Vec<Spec> {
    stack::catalog()
}

pub(crate) fn print_problems(file: &Path, invalid: &runtime::config::Invalid) {
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

pub(crate) fn load(file: &Path) -> anyhow::Result<Result<Config, runtime::config::Invalid>> {
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

pub(crate) fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
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
    let variable = std::env::var(crate::logs::FORMAT_VARIABLE).ok();
    crate::logs::init(crate::logs::format(
        config.runtime.log_format,
        variable.as_deref(),
    )?);
    // A panicking service task is a service failure that its recovery policy handles; log it as one
    // line instead of the default hook's report.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!("panic{location}: {}", panic_message(info));
    }));
    for url in &args.join {
        runtime::config::check_join_url(url).with_context(|| format!("--join {url}"))?;
    }
    if let Some(url) = &args.advertise {
        runtime::config::check_advertise(url).with_context(|| format!("--advertise {url}"))?;
    }
    if config.storage.backend == runtime::config::StorageBackend::Redb {
        for (given, flag) in [
            (!args.join.is_empty(), "--join"),
            (args.advertise.is_some(), "--advertise"),
        ] {
            if given {
                bail!(
                    "{flag}: a cluster keeps its records in PostgreSQL: set [storage] backend = \"postgres\""
                );
            }
        }
    }
    let (data_dir, listen, join) = (args.data_dir.clone(), args.listen, args.join.clone());
    let advertise = args.advertise.clone();
    let platform = args.platform.map(Platform::from);
    let overrides: Overrides = Arc::new(move |c: &mut Config| {
        if let Some(dir) = &data_dir {
            c.runtime.data_dir = dir.clone();
        }
        if let Some(listen) = listen {
            c.runtime.listen = listen;
        }
        if let Some(platform) = platform {
            c.enclave.platform = platform;
        }
        if !join.is_empty() {
            c.cluster.join = join.clone();
        }
        if let Some(url) = &advertise {
            c.cluster.advertise = Some(url.clone());
        }
    });
    overrides(&mut config);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if config.enclave.platform == Platform::Gramine {
        // An enclave has a fixed number of thread slots, sized from the budget by
        // `cloister gramine manifest`: the async workers are the runtime's reserve, and the
        // blocking pool is capped, so the process never asks for a thread the enclave lacks.
        rt.worker_threads(runtime::budget::RUNTIME_RESERVE.threads as usize)
            .max_blocking_threads(runtime::budget::BLOCKING_THREADS as usize);
    }
    let rt = rt
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let ended = rt.block_on(serve(Start {
        config,
        text,
        overrides,
        file: args.config,
        accept_storage_rollback: args.accept_storage_rollback,
        accept_keystore_rollback: args.accept_keystore_rollback,
    }))?;
    Ok(match ended {
        Ended::Stopped => ExitCode::SUCCESS,
        Ended::Escalated => ExitCode::from(ESCALATED),
        Ended::Removed => ExitCode::from(REMOVED),
    })
}

/// The exit status of a node removed from its cluster (`cloister cluster remove`): it gave up the
/// cluster key and stopped; restarting it does not bring it back.
pub(crate) const REMOVED: u8 = 4;

/// The exit status of a runtime that escalated: a service used up its restarts under
/// `on_exhausted = "escalate"`, and the process exits for its supervisor to start it again.
pub(crate) const ESCALATED: u8 = 3;

/// How the server ended.
enum Ended {
    /// Asked to stop (a signal), or the server ended by itself.
    Stopped,
    /// The runtime escalated: the exit is non-zero.
    Escalated,
    /// The node was removed from its cluster.
    Removed,
}

/// Where Gramine exposes attestation inside an enclave.
const GRAMINE_ATTESTATION: &str = "/dev/attestation";

fn open_platform(config: &Config, dir: &Path) -> anyhow::Result<Arc<dyn enclave::Platform>> {
    Ok(match config.enclave.platform {
        Platform::Simulation => {
            // The start-only settings are part of what is measured, as a manifest is under SGX.
            let measured =
                serde_json::to_vec(&config.enclave).context("measuring the [enclave] table")?;
            Arc::new(
                enclave::Simulation::open_for_current_exe(
                    dir,
                    &measured,
                    config.enclave.security_version,
                )
                .context("cannot start the simulation platform")?
                .with_product_id(config.enclave.product_id),
            )
        }
        Platform::Gramine => {
            let gramine = enclave::Gramine::open(Path::new(GRAMINE_ATTESTATION)).context(
                "enclave.platform is \"gramine\", but this process is not inside a Gramine enclave",
            )?;
            same_identity(&config.enclave, enclave::Platform::identity(&gramine))?;
            Arc::new(gramine)
        }
    })
}

/// Refuses an enclave whose signed product id or security version is not the configuration's:
/// its manifest was made from another configuration, and the sealing keys would not be the ones
/// the configuration names.
fn same_identity(
    configured: &runtime::config::EnclaveConfig,
    identity: &enclave::Identity,
) -> anyhow::Result<()> {
    if (identity.product_id, identity.security_version)
        != (configured.product_id, configured.security_version)
    {
        bail!(
            "this enclave was signed with product id {} and security version {}, but the \
             configuration says enclave.product_id = {} and enclave.security_version = {}: make \
             the manifest again from this configuration (`cloister gramine manifest`) and sign it",
            identity.product_id,
            identity.security_version,
            configured.product_id,
            configured.security_version
        );
    }
    Ok(())
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

/// The admin token: from `runtime.admin_token_file`, else from `CLOISTER_ADMIN_TOKEN`, else from
/// `DATA_DIR/admin.token`, else generated there (readable by the owner only).
fn admin_token(dir: &Path, file: Option<&Path>) -> anyhow::Result<(String, String)> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read runtime.admin_token_file {}", path.display()))?;
        only_the_owner_or_its_group_can_read(path)?;
        let token = text.trim();
        if token.len() < 16 {
            bail!(
                "runtime.admin_token_file {} holds a token shorter than 16 characters",
                path.display()
            );
        }
        return Ok((token.to_owned(), path.display().to_string()));
    }
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

/// Refuses a named token file that others can read, or that anyone but its owner, root or the
/// user running Cloister could replace. Its group may read it: a Kubernetes secret mounted for a
/// non-root user is readable through the pod's `fsGroup`.
fn only_the_owner_or_its_group_can_read(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mode = meta.mode() & 0o777;
    if mode & 0o027 != 0 {
        bail!(
            "{path} can be read by others or written by its group (mode {mode:o}): run `chmod 640 \
             {path}` (or give the secret `defaultMode: 0440`), and replace the token, since others \
             may have read it",
            path = path.display()
        );
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        bail!(
            "{path} belongs to user {owner}, neither root nor the user running cloister ({me})",
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

async fn serve(start: Start) -> anyhow::Result<Ended> {
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
    let storage_backend = stack::storage_backend(&config.storage)?;
    // The platform first: nothing secret is written where no enclave will run.
    let platform = open_platform(&config, &dir)?;
    let (token, token_source) = admin_token(&dir, config.runtime.admin_token_file.as_deref())?;
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
    let advertised = config.cluster.advertise.clone();
    let address = advertised
        .clone()
        .unwrap_or_else(|| format!("http://{local}"));
    // The cluster before the services: a node of a cluster serves only once it holds its key.
    let cluster =
        cluster::Node::open(cluster::Options {
            platform: platform.clone(),
            data_dir: &dir,
            config: &config.cluster,
            database: storage_backend.database(),
            address: address.clone(),
            version: env!("CARGO_PKG_VERSION"),
            collateral: config.cluster.pccs.clone().map(|url| {
                Arc::new(crate::quotes::Pccs(url)) as Arc<dyn cluster::CollateralSource>
            }),
        })
        .await
        .context("cannot take this node's part in its cluster")?;
    let members = config.cluster.members_to_ask();
    if members.len() < config.cluster.join.len() {
        tracing::info!(%address, "the members to join through name this node's own address: it is not asked");
    }
    let newcomer = crate::clusters::join_if_needed(&cluster, &members, &journal).await?;

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
            storage_backend,
            accept_storage_rollback,
            accept_keystore_rollback,
            vault: Some(cluster.vault()),
            newcomer,
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
    builder.budget(config.enclave.budget());
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
    let escalation_grace = config.runtime.escalation_grace;
    let mut readiness = runtime.client().readiness();
    let state = api::AppState::new(api::Shared {
        client: runtime.client(),
        admin_token: api::AdminToken::new(&token),
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
        ai_inline: services.ai_inline,
        storage_reads: services.storage_reads,
        cluster: cluster.clone(),
        shutdown: shutdown.clone(),
    });
    // A node removed from its cluster stops: it gave up the key, and serves nothing more.
    let removed = CancellationToken::new();
    let membership = {
        let (node, cancel, removed) = (cluster.clone(), background.clone(), removed.clone());
        tokio::spawn(async move {
            if node.keep_membership(cancel).await == cluster::Membership::Removed {
                removed.cancel();
            }
        })
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
        let _ = writeln!(out, "node: {}", cluster.id());
        if let Some(url) = &advertised {
            let _ = writeln!(out, "advertised as: {url}");
        }
        let _ = writeln!(out, "admin token: {token_source}");
        let _ = writeln!(out, "data directory: {}", dir.display());
        let _ = out.flush();
    }
    let signal = shutdown.clone();
    let signal_task = tokio::spawn(async move {
        let escalated = async {
            let Ok(reason) = readiness
                .wait_for(|r| r.escalation.is_some())
                .await
                .map(|r| r.escalation.clone().unwrap_or_default())
            else {
                // The supervisor is gone: nothing will escalate.
                return std::future::pending().await;
            };
            tracing::error!(%reason, grace = %humantime::format_duration(escalation_grace), "escalated: /livez answers 503; the process exits after the grace");
            tokio::time::sleep(escalation_grace).await;
        };
        let ended = tokio::select! {
            () = wait_for_signal() => {
                tracing::info!("shutting down");
                Ended::Stopped
            }
            () = escalated => {
                tracing::error!(status = ESCALATED, "escalated: shutting down to exit for the process's supervisor");
                Ended::Escalated
            }
            () = removed.cancelled() => {
                tracing::error!(status = REMOVED, "removed from the cluster: shutting down");
                Ended::Removed
            }
            () = signal.cancelled() => Ended::Stopped,
        };
        signal.cancel();
        ended
    });
    let served = api::serve(listener, state, limits)
        .await
        .context("the API server failed");
    shutdown.cancel();
    let ended = signal_task.await.unwrap_or(Ended::Stopped);
    background.cancel();
    let _ = controller.await;
    let _ = membership.await;
    if let Some(w) = watcher {
        let _ = w.await;
    }
    if tokio::time::timeout(grace, runtime.shutdown())
        .await
        .is_err()
    {
        tracing::error!(grace = %humantime::format_duration(grace), "services did not stop within the shutdown grace; exiting anyway");
    }
    served.map(|()| ended)
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
    use enclave::{Identity, PlatformKind};
    use runtime::config::Config;

    use super::same_identity;

    #[test]
    fn an_enclave_signed_for_another_identity_is_refused() {
        let config = Config::default().enclave;
        let mut identity = Identity {
            platform: PlatformKind::Gramine,
            measurement: [1; 32],
            signer: [2; 32],
            product_id: config.product_id,
            security_version: config.security_version,
            debug: false,
        };
        assert!(same_identity(&config, &identity).is_ok());
        identity.security_version += 1;
        let refused = same_identity(&config, &identity)
            .expect_err("refused")
            .to_string();
        assert!(refused.contains("security version 2"), "{refused}");
        identity.security_version -= 1;
        identity.product_id += 1;
        assert!(same_identity(&config, &identity).is_err());
    }
}
