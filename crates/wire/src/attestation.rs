//! `GET /v1/attestation`: the enclave's identity and a quote binding the caller's nonce.

use serde::{Deserialize, Serialize};

/// The enclave's identity and a quote binding the caller's nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attestation {
    /// The platform that made the quote.
    pub platform: enclave::PlatformKind,
    /// True on the simulation platform: nothing here is backed by hardware.
    pub simulation: bool,
    /// What the enclave is.
    pub identity: enclave::Identity,
    /// Hex.
    pub nonce: String,
    /// Hex, 64 bytes.
    pub report_data: String,
    /// How `report_data` is made from the nonce.
    pub report_data_binding: String,
    /// Base64.
    pub quote: String,
}
