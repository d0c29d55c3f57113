//! Client commands: talk to a running runtime over its HTTP API.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use futures::StreamExt;
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

pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    pub(crate) fn new(target: Target) -> anyhow::Result<Api> {
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
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("HTTP client")?;
        Ok(Api {
            http,
            base: target.url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        self.send_json(method, path, None).await
    }

    /// A request with an optional JSON body; an empty answer (204) reads as `null`.
    async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(30));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| unreachable_error(&self.base, e))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("reading the answer of {url}"))?;
        if bytes.is_empty() {
            return Ok((status, Value::Null));
        }
        let body: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{url} did not answer with JSON"))?;
        Ok((status, body))
    }

    /// The body of a successful answer to a request with `body`, or the API's error.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let (status, answer) = self.send_json(method, path, body).await?;
        if status.is_success() {
            Ok(answer)
        } else {
            Err(api_error(status, &answer))
        }
    }

    /// The body of a successful answer, or the API's error as an `anyhow` error.
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = self.send(reqwest::Method::GET, path).await?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(api_error(status, &body))
        }
    }
}

fn unreachable_error(base: &str, e: reqwest::Error) -> anyhow::Error {
    anyhow!(
        "cannot reach Cloister at {base}: {e}. Is `cloister run` running there? Set --url or CLOISTER_URL."
    )
}

fn api_error(status: reqwest::StatusCode, body: &Value) -> anyhow::Error {
    let code = body["error"]["code"].as_str().unwrap_or("unknown");
    let message = body["error"]["message"].as_str().unwrap_or("no message");
    anyhow!("{message} ({status}, {code})")
}

pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn uptime(v: &Value) -> String {
    match v.as_u64() {
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

fn health_text(s: &Value) -> String {
    match s["health"]["reason"].as_str() {
        Some(reason) => format!("{}: {reason}", text(&s["health"]["level"])),
        None => text(&s["health"]["level"]),
    }
}

pub(crate) async fn status(
    target: Target,
    name: Option<String>,
    wide: bool,
) -> anyhow::Result<ExitCode> {
    let api = Api::new(target)?;
    if let Some(name) = name {
        return status_of(&api, &name).await;
    }
    let body = api.get("/v1/services").await?;
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header([
        "SERVICE", "TYPE", "STATE", "HEALTH", "REPLICAS", "RESTARTS", "UPTIME",
    ]);
    let mut services = body["services"].as_array().cloned().unwrap_or_default();
    services.sort_by_key(|s| (s["layer"].as_u64(), text(&s["name"])));
    let mut shortened = false;
    for s in &services {
        let health = if wide {
            health_text(s)
        } else {
            let (health, cut) = shorten(&health_text(s), HEALTH_WIDTH);
            shortened |= cut;
            health
        };
        let r = &s["replicas"];
        table.add_row([
            text(&s["name"]),
            text(&s["type"]),
            text(&s["state"]),
            health,
            format!(
                "{}/{}/{}",
                text(&r["running"]),
                text(&r["min"]),
                text(&r["max"])
            ),
            text(&s["restart_count"]),
            uptime(&s["uptime_seconds"]),
        ]);
    }
    let readiness = &body["readiness"];
    let mut out = std::io::stdout().lock();
    writeln!(out, "{table}")?;
    writeln!(out, "runtime: {}", text(&readiness["level"]))?;
    for reason in readiness["reasons"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let reason = if wide {
            text(reason)
        } else {
            let (reason, cut) = shorten(&text(reason), LINE_WIDTH - 4);
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
async fn status_of(api: &Api, name: &str) -> anyhow::Result<ExitCode> {
    let s = api.get(&format!("/v1/services/{name}")).await?;
    let r = &s["replicas"];
    let mut out = std::io::stdout().lock();
    writeln!(out, "service:  {}", text(&s["name"]))?;
    writeln!(out, "type:     {}", text(&s["type"]))?;
    writeln!(out, "state:    {}", text(&s["state"]))?;
    writeln!(out, "health:   {}", text(&s["health"]["level"]))?;
    if let Some(reason) = s["health"]["reason"].as_str() {
        writeln!(out, "reason:   {reason}")?;
    }
    writeln!(
        out,
        "replicas: {}/{}/{} (running/min/max)",
        text(&r["running"]),
        text(&r["min"]),
        text(&r["max"])
    )?;
    writeln!(out, "restarts: {}", text(&s["restart_count"]))?;
    writeln!(out, "uptime:   {}", uptime(&s["uptime_seconds"]))?;
    Ok(ExitCode::SUCCESS)
}

/// The start layers of a `/v1/graph` answer, as names.
fn layers(body: &Value) -> Vec<Vec<String>> {
    body["layers"]
        .as_array()
        .map(|layers| {
            layers
                .iter()
                .map(|l| {
                    l.as_array()
                        .map(|names| names.iter().map(text).collect())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) async fn graph(target: Target, dot: bool) -> anyhow::Result<ExitCode> {
    let api = Api::new(target)?;
    let body = api.get("/v1/graph").await?;
    let mut out = std::io::stdout().lock();
    let empty = Vec::new();
    let nodes = body["nodes"].as_array().unwrap_or(&empty);
    let edges = body["edges"].as_array().unwrap_or(&empty);
    if dot {
        writeln!(
            out,
            "digraph cloister {{\n  rankdir=BT;\n  node [shape=box, style=rounded];"
        )?;
        for (i, names) in layers(&body).iter().enumerate() {
            let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
            writeln!(
                out,
                "  subgraph layer{i} {{ rank=same; {} }}",
                quoted.join("; ")
            )?;
        }
        for n in nodes {
            writeln!(
                out,
                "  \"{}\" [label=\"{}\\n{}\"];",
                text(&n["name"]),
                text(&n["name"]),
                text(&n["state"])
            )?;
        }
        for e in edges {
            writeln!(out, "  \"{}\" -> \"{}\";", text(&e["from"]), text(&e["to"]))?;
        }
        writeln!(out, "}}")?;
        return Ok(ExitCode::SUCCESS);
    }
    for (i, names) in layers(&body).iter().enumerate() {
        writeln!(out, "layer {i}: {}", names.join(", "))?;
    }
    for n in nodes {
        let name = text(&n["name"]);
        let deps: Vec<String> = edges
            .iter()
            .filter(|e| text(&e["from"]) == name)
            .map(|e| text(&e["to"]))
            .collect();
        if deps.is_empty() {
            writeln!(out, "{name} ({})", text(&n["state"]))?;
        } else {
            writeln!(out, "{name} ({}) -> {}", text(&n["state"]), deps.join(", "))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn command(target: Target, verb: &str, name: String) -> anyhow::Result<ExitCode> {
    let api = Api::new(target)?;
    let (status, body) = api
        .send(
            reqwest::Method::POST,
            &format!("/v1/services/{name}/{verb}"),
        )
        .await?;
    if !status.is_success() {
        return Err(api_error(status, &body));
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: {} (state: {})",
        text(&body["service"]),
        text(&body["message"]),
        text(&body["state"])
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

fn print_event(out: &mut impl std::io::Write, e: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{e}")?;
        return Ok(());
    }
    let mut details = e["event"].clone();
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
    let mut cause = e["cause"].clone();
    let by = cause
        .as_object_mut()
        .and_then(|o| o.remove("by"))
        .map(|k| text(&k))
        .unwrap_or_default();
    let cause_detail = cause
        .as_object()
        .map(|o| o.values().map(text).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let service = e["service"].as_str().unwrap_or("runtime");
    let generation = e["generation"]
        .as_u64()
        .map(|g| format!(" gen {g}"))
        .unwrap_or_default();
    writeln!(
        out,
        "{:>6} {} {service}{generation} {kind} {details} [{by}{}]",
        text(&e["seq"]),
        text(&e["time"]),
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
    let api = Api::new(target)?;
    let mut cursor = since;
    loop {
        let body = api
            .get(&format!("/v1/events?since={cursor}&limit=1000"))
            .await?;
        let events = body["events"].as_array().cloned().unwrap_or_default();
        let mut out = std::io::stdout().lock();
        for e in &events {
            print_event(&mut out, e, json)?;
        }
        cursor = body["next"].as_u64().unwrap_or(cursor);
        if events.len() < 1000 {
            break;
        }
    }
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    let url = format!("{}/v1/events/stream?since={cursor}", api.base);
    let response = api
        .http
        .get(&url)
        .bearer_auth(&api.token)
        .send()
        .await
        .map_err(|e| unreachable_error(&api.base, e))?;
    if !response.status().is_success() {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        return Err(api_error(status, &body));
    }
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("the event stream broke off")?;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            for line in frame.lines() {
                if let Some(data) = line.strip_prefix("data:") {
                    let e: Value = serde_json::from_str(data.trim()).context("malformed event")?;
                    let mut out = std::io::stdout().lock();
                    print_event(&mut out, &e, json)?;
                    out.flush()?;
                }
            }
        }
    }
    bail!("the runtime closed the event stream (it is shutting down?)")
}

/// What `config apply` says after every applied version: the file given to `cloister run
/// --config` is the configuration of record (as vector's and Nomad's files are), so a version
/// applied through the API is not kept across a restart.
pub(crate) const UNTIL_RESTART: &str = "note: this version lasts until the runtime restarts, which \
     starts again from the file given to `cloister run --config` (or the built-in defaults); to keep \
     it, save it as that file (a running runtime applies a saved file by itself)";

fn print_outcome(body: &Value) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match body["outcome"].as_str() {
        Some("applied") => {
            let changed: Vec<String> = body["changed"]
                .as_array()
                .map(|a| a.iter().map(text).collect())
                .unwrap_or_default();
            writeln!(
                out,
                "applied as version {} ({}){}",
                text(&body["version"]),
                if changed.is_empty() {
                    "no service changed".to_owned()
                } else {
                    format!("changed: {}", changed.join(", "))
                },
                if body["watching"] == true {
                    "; watching for trouble before it counts as good"
                } else {
                    ""
                },
            )?;
            writeln!(out, "{UNTIL_RESTART}")?;
            Ok(ExitCode::SUCCESS)
        }
        Some("unchanged") => {
            writeln!(
                out,
                "unchanged: version {} is already running",
                text(&body["version"])
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Some("rolled_back") => {
            writeln!(
                out,
                "rolled back from version {} to {}: {}",
                text(&body["from"]),
                text(&body["to"]),
                text(&body["reason"])
            )?;
            Ok(ExitCode::FAILURE)
        }
        Some("rejected") => {
            let mut err = std::io::stderr().lock();
            for p in body["problems"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let path = text(&p["path"]);
                if path.is_empty() || path == "-" {
                    writeln!(err, "{}", text(&p["message"]))?;
                } else {
                    writeln!(err, "{path}: {}", text(&p["message"]))?;
                }
            }
            writeln!(err, "rejected; the running configuration is unchanged")?;
            Ok(ExitCode::FAILURE)
        }
        _ => Err(api_error(reqwest::StatusCode::INTERNAL_SERVER_ERROR, body)),
    }
}

pub(crate) async fn config_apply(
    target: Target,
    file: std::path::PathBuf,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let api = Api::new(target)?;
    let url = format!("{}/v1/config?wait={wait}", api.base);
    let response = api
        .http
        .put(&url)
        .bearer_auth(&api.token)
        .header("content-type", "application/toml")
        .body(text)
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .map_err(|e| unreachable_error(&api.base, e))?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .context("the runtime did not answer with JSON")?;
    if body.get("outcome").is_none() {
        return Err(api_error(status, &body));
    }
    print_outcome(&body)
}

pub(crate) async fn config_rollback(target: Target) -> anyhow::Result<ExitCode> {
    let api = Api::new(target)?;
    let (status, body) = api
        .send(reqwest::Method::POST, "/v1/config/rollback")
        .await?;
    if body.get("outcome").is_none() {
        return Err(api_error(status, &body));
    }
    match print_outcome(&body)? {
        // For an operator's rollback, having rolled back is success.
        _ if body["outcome"] == "rolled_back" => Ok(ExitCode::SUCCESS),
        code => Ok(code),
    }
}

pub(crate) async fn config_history(target: Target) -> anyhow::Result<ExitCode> {
    let api = Api::new(target)?;
    let body = api.get("/v1/config/history").await?;
    let mut table = Table::new();
    table.load_style(UTF8_FULL_CONDENSED);
    table.set_header(["VERSION", "STATUS", "SOURCE", "APPLIED AT", "HASH"]);
    for v in body["versions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let hash = text(&v["hash"]);
        table.add_row([
            text(&v["version"]),
            text(&v["status"]),
            text(&v["source"]),
            text(&v["applied_at"]),
            hash.chars().take(16).collect(),
        ]);
    }
    writeln!(std::io::stdout().lock(), "{table}")?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn config_show(target: Target) -> anyhow::Result<ExitCode> {
    let api = Api::new(target)?;
    let body = api.get("/v1/config").await?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "# version {} ({}), sha256 {}",
        text(&body["version"]),
        text(&body["status"]),
        text(&body["hash"])
    )?;
    write!(out, "{}", body["text"].as_str().unwrap_or(""))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn attest(
    target: Target,
    nonce: Option<String>,
    json: bool,
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
    let api = Api::new(target)?;
    let body = api
        .get(&format!("/v1/attestation?nonce={}", hex::encode(&nonce)))
        .await?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{body}")?;
    }
    let quote = base64::engine::general_purpose::STANDARD
        .decode(body["quote"].as_str().unwrap_or(""))
        .context("the quote is not base64")?;
    let parsed =
        enclave::quote::Quote::parse(&quote).map_err(|e| anyhow!("the runtime's quote: {e}"))?;
    let expected = enclave::report_data_for_nonce(&nonce);
    let verdict = match parsed.verify(true, Some(&expected), None) {
        Ok(()) => "signature valid, binds this nonce".to_owned(),
        Err(e) => format!("NOT verified here: {e}"),
    };
    if !json {
        // Everything below comes from the quote itself, not from the JSON around it.
        let id = &parsed.body;
        writeln!(out, "platform:          {}", text(&body["platform"]))?;
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
    Ok(if parsed.body.report_data == expected {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
