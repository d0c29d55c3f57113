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

use crate::canonical::canonical_json;

/// The `format` of the reports this version writes: `/2` marks how each source's value was
/// extracted (`extraction`, `script_sha256`).
pub const FORMAT: &str = "cloister-oracle-report/2";
/// The format before it: the same payload without `extraction` and `script_sha256`, still
/// verified (its values' provenance is only in its `request`).
pub const FORMAT_1: &str = "cloister-oracle-report/1";

/// How a source's value is read out of its body, as a report records it (`extraction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExtractedBy {
    /// An RFC 9535 JSONPath (the request's `extract.json_path`).
    JsonPath,
    /// What a script returned (the request's `extract.script`; its hash is `script_sha256`).
    Script,
}
/// The signature algorithm, as named in `signer.algorithm`.
pub const ALGORITHM: &str = "ecdsa-p256-sha256";

pub use wire::oracle::{KeyAttestation, SignedReport};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What `payload` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReportPayload {
    /// `cloister-oracle-report/2`.
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
    /// How the value is read out of the body: `json_path` or `script` (absent from a `/1`
    /// report).
    #[serde(default)]
    pub extraction: Option<ExtractedBy>,
    /// For a script: SHA-256 (hex) of its exact text (UTF-8), so that a verifier holding the body
    /// (whose hash is `body_sha256`) can run it again on [`script_args`] and get `value`.
    #[serde(default)]
    pub script_sha256: Option<String>,
    /// The extracted value; null when there is none.
    #[schema(value_type = Object)]
    pub value: Value,
    /// Why there is no value.
    pub error: Option<String>,
}

/// The arguments an extraction script runs on, as JSON text: `{"body":TEXT,"status":N}`, the
/// body decoded as UTF-8 (an invalid sequence becomes U+FFFD) and written by serde_json (keys
/// sorted, no whitespace). The run is deterministic, and its `Math.random` is seeded from the
/// code and exactly this text, so a verifier must pass the same text to rerun it.
pub fn script_args(status: u16, body: &[u8]) -> String {
    let body = serde_json::to_string(&String::from_utf8_lossy(body)).expect("a string serializes");
    format!(r#"{{"body":{body},"status":{status}}}"#)
}

/// The canonical JSON of `payload`: see [`canonical_json`].
pub(crate) fn canonical(payload: &ReportPayload) -> String {
    let value = serde_json::to_value(payload).expect("a payload serializes");
    canonical_json(&value)
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
    /// For a hardware quote, the platform's TCB status (one the caller's policy accepted).
    pub tcb_status: Option<enclave::dcap::TcbStatus>,
}

/// Why a report does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("not a report: {0}")]
    Malformed(String),
    #[error("unknown report format {0:?} (this version reads {FORMAT} and {FORMAT_1})")]
    Format(String),
    #[error("the signature does not verify: the payload was changed, or not signed by this key")]
    BadSignature,
    #[error("the key attestation is for another key than the report's signer")]
    OtherKey,
    #[error("the quote does not check out: {0}")]
    Quote(enclave::quote::QuoteError),
    #[error("the quote's enclave ({quote}) is not the report's ({report})")]
    OtherEnclave { quote: String, report: String },
}

fn malformed(what: impl std::fmt::Display) -> VerifyError {
    VerifyError::Malformed(what.to_string())
}

