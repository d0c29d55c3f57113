//! Key material and the operations on it. Private material never leaves this module except sealed
//! into the keystore, and is wiped when dropped.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use crate::{Error, KeyInfo, VersionInfo};
pub use wire::crypto::Algorithm;

/// Private key material: 32 bytes for every algorithm here, and the parsed key, made once on first
/// use (parsing an ECDSA or Ed25519 key costs a scalar multiplication). Both are wiped when dropped.
#[derive(Clone)]
pub(crate) struct Secret {
    pub(crate) bytes: Zeroizing<[u8; 32]>,
    parsed: std::sync::OnceLock<Parsed>,
}

#[derive(Clone)]
enum Parsed {
    Secp256k1(k256::ecdsa::SigningKey),
    P256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub(crate) fn new(bytes: Zeroizing<[u8; 32]>) -> Secret {
        Secret {
            bytes,
            parsed: std::sync::OnceLock::new(),
        }
    }

    fn parsed(&self, algorithm: Algorithm) -> Result<&Parsed, Error> {
        if let Some(p) = self.parsed.get() {
            return Ok(p);
        }
        let parsed = match algorithm {
            Algorithm::Secp256k1 => Parsed::Secp256k1(
                k256::ecdsa::SigningKey::from_slice(self.bytes.as_slice())
                    .map_err(|_| Error::Internal("invalid secp256k1 scalar".into()))?,
            ),
            Algorithm::P256 => Parsed::P256(
                p256::ecdsa::SigningKey::from_slice(self.bytes.as_slice())
                    .map_err(|_| Error::Internal("invalid P-256 scalar".into()))?,
            ),
            Algorithm::Ed25519 => {
                Parsed::Ed25519(ed25519_dalek::SigningKey::from_bytes(&self.bytes))
            }
            Algorithm::Aes256gcm => {
                return Err(Error::Internal("an AES key has no parsed form".into()));
            }
        };
        Ok(self.parsed.get_or_init(|| parsed))
    }

    pub(crate) fn generate(algorithm: Algorithm) -> Secret {
        loop {
            let bytes = Zeroizing::new(rand::random::<[u8; 32]>());
            // ECDSA scalars must be non-zero and below the group order; retry the rare misses.
            let ok = match algorithm {
                Algorithm::Secp256k1 => {
                    k256::ecdsa::SigningKey::from_slice(bytes.as_slice()).is_ok()
                }
                Algorithm::P256 => p256::ecdsa::SigningKey::from_slice(bytes.as_slice()).is_ok(),
                Algorithm::Ed25519 | Algorithm::Aes256gcm => true,
            };
            if ok {
                return Secret::new(bytes);
            }
        }
    }

    /// The public part: SEC1 uncompressed points for ECDSA, the 32-byte key for Ed25519, nothing for
    /// AES.
    pub(crate) fn public(&self, algorithm: Algorithm) -> Result<Vec<u8>, Error> {
        if algorithm == Algorithm::Aes256gcm {
            return Ok(Vec::new());
        }
        Ok(match self.parsed(algorithm)? {
            Parsed::Secp256k1(k) => k
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            Parsed::P256(k) => k
                .verifying_key()
                .to_encoded_point(false)
                .as_bytes()
                .to_vec(),
            Parsed::Ed25519(k) => k.verifying_key().to_bytes().to_vec(),
        })
    }

    pub(crate) fn sign(
        &self,
        algorithm: Algorithm,
        message: &[u8],
        der: bool,
    ) -> Result<Vec<u8>, Error> {
        use k256::ecdsa::signature::Signer;
        if algorithm == Algorithm::Aes256gcm {
            return Err(Error::wrong_kind(algorithm, "sign"));
        }
        Ok(match self.parsed(algorithm)? {
            Parsed::Secp256k1(k) => {
                let sig: k256::ecdsa::Signature = k.sign(message);
                let sig = sig.normalize_s().unwrap_or(sig);
                if der {
                    sig.to_der().as_bytes().to_vec()
                } else {
                    sig.to_bytes().to_vec()
                }
            }
            Parsed::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                if der {
                    sig.to_der().as_bytes().to_vec()
                } else {
                    sig.to_bytes().to_vec()
                }
            }
            Parsed::Ed25519(k) => k.sign(message).to_bytes().to_vec(),
        })
    }

    /// Whether `signature` (raw or DER for ECDSA) is valid for `message`.
    pub(crate) fn verify(
        &self,
        algorithm: Algorithm,
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, Error> {
        use k256::ecdsa::signature::Verifier;
        if algorithm == Algorithm::Aes256gcm {
            return Err(Error::wrong_kind(algorithm, "verify"));
        }
        Ok(match self.parsed(algorithm)? {
            Parsed::Secp256k1(k) => k256::ecdsa::Signature::from_slice(signature)
                .or_else(|_| k256::ecdsa::Signature::from_der(signature))
                .is_ok_and(|s| k.verifying_key().verify(message, &s).is_ok()),
            Parsed::P256(k) => p256::ecdsa::Signature::from_slice(signature)
                .or_else(|_| p256::ecdsa::Signature::from_der(signature))
                .is_ok_and(|s| k.verifying_key().verify(message, &s).is_ok()),
            Parsed::Ed25519(k) => <[u8; 64]>::try_from(signature).is_ok_and(|bytes| {
                k.verifying_key()
                    .verify_strict(message, &ed25519_dalek::Signature::from_bytes(&bytes))
                    .is_ok()
            }),
        })
    }

    pub(crate) fn encrypt(
        &self,
        version: u32,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let cipher = Aes256Gcm::new_from_slice(self.bytes.as_slice())
            .map_err(|_| Error::Internal("AES key size".into()))?;
        let nonce: [u8; 12] = rand::random();
        let mut out = Vec::with_capacity(16 + plaintext.len() + 16);
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&nonce);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| Error::Internal("AES-GCM encryption failed".into()))?;
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub(crate) fn decrypt(&self, ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>, Error> {
        let cipher = Aes256Gcm::new_from_slice(self.bytes.as_slice())
            .map_err(|_| Error::Internal("AES key size".into()))?;
        let nonce = &ciphertext[4..16];
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: &ciphertext[16..],
                    aad,
                },
            )
            .map_err(|_| Error::Integrity)
    }
}

