//! The crypto service itself: the recipe ([`Crypto`]), and one incarnation's [`State`] serving
//! requests over the keys it loaded from the keystore.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use runtime::clock::now_ms;
use runtime::id::new_id;
use runtime::{Context, Kind, Priority, Service, ServiceError, Spec};

use crate::fresh::{Refusal, Store, Unsaved};
use crate::keys::{self, Key, Secret, Version};
use crate::{Algorithm, Error, NAME, Request, Signed};

/// The recipe: where the keystore lives and the platform that seals it.
#[derive(Debug)]
pub struct Crypto {
    keystore: PathBuf,
    platform: Arc<dyn enclave::Platform>,
    /// The keystore generation an operator accepted despite the freshness counter; used once.
    accept: Mutex<Option<u64>>,
}

impl Crypto {
    pub fn new(data_dir: &std::path::Path, platform: Arc<dyn enclave::Platform>) -> Crypto {
        Crypto {
            keystore: data_dir.join("keystore.sealed"),
            platform,
            accept: Mutex::new(None),
        }
    }

    /// Accepts, once, a keystore at `generation` that disagrees with its freshness counter (an
    /// operator restoring a backup, a lost counter file, a keystore from before generations: 0).
    pub fn accept_rollback(self, generation: Option<u64>) -> Crypto {
        *self.accept.lock().unwrap_or_else(|p| p.into_inner()) = generation;
        self
    }

    /// Opens the keystore and checks its freshness (`fresh.rs`); a stale one is the operator's to
    /// accept, and no restart can change it.
    fn open(&self) -> Result<crate::fresh::Opened, ServiceError> {
        let mut accept = self.accept.lock().unwrap_or_else(|p| p.into_inner());
        match Store::open(&self.keystore, &*self.platform, *accept) {
            Ok(opened) => {
                if let Some(lifted) = &opened.accepted {
                    *accept = None;
                    tracing::warn!("crypto: the operator accepted a keystore that {lifted}");
                }
                Ok(opened)
            }
            Err(Refusal::Failed(e)) => Err(ServiceError::new(e.to_string())),
            Err(Refusal::Stale(stale)) => {
                let reason = format!(
                    "crypto refuses to start: {} {stale}. Nothing was read or changed. If this \
                     keystore is the one you mean to run with (say, a restored backup), restart \
                     with `cloister run --accept-keystore-rollback {}`",
                    self.keystore.display(),
                    stale.found()
                );
                tracing::error!("{reason}");
                Err(ServiceError::needs_operator(reason))
            }
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

/// One incarnation's state: the keys, and where to persist them.
struct State<'a> {
    keys: Vec<Key>,
    store: Store,
    platform: &'a dyn enclave::Platform,
    /// A change written but not acknowledged (the counter did not advance): the incarnation ends.
    fatal: Option<Error>,
}

impl State<'_> {
    fn find(&self, owner: &str, id: &str) -> Result<usize, Error> {
        self.keys
            .iter()
            .position(|k| k.id == id && k.owner == owner)
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    /// Persists, or undoes `undo` on the in-memory keys if the write fails, so memory never runs
    /// ahead of what a restart would find. A write whose counter advance failed is answered as
    /// failed and ends the incarnation: the next start finds it and lets the counter catch up.
    fn commit(&mut self, undo: impl FnOnce(&mut Vec<Key>)) -> Result<(), Error> {
        match self.store.save(self.platform, &self.keys) {
            Ok(()) => Ok(()),
            Err(Unsaved::NotWritten(e)) => {
                undo(&mut self.keys);
                Err(e)
            }
            Err(Unsaved::Unacknowledged(e)) => {
                self.fatal = Some(e.clone());
                Err(e)
            }
        }
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Generate {
                owner,
                algorithm,
                reply,
            } => {
                let key = Key {
                    id: new_id("key"),
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
                        id: new_id("key"),
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
        let opened = self.open()?;
        let mut state = State {
            keys: opened.keys,
            store: opened.store,
            platform: &*self.platform,
            fatal: None,
        };
        while let Some(request) = cx.recv().await {
            state.handle(request);
            if let Some(e) = state.fatal.take() {
                return Err(ServiceError::new(format!(
                    "{}: {e}",
                    state.store.path().display()
                )));
            }
        }
        Ok(())
    }
}
