//! The crypto service: keys of four kinds (secp256k1 and P-256 ECDSA, Ed25519, AES-256-GCM), each
//! owned by one account, persisted in a keystore sealed to the enclave. Generate, list, describe
//! (public part only), sign, verify, encrypt, decrypt, derive (HKDF), rotate (the newest version signs
//! and encrypts; older ones still verify and decrypt), delete. Private material never leaves the
//! service.

mod keys;
mod keystore;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use runtime::{Context, Kind, Priority, Reply, Service, ServiceError, ServiceName, Spec};
use serde::Serialize;

pub use keys::Algorithm;
use keys::Secret;

pub const NAME: ServiceName = ServiceName::from_static("crypto");

/// What callers can do about a failed operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No such key for this owner (also for keys of other owners: they are not to be guessed).
    #[error("no key {0:?}")]
    NotFound(String),
    #[error("a {algorithm} key cannot {operation}")]
    WrongKind {
        algorithm: &'static str,
        operation: &'static str,
    },
    #[error("{0}")]
    BadInput(String),
    #[error(
        "the ciphertext fails its integrity check (modified, or used with other associated data)"
    )]
    Integrity,
    #[error("keystore: {0}")]
    Keystore(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn wrong_kind(algorithm: Algorithm, operation: &'static str) -> Error {
        Error::WrongKind {
            algorithm: algorithm.as_str(),
            operation,
        }
    }
}

/// One version of a key.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub(crate) version: u32,
    pub(crate) created_ms: u64,
    pub(crate) secret: Secret,
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
    fn current(&self) -> &Version {
        self.versions
            .last()
            .expect("a key always has at least one version")
    }

    fn info(&self) -> Result<KeyInfo, Error> {
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

/// The public description of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub id: String,
    pub owner: String,
    pub algorithm: Algorithm,
    /// The version that signs and encrypts.
    pub version: u32,
    pub created_ms: u64,
    pub versions: Vec<VersionInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct VersionInfo {
    pub version: u32,
    pub created_ms: u64,
    /// Hex: SEC1 uncompressed point (ECDSA), the 32-byte key (Ed25519), empty (AES).
    pub public_key: String,
}

/// A signature and the key version that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Signed {
    pub signature: Vec<u8>,
    pub version: u32,
}

type Answer<T> = Reply<Result<T, Error>>;

/// Requests to the crypto service. Every one names the owner it acts for.
#[derive(Debug)]
pub enum Request {
    Generate {
        owner: String,
        algorithm: Algorithm,
        reply: Answer<KeyInfo>,
    },
    List {
        owner: String,
        reply: Answer<Vec<KeyInfo>>,
    },
    Describe {
        owner: String,
        id: String,
        reply: Answer<KeyInfo>,
    },
    Sign {
        owner: String,
        id: String,
        message: Vec<u8>,
        der: bool,
        reply: Answer<Signed>,
    },
    /// Valid if any version of the key verifies it.
    Verify {
        owner: String,
        id: String,
        message: Vec<u8>,
        signature: Vec<u8>,
        reply: Answer<bool>,
    },
    Encrypt {
        owner: String,
        id: String,
        plaintext: Vec<u8>,
        aad: Vec<u8>,
        reply: Answer<Vec<u8>>,
    },
    Decrypt {
        owner: String,
        id: String,
        ciphertext: Vec<u8>,
        aad: Vec<u8>,
        reply: Answer<Vec<u8>>,
    },
    /// A new AES-256-GCM key derived with HKDF-SHA256 from the current version of `id`.
    Derive {
        owner: String,
        id: String,
        salt: Vec<u8>,
        info: Vec<u8>,
        reply: Answer<KeyInfo>,
    },
    Rotate {
        owner: String,
        id: String,
        reply: Answer<KeyInfo>,
    },
    Delete {
        owner: String,
        id: String,
        reply: Answer<()>,
    },
}

impl runtime::bus::Operation for Request {
    fn operation(&self) -> &'static str {
        match self {
            Request::Generate { .. } => "generate",
            Request::List { .. } => "list",
            Request::Describe { .. } => "describe",
            Request::Sign { .. } => "sign",
            Request::Verify { .. } => "verify",
            Request::Encrypt { .. } => "encrypt",
            Request::Decrypt { .. } => "decrypt",
            Request::Derive { .. } => "derive",
            Request::Rotate { .. } => "rotate",
            Request::Delete { .. } => "delete",
        }
    }
}

/// The handle other services and the API hold.
pub type Handle = runtime::Handle<Request>;

/// The recipe: where the keystore lives and the platform that seals it.
#[derive(Debug)]
pub struct Crypto {
    keystore: PathBuf,
    platform: Arc<dyn enclave::Platform>,
}

impl Crypto {
    pub fn new(data_dir: &std::path::Path, platform: Arc<dyn enclave::Platform>) -> Crypto {
        Crypto {
            keystore: data_dir.join("keystore.sealed"),
            platform,
        }
    }

