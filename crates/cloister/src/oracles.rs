//! `cloister oracle ...`: ask the oracle for a signed report, fetch its attested key, and verify a
//! report offline.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::Value;

use crate::client::{Reported, Target, connect};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum OracleCommand {
    /// Send a request (a JSON file: sources, extraction, aggregation) and print the signed report.
    Request {
        /// The request, a JSON file (see the oracle section of docs/api.md).
        file: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Print the oracle's signing key with the quote that binds it to the enclave (save it to pass
    /// as `verify --quote`).
    Key {
        #[command(flatten)]
        target: Target,
    },
    /// Check a report offline: its signature over its payload, and with --quote, that the quote binds
    /// the signing key to the enclave the report names. Exit code 0 if it verifies, 1 if not.
    Verify {
        /// The report, as `cloister oracle request` or `POST /v1/oracle/requests` gave it.
        report: PathBuf,
        /// The key attestation, as `cloister oracle key` or `GET /v1/oracle/key` gave it.
        #[arg(long, value_name = "FILE")]
        quote: Option<PathBuf>,
        /// Refuse a simulation quote (by default it is accepted and said to be one).
        #[arg(long, requires = "quote")]
        require_hardware: bool,
        #[command(flatten)]
        hardware: crate::quotes::HardwareArgs,
    },
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

pub(crate) async fn run(command: OracleCommand) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match command {
        OracleCommand::Request { file, target } => {
            let request: Value = serde_json::from_str(&read(&file)?)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let report = connect(target)?.oracle_request(&request).await.reported()?;
            writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        }
        OracleCommand::Key { target } => {
            let key = connect(target)?.oracle_key().await.reported()?;
            let key = serde_json::to_value(&key)?;
            writeln!(out, "{}", serde_json::to_string_pretty(&key)?)?;
        }
        OracleCommand::Verify {
            report,
            quote,
            require_hardware,
            hardware,
        } => {
            let text = read(&report)?;
            let attestation = quote.as_deref().map(read).transpose()?;
            let trust = hardware.trust(require_hardware)?;
            match oracle::verify(&text, attestation.as_deref(), &trust) {
                Ok(v) => print_verified(&mut out, &v)?,
                Err(e) => {
                    let mut err = std::io::stderr().lock();
                    writeln!(err, "{}: does not verify: {e}", report.display())?;
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_verified(out: &mut impl std::io::Write, v: &oracle::Verified) -> std::io::Result<()> {
    let p = &v.payload;
    writeln!(
        out,
        "signature:   valid ({}, key {})",
        p.signer.algorithm, p.signer.public_key
    )?;
    match v.quote {
        Some(q) if q.simulation => writeln!(
            out,
            "quote:       valid, binds the key to the enclave below — SIMULATION: not backed by hardware"
        )?,
        Some(q) => writeln!(
            out,
            "quote:       valid, verified to Intel's SGX root CA (TCB status {}), binds the key to \
             the enclave below",
            q.tcb_status.map_or("?", |t| t.as_str())
        )?,
        None => writeln!(out, "quote:       not checked (pass --quote KEY.json)")?,
    }
    let enclave = &p.enclave;
    writeln!(
        out,
        "enclave:     {} measurement {} signer {}",
        enclave["platform"].as_str().unwrap_or("?"),
        enclave["measurement"].as_str().unwrap_or("?"),
        enclave["signer"].as_str().unwrap_or("?"),
    )?;
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(p.timestamp_ms);
    writeln!(out, "made at:     {}", humantime::format_rfc3339_millis(at))?;
    writeln!(out, "request:     sha256 {}", p.request_hash)?;
    match &p.error {
        None => writeln!(
            out,
            "result:      {} ({} of {} sources agree)",
            p.result,
            p.agreeing,
            p.sources.len()
        )?,
        Some(why) => writeln!(out, "result:      none: {why}")?,
    }
    for (i, s) in p.sources.iter().enumerate() {
        let status = s.status.map_or("-".to_owned(), |c| c.to_string());
        let what = match &s.error {
            Some(e) => format!("error: {e}"),
            None => format!("value {}", s.value),
        };
        let cached = if s.cached { " (cached)" } else { "" };
        writeln!(out, "  {} {} [{status}]{cached} {what}", s.method, s.url)?;
        writeln!(out, "    from:    {}", provenance(p, i, s))?;
        if let Some(body) = &s.body_sha256 {
            writeln!(out, "    body:    sha256 {body}")?;
        }
    }
    Ok(())
}

/// How source `i`'s value was read out of its body, as the signed payload says.
fn provenance(
    p: &oracle::report::ReportPayload,
    i: usize,
    s: &oracle::report::SourceReport,
) -> String {
    use oracle::report::ExtractedBy;
    match (s.extraction, &s.script_sha256) {
        (Some(ExtractedBy::Script), Some(hash)) => format!("script sha256 {hash}"),
        (Some(ExtractedBy::JsonPath), _) => {
            match p.request["sources"][i]["extract"]["json_path"].as_str() {
                Some(path) => format!("JSONPath {path}"),
                None => "JSONPath".to_owned(),
            }
        }
        _ => format!("not recorded (a {} report)", p.format),
    }
}
