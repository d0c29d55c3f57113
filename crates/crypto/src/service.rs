//! The crypto service itself: the recipe ([`Crypto`]), and one incarnation's [`State`] serving
//! requests over the keys it loaded from the keystore.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use runtime::clock::now_ms;
use runtime::id::new_id;
use runtime::setting::Setting;
use runtime::{Context, Kind, Priority, Service, ServiceError, Spec};

use crate::changes::Change;
use crate::fresh::{Refusal, Store, Unsaved};
use crate::keys::{self, AES_GCM_MAX_ENCRYPTIONS, Budget, Key, Secret, Version};
use crate::{Algorithm, Error, NAME, Request, Signed};

/// The most keys one account may hold (in `[services.crypto]`). Owners that are services
/// (`@storage`, which holds a key per namespace; `@oracle`) are not accounts and not held to it.
pub const MAX_KEYS: Setting<usize> = Setting::new(
    "max_keys_per_account",
    1_000,
    1,
    1_000_000,
    "most keys one account may hold",
);

/// The most encryptions one AES-256-GCM key version makes before it is rotated; at most
/// [`AES_GCM_MAX_ENCRYPTIONS`] (2^32, NIST SP 800-38D §8.3 for random 96-bit nonces). Lower it
/// to rotate sooner.
pub const MAX_ENCRYPTIONS: Setting<u64> = Setting::new(
    "max_encryptions_per_key",
    AES_GCM_MAX_ENCRYPTIONS,
    1,
    AES_GCM_MAX_ENCRYPTIONS,
    "most encryptions one AES-256-GCM key version makes before it is rotated (at most 2^32)",
)
.at_start();

/// Owners that are services, not accounts: no account id starts with `@`.
fn is_service_owner(owner: &str) -> bool {
    owner.starts_with('@')
}

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
                    "crypto refuses to start: the keystore {} (with its change log {}) {stale}. \
                     Nothing was read or changed. If this keystore is the one you mean to run \
                     with (say, a restored backup), restart with `cloister run \
                     --accept-keystore-rollback {}`",
                    self.keystore.display(),
                    self.keystore.with_extension("log").display(),
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
            .setting(&MAX_KEYS)
            .setting(&MAX_ENCRYPTIONS)
    }
}

/// One incarnation's state: the keys, and where to persist them.
struct State<'a> {
    keys: Vec<Key>,
    store: Store,
    platform: &'a dyn enclave::Platform,
    /// A change written but not acknowledged (the counter did not advance): the incarnation ends.
    fatal: Option<Error>,
    /// [`MAX_KEYS`].
    max_keys: usize,
    /// [`MAX_ENCRYPTIONS`].
    max_encryptions: u64,
}

/// What a change did to the keys in memory, to persist.
enum Changed {
    /// The key at this index was added or changed.
    Key(usize),
    /// This key was removed.
    Removed { owner: String, id: String },
}

