//! Sealed blobs: AES-256-GCM under a key of their own derived from a sealing key, with the key
//! request stored in front so the blob says which key opens it, and the whole header bound as
//! associated data.
//!
//! Layout: `CLSEAL02` | policy (1) | security version (2, LE) | key id (32) | bound identity (32) |
//! salt (32) | nonce (12) | ciphertext with tag. The blob's key is HKDF-SHA256 of the sealing key
//! with the random salt, so every blob has its own AES key, used once: a sealing key seals any
//! number of blobs (the freshness counters are resealed on every commit) without nearing the
//! 2^32 bound on one AES-GCM key with random nonces (NIST SP 800-38D §8.3). `CLSEAL01` blobs
//! (sealed directly under the sealing key, no salt) still open, and are replaced as they are
//! resealed.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use crate::{Error, KeyRequest, Platform, Policy};

const MAGIC: &[u8; 8] = b"CLSEAL02";
/// Sealed directly under the sealing key, before blobs had keys of their own.
const MAGIC_V1: &[u8; 8] = b"CLSEAL01";
/// Magic, policy, security version, key id, bound identity.
const REQUEST: usize = 8 + 1 + 2 + 32 + 32;
const HEADER: usize = REQUEST + 32 + 12;
const HEADER_V1: usize = REQUEST + 12;
const BLOB_KEY_INFO: &[u8] = b"cloister sealed blob key v2";

/// The blob's own key: HKDF-SHA256 of the sealing key with the blob's salt.
fn blob_key(sealing_key: &[u8; 32], salt: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), sealing_key)
        .expand(BLOB_KEY_INFO, key.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    key
}

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
    let salt: [u8; 32] = rand::random();
    out.extend_from_slice(&salt);
    let nonce: [u8; 12] = rand::random();
    out.extend_from_slice(&nonce);
    let mut full_aad = out.clone();
    full_aad.extend_from_slice(aad);
    let key = blob_key(key.bytes(), &salt);
    let cipher = Aes256Gcm::new_from_slice(key.as_slice()).expect("a 32-byte key");
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
    let header = header_len(blob)?;
    if blob.len() < header + 16 {
        return Err(SealError::Malformed(format!(
            "{} bytes is too short",
            blob.len()
        )));
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

/// The header's length for the blob's format.
fn header_len(blob: &[u8]) -> Result<usize, SealError> {
    match blob.get(..8) {
        Some(m) if m == MAGIC => Ok(HEADER),
        Some(m) if m == MAGIC_V1 => Ok(HEADER_V1),
        Some(_) => Err(SealError::Malformed("wrong magic".into())),
        None => Err(SealError::Malformed(format!(
            "{} bytes is too short",
            blob.len()
        ))),
    }
}

/// Opens a blob sealed by this enclave (or an older version of it, for the signer policy). The
/// plaintext is wiped when dropped.
pub fn unseal(
    platform: &dyn Platform,
    blob: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let request = request_of(blob)?;
    let header = header_len(blob)?;
    let sealed_for: [u8; 32] = blob[43..75].try_into().expect("32 bytes");
    let current = bound_identity(platform, request.policy);
    if sealed_for != current {
        return Err(SealError::WrongIdentity {
            policy: request.policy,
            sealed_for: hex::encode(sealed_for),
            current: hex::encode(current),
        });
    }
    let sealing_key = platform.sealing_key(&request)?;
    let key = if header == HEADER {
        blob_key(sealing_key.bytes(), &blob[REQUEST..REQUEST + 32])
    } else {
        Zeroizing::new(*sealing_key.bytes())
    };
    let nonce = &blob[header - 12..header];
    let mut full_aad = blob[..header].to_vec();
    full_aad.extend_from_slice(aad);
    let cipher = Aes256Gcm::new_from_slice(key.as_slice()).expect("a 32-byte key");
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: &blob[header..],
                aad: &full_aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| SealError::Integrity)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `seal` wrote before blobs had keys of their own.
    fn seal_v1(platform: &dyn Platform, request: &KeyRequest, plaintext: &[u8]) -> Vec<u8> {
        let key = platform.sealing_key(request).expect("key");
        let mut out = MAGIC_V1.to_vec();
        out.push(1);
        out.extend_from_slice(&request.security_version.to_le_bytes());
        out.extend_from_slice(&request.key_id);
        out.extend_from_slice(&bound_identity(platform, request.policy));
        let nonce: [u8; 12] = rand::random();
        out.extend_from_slice(&nonce);
        let cipher = Aes256Gcm::new_from_slice(key.bytes()).expect("key");
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &out,
                },
            )
            .expect("encrypt");
        out.extend_from_slice(&ct);
        out
    }

    /// Each blob is under its own key: the sealing key itself never encrypts, so two blobs
    /// sealed under one request do not open with each other's key, and an old blob still opens.
    #[test]
    fn every_blob_has_its_own_key_and_old_blobs_still_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = crate::Simulation::open(dir.path(), b"bin", b"", 1).expect("sim");
        let request = KeyRequest {
            policy: Policy::Signer,
            security_version: 1,
            key_id: [7; 32],
        };
        let a = seal(&sim, &request, b"same", b"").expect("seal");
        let b = seal(&sim, &request, b"same", b"").expect("seal");
        assert_eq!(&a[..8], MAGIC);
        assert_ne!(a[REQUEST..REQUEST + 32], b[REQUEST..REQUEST + 32], "salts");
        // The sealing key directly does not open a new blob: it is not the blob's key.
        let direct =
            Aes256Gcm::new_from_slice(sim.sealing_key(&request).expect("k").bytes()).expect("key");
        let mut aad = a[..HEADER].to_vec();
        aad.extend_from_slice(b"");
        assert!(
            direct
                .decrypt(
                    Nonce::from_slice(&a[HEADER - 12..HEADER]),
                    Payload {
                        msg: &a[HEADER..],
                        aad: &aad,
                    },
                )
                .is_err()
        );
        // b's salt in a's header: the key derived does not open a.
        let mut swapped = a.clone();
        swapped[REQUEST..REQUEST + 32].copy_from_slice(&b[REQUEST..REQUEST + 32]);
        assert!(matches!(
            unseal(&sim, &swapped, b""),
            Err(SealError::Integrity)
        ));
        let old = seal_v1(&sim, &request, b"old");
        assert_eq!(request_of(&old).expect("request"), request);
        assert_eq!(*unseal(&sim, &old, b"").expect("unseal"), b"old");
        // The plaintext is wiped when dropped.
        fn wiped<T: zeroize::ZeroizeOnDrop>(_: &T) {}
        wiped(&unseal(&sim, &a, b"").expect("unseal"));
    }
}
