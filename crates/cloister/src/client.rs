//! Client commands: talk to a running runtime over its HTTP API.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use cloister_sdk::types::config::ApplyAnswer;
use cloister_sdk::types::{Entry, Health, Outcome, ServiceName};
use cloister_sdk::{Client, Command, Error};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde_json::Value;

/// How client commands find a running runtime.
#[derive(Debug, clap::Args)]
pub(crate) struct Target {
    /// Base URL of the runtime's API.
    #[arg(long, env = "CLOISTER_URL", default_value = "http://127.0.0.1:8420")]
    pub(crate) url: String,
    /// Bearer token: the admin token, or an account token for what its scopes allow (`cls_...`);
    /// without it, the admin token is read from DATA_DIR/admin.token.
    #[arg(long = "token", env = "CLOISTER_ADMIN_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Data directory holding admin.token, when no token is given.
    #[arg(long, env = "CLOISTER_DATA_DIR", default_value = "cloister-data")]
    pub(crate) data_dir: PathBuf,
}

pub(crate) fn block_on<F: Future<Output = anyhow::Result<ExitCode>>>(
    f: F,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

/// The SDK's client for `target`: its URL, and the token given or the admin token from its data
/// directory.
pub(crate) fn connect(target: Target) -> anyhow::Result<Client> {
    let token = match target.token {
        Some(t) => t,
        None => {
            let path = target.data_dir.join("admin.token");
            std::fs::read_to_string(&path)
                .map(|t| t.trim().to_owned())
                .with_context(|| {
                    format!(
                        "no admin token: set CLOISTER_ADMIN_TOKEN, pass --token, or point --data-dir at the runtime's data \
                         directory (could not read {})",
                        path.display()
                    )
                })?
        }
    };
    Client::new(&target.url, token).context("HTTP client")
}

/// An SDK error as the CLI reports it: an unreachable runtime with a hint where to look.
pub(crate) fn reported(e: Error) -> anyhow::Error {
    match e {
        Error::Unreachable { base, source } => anyhow!(
            "cannot reach Cloister at {base}: {source}. Is `cloister run` running there? Set --url or CLOISTER_URL."
        ),
        other => anyhow::Error::new(other),
    }
}

/// The SDK's answers with the CLI's reading of its errors.
pub(crate) trait Reported<T> {
    fn reported(self) -> anyhow::Result<T>;
}

impl<T> Reported<T> for Result<T, Error> {
    fn reported(self) -> anyhow::Result<T> {
        self.map_err(reported)
    }
}

/// The name a value of a wire enum has in JSON (`core`, `not_ready`), as the CLI prints it.
pub(crate) fn name_of(v: &impl serde::Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "-".into(),
    }
}

/// A JSON value in a line of text: a string as itself, null as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn uptime(seconds: Option<u64>) -> String {
    match seconds {
        Some(s) => humantime::format_duration(Duration::from_secs(s)).to_string(),
        None => "-".into(),
    }
}

/// The longest HEALTH cell of `cloister status` (the table stays within about 120 columns);
/// `--wide` and `cloister status NAME` show the whole reason.
const HEALTH_WIDTH: usize = 40;
/// The longest line of `cloister status` outside the table (without `--wide`).
const LINE_WIDTH: usize = 120;

