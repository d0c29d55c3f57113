//! The crypto service's requests and answers (`/v1/crypto/keys...`): keys as their owner sees them
//! (the public half only), signatures, ciphertexts. Binary values are base64 in JSON.

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
    #[schema(format = Byte)]
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
    #[schema(format = Byte)]
    pub message: String,
    /// The signature, base64.
    #[schema(format = Byte)]
    pub signature: String,
}

/// Whether a signature verifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verified {
    /// True if it does.
    pub valid: bool,
}

/// The kinds of key the service holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// ECDSA over secp256k1 with SHA-256; signatures 64-byte `r || s` (low S) or DER.
    Secp256k1,
    /// ECDSA over P-256 with SHA-256; signatures 64-byte `r || s` or DER.
    P256,
    /// Ed25519 (RFC 8032); 64-byte signatures.
    Ed25519,
    /// AES-256-GCM; ciphertexts carry the key version and a random nonce.
    Aes256gcm,
}

impl Algorithm {
    /// The name on the wire (`secp256k1`, `p256`, `ed25519`, `aes256gcm`).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Secp256k1 => "secp256k1",
            Algorithm::P256 => "p256",
            Algorithm::Ed25519 => "ed25519",
            Algorithm::Aes256gcm => "aes256gcm",
        }
    }

    /// Whether keys of this kind sign (every kind but AES).
    pub fn signs(self) -> bool {
        !matches!(self, Algorithm::Aes256gcm)
    }
}

/// The public description of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub id: String,
    pub owner: String,
    pub algorithm: Algorithm,
    /// The version that signs and encrypts.
    pub version: u32,
    pub created_ms: u64,
    pub versions: Vec<VersionInfo>,
}

/// One version of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionInfo {
    pub version: u32,
    pub created_ms: u64,
    /// Hex: SEC1 uncompressed point (ECDSA), the 32-byte key (Ed25519), empty (AES).
    pub public_key: String,
}

/// `GET /v1/crypto/keys`: the caller's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

/// The body of `POST /v1/crypto/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateBody {
    pub algorithm: Algorithm,
}

/// The body of `POST /v1/crypto/keys/{id}/encrypt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EncryptBody {
    /// Base64.
    #[schema(format = Byte)]
    pub plaintext: String,
    /// Associated data, base64: the same must be given to decrypt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = Byte)]
    pub aad: Option<String>,
}

/// A ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Ciphertext {
    /// Base64.
    pub ciphertext: String,
}

/// The body of `POST /v1/crypto/keys/{id}/decrypt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecryptBody {
    /// Base64, as `encrypt` answered it (at least 32 bytes: the key version, the nonce and the tag).
    #[schema(format = Byte)]
    pub ciphertext: String,
    /// Associated data, base64, as given to encrypt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = Byte)]
    pub aad: Option<String>,
}

/// A plaintext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Plaintext {
    /// Base64.
    pub plaintext: String,
}

/// The body of `POST /v1/crypto/keys/{id}/derive`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeriveBody {
    /// HKDF's info, base64.
    #[schema(format = Byte)]
    pub info: String,
    /// HKDF's salt, base64; absent is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = Byte)]
    pub salt: Option<String>,
}