/// An AES-256-GCM key's versions, lent inside the process for decryption only, so that a caller
/// that reads often (the storage service, on every read) decrypts without a bus hop to this
/// service. It cannot encrypt: encryptions are counted against each version's budget here, so they
/// stay requests. It has no serialized form and shows no material; the key schedules are wiped when
/// the last clone is dropped. A key rotated after it was lent has versions it does not hold
/// ([`Opener::holds`]): ask for a new one.
#[derive(Clone)]
pub struct Opener {
    versions: std::sync::Arc<[(u32, Aes256Gcm)]>,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let versions: Vec<u32> = self.versions.iter().map(|(v, _)| *v).collect();
        f.debug_struct("Opener")
            .field("versions", &versions)
            .finish_non_exhaustive()
    }
}

impl Opener {
    pub(crate) fn new(versions: &[Version]) -> Result<Opener, Error> {
        let versions = versions
            .iter()
            .map(|v| {
                Aes256Gcm::new_from_slice(v.secret.bytes.as_slice())
                    .map(|cipher| (v.version, cipher))
                    .map_err(|_| Error::Internal("AES key size".into()))
            })
            .collect::<Result<_, Error>>()?;
        Ok(Opener { versions })
    }

    /// Whether this opener holds the key version `ciphertext` names (false for one too short to
    /// be a ciphertext).
    pub fn holds(&self, ciphertext: &[u8]) -> bool {
        ciphertext_version(ciphertext).is_ok_and(|version| self.cipher(version).is_some())
    }

    /// Decrypts as the service's `Decrypt` does: [`Error::ShortCiphertext`] for a ciphertext too
    /// short to be one, [`Error::Integrity`] for one that fails its tag or names a version this
    /// opener does not hold.
    pub fn open(&self, ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>, Error> {
        let version = ciphertext_version(ciphertext)?;
        let cipher = self.cipher(version).ok_or(Error::Integrity)?;
        cipher
            .decrypt(
                Nonce::from_slice(&ciphertext[4..16]),
                Payload {
                    msg: &ciphertext[16..],
                    aad,
                },
            )
            .map_err(|_| Error::Integrity)
    }

    fn cipher(&self, version: u32) -> Option<&Aes256Gcm> {
        self.versions
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, c)| c)
    }
}

/// The key version a ciphertext names, if it is long enough to be one of ours.
pub(crate) fn ciphertext_version(ciphertext: &[u8]) -> Result<u32, Error> {
    if ciphertext.len() < 4 + 12 + 16 {
        return Err(Error::ShortCiphertext(ciphertext.len()));
    }
    Ok(u32::from_be_bytes(
        ciphertext[..4].try_into().expect("4 bytes"),
    ))
}