/// Verifies `report` (a [`SignedReport`] as JSON). With `attestation` (a [`KeyAttestation`] as
/// JSON), also checks that its quote binds the report's signing key, that the quote is signed, and
/// that it names the enclave the report names. Simulation quotes are accepted only with
/// `trust.allow_simulation`; hardware quotes are verified against `trust.hardware`, Intel's
/// collateral, with the caller's TCB policy (see [`enclave::quote::check`]).
pub fn verify(
    report: &str,
    attestation: Option<&str>,
    trust: &enclave::quote::Trust,
) -> Result<Verified, VerifyError> {
    let signed: SignedReport = serde_json::from_str(report).map_err(malformed)?;
    let payload: ReportPayload = serde_json::from_str(&signed.payload).map_err(malformed)?;
    if payload.format != FORMAT && payload.format != FORMAT_1 {
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
    check_scripts(&payload)?;

    let quote = match attestation {
        None => None,
        Some(text) => Some(check_attestation(text, &key_bytes, &payload, trust)?),
    };
    Ok(Verified { payload, quote })
}

/// Each `script_sha256` is the hash of its source's script in the payload's own request: a signed
/// payload says which script made a value, and that the script it carries is the one.
fn check_scripts(payload: &ReportPayload) -> Result<(), VerifyError> {
    for (i, source) in payload.sources.iter().enumerate() {
        let script = payload.request["sources"][i]["extract"]["script"].as_str();
        let hash = script.map(|code| hex::encode(Sha256::digest(code.as_bytes())));
        let consistent = match source.extraction {
            Some(ExtractedBy::Script) => hash.is_some() && source.script_sha256 == hash,
            Some(ExtractedBy::JsonPath) => source.script_sha256.is_none() && script.is_none(),
            // A `/1` report marks nothing.
            None => payload.format == FORMAT_1 && source.script_sha256.is_none(),
        };
        if !consistent {
            return Err(malformed(format!(
                "sources[{i}]: extraction {:?} and script_sha256 {:?} do not match the request's extract",
                source.extraction, source.script_sha256
            )));
        }
    }
    Ok(())
}

fn check_attestation(
    text: &str,
    key_bytes: &[u8],
    payload: &ReportPayload,
    trust: &enclave::quote::Trust,
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
    let (quote, verified) =
        enclave::quote::check(&quote_bytes, trust, Some(&key_report_data(key_bytes)))
            .map_err(VerifyError::Quote)?;
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
        tcb_status: match verified {
            enclave::quote::Verified::Hardware(v) => Some(v.tcb_status),
            enclave::quote::Verified::Simulation => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn payload(format: &str, sources: Vec<SourceReport>, request: Value) -> ReportPayload {
        ReportPayload {
            format: format.into(),
            request_hash: String::new(),
            request,
            sources,
            aggregation: Value::Null,
            result: Value::Null,
            agreeing: 0,
            error: None,
            timestamp_ms: 0,
            enclave: Value::Null,
            signer: Signer {
                algorithm: ALGORITHM.into(),
                public_key: String::new(),
            },
        }
    }

    fn source(extraction: Option<ExtractedBy>, script_sha256: Option<String>) -> SourceReport {
        SourceReport {
            url: "https://a.example/".into(),
            host: "a.example".into(),
            method: "GET".into(),
            status: Some(200),
            body_sha256: None,
            fetched_at_ms: None,
            cached: false,
            extraction,
            script_sha256,
            value: Value::Null,
            error: None,
        }
    }

    /// A script's mark must be the hash of the script the same payload carries; a JSONPath's
    /// source has none; a `/1` report has no marks at all.
    #[test]
    fn script_marks_are_checked_against_the_request() {
        let code = "return 1";
        let hash = hex::encode(Sha256::digest(code.as_bytes()));
        let request = json!({"sources": [
            {"extract": {"json_path": "$.a"}},
            {"extract": {"script": code}},
        ]});
        let good = vec![
            source(Some(ExtractedBy::JsonPath), None),
            source(Some(ExtractedBy::Script), Some(hash.clone())),
        ];
        assert_eq!(
            check_scripts(&payload(FORMAT, good, request.clone())),
            Ok(())
        );
        for bad in [
            vec![
                source(Some(ExtractedBy::JsonPath), None),
                source(Some(ExtractedBy::Script), Some("00".repeat(32))),
            ],
            vec![
                source(Some(ExtractedBy::JsonPath), None),
                source(Some(ExtractedBy::JsonPath), None),
            ],
            vec![
                source(Some(ExtractedBy::Script), Some(hash.clone())),
                source(Some(ExtractedBy::Script), Some(hash.clone())),
            ],
            vec![source(None, None), source(None, None)],
        ] {
            assert!(
                matches!(
                    check_scripts(&payload(FORMAT, bad.clone(), request.clone())),
                    Err(VerifyError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        let old = vec![source(None, None), source(None, None)];
        assert_eq!(check_scripts(&payload(FORMAT_1, old, request)), Ok(()));
    }

    /// The text a script's run is seeded with: fixed, so a verifier can write it again.
    #[test]
    fn script_args_are_one_fixed_text() {
        assert_eq!(
            script_args(200, b"{\"p\": \"\xe2\x82\xac\"}\n"),
            "{\"body\":\"{\\\"p\\\": \\\"\u{20ac}\\\"}\\n\",\"status\":200}"
        );
        // Not UTF-8: replaced, as the script sees it.
        assert_eq!(
            script_args(404, b"\xff"),
            "{\"body\":\"\u{fffd}\",\"status\":404}"
        );
    }
}
