//! The keystore on disk, sealed to the enclave by envelope: a random data key encrypts the keys
//! (AES-256-GCM), and the data key is sealed through the platform with the signer policy, so an
//! upgraded enclave from the same signer can still open it.
//!
//! Layout: `CLKS0002` | generation (8, BE) | sealed data key length (4, BE) | sealed data key |
//! nonce (12) | ciphertext. The header (everything before the ciphertext) is the associated data,
//! so the generation, which `fresh.rs` checks against the keystore's freshness counter, is
//! authenticated with the keys. A `CLKS0001` keystore (before generations) reads with none. Writes
//! go to a temporary file that is synced and renamed over the old one, so a crash leaves the old or
//! the new keystore.

use std::io::Write;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::Error;
use crate::keys::{Algorithm, Key, Secret, Version};

const MAGIC: &[u8; 8] = b"CLKS0002";
/// Before generations: no generation field.
const MAGIC_V1: &[u8; 8] = b"CLKS0001";

/// The keys in a keystore file, and its generation (`None` for a `CLKS0001` file).
pub(crate) struct Loaded {
    pub(crate) keys: Vec<Key>,
    pub(crate) generation: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    id: String,
    owner: String,
    algorithm: Algorithm,
    created_ms: u64,
    versions: Vec<StoredVersion>,
}

#[derive(Serialize, Deserialize)]
struct StoredVersion {
    version: u32,
    created_ms: u64,
    secret: String,
}

fn data_key_request(platform: &dyn enclave::Platform) -> enclave::KeyRequest {
    enclave::KeyRequest {
        policy: enclave::Policy::Signer,
        security_version: platform.identity().security_version,
        key_id: Sha256::digest(b"cloister keystore data key v1").into(),
    }
}

#[derive(Debug)]
pub(crate) struct Keystore {
    path: PathBuf,
}