/// `text` cut to `width` characters, the last one an ellipsis when anything was cut.
fn shorten(text: &str, width: usize) -> (String, bool) {
    if text.chars().count() <= width {
        return (text.to_owned(), false);
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    (cut, true)
}

fn health_text(health: &Health) -> String {
    match health.reason() {
        Some(reason) => format!("{}: {reason}", health.level()),
        None => health.level().to_owned(),
    }
}

pub(crate) async fn status(
    target: Target,
    name: Option<String>,
    wide: bool,
) -> anyhow::Result<ExitCode> {
    let api = connect(target)?;
    if let Some(name) = name {
        return status_of(&api, &name).await;
    }
    let body = api.services().await.reported()?;
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header([
        "SERVICE", "TYPE", "STATE", "HEALTH", "REPLICAS", "RESTARTS", "UPTIME",
    ]);
    let mut services = body.services;
    services.sort_by(|a, b| (a.layer, a.name.as_str()).cmp(&(b.layer, b.name.as_str())));
    let mut shortened = false;
    for s in &services {
        let health = if wide {
            health_text(&s.health)
        } else {
            let (health, cut) = shorten(&health_text(&s.health), HEALTH_WIDTH);
            shortened |= cut;
            health
        };
        let r = &s.replicas;
        table.add_row([
            s.name.to_string(),
            name_of(&s.kind),
            s.state.to_string(),
            health,
            format!("{}/{}/{}", r.running, r.min, r.max),
            s.restart_count.to_string(),
            uptime(s.uptime_seconds),
        ]);
    }
    let readiness = &body.readiness;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{table}")?;
    writeln!(out, "runtime: {}", name_of(&readiness.level))?;
    for reason in &readiness.reasons {
        let reason = if wide {
            reason.clone()
        } else {
            let (reason, cut) = shorten(reason, LINE_WIDTH - 4);
            shortened |= cut;
            reason
        };
        writeln!(out, "  - {reason}")?;
    }
    if shortened {
        writeln!(
            out,
            "(shortened: `cloister status NAME` or `cloister status --wide` shows every reason whole)"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One service, every line whole: `cloister status NAME`.
async fn status_of(api: &Client, name: &str) -> anyhow::Result<ExitCode> {
    let s = api.service(name).await.reported()?;
    let r = &s.replicas;
    let mut out = std::io::stdout().lock();
    writeln!(out, "service:  {}", s.name)?;
    writeln!(out, "type:     {}", name_of(&s.kind))?;
    writeln!(out, "state:    {}", s.state)?;
    writeln!(out, "health:   {}", s.health.level())?;
    if let Some(reason) = s.health.reason() {
        writeln!(out, "reason:   {reason}")?;
    }
    writeln!(
        out,
        "replicas: {}/{}/{} (running/min/max)",
        r.running, r.min, r.max
    )?;
    writeln!(out, "restarts: {}", s.restart_count)?;
    writeln!(out, "uptime:   {}", uptime(s.uptime_seconds))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn graph(target: Target, dot: bool) -> anyhow::Result<ExitCode> {
    let api = connect(target)?;
    let body = api.graph().await.reported()?;
    let mut out = std::io::stdout().lock();
    if dot {
        writeln!(
            out,
            "digraph cloister {{\n  rankdir=BT;\n  node [shape=box, style=rounded];"
        )?;
        for (i, names) in body.layers.iter().enumerate() {
            let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
            writeln!(
                out,
                "  subgraph layer{i} {{ rank=same; {} }}",
                quoted.join("; ")
            )?;
        }
        for n in &body.nodes {
            writeln!(
                out,
                "  \"{}\" [label=\"{}\\n{}\"];",
                n.name, n.name, n.state
            )?;
        }
        for e in &body.edges {
            writeln!(out, "  \"{}\" -> \"{}\";", e.from, e.to)?;
        }
        writeln!(out, "}}")?;
        return Ok(ExitCode::SUCCESS);
    }
    for (i, names) in body.layers.iter().enumerate() {
        let names: Vec<&str> = names.iter().map(ServiceName::as_str).collect();
        writeln!(out, "layer {i}: {}", names.join(", "))?;
    }
    for n in &body.nodes {
        let deps: Vec<&str> = body
            .edges
            .iter()
            .filter(|e| e.from == n.name)
            .map(|e| e.to.as_str())
            .collect();
        if deps.is_empty() {
            writeln!(out, "{} ({})", n.name, n.state)?;
        } else {
            writeln!(out, "{} ({}) -> {}", n.name, n.state, deps.join(", "))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn command(
    target: Target,
    verb: Command,
    name: String,
) -> anyhow::Result<ExitCode> {
    let api = connect(target)?;
    let answer = api.command(&name, verb).await.reported()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: {} (state: {})",
        answer.service, answer.message, answer.state
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `key=value`, with nested objects flattened (`outcome=hung missed=2`).
fn flat(key: &str, v: &Value) -> String {
    match v.as_object() {
        Some(o) => o
            .iter()
            .map(|(k, v)| flat(k, v))
            .collect::<Vec<_>>()
            .join(" "),
        None => format!("{key}={}", text(v)),
    }
}

fn print_event(out: &mut impl std::io::Write, e: &Entry, json: bool) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_value(e)?)?;
        return Ok(());
    }
    // What happened and why are closed enums with a field or two per variant: printed as their
    // JSON fields, `kind` and `by` first.
    let mut details = serde_json::to_value(&e.event)?;
    let kind = details
        .as_object_mut()
        .and_then(|o| o.remove("kind"))
        .map(|k| text(&k))
        .unwrap_or_default();
    let details = match details.as_object() {
        Some(o) if !o.is_empty() => o
            .iter()
            .map(|(k, v)| flat(k, v))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    let mut cause = serde_json::to_value(&e.cause)?;
    let by = cause
        .as_object_mut()
        .and_then(|o| o.remove("by"))
        .map(|k| text(&k))
        .unwrap_or_default();
    let cause_detail = cause
        .as_object()
        .map(|o| o.values().map(text).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let service = e.service.as_ref().map_or("runtime", ServiceName::as_str);
    let generation = e
        .generation
        .map(|g| format!(" gen {g}"))
        .unwrap_or_default();
    writeln!(
        out,
        "{:>6} {} {service}{generation} {kind} {details} [{by}{}]",
        e.seq,
        humantime::format_rfc3339_micros(e.time),
        if cause_detail.is_empty() {
            String::new()
        } else {
            format!(" {cause_detail}")
        }
    )?;
    Ok(())
}

pub(crate) async fn events(
    target: Target,
    since: u64,
    follow: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    const PAGE: usize = 1000;
    let api = connect(target)?;
    let mut cursor = since;
    loop {
        let page = api.events(cursor, PAGE).await.reported()?;
        let mut out = std::io::stdout().lock();
        for e in &page.events {
            print_event(&mut out, e, json)?;
        }
        cursor = page.next;
        if page.events.len() < PAGE {
            break;
        }
    }
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut stream = api.event_stream(cursor).await.reported()?;
    while let Some(e) = stream.next().await {
        let e = e.context("the event stream broke off")?;
        let mut out = std::io::stdout().lock();
        print_event(&mut out, &e, json)?;
        out.flush()?;
    }
    bail!("the runtime closed the event stream (it is shutting down?)")
}

/// What `config apply` says after every applied version: the file given to `cloister run
/// --config` is the configuration of record (as vector's and Nomad's files are), so a version
/// applied through the API is not kept across a restart.
pub(crate) const UNTIL_RESTART: &str = "note: this version lasts until the runtime restarts, which \
     starts again from the file given to `cloister run --config` (or the built-in defaults); to keep \
     it, save it as that file (a running runtime applies a saved file by itself)";

fn print_outcome(answer: &ApplyAnswer) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match &answer.outcome {
        Outcome::Applied {
            version,
            changed,
            watching,
            ..
        } => {
            writeln!(
                out,
                "applied as version {version} ({}){}",
                if changed.is_empty() {
                    "no service changed".to_owned()
                } else {
                    format!("changed: {}", changed.join(", "))
                },
                if *watching {
                    "; watching for trouble before it counts as good"
                } else {
                    ""
                },
            )?;
            writeln!(out, "{UNTIL_RESTART}")?;
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Unchanged { version } => {
            writeln!(out, "unchanged: version {version} is already running")?;
            Ok(ExitCode::SUCCESS)
        }
        Outcome::RolledBack { from, to, reason } => {
            writeln!(out, "rolled back from version {from} to {to}: {reason}")?;
            Ok(ExitCode::FAILURE)
        }
        Outcome::Rejected { problems } => {
            let mut err = std::io::stderr().lock();
            for p in problems {
                if p.path.is_empty() {
                    writeln!(err, "{}", p.message)?;
                } else {
                    writeln!(err, "{}: {}", p.path, p.message)?;
                }
            }
            writeln!(err, "rejected; the running configuration is unchanged")?;
            Ok(ExitCode::FAILURE)
        }
    }
}

pub(crate) async fn config_apply(
    target: Target,
    file: std::path::PathBuf,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let api = connect(target)?;
    let answer = api.apply_config(text, wait).await.reported()?;
    print_outcome(&answer)
}

pub(crate) async fn config_rollback(target: Target) -> anyhow::Result<ExitCode> {
    let api = connect(target)?;
    let answer = api.rollback_config().await.reported()?;
    match print_outcome(&answer)? {
        // For an operator's rollback, having rolled back is success.
        _ if matches!(answer.outcome, Outcome::RolledBack { .. }) => Ok(ExitCode::SUCCESS),
        code => Ok(code),
    }
}

pub(crate) async fn config_history(target: Target) -> anyhow::Result<ExitCode> {
    let api = connect(target)?;
    let body = api.config_history().await.reported()?;
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header(["VERSION", "STATUS", "SOURCE", "APPLIED AT", "HASH"]);
    for v in &body.versions {
        table.add_row([
            v.version.to_string(),
            name_of(&v.status),
            name_of(&v.source),
            v.applied_at.clone(),
            v.hash.chars().take(16).collect(),
        ]);
    }
    writeln!(std::io::stdout().lock(), "{table}")?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn config_show(target: Target) -> anyhow::Result<ExitCode> {
    let api = connect(target)?;
    let body = api.config().await.reported()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "# version {} ({}), sha256 {}",
        body.summary.version,
        name_of(&body.summary.status),
        body.summary.hash
    )?;
    write!(out, "{}", body.text)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn attest(
    target: Target,
    nonce: Option<String>,
    json: bool,
    trust: enclave::quote::Trust,
) -> anyhow::Result<ExitCode> {
    use base64::Engine;
    let nonce = match nonce {
        Some(n) => {
            let bytes = hex::decode(&n).context("--nonce must be hex")?;
            if bytes.is_empty() || bytes.len() > 64 {
                bail!("--nonce must be 1 to 64 bytes");
            }
            bytes
        }
        None => rand::random::<[u8; 32]>().to_vec(),
    };
    let api = connect(target)?;
    let body = api.attestation(&nonce).await.reported()?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_value(&body)?)?;
    }
    let quote = base64::engine::general_purpose::STANDARD
        .decode(&body.quote)
        .context("the quote is not base64")?;
    let parsed =
        enclave::quote::Quote::parse(&quote).map_err(|e| anyhow!("the runtime's quote: {e}"))?;
    let expected = enclave::report_data_for_nonce(&nonce);
    let checked = enclave::quote::check(&quote, &trust, Some(&expected));
    let verdict = match &checked {
        Ok((_, enclave::quote::Verified::Simulation)) => {
            "signature valid, binds this nonce".to_owned()
        }
        Ok((_, enclave::quote::Verified::Hardware(v))) => format!(
            "verified to Intel's SGX root CA, TCB status {} (advisories: {}), binds this nonce",
            v.tcb_status,
            if v.advisory_ids.is_empty() {
                "none".to_owned()
            } else {
                v.advisory_ids.join(", ")
            }
        ),
        Err(e) => format!("NOT verified: {e}"),
    };
    if !json {
        // Everything below comes from the quote itself, not from the JSON around it.
        let id = &parsed.body;
        writeln!(out, "platform:          {}", name_of(&body.platform))?;
        writeln!(out, "measurement:       {}", hex::encode(id.mr_enclave))?;
        writeln!(out, "signer:            {}", hex::encode(id.mr_signer))?;
        writeln!(out, "product id:        {}", id.isv_prod_id)?;
        writeln!(out, "security version:  {}", id.isv_svn)?;
        writeln!(out, "debug:             {}", id.debug)?;
        writeln!(out, "nonce:             {}", hex::encode(&nonce))?;
        writeln!(
            out,
            "quote:             {} bytes, DCAP v3 layout; {verdict}",
            quote.len()
        )?;
        if parsed.is_simulation() {
            writeln!(
                out,
                "SIMULATION: this is not an SGX enclave; the quote is signed by a simulation key and proves \
                 nothing about hardware"
            )?;
        }
    }
    Ok(if checked.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