impl State<'_> {
    fn find(&self, owner: &str, id: &str) -> Result<usize, Error> {
        self.keys
            .iter()
            .position(|k| k.id == id && k.owner == owner)
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    /// Refuses a new key for an account that holds [`MAX_KEYS`] already.
    fn room_for_one_more(&self, owner: &str) -> Result<(), Error> {
        if is_service_owner(owner) {
            return Ok(());
        }
        let count = self.keys.iter().filter(|k| k.owner == owner).count();
        if count >= self.max_keys {
            return Err(Error::TooManyKeys {
                limit: self.max_keys,
                setting: MAX_KEYS.name(),
            });
        }
        Ok(())
    }

    /// A new key's first version.
    fn first_version(&self, algorithm: Algorithm, secret: Secret) -> Version {
        Version::new(1, now_ms(), secret, algorithm, self.max_encryptions)
    }

    /// Persists `changed`, or undoes `undo` on the in-memory keys if the write fails, so memory
    /// never runs ahead of what a restart would find. A write whose counter advance failed is
    /// answered as failed and ends the incarnation: the next start finds it and lets the counter
    /// catch up.
    fn commit(&mut self, changed: Changed, undo: impl FnOnce(&mut Vec<Key>)) -> Result<(), Error> {
        let change = match changed {
            Changed::Key(i) => Change::put(&self.keys[i]),
            Changed::Removed { owner, id } => Change::Remove { owner, id },
        };
        match self.store.save(self.platform, &change, &self.keys) {
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

    /// A new current version of key `i`, in memory.
    fn push_version(&mut self, i: usize) {
        let bound = self.max_encryptions;
        let k = &mut self.keys[i];
        let version = Version::new(
            k.current().version + 1,
            now_ms(),
            Secret::generate(k.algorithm),
            k.algorithm,
            bound,
        );
        k.versions.push(version);
    }

    /// Before AES key `i` encrypts: within its reservation, nothing; else a larger reservation
    /// is persisted, or, at [`MAX_ENCRYPTIONS`], the key is rotated (the old version still
    /// decrypts). Either is persisted before the encryption is made.
    fn make_room_to_encrypt(&mut self, i: usize) -> Result<(), Error> {
        let v = self.keys[i].current();
        match keys::budget(v.encryptions, v.reserved, self.max_encryptions) {
            Budget::Ready => Ok(()),
            Budget::Reserve(to) => {
                let before = std::mem::replace(&mut self.keys[i].current_mut().reserved, to);
                self.commit(Changed::Key(i), |keys| {
                    keys[i].current_mut().reserved = before;
                })
            }
            Budget::Rotate => {
                self.push_version(i);
                self.commit(Changed::Key(i), |keys| {
                    keys[i].versions.pop();
                })?;
                let k = &self.keys[i];
                tracing::info!(
                    key = %k.id,
                    owner = %k.owner,
                    version = k.current().version,
                    "crypto: an AES-256-GCM key reached {} encryptions and was rotated",
                    self.max_encryptions
                );
                Ok(())
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
                let result = self.room_for_one_more(&owner).and_then(|()| {
                    let key = Key {
                        id: new_id("key"),
                        owner,
                        algorithm,
                        created_ms: now_ms(),
                        versions: vec![self.first_version(algorithm, Secret::generate(algorithm))],
                    };
                    let info = key.info();
                    self.keys.push(key);
                    self.commit(Changed::Key(self.keys.len() - 1), |keys| {
                        keys.pop();
                    })?;
                    info
                });
                reply.send(result);
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
                    self.make_room_to_encrypt(i)?;
                    let v = self.keys[i].current_mut();
                    let ciphertext = v.secret.encrypt(v.version, &plaintext, &aad)?;
                    v.encryptions += 1;
                    Ok(ciphertext)
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
            Request::Lend { owner, id, reply } => {
                reply.send(self.find(&owner, &id).and_then(|i| {
                    let k = &self.keys[i];
                    if k.algorithm != Algorithm::Aes256gcm {
                        return Err(Error::wrong_kind(k.algorithm, "decrypt"));
                    }
                    keys::Opener::new(&k.versions)
                }));
            }
            Request::Derive {
                owner,
                id,
                salt,
                info,
                reply,
            } => {
                let derived = self
                    .find(&owner, &id)
                    .and_then(|i| self.room_for_one_more(&owner).map(|()| i))
                    .map(|i| {
                        let source = &self.keys[i];
                        let secret = keys::derive(&source.current().secret, &salt, &info);
                        Key {
                            id: new_id("key"),
                            owner: owner.clone(),
                            algorithm: Algorithm::Aes256gcm,
                            created_ms: now_ms(),
                            versions: vec![self.first_version(Algorithm::Aes256gcm, secret)],
                        }
                    });
                let result = derived.and_then(|key| {
                    let info = key.info();
                    self.keys.push(key);
                    self.commit(Changed::Key(self.keys.len() - 1), |keys| {
                        keys.pop();
                    })?;
                    info
                });
                reply.send(result);
            }
            Request::Rotate { owner, id, reply } => {
                let result = self.find(&owner, &id).and_then(|i| {
                    self.push_version(i);
                    self.commit(Changed::Key(i), |keys| {
                        keys[i].versions.pop();
                    })?;
                    self.keys[i].info()
                });
                reply.send(result);
            }
            Request::Delete { owner, id, reply } => {
                let result = self.find(&owner, &id).and_then(|i| {
                    let removed = self.keys.remove(i);
                    let changed = Changed::Removed {
                        owner: removed.owner.clone(),
                        id: removed.id.clone(),
                    };
                    self.commit(changed, move |keys| keys.insert(i, removed))
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
        let spec = cx.spec();
        let mut state = State {
            keys: opened.keys,
            store: opened.store,
            platform: &*self.platform,
            fatal: None,
            max_keys: spec.get(&MAX_KEYS),
            max_encryptions: spec.get(&MAX_ENCRYPTIONS),
        };
        while let Some(request) = cx.recv().await {
            // `max_keys_per_account` applies live: a request after a new configuration sees it.
            if cx.spec_changes().has_changed().unwrap_or(false) {
                state.max_keys = cx.spec_changes().borrow_and_update().get(&MAX_KEYS);
            }
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
