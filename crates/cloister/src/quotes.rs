//! `cloister quote ...`: verify an SGX DCAP quote offline against Intel's collateral, and fetch that
//! collateral from a PCCS or Intel's PCS (a client, like the other client commands: the enclave
//! itself never reaches the PCCS).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use enclave::dcap::{Collateral, HardwareVerdict, TcbPolicy, TcbStatus};
use enclave::quote::QuoteError;
use serde_json::json;

/// `quote verify`: the chain, the signatures or the collateral do not verify.
const NOT_VERIFIED: u8 = 2;
/// `quote verify`: verified, but the TCB status (or the debug flag) is not accepted.
const NOT_ACCEPTED: u8 = 3;
/// `quote verify`: verified, but the report data is not what the caller expects.
const OTHER_REPORT_DATA: u8 = 4;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum QuoteCommand {
    /// Verify an SGX DCAP quote offline against Intel's collateral and print the verdict: the
    /// signature chain, TCB status, advisories, MRENCLAVE, MRSIGNER, product id, SVN, debug flag,
    /// report data. Exit code 0 if it verifies and its TCB status is UpToDate or allowed; 2 if it
    /// does not verify; 3 if the TCB status or debug flag is not accepted; 4 if the report data is
    /// not the expected one.
    Verify {
        /// The quote: raw bytes (as Gramine's `/dev/attestation/quote` gives it), hex or base64.
        quote: PathBuf,
        /// Intel's collateral for the quote, as `cloister quote collateral` writes it.
        #[arg(long, value_name = "FILE")]
        collateral: PathBuf,
        /// Check the certificates and collateral as of this time (RFC 3339, e.g.
        /// 2025-07-01T00:00:00Z); default now.
        #[arg(long, value_name = "RFC3339_TIME")]
        at: Option<String>,
        /// Print the verdict as one JSON object.
        #[arg(long)]
        json: bool,
        /// TCB statuses accepted besides UpToDate, comma-separated (e.g. SWHardeningNeeded,OutOfDate).
        #[arg(long, value_name = "STATUS,...", value_delimiter = ',')]
        allow_tcb: Vec<String>,
        /// Accept an enclave built in debug mode (the host can read its memory).
        #[arg(long)]
        allow_debug: bool,
        /// The report data the quote must carry (hex, up to 64 bytes, zero-padded).
        #[arg(long, value_name = "HEX")]
        report_data: Option<String>,
    },
    /// Fetch the collateral for a quote (PCK CRL, root CA CRL, TCB info, QE identity, with their
    /// issuer chains) from a PCCS or Intel's PCS, and print it as JSON for `quote verify
    /// --collateral`.
    Collateral {
        /// The quote: raw bytes, hex or base64.
        quote: PathBuf,
        /// The PCCS (or Intel PCS, https://api.trustedservices.intel.com) base URL.
        #[arg(long, value_name = "URL")]
        pccs: String,
    },
}

pub(crate) async fn run(command: QuoteCommand) -> anyhow::Result<ExitCode> {
    match command {
        QuoteCommand::Verify {
            quote,
            collateral,
            at,
            json,
            allow_tcb,
            allow_debug,
            report_data,
        } => {
            let raw = read_quote(&quote)?;
            let collateral = read_collateral(&collateral)?;
            let at = at_time(at.as_deref())?;
            let policy = TcbPolicy {
                allow: tcb_statuses(&allow_tcb)?,
                allow_debug,
            };
            let expected = report_data.as_deref().map(report_data_arg).transpose()?;
            verify(&quote, &raw, &collateral, at, &policy, expected, json)
        }
        QuoteCommand::Collateral { quote, pccs } => {
            let raw = read_quote(&quote)?;
            let collateral = fetch_collateral(&raw, &pccs).await?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", serde_json::to_string_pretty(&collateral)?)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// How a hardware (SGX) quote is checked: against Intel's collateral, at a time, with the TCB
/// statuses the caller accepts.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct HardwareArgs {
    /// Intel's collateral for a hardware quote, as `cloister quote collateral` writes it; without
    /// it a hardware quote is not verified.
    #[arg(long, value_name = "FILE")]
    pub(crate) collateral: Option<PathBuf>,
    /// Check the collateral as of this time (RFC 3339); default now.
    #[arg(long, value_name = "RFC3339_TIME", requires = "collateral")]
    pub(crate) at: Option<String>,
    /// TCB statuses accepted besides UpToDate, comma-separated.
    #[arg(
        long,
        value_name = "STATUS,...",
        value_delimiter = ',',
        requires = "collateral"
    )]
    pub(crate) allow_tcb: Vec<String>,
    /// Accept an enclave built in debug mode.
    #[arg(long, requires = "collateral")]
    pub(crate) allow_debug: bool,
}

