//! The crypto service's signing answers (`/v1/crypto/keys/{id}/sign` and `/verify`).

use serde::{Deserialize, Serialize};

/// How an ECDSA signature is encoded: `raw` (64-byte r||s, the default) or `der`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Encoding {
    /// 64 bytes, r || s.
    Raw,
    /// ASN.1 DER.
    Der,
}

/// The body of `POST /v1/crypto/keys/{id}/sign`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignBody {
    /// The message, base64.
    pub message: String,
    /// Absent: `raw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
}

/// A signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignAnswer {
    /// Base64.
    pub signature: String,
    /// The key version that signed.
    pub version: u32,
    /// How it is encoded.
    pub encoding: Encoding,
}

/// The body of `POST /v1/crypto/keys/{id}/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    /// The message, base64.
    pub message: String,
    /// The signature, base64.
    pub signature: String,
}

/// Whether a signature verifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verified {
    /// True if it does.
    pub valid: bool,
}
