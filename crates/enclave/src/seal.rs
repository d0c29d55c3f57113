//! Sealed blobs: AES-256-GCM under a sealing key, with the key request stored in front so the blob
//! says which key opens it, and the whole header bound as associated data.
//!
//! Layout: `CLSEAL01` | policy (1) | security version (2, LE) | key id (32) | bound identity (32) |
//! nonce (12) | ciphertext with tag.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

use crate::{Error, KeyRequest, Platform, Policy};

const MAGIC: &[u8; 8] = b"CLSEAL01";
const HEADER: usize = 8 + 1 + 2 + 32 + 32 + 12;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("not a sealed blob: {0}")]
    Malformed(String),
    #[error(
        "sealed to a different enclave: the blob is bound to {policy} {sealed_for}, this enclave's {policy} is {current}"
    )]
    WrongIdentity {
        policy: Policy,
        sealed_for: String,
        current: String,
    },
    #[error(
        "the sealed blob fails its integrity check (modified, truncated, or used with other associated data)"
    )]
    Integrity,
    #[error(transparent)]
    Platform(#[from] Error),
}

fn bound_identity(platform: &dyn Platform, policy: Policy) -> [u8; 32] {
    match policy {
        Policy::Measurement => platform.identity().measurement,
        Policy::Signer => platform.identity().signer,
    }
}

/// Seals `plaintext` under the key for `request`, binding `aad`.
pub fn seal(
    platform: &dyn Platform,
    request: &KeyRequest,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, SealError> {
    let key = platform.sealing_key(request)?;
    let mut out = Vec::with_capacity(HEADER + plaintext.len() + 16);
    out.extend_from_slice(MAGIC);
    out.push(match request.policy {
        Policy::Measurement => 0,
        Policy::Signer => 1,
    });
    out.extend_from_slice(&request.security_version.to_le_bytes());
    out.extend_from_slice(&request.key_id);
    out.extend_from_slice(&bound_identity(platform, request.policy));
    let nonce: [u8; 12] = rand::random();
    out.extend_from_slice(&nonce);
    let mut full_aad = out.clone();
    full_aad.extend_from_slice(aad);
    let cipher = Aes256Gcm::new_from_slice(key.bytes()).expect("a 32-byte key");
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &full_aad,
            },
        )
        .map_err(|_| SealError::Integrity)?;
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// The key request stored in a sealed blob.
pub fn request_of(blob: &[u8]) -> Result<KeyRequest, SealError> {
    if blob.len() < HEADER + 16 {
        return Err(SealError::Malformed(format!(
            "{} bytes is too short",
            blob.len()
        )));
    }
    if &blob[..8] != MAGIC {
        return Err(SealError::Malformed("wrong magic".into()));
    }
    let policy = match blob[8] {
        0 => Policy::Measurement,
        1 => Policy::Signer,
        other => return Err(SealError::Malformed(format!("unknown policy {other}"))),
    };
    Ok(KeyRequest {
        policy,
        security_version: u16::from_le_bytes([blob[9], blob[10]]),
        key_id: blob[11..43].try_into().expect("32 bytes"),
    })
}

/// Opens a blob sealed by this enclave (or an older version of it, for the signer policy).
pub fn unseal(platform: &dyn Platform, blob: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
    let request = request_of(blob)?;
    let sealed_for: [u8; 32] = blob[43..75].try_into().expect("32 bytes");
    let current = bound_identity(platform, request.policy);
    if sealed_for != current {
        return Err(SealError::WrongIdentity {
            policy: request.policy,
            sealed_for: hex::encode(sealed_for),
            current: hex::encode(current),
        });
    }
    let key = platform.sealing_key(&request)?;
    let nonce = &blob[75..HEADER];
    let mut full_aad = blob[..HEADER].to_vec();
    full_aad.extend_from_slice(aad);
    let cipher = Aes256Gcm::new_from_slice(key.bytes()).expect("a 32-byte key");
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: &blob[HEADER..],
                aad: &full_aad,
            },
        )
        .map_err(|_| SealError::Integrity)
}
