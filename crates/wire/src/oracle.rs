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
    /// `payload`, parsed (convenience only; verify `payload`).
    #[schema(value_type = Object)]
    pub report: Value,
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
