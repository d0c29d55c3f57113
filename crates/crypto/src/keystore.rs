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
//!
//! This file is the keystore's *snapshot*: a key operation appends to the change log
//! (`changes.rs`), encrypted under this file's data key and chained to its tag, and the snapshot
//! is written whole only when the log is compacted (`fresh.rs`).

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

/// The keys in a keystore file, its generation (`None` for a `CLKS0001` file), and what the
/// change log after it is chained to (`None` when there is no file).
pub(crate) struct Loaded {
    pub(crate) keys: Vec<Key>,
    pub(crate) generation: Option<u64>,
    pub(crate) chain: Option<Chain>,
}

/// What a snapshot gives the change log after it: its data key, which encrypts the log's records,
/// and its authentication tag, which the first record is bound to.
pub(crate) struct Chain {
    pub(crate) data_key: Zeroizing<[u8; 32]>,
    pub(crate) tag: [u8; 16],
}

/// A key as the snapshot and the change log store it.
#[derive(Serialize, Deserialize)]
pub(crate) struct Stored {
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
    /// The key material in base64, wiped when dropped.
    secret: Zeroizing<String>,
    /// Encryptions this version may have made (`keys::Version::reserved`); absent before counts.
    #[serde(default, skip_serializing_if = "is_zero")]
    reserved: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Stored {
    pub(crate) fn of(k: &Key) -> Stored {
        Stored {
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
                    secret: Zeroizing::new(
                        base64::engine::general_purpose::STANDARD.encode(v.secret.bytes.as_slice()),
                    ),
                    reserved: v.reserved,
                })
                .collect(),
        }
    }

    /// The key, or what is wrong with it.
    pub(crate) fn key(self) -> Result<Key, &'static str> {
        let versions = self
            .versions
            .into_iter()
            .map(|v| {
                let raw = Zeroizing::new(
                    base64::engine::general_purpose::STANDARD
                        .decode(v.secret.as_bytes())
                        .map_err(|_| "a key is not base64")?,
                );
                if raw.len() != 32 {
                    return Err("a key is not 32 bytes");
                }
                // Copied straight into its wiped home, not through an array on the stack.
                let mut secret = Zeroizing::new([0u8; 32]);
                secret.copy_from_slice(&raw);
                Ok(Version::loaded(
                    v.version,
                    v.created_ms,
                    Secret::new(secret),
                    v.reserved,
                ))
            })
            .collect::<Result<Vec<_>, &'static str>>()?;
        if versions.is_empty() {
            return Err("a key has no version");
        }
        Ok(Key {
            id: self.id,
            owner: self.owner,
            algorithm: self.algorithm,
            created_ms: self.created_ms,
            versions,
        })
    }
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
                    chain: None,
                });
            }
            Err(e) => return Err(Error::Keystore(format!("{}: {e}", self.path.display()))),
        };
        self.parse(&bytes, platform)
    }

    /// The keys and the generation in `bytes`, the content of this keystore's file.
    pub(crate) fn parse(
        &self,
        bytes: &[u8],
        platform: &dyn enclave::Platform,
    ) -> Result<Loaded, Error> {
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
        let data_key: Zeroizing<[u8; 32]> = {
            let unsealed = enclave::unseal(
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
            Zeroizing::new(
                unsealed
                    .as_slice()
                    .try_into()
                    .map_err(|_| corrupt("data key of the wrong size"))?,
            )
        };
        let cipher = Aes256Gcm::new_from_slice(data_key.as_slice())
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
            .map(|s| s.key().map_err(corrupt))
            .collect::<Result<Vec<_>, Error>>()?;
        let tag: [u8; 16] = bytes[bytes.len() - 16..].try_into().expect("16 bytes");
        Ok(Loaded {
            keys,
            generation,
            chain: Some(Chain { data_key, tag }),
        })
    }

    /// Writes `keys` as generation `generation`, durably; answers what a change log after it is
    /// chained to.
    pub(crate) fn save(
        &self,
        platform: &dyn enclave::Platform,
        keys: &[Key],
        generation: u64,
    ) -> Result<Chain, Error> {
        self.write(platform, keys, Some(generation))
    }

    /// Writes a `CLKS0001` keystore, without a generation, as Cloister did before them.
    #[cfg(test)]
    pub(crate) fn save_v1(
        &self,
        platform: &dyn enclave::Platform,
        keys: &[Key],
    ) -> Result<(), Error> {
        self.write(platform, keys, None).map(drop)
    }

    fn write(
        &self,
        platform: &dyn enclave::Platform,
        keys: &[Key],
        generation: Option<u64>,
    ) -> Result<Chain, Error> {
        let stored: Vec<Stored> = keys.iter().map(Stored::of).collect();
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
        Ok(Chain {
            data_key,
            tag: ct[ct.len() - 16..].try_into().expect("a 16-byte tag"),
        })
    }
}

#[cfg(test)]
mod tests {
    use zeroize::ZeroizeOnDrop;

    use super::*;

    fn wiped<T: ZeroizeOnDrop>(_: &T) {}

    /// Every copy of key material the keystore makes is wiped when dropped: the base64 strings
    /// written and read, the unsealed data key (kept for the change log), the decoded secrets.
    /// (A check of the types: memory after a drop is not read.)
    #[test]
    fn key_material_copies_are_wiped_when_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = enclave::Simulation::open(dir.path(), b"bin", b"", 1).expect("sim");
        let key = Key {
            id: "k".into(),
            owner: "alice".into(),
            algorithm: Algorithm::Aes256gcm,
            created_ms: 0,
            versions: vec![Version::new(
                1,
                0,
                Secret::generate(Algorithm::Aes256gcm),
                Algorithm::Aes256gcm,
                1,
            )],
        };
        let stored = Stored::of(&key);
        wiped(&stored.versions[0].secret);
        let json = serde_json::to_string(&stored).expect("json");
        let back: Stored = serde_json::from_str(&json).expect("back");
        wiped(&back.versions[0].secret);
        let loaded = back.key().expect("key");
        wiped(&loaded.versions[0].secret.bytes);
        let file = Keystore::new(&dir.path().join("keystore.sealed"));
        let chain = file.save(&sim, &[key], 1).expect("save");
        wiped(&chain.data_key);
        let loaded = file.load(&sim).expect("load");
        wiped(&loaded.chain.expect("chain").data_key);
        wiped(
            &enclave::unseal(
                &sim,
                &enclave::seal(&sim, &data_key_request(&sim), b"k", b"keystore data key")
                    .expect("seal"),
                b"keystore data key",
            )
            .expect("unseal"),
        );
    }
}