impl HardwareArgs {
    /// What a quote must prove: hardware (with this collateral) or, unless `require_hardware`, a
    /// simulation.
    pub(crate) fn trust(&self, require_hardware: bool) -> anyhow::Result<enclave::quote::Trust> {
        Ok(enclave::quote::Trust {
            allow_simulation: !require_hardware,
            hardware: hardware_check(
                self.collateral.as_deref(),
                self.at.as_deref(),
                &self.allow_tcb,
                self.allow_debug,
            )?,
        })
    }
}

/// The CLI's hardware options for `attest` and `oracle verify`: a collateral file, a time and the
/// accepted TCB statuses, as a [`enclave::dcap::HardwareCheck`].
pub(crate) fn hardware_check(
    collateral: Option<&Path>,
    at: Option<&str>,
    allow_tcb: &[String],
    allow_debug: bool,
) -> anyhow::Result<Option<enclave::dcap::HardwareCheck>> {
    let Some(path) = collateral else {
        return Ok(None);
    };
    Ok(Some(enclave::dcap::HardwareCheck {
        collateral: read_collateral(path)?,
        at_unix_secs: at_time(at)?,
        policy: TcbPolicy {
            allow: tcb_statuses(allow_tcb)?,
            allow_debug,
        },
    }))
}

fn verify(
    path: &Path,
    raw: &[u8],
    collateral: &Collateral,
    at: u64,
    policy: &TcbPolicy,
    expected: Option<[u8; 64]>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let at_text = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(at));
    let verdict = match enclave::dcap::verify_hardware(raw, collateral, at) {
        Ok(v) => v,
        Err(e) => {
            if as_json {
                let body = json!({
                    "verified": false, "accepted": false, "at": at_text.to_string(),
                    "error": e.code(), "reason": e.to_string(),
                });
                writeln!(std::io::stdout().lock(), "{body}")?;
            }
            writeln!(
                std::io::stderr().lock(),
                "{}: does not verify: {e}",
                path.display()
            )?;
            return Ok(ExitCode::from(NOT_VERIFIED));
        }
    };
    let refusal = match expected {
        Some(rd) if rd != verdict.body.report_data => {
            Some((QuoteError::ReportDataMismatch, OTHER_REPORT_DATA))
        }
        _ => verdict.accepted_by(policy).err().map(|e| (e, NOT_ACCEPTED)),
    };
    let mut out = std::io::stdout().lock();
    if as_json {
        let mut body = verdict_json(&verdict);
        body["verified"] = json!(true);
        body["accepted"] = json!(refusal.is_none());
        body["at"] = json!(at_text.to_string());
        if let Some((e, _)) = &refusal {
            body["error"] = json!(e.code());
            body["reason"] = json!(e.to_string());
        }
        writeln!(out, "{body}")?;
    } else {
        print_verdict(&mut out, &verdict, &at_text.to_string())?;
        match &refusal {
            None => writeln!(out, "verdict:          ACCEPTED")?,
            Some((e, _)) => writeln!(out, "verdict:          REFUSED: {e}")?,
        }
    }
    Ok(match refusal {
        None => ExitCode::SUCCESS,
        Some((e, code)) => {
            if !as_json {
                writeln!(std::io::stderr().lock(), "{}: refused: {e}", path.display())?;
            }
            ExitCode::from(code)
        }
    })
}

fn verdict_json(v: &HardwareVerdict) -> serde_json::Value {
    json!({
        "chain": "verified to Intel's SGX root CA",
        "tcb_status": v.tcb_status.as_str(),
        "advisory_ids": v.advisory_ids,
        "fmspc": v.fmspc,
        "mr_enclave": hex::encode(v.body.mr_enclave),
        "mr_signer": hex::encode(v.body.mr_signer),
        "isv_prod_id": v.body.isv_prod_id,
        "isv_svn": v.body.isv_svn,
        "debug": v.body.debug,
        "report_data": hex::encode(v.body.report_data),
    })
}