impl Keystore {
    pub(crate) fn new(path: &Path) -> Keystore {
        Keystore {
            path: path.to_owned(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The keys and the generation; no file is generation 0 with no keys.
    pub(crate) fn load(&self, platform: &dyn enclave::Platform) -> Result<Loaded, Error> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Loaded {
                    keys: Vec::new(),
                    generation: Some(0),
                });
            }
            Err(e) => return Err(Error::Keystore(format!("{}: {e}", self.path.display()))),
        };
        let corrupt = |what: &str| Error::Keystore(format!("{}: {what}", self.path.display()));
        let (generation, start) = match bytes.get(..8) {
            Some(m) if m == MAGIC && bytes.len() >= 20 => (
                Some(u64::from_be_bytes(
                    bytes[8..16].try_into().expect("8 bytes"),
                )),
                16,
            ),
            Some(m) if m == MAGIC_V1 && bytes.len() >= 12 => (None, 8),
            _ => {
                return Err(corrupt(
                    "not a Cloister keystore (wrong magic or truncated)",
                ));
            }
        };
        let sealed_at = start + 4;
        let sealed_len =
            u32::from_be_bytes(bytes[start..sealed_at].try_into().expect("4 bytes")) as usize;
        let header_len = sealed_at
            .checked_add(sealed_len)
            .and_then(|n| n.checked_add(12));
        let Some(header_len) = header_len.filter(|&n| n + 16 <= bytes.len()) else {
            return Err(corrupt("truncated"));
        };
        let data_key = enclave::unseal(
            platform,
            &bytes[sealed_at..sealed_at + sealed_len],
            b"keystore data key",
        )
        .map_err(|e| {
            Error::Keystore(format!(
                "{}: the data key does not unseal: {e}",
                self.path.display()
            ))
        })?;
        let cipher = Aes256Gcm::new_from_slice(&data_key)
            .map_err(|_| corrupt("data key of the wrong size"))?;
        let nonce = &bytes[header_len - 12..header_len];
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: &bytes[header_len..],
                        aad: &bytes[..header_len],
                    },
                )
                .map_err(|_| corrupt("fails its integrity check (modified or damaged)"))?,
        );
        let stored: Vec<Stored> = serde_json::from_slice(&plain)
            .map_err(|e| corrupt(&format!("unreadable content: {e}")))?;
        let keys = stored
            .into_iter()
            .map(|s| {
                let versions = s
                    .versions
                    .into_iter()
                    .map(|v| {
                        let raw = Zeroizing::new(
                            base64::engine::general_purpose::STANDARD
                                .decode(v.secret.as_bytes())
                                .map_err(|_| corrupt("a key is not base64"))?,
                        );
                        let secret: [u8; 32] = raw
                            .as_slice()
                            .try_into()
                            .map_err(|_| corrupt("a key is not 32 bytes"))?;
                        Ok(Version {
                            version: v.version,
                            created_ms: v.created_ms,
                            secret: Secret::new(Zeroizing::new(secret)),
                        })
                    })
                    .collect::<Result<Vec<_>, Error>>()?;
                Ok(Key {
                    id: s.id,
                    owner: s.owner,
                    algorithm: s.algorithm,
                    created_ms: s.created_ms,
                    versions,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Loaded { keys, generation })
    }

    /// Writes `keys` as generation `generation`, durably.
    pub(crate) fn save(
        &self,
        platform: &dyn enclave::Platform,
        keys: &[Key],
        generation: u64,
    ) -> Result<(), Error> {
        self.write(platform, keys, Some(generation))
    }

    /// Writes a `CLKS0001` keystore, without a generation, as Cloister did before them.
    #[cfg(test)]
    pub(crate) fn save_v1(
        &self,
        platform: &dyn enclave::Platform,
        keys: &[Key],
    ) -> Result<(), Error> {
        self.write(platform, keys, None)
    }

    fn write(
        &self,
        platform: &dyn enclave::Platform,
        keys: &[Key],
        generation: Option<u64>,
    ) -> Result<(), Error> {
        let stored: Vec<Stored> = keys
            .iter()
            .map(|k| Stored {
                id: k.id.clone(),
                owner: k.owner.clone(),
                algorithm: k.algorithm,
                created_ms: k.created_ms,
                versions: k
                    .versions
                    .iter()
                    .map(|v| StoredVersion {
                        version: v.version,
                        created_ms: v.created_ms,
                        secret: base64::engine::general_purpose::STANDARD
                            .encode(v.secret.bytes.as_slice()),
                    })
                    .collect(),
            })
            .collect();
        let plain = Zeroizing::new(
            serde_json::to_vec(&stored).map_err(|e| Error::Internal(e.to_string()))?,
        );
        drop(stored);
        let data_key = Zeroizing::new(rand::random::<[u8; 32]>());
        let sealed = enclave::seal(
            platform,
            &data_key_request(platform),
            data_key.as_slice(),
            b"keystore data key",
        )
        .map_err(|e| Error::Keystore(e.to_string()))?;
        let mut out = Vec::with_capacity(20 + sealed.len() + 12 + plain.len() + 16);
        match generation {
            Some(g) => {
                out.extend_from_slice(MAGIC);
                out.extend_from_slice(&g.to_be_bytes());
            }
            None => out.extend_from_slice(MAGIC_V1),
        }
        out.extend_from_slice(&(sealed.len() as u32).to_be_bytes());
        out.extend_from_slice(&sealed);
        let nonce: [u8; 12] = rand::random();
        out.extend_from_slice(&nonce);
        let cipher = Aes256Gcm::new_from_slice(data_key.as_slice())
            .map_err(|_| Error::Internal("key size".into()))?;
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &out,
                },
            )
            .map_err(|_| Error::Internal("keystore encryption failed".into()))?;
        out.extend_from_slice(&ct);
        let tmp = self.path.with_extension("tmp");
        let io = |e: std::io::Error| Error::Keystore(format!("{}: {e}", self.path.display()));
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            f.write_all(&out).and_then(|()| f.sync_all()).map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }
}
