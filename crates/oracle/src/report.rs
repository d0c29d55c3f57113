//! Signed reports and their verification.
//!
//! A report is `{"payload": TEXT, "signature": BASE64, "report": OBJECT}`. `payload` is the report
//! as canonical JSON (object keys sorted, no insignificant whitespace), and the signature is ECDSA
//! P-256 over SHA-256 of exactly those UTF-8 bytes, encoded as 64-byte `r || s`. `report` is the
//! same payload parsed, for convenience: a verifier reads `payload`, never `report`. The signer's
//! public key is inside the payload (`signer.public_key`, base64 SEC1 uncompressed), so it is
//! signed too; `GET /v1/oracle/key` returns that key with a quote whose report data is
//! SHA-256("cloister oracle key v1\0" || key) followed by 32 zero bytes.

use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `format` of the reports this version writes.
pub const FORMAT: &str = "cloister-oracle-report/1";
/// The signature algorithm, as named in `signer.algorithm`.
pub const ALGORITHM: &str = "ecdsa-p256-sha256";

pub use wire::oracle::{KeyAttestation, SignedReport};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What `payload` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportPayload {
    /// `cloister-oracle-report/1`.
    pub format: String,
    /// SHA-256 (hex) of the request's canonical JSON.
    pub request_hash: String,
    /// The request as received.
    #[schema(value_type = crate::request::OracleRequest)]
    pub request: Value,
    /// One entry per source, in the request's order.
    pub sources: Vec<SourceReport>,
    /// The aggregation that was applied.
    #[schema(value_type = crate::request::Aggregation)]
    pub aggregation: Value,
    /// The aggregated value; null when there is none (`error` says why).
    #[schema(value_type = Object)]
    pub result: Value,
    /// Sources that agree with `result`.
    pub agreeing: usize,
    pub error: Option<String>,
    /// When the report was made, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The enclave that made it: platform, measurement, signer, product id, security version,
    /// debug flag.
    #[schema(value_type = enclave::Identity)]
    pub enclave: Value,
    pub signer: Signer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Signer {
    /// `ecdsa-p256-sha256`.
    pub algorithm: String,
    /// Base64 of the SEC1 uncompressed public key (65 bytes).
    pub public_key: String,
}

/// One source in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SourceReport {
    pub url: String,
    pub host: String,
    pub method: String,
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
    /// SHA-256 (hex) of the body, when one came.
    pub body_sha256: Option<String>,
    /// When it was fetched, milliseconds since the Unix epoch.
    pub fetched_at_ms: Option<u64>,
    /// Served from the oracle's cache (fetched at `fetched_at_ms`).
    pub cached: bool,
    /// The extracted value; null when there is none.
    #[schema(value_type = Object)]
    pub value: Value,
    /// Why there is no value.
    pub error: Option<String>,
}

/// The canonical JSON of `payload`: serde_json's maps are sorted by key, and `to_string` writes
/// no whitespace.
pub(crate) fn canonical(payload: &ReportPayload) -> String {
    let value = serde_json::to_value(payload).expect("a payload serializes");
    serde_json::to_string(&value).expect("a value serializes")
}

/// The report data a quote carries for the oracle's signing key.
pub fn key_report_data(public_key_sec1: &[u8]) -> [u8; 64] {
    let mut h = Sha256::new();
    h.update(b"cloister oracle key v1\0");
    h.update(public_key_sec1);
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&h.finalize());
    out
}

/// What a verification established.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub payload: ReportPayload,
    /// Whether the key's quote was checked too, and whether it was a simulation quote.
    pub quote: Option<QuoteCheck>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuoteCheck {
    pub simulation: bool,
}

/// Why a report does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("not a report: {0}")]
    Malformed(String),
    #[error("unknown report format {0:?} (this version reads {FORMAT})")]
    Format(String),
    #[error("the signature does not verify: the payload was changed, or not signed by this key")]
    BadSignature,
    #[error("the key attestation is for another key than the report's signer")]
    OtherKey,
    #[error("the quote does not check out: {0}")]
    Quote(String),
    #[error("the quote's enclave ({quote}) is not the report's ({report})")]
    OtherEnclave { quote: String, report: String },
}

fn malformed(what: impl std::fmt::Display) -> VerifyError {
    VerifyError::Malformed(what.to_string())
}

/// Verifies `report` (a [`SignedReport`] as JSON). With `attestation` (a [`KeyAttestation`] as
/// JSON), also checks that its quote binds the report's signing key, that the quote is signed, and
/// that it names the enclave the report names. Simulation quotes are accepted only with
/// `allow_simulation`.
pub fn verify(
    report: &str,
    attestation: Option<&str>,
    allow_simulation: bool,
) -> Result<Verified, VerifyError> {
    let signed: SignedReport = serde_json::from_str(report).map_err(malformed)?;
    let payload: ReportPayload = serde_json::from_str(&signed.payload).map_err(malformed)?;
    if payload.format != FORMAT {
        return Err(VerifyError::Format(payload.format));
    }
    if payload.signer.algorithm != ALGORITHM {
        return Err(malformed(format!(
            "signer.algorithm {:?}, expected {ALGORITHM}",
            payload.signer.algorithm
        )));
    }
    let key_bytes = B64
        .decode(&payload.signer.public_key)
        .map_err(|e| malformed(format!("signer.public_key: {e}")))?;
    let key = VerifyingKey::from_sec1_bytes(&key_bytes)
        .map_err(|_| malformed("signer.public_key is not a P-256 point"))?;
    let signature = B64
        .decode(&signed.signature)
        .map_err(|e| malformed(format!("signature: {e}")))?;
    let signature = Signature::from_slice(&signature)
        .map_err(|_| malformed("signature is not 64 bytes of r || s"))?;
    key.verify(signed.payload.as_bytes(), &signature)
        .map_err(|_| VerifyError::BadSignature)?;

    let quote = match attestation {
        None => None,
        Some(text) => Some(check_attestation(
            text,
            &key_bytes,
            &payload,
            allow_simulation,
        )?),
    };
    Ok(Verified { payload, quote })
}

fn check_attestation(
    text: &str,
    key_bytes: &[u8],
    payload: &ReportPayload,
    allow_simulation: bool,
) -> Result<QuoteCheck, VerifyError> {
    let attestation: KeyAttestation = serde_json::from_str(text).map_err(malformed)?;
    let attested_key = B64
        .decode(&attestation.public_key)
        .map_err(|e| malformed(format!("attestation public_key: {e}")))?;
    if attested_key != key_bytes {
        return Err(VerifyError::OtherKey);
    }
    let quote_bytes = B64
        .decode(&attestation.quote)
        .map_err(|e| malformed(format!("quote: {e}")))?;
    let quote = enclave::quote::Quote::parse(&quote_bytes)
        .map_err(|e| VerifyError::Quote(e.to_string()))?;
    quote
        .verify(allow_simulation, Some(&key_report_data(key_bytes)), None)
        .map_err(|e| VerifyError::Quote(e.to_string()))?;
    let named = |field: &str| {
        payload.enclave[field]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let in_quote = (
        hex::encode(quote.body.mr_enclave),
        hex::encode(quote.body.mr_signer),
    );
    let in_report = (named("measurement"), named("signer"));
    if in_quote != in_report {
        return Err(VerifyError::OtherEnclave {
            quote: format!("measurement {}, signer {}", in_quote.0, in_quote.1),
            report: format!("measurement {}, signer {}", in_report.0, in_report.1),
        });
    }
    Ok(QuoteCheck {
        simulation: quote.is_simulation(),
    })
}