fn print_verdict(
    out: &mut impl std::io::Write,
    v: &HardwareVerdict,
    at: &str,
) -> std::io::Result<()> {
    writeln!(
        out,
        "signature chain:  verified to Intel's SGX root CA, as of {at} (FMSPC {})",
        v.fmspc
    )?;
    writeln!(out, "TCB status:       {}", v.tcb_status)?;
    let advisories = if v.advisory_ids.is_empty() {
        "none".to_owned()
    } else {
        v.advisory_ids.join(", ")
    };
    writeln!(out, "advisories:       {advisories}")?;
    writeln!(out, "MRENCLAVE:        {}", hex::encode(v.body.mr_enclave))?;
    writeln!(out, "MRSIGNER:         {}", hex::encode(v.body.mr_signer))?;
    writeln!(out, "product id:       {}", v.body.isv_prod_id)?;
    writeln!(out, "SVN:              {}", v.body.isv_svn)?;
    writeln!(out, "debug:            {}", v.body.debug)?;
    writeln!(out, "report data:      {}", hex::encode(v.body.report_data))
}

/// A quote file: raw bytes, or the same as hex or base64 text.
pub(crate) fn read_quote(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    // A DCAP quote starts with its version, 3 or 4, as a little-endian u16: binary.
    if bytes.len() > 2 && bytes[1] == 0 && bytes[0] < 16 {
        return Ok(bytes);
    }
    let text = std::str::from_utf8(&bytes)
        .map(str::trim)
        .map_err(|_| anyhow!("{} is neither a DCAP quote nor text", path.display()))?;
    hex::decode(text)
        .ok()
        .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
        .ok_or_else(|| {
            anyhow!(
                "{} is not a DCAP quote: neither raw bytes, hex nor base64",
                path.display()
            )
        })
}

fn read_collateral(path: &Path) -> anyhow::Result<Collateral> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    enclave::dcap::parse_collateral(&bytes).with_context(|| format!("{}", path.display()))
}

fn at_time(at: Option<&str>) -> anyhow::Result<u64> {
    let time = match at {
        None => SystemTime::now(),
        Some(text) => humantime::parse_rfc3339_weak(text).with_context(|| {
            format!("--at {text:?} is not an RFC 3339 time (2025-07-01T00:00:00Z)")
        })?,
    };
    Ok(time
        .duration_since(UNIX_EPOCH)
        .context("--at is before 1970")?
        .as_secs())
}

fn tcb_statuses(names: &[String]) -> anyhow::Result<Vec<TcbStatus>> {
    let statuses = names
        .iter()
        .filter(|n| !n.trim().is_empty())
        .map(|n| n.parse::<TcbStatus>())
        .collect::<Result<Vec<_>, _>>()
        .context("--allow-tcb")?;
    if statuses.contains(&TcbStatus::Revoked) {
        bail!("--allow-tcb: a Revoked platform is never accepted");
    }
    Ok(statuses)
}

fn report_data_arg(text: &str) -> anyhow::Result<[u8; 64]> {
    let bytes = hex::decode(text.trim()).context("--report-data must be hex")?;
    if bytes.len() > 64 {
        bail!("--report-data is at most 64 bytes, found {}", bytes.len());
    }
    let mut rd = [0u8; 64];
    rd[..bytes.len()].copy_from_slice(&bytes);
    Ok(rd)
}

/// Intel's root CA CRL, where Intel's PCS (which has no `rootcacrl` endpoint) publishes it: the CRL
/// distribution point of Intel's SGX root CA certificate.
const INTEL_ROOT_CA_CRL: &str = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der";

/// The PCCS API (v4) calls that make a quote's collateral: the quote's PCK chain says which
/// platform family (FMSPC) and which PCK CA.
/// A PCCS (`[cluster] pccs`) as the cluster's source of collateral: each fetch asks it afresh.
#[derive(Debug)]
pub(crate) struct Pccs(pub(crate) String);

impl cluster::CollateralSource for Pccs {
    fn fetch<'a>(
        &'a self,
        quote: &'a [u8],
    ) -> std::pin::Pin<
        Box<dyn Future<Output = Result<Collateral, cluster::CollateralError>> + Send + 'a>,
    > {
        Box::pin(async move {
            fetch_collateral(quote, &self.0)
                .await
                .map_err(|e| cluster::CollateralError(format!("{e:#}")))
        })
    }
}