/// HKDF-SHA256 of `secret` into a new 32-byte key.
pub(crate) fn derive(secret: &Secret, salt: &[u8], info: &[u8]) -> Secret {
    let mut out = Zeroizing::new([0u8; 32]);
    hkdf::Hkdf::<sha2::Sha256>::new(Some(salt), secret.bytes.as_slice())
        .expand(info, out.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Secret::new(out)
}

/// The most encryptions one AES-256-GCM key makes with random 96-bit nonces: NIST SP 800-38D
/// §8.3 bounds the invocations of one key with random nonces at 2^32, which keeps the chance that
/// two of them share a nonce (and GCM loses its authenticity and the two plaintexts' XOR leaks)
/// under 2^-32. A key version that reaches it is rotated before it encrypts again.
pub const AES_GCM_MAX_ENCRYPTIONS: u64 = 1 << 32;

/// Encryptions reserved on disk at a time: a version's count is persisted as a reservation
/// ahead of use, so a restart (which resumes from the reservation) can only over-count, never
/// under-count, and a reservation costs one change-log record per 65,536 encryptions.
pub(crate) const RESERVATION: u64 = 1 << 16;

/// One version of a key.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub(crate) version: u32,
    pub(crate) created_ms: u64,
    pub(crate) secret: Secret,
    /// AES: encryptions made (at start, the reservation: unknown uses count as made).
    pub(crate) encryptions: u64,
    /// AES: encryptions this version may make before a new reservation is persisted.
    pub(crate) reserved: u64,
}

impl Version {
    /// A new version; an AES one comes with its first reservation (of at most `bound`).
    pub(crate) fn new(
        version: u32,
        created_ms: u64,
        secret: Secret,
        algorithm: Algorithm,
        bound: u64,
    ) -> Version {
        let reserved = if algorithm == Algorithm::Aes256gcm {
            RESERVATION.min(bound)
        } else {
            0
        };
        Version {
            version,
            created_ms,
            secret,
            encryptions: 0,
            reserved,
        }
    }

    /// A version read back from disk: every reserved encryption counts as made.
    pub(crate) fn loaded(version: u32, created_ms: u64, secret: Secret, reserved: u64) -> Version {
        Version {
            version,
            created_ms,
            secret,
            encryptions: reserved,
            reserved,
        }
    }
}

/// What encrypting once more under `key`'s current version needs first, with `bound` the most
/// encryptions a version makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Budget {
    /// Within the reservation: encrypt.
    Ready,
    /// The reservation is used up: persist a larger one (`reserved` becomes this), then encrypt.
    Reserve(u64),
    /// The version reached the bound: rotate, then encrypt with the new version.
    Rotate,
}

/// The decision, as a pure function of the version's counts and the bound.
pub(crate) fn budget(encryptions: u64, reserved: u64, bound: u64) -> Budget {
    if encryptions >= bound {
        Budget::Rotate
    } else if encryptions >= reserved {
        Budget::Reserve(encryptions.saturating_add(RESERVATION).min(bound))
    } else {
        Budget::Ready
    }
}

/// A key and all its versions.
#[derive(Debug, Clone)]
pub(crate) struct Key {
    pub(crate) id: String,
    pub(crate) owner: String,
    pub(crate) algorithm: Algorithm,
    pub(crate) created_ms: u64,
    pub(crate) versions: Vec<Version>,
}

impl Key {
    pub(crate) fn current(&self) -> &Version {
        self.versions
            .last()
            .expect("a key always has at least one version")
    }

    pub(crate) fn current_mut(&mut self) -> &mut Version {
        self.versions
            .last_mut()
            .expect("a key always has at least one version")
    }

    pub(crate) fn info(&self) -> Result<KeyInfo, Error> {
        Ok(KeyInfo {
            id: self.id.clone(),
            owner: self.owner.clone(),
            algorithm: self.algorithm,
            version: self.current().version,
            created_ms: self.created_ms,
            versions: self
                .versions
                .iter()
                .map(|v| {
                    Ok(VersionInfo {
                        version: v.version,
                        created_ms: v.created_ms,
                        public_key: hex::encode(v.secret.public(self.algorithm)?),
                    })
                })
                .collect::<Result<_, Error>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Budget, RESERVATION, budget};

    #[test]
    fn the_encryption_budget_reserves_ahead_and_rotates_at_the_bound() {
        let bound = super::AES_GCM_MAX_ENCRYPTIONS;
        for (encryptions, reserved, bound, want) in [
            (0, RESERVATION, bound, Budget::Ready),
            (RESERVATION - 1, RESERVATION, bound, Budget::Ready),
            (
                RESERVATION,
                RESERVATION,
                bound,
                Budget::Reserve(2 * RESERVATION),
            ),
            (0, 0, bound, Budget::Reserve(RESERVATION)),
            (bound - 10, bound - 10, bound, Budget::Reserve(bound)),
            (bound - 1, bound, bound, Budget::Ready),
            (bound, bound, bound, Budget::Rotate),
            // A lowered bound: three encryptions, then a rotation.
            (0, 3, 3, Budget::Ready),
            (2, 3, 3, Budget::Ready),
            (3, 3, 3, Budget::Rotate),
            // Lowered below what a version already made (or reserved): rotate.
            (5, 10, 3, Budget::Rotate),
        ] {
            assert_eq!(
                budget(encryptions, reserved, bound),
                want,
                "{encryptions} made, {reserved} reserved, bound {bound}"
            );
        }
    }
}