    pub fn default_spec() -> Spec {
        Spec::new(NAME, Kind::Core)
            .description("key management: keys sealed to the enclave; sign, verify, encrypt, decrypt, derive, rotate")
            .priority(Priority::Critical)
            .capability("crypto.sign")
            .capability("crypto.verify")
            .capability("crypto.encrypt")
            .capability("crypto.derive")
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn new_id() -> String {
    format!("key_{}", hex::encode(rand::random::<[u8; 12]>()))
}

/// One incarnation's state: the keys, and where to persist them.
struct State<'a> {
    keys: Vec<Key>,
    store: &'a keystore::Keystore,
    platform: &'a dyn enclave::Platform,
}

impl State<'_> {
    fn find(&self, owner: &str, id: &str) -> Result<usize, Error> {
        self.keys
            .iter()
            .position(|k| k.id == id && k.owner == owner)
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    /// Persists, or undoes `undo` on the in-memory keys if the write fails, so memory never runs
    /// ahead of what a restart would find.
    fn commit(&mut self, undo: impl FnOnce(&mut Vec<Key>)) -> Result<(), Error> {
        if let Err(e) = self.store.save(self.platform, &self.keys) {
            undo(&mut self.keys);
            return Err(e);
        }
        Ok(())
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Generate {
                owner,
                algorithm,
                reply,
            } => {
                let key = Key {
                    id: new_id(),
                    owner,
                    algorithm,
                    created_ms: now_ms(),
                    versions: vec![Version {
                        version: 1,
                        created_ms: now_ms(),
                        secret: Secret::generate(algorithm),
                    }],
                };
                let info = key.info();
                self.keys.push(key);
                let result = self.commit(|keys| {
                    keys.pop();
                });
                reply.send(result.and(info));
            }
            Request::List { owner, reply } => {
                reply.send(
                    self.keys
                        .iter()
                        .filter(|k| k.owner == owner)
                        .map(Key::info)
                        .collect(),
                );
            }
            Request::Describe { owner, id, reply } => {
                reply.send(self.find(&owner, &id).and_then(|i| self.keys[i].info()));
            }
            Request::Sign {
                owner,
                id,
                message,
                der,
                reply,
            } => {
                reply.send(self.find(&owner, &id).and_then(|i| {
                    let k = &self.keys[i];
                    let v = k.current();
                    Ok(Signed {
                        signature: v.secret.sign(k.algorithm, &message, der)?,
                        version: v.version,
                    })
                }));
            }
            Request::Verify {
                owner,
                id,
                message,
                signature,
                reply,
            } => {
                reply.send(self.find(&owner, &id).and_then(|i| {
                    let k = &self.keys[i];
                    let mut valid = false;
                    for v in &k.versions {
                        valid |= v.secret.verify(k.algorithm, &message, &signature)?;
                    }
                    Ok(valid)
                }));
            }
            Request::Encrypt {
                owner,
                id,
                plaintext,
                aad,
                reply,
            } => {
                reply.send(self.find(&owner, &id).and_then(|i| {
                    let k = &self.keys[i];
                    if k.algorithm != Algorithm::Aes256gcm {
                        return Err(Error::wrong_kind(k.algorithm, "encrypt"));
                    }
                    k.current()
                        .secret
                        .encrypt(k.current().version, &plaintext, &aad)
                }));
            }
            Request::Decrypt {
                owner,
                id,
                ciphertext,
                aad,
                reply,
            } => {
                reply.send(self.find(&owner, &id).and_then(|i| {
                    let k = &self.keys[i];
                    if k.algorithm != Algorithm::Aes256gcm {
                        return Err(Error::wrong_kind(k.algorithm, "decrypt"));
                    }
                    let version = keys::ciphertext_version(&ciphertext)?;
                    let v = k
                        .versions
                        .iter()
                        .find(|v| v.version == version)
                        .ok_or(Error::Integrity)?;
                    v.secret.decrypt(&ciphertext, &aad)
                }));
            }
            Request::Derive {
                owner,
                id,
                salt,
                info,
                reply,
            } => {
                let derived = self.find(&owner, &id).map(|i| {
                    let source = &self.keys[i];
                    Key {
                        id: new_id(),
                        owner: owner.clone(),
                        algorithm: Algorithm::Aes256gcm,
                        created_ms: now_ms(),
                        versions: vec![Version {
                            version: 1,
                            created_ms: now_ms(),
                            secret: keys::derive(&source.current().secret, &salt, &info),
                        }],
                    }
                });
                let result = derived.and_then(|key| {
                    let info = key.info();
                    self.keys.push(key);
                    self.commit(|keys| {
                        keys.pop();
                    })?;
                    info
                });
                reply.send(result);
            }
            Request::Rotate { owner, id, reply } => {
                let result = self.find(&owner, &id).and_then(|i| {
                    let k = &mut self.keys[i];
                    let version = k.current().version + 1;
                    k.versions.push(Version {
                        version,
                        created_ms: now_ms(),
                        secret: Secret::generate(k.algorithm),
                    });
                    self.commit(|keys| {
                        keys[i].versions.pop();
                    })?;
                    self.keys[i].info()
                });
                reply.send(result);
            }
            Request::Delete { owner, id, reply } => {
                let result = self.find(&owner, &id).and_then(|i| {
                    let removed = self.keys.remove(i);
                    self.commit(move |keys| keys.insert(i, removed))
                });
                reply.send(result);
            }
        }
    }
}

impl Service for Crypto {
    type Request = Request;

    fn spec(&self) -> Spec {
        Crypto::default_spec()
    }

    async fn run(&self, mut cx: Context<Request>) -> Result<(), ServiceError> {
        let store = keystore::Keystore::new(&self.keystore);
        let keys = store
            .load(&*self.platform)
            .map_err(|e| ServiceError::new(e.to_string()))?;
        let mut state = State {
            keys,
            store: &store,
            platform: &*self.platform,
        };
        while let Some(request) = cx.recv().await {
            state.handle(request);
        }
        Ok(())
    }
}