async fn fetch_collateral(raw: &[u8], pccs: &str) -> anyhow::Result<Collateral> {
    let pck = enclave::dcap::pck_identity(raw).context("the quote")?;
    let base = pccs
        .trim_end_matches('/')
        .trim_end_matches("/sgx/certification/v4")
        .to_owned();
    let api = format!("{base}/sgx/certification/v4");
    let client = http_client()?;

    let crl = get(&client, &format!("{api}/pckcrl?ca={}&encoding=der", pck.ca)).await?;
    let pck_crl_issuer_chain = header(&crl, &["SGX-PCK-CRL-Issuer-Chain"])?;
    let pck_crl = crl.bytes().await.context("the PCK CRL")?.to_vec();

    let tcb = get(&client, &format!("{api}/tcb?fmspc={}", pck.fmspc)).await?;
    let tcb_info_issuer_chain = header(
        &tcb,
        &["SGX-TCB-Info-Issuer-Chain", "TCB-Info-Issuer-Chain"],
    )?;
    let (tcb_info, tcb_info_signature) = signed_json(&tcb.text().await?, "tcbInfo")?;

    let qe = get(&client, &format!("{api}/qe/identity")).await?;
    let qe_identity_issuer_chain = header(&qe, &["SGX-Enclave-Identity-Issuer-Chain"])?;
    let (qe_identity, qe_identity_signature) = signed_json(&qe.text().await?, "enclaveIdentity")?;

    // A PCCS serves the root CA CRL as hex; Intel's PCS does not serve it at all.
    let root_ca_crl = match get(&client, &format!("{api}/rootcacrl")).await {
        Ok(answer) => {
            let body = answer.bytes().await.context("the root CA CRL")?.to_vec();
            match std::str::from_utf8(&body)
                .ok()
                .and_then(|t| hex::decode(t.trim()).ok())
            {
                Some(der) => der,
                None => body,
            }
        }
        Err(_) => get(&client, INTEL_ROOT_CA_CRL)
            .await?
            .bytes()
            .await
            .context("Intel's root CA CRL")?
            .to_vec(),
    };
    Ok(Collateral {
        pck_crl_issuer_chain,
        root_ca_crl,
        pck_crl,
        tcb_info_issuer_chain,
        tcb_info,
        tcb_info_signature,
        qe_identity_issuer_chain,
        qe_identity,
        qe_identity_signature,
        pck_certificate_chain: Some(pck.chain_pem),
    })
}

fn http_client() -> anyhow::Result<reqwest::Client> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
        .context("the system's certificate roots cannot be used")?;
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS cannot start")?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_no_client_auth();
    reqwest::Client::builder()
        .user_agent(concat!("cloister/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(60))
        .tls_backend_preconfigured(tls)
        .build()
        .context("the HTTP client cannot start")
}

async fn get(client: &reqwest::Client, url: &str) -> anyhow::Result<reqwest::Response> {
    let answer = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !answer.status().is_success() {
        bail!("GET {url}: {}", answer.status());
    }
    Ok(answer)
}

/// A URL-encoded PEM chain from one of `names` (the PCCS and the PCS spell some differently).
fn header(answer: &reqwest::Response, names: &[&str]) -> anyhow::Result<String> {
    let value = names
        .iter()
        .find_map(|n| answer.headers().get(*n))
        .ok_or_else(|| anyhow!("{} answered without the {} header", answer.url(), names[0]))?;
    let text = value
        .to_str()
        .with_context(|| format!("the {} header", names[0]))?;
    Ok(percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .with_context(|| format!("the {} header", names[0]))?
        .into_owned())
}

/// `{"<field>": {...}, "signature": "hex"}`: the signed JSON exactly as served (the signature is
/// over those bytes) and the signature.
fn signed_json(body: &str, field: &str) -> anyhow::Result<(String, Vec<u8>)> {
    #[derive(serde::Deserialize)]
    struct Signed<'a> {
        #[serde(borrow)]
        signature: &'a str,
    }
    let value: std::collections::HashMap<&str, &serde_json::value::RawValue> =
        serde_json::from_str(body).with_context(|| format!("the {field} answer is not JSON"))?;
    let signed = value
        .get(field)
        .ok_or_else(|| anyhow!("the answer has no {field}"))?;
    let Signed { signature } = serde_json::from_str(body)?;
    let signature = hex::decode(signature).with_context(|| format!("the {field} signature"))?;
    Ok((signed.get().to_owned(), signature))
}
