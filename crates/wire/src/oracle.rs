//! The oracle's answers (`/v1/oracle`): a signed report of external data, and the attested
//! signing key. Verify a report with `oracle::verify` (or `cloister oracle verify`): read
//! `payload`, never `report`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A signed report, as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignedReport {
    /// The report as canonical JSON: the signed bytes.
    pub payload: String,
    /// Base64 of the 64-byte `r || s` ECDSA P-256 signature over SHA-256(payload).
    pub signature: String,
    /// `payload`, parsed (convenience only; verify `payload`). Its schema, `ReportPayload`, is the
    /// oracle's: the API's document adds it.
    #[schema(schema_with = report_payload)]
    pub report: Value,
}

/// The schema of a report's payload, by name: the oracle crate owns `ReportPayload`.
fn report_payload() -> utoipa::openapi::Ref {
    utoipa::openapi::Ref::from_schema_name("ReportPayload")
}

/// The oracle's signing key and the quote that binds it to the enclave (`GET /v1/oracle/key`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyAttestation {
    /// `ecdsa-p256-sha256`.
    pub algorithm: String,
    /// Base64 SEC1 uncompressed (65 bytes).
    pub public_key: String,
    /// True on the simulation platform: the quote is not backed by hardware.
    pub simulation: bool,
    /// The enclave the key lives in: platform, measurement, signer, product id, security
    /// version, debug flag.
    #[schema(value_type = enclave::Identity)]
    pub enclave: Value,
    /// Hex, 64 bytes.
    pub report_data: String,
    /// How `report_data` is made from the key.
    pub report_data_binding: String,
    /// Base64, SGX DCAP v3 layout.
    pub quote: String,
}
