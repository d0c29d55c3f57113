//! The crypto service itself: the recipe ([`Crypto`]), and one incarnation's [`State`] serving
//! requests over the keys it loaded from the keystore.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use runtime::clock::now_ms;
use runtime::id::new_id;
use runtime::setting::Setting;
use runtime::{Context, Kind, Priority, Service, ServiceError, Spec};

use crate::changes::Change;
use crate::fresh::{Refusal, Store, Unsaved};
use crate::keys::{self, AES_GCM_MAX_ENCRYPTIONS, Budget, Key, Secret, Version};
use crate::vault::{self, Vault};
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

/// How many times an encryption's reservation is made again after other members' overtook it.
const MAX_ATTEMPTS: u32 = 8;

/// Owners that are services, not accounts: no account id starts with `@`.
fn is_service_owner(owner: &str) -> bool {
    owner.starts_with('@')
}

/// The cluster's vault, once this node holds the cluster key (`None` until then, and always on
/// a node of no cluster).
pub type VaultWatch = watch::Receiver<Option<Arc<dyn Vault>>>;

/// The recipe: where the keystore lives and the platform that seals it, and the cluster's vault
/// that replaces the keystore once the node is a member of a cluster (`vault.rs`).
#[derive(Debug)]
pub struct Crypto {
    keystore: PathBuf,
    platform: Arc<dyn enclave::Platform>,
    /// The keystore generation an operator accepted despite the freshness counter; used once.
    accept: Mutex<Option<u64>>,
    vault: Option<VaultWatch>,
}

impl Crypto {
    pub fn new(data_dir: &std::path::Path, platform: Arc<dyn enclave::Platform>) -> Crypto {
        Crypto {
            keystore: data_dir.join("keystore.sealed"),
            platform,
            accept: Mutex::new(None),
            vault: None,
        }
    }

    /// Keeps the keys in the cluster's vault as soon as `vault` holds one: the keys of the sealed
    /// keystore move there (each written to the vault, then removed from the keystore), and every
    /// key is read from and written to the vault from then on.
    pub fn shared(mut self, vault: VaultWatch) -> Crypto {
        self.vault = Some(vault);
        self
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
    /// The keys: all of them with the sealed keystore; with a vault, those used so far, each
    /// checked against the vault's revision before it is used.
    keys: Vec<Key>,
    store: Store,
    /// The cluster's vault, once the keys live there.
    shared: Option<Shared>,
    platform: &'a dyn enclave::Platform,
    /// A change written but not acknowledged (the counter did not advance): the incarnation ends.
    fatal: Option<Error>,
    /// [`MAX_KEYS`].
    max_keys: usize,
    /// [`MAX_ENCRYPTIONS`].
    max_encryptions: u64,
}

/// The cluster's vault, the revision of each key held in memory, and when each service-owned key
/// was last checked against it.
struct Shared {
    vault: Arc<dyn Vault>,
    revisions: HashMap<(String, String), u64>,
    checked: HashMap<(String, String), Instant>,
}

/// How long a key owned by a service (`@storage`'s namespace keys, `@oracle`'s) is used without
/// asking the vault for its revision again. An account's key is checked at every use. A service
/// key changes only when its encryption budget rotates it or its namespace is dropped, and a
/// storage commit made with a stale one is overtaken (the drop moved the cluster's commit number)
/// and prepared again; meanwhile the vault is not asked once per value written.
const SERVICE_KEY_RECHECK: Duration = Duration::from_secs(1);

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

    /// Key `id` of `owner`, current: with a vault, the copy in memory is kept only while the
    /// vault holds the key at the same revision (so its encryption count goes on), and replaced
    /// (or dropped) otherwise.
    async fn current(&mut self, owner: &str, id: &str) -> Result<usize, Error> {
        let slot = (owner.to_owned(), id.to_owned());
        let Some(shared) = &self.shared else {
            return self.find(owner, id);
        };
        if is_service_owner(owner)
            && shared
                .checked
                .get(&slot)
                .is_some_and(|at| at.elapsed() < SERVICE_KEY_RECHECK)
            && let Ok(i) = self.find(owner, id)
        {
            return Ok(i);
        }
        let Some(shared) = &mut self.shared else {
            return self.find(owner, id);
        };
        let entry = shared.vault.load(owner, id).await?;
        if is_service_owner(owner) {
            shared.checked.insert(slot.clone(), Instant::now());
        }
        let held = self
            .keys
            .iter()
            .position(|k| k.id == id && k.owner == owner);
        match (entry, held) {
            (None, held) => {
                if let Some(i) = held {
                    self.keys.remove(i);
                }
                shared.revisions.remove(&slot);
                Err(Error::NotFound(id.to_owned()))
            }
            (Some(entry), Some(i)) if shared.revisions.get(&slot) == Some(&entry.revision) => {
                drop(entry);
                Ok(i)
            }
            (Some(entry), held) => {
                let key = vault::key_of(owner, &entry)?;
                shared.revisions.insert(slot, entry.revision);
                Ok(match held {
                    Some(i) => {
                        self.keys[i] = key;
                        i
                    }
                    None => {
                        self.keys.push(key);
                        self.keys.len() - 1
                    }
                })
            }
        }
    }

    /// With a vault: every key of `owner`, as the vault holds them now.
    async fn current_of(&mut self, owner: &str) -> Result<(), Error> {
        let Some(shared) = &mut self.shared else {
            return Ok(());
        };
        let entries = shared.vault.list(owner).await?;
        let mut fresh = Vec::with_capacity(entries.len());
        for entry in &entries {
            let slot = (owner.to_owned(), entry.id.clone());
            let kept = self
                .keys
                .iter()
                .position(|k| k.id == entry.id && k.owner == owner)
                .filter(|_| shared.revisions.get(&slot) == Some(&entry.revision));
            let key = match kept {
                Some(i) => self.keys.swap_remove(i),
                None => vault::key_of(owner, entry)?,
            };
            fresh.push((slot, entry.revision, key));
        }
        self.keys.retain(|k| k.owner != owner);
        shared.revisions.retain(|(o, _), _| o != owner);
        for (slot, revision, key) in fresh {
            shared.revisions.insert(slot, revision);
            self.keys.push(key);
        }
        Ok(())
    }

    /// Moves every key of the sealed keystore into the vault (written there first, then removed
    /// from the keystore), and serves from the vault from then on. A key the vault holds already
    /// (a move cut short before) is not written again.
    async fn share(&mut self, vault: Arc<dyn Vault>) -> Result<(), Error> {
        let moving = self.keys.len();
        for key in &self.keys {
            let record = vault::record_of(key)?;
            if !vault.put(&key.owner, &key.id, 1, record).await? {
                tracing::info!(key = %key.id, "crypto: the cluster holds this key already");
            }
        }
        while let Some(key) = self.keys.pop() {
            let change = Change::Remove {
                owner: key.owner.clone(),
                id: key.id.clone(),
            };
            if let Err(unsaved) = self.store.save(self.platform, &change, &self.keys) {
                let e = match unsaved {
                    Unsaved::NotWritten(e) | Unsaved::Unacknowledged(e) => e,
                };
                return Err(e);
            }
        }
        self.shared = Some(Shared {
            vault,
            revisions: HashMap::new(),
            checked: HashMap::new(),
        });
        tracing::info!(
            keys = moving,
            "crypto: the keys are kept in the cluster's database, wrapped by the cluster key"
        );
        Ok(())
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
    /// catch up. With a vault, the write names the revision it replaces; if another node wrote
    /// the key first, nothing is written and the key is read again at its next use.
    async fn commit(
        &mut self,
        changed: Changed,
        undo: impl FnOnce(&mut Vec<Key>),
    ) -> Result<(), Error> {
        if let Some(shared) = &mut self.shared {
            let (owner, id, written) = match &changed {
                Changed::Key(i) => {
                    let key = &self.keys[*i];
                    let slot = (key.owner.clone(), key.id.clone());
                    let revision = shared.revisions.get(&slot).copied().unwrap_or(0) + 1;
                    let record = vault::record_of(key)?;
                    let written = shared
                        .vault
                        .put(&key.owner, &key.id, revision, record)
                        .await
                        .map(|done| done.then_some(revision));
                    (slot.0, slot.1, written)
                }
                Changed::Removed { owner, id } => {
                    let slot = (owner.clone(), id.clone());
                    let revision = shared.revisions.get(&slot).copied().unwrap_or(0);
                    let written = shared
                        .vault
                        .remove(owner, id, revision)
                        .await
                        .map(|done| done.then_some(0));
                    (slot.0, slot.1, written)
                }
            };
            let slot = (owner, id);
            return match written {
                Ok(Some(0)) => {
                    shared.revisions.remove(&slot);
                    Ok(())
                }
                Ok(Some(revision)) => {
                    shared.revisions.insert(slot, revision);
                    Ok(())
                }
                Ok(None) => {
                    undo(&mut self.keys);
                    shared.revisions.remove(&slot);
                    shared.checked.remove(&slot);
                    Err(Error::Conflict(slot.1))
                }
                Err(e) => {
                    undo(&mut self.keys);
                    Err(e.into())
                }
            };
        }
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
    async fn make_room_to_encrypt(&mut self, i: usize) -> Result<(), Error> {
        let v = self.keys[i].current();
        match keys::budget(v.encryptions, v.reserved, self.max_encryptions) {
            Budget::Ready => Ok(()),
            Budget::Reserve(to) => {
                let before = std::mem::replace(&mut self.keys[i].current_mut().reserved, to);
                self.commit(Changed::Key(i), |keys| {
                    keys[i].current_mut().reserved = before;
                })
                .await
            }
            Budget::Rotate => {
                self.push_version(i);
                self.commit(Changed::Key(i), |keys| {
                    keys[i].versions.pop();
                })
                .await?;
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

    /// Adds `key` (made for `owner`) and persists it; answers its description.
    async fn add(&mut self, key: Key) -> Result<crate::KeyInfo, Error> {
        let info = key.info();
        self.keys.push(key);
        self.commit(Changed::Key(self.keys.len() - 1), |keys| {
            keys.pop();
        })
        .await?;
        info
    }

    /// Refuses a new key for an account that holds [`MAX_KEYS`] already, counting with the
    /// vault's keys when there is one.
    async fn room_for_another(&mut self, owner: &str) -> Result<(), Error> {
        if !is_service_owner(owner) {
            self.current_of(owner).await?;
        }
        self.room_for_one_more(owner)
    }

    async fn handle(&mut self, request: Request) {
        match request {
            Request::Generate {
                owner,
                algorithm,
                reply,
            } => {
                let result = match self.room_for_another(&owner).await {
                    Ok(()) => {
                        let key = Key {
                            id: new_id("key"),
                            owner,
                            algorithm,
                            created_ms: now_ms(),
                            versions: vec![
                                self.first_version(algorithm, Secret::generate(algorithm)),
                            ],
                        };
                        self.add(key).await
                    }
                    Err(e) => Err(e),
                };
                reply.send(result);
            }
            Request::List { owner, reply } => {
                let listed = self.current_of(&owner).await.and_then(|()| {
                    self.keys
                        .iter()
                        .filter(|k| k.owner == owner)
                        .map(Key::info)
                        .collect()
                });
                reply.send(listed);
            }
            Request::Describe { owner, id, reply } => {
                let i = self.current(&owner, &id).await;
                reply.send(i.and_then(|i| self.keys[i].info()));
            }
            Request::Sign {
                owner,
                id,
                message,
                der,
                reply,
            } => {
                let i = self.current(&owner, &id).await;
                reply.send(i.and_then(|i| {
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
                let i = self.current(&owner, &id).await;
                reply.send(i.and_then(|i| {
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
                reply.send(self.encrypt(&owner, &id, &plaintext, &aad).await);
            }
            Request::Decrypt {
                owner,
                id,
                ciphertext,
                aad,
                reply,
            } => {
                let i = self.current(&owner, &id).await;
                reply.send(i.and_then(|i| {
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
                let i = self.current(&owner, &id).await;
                reply.send(i.and_then(|i| {
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
                let result = match self.current(&owner, &id).await {
                    Ok(i) => {
                        let secret = keys::derive(&self.keys[i].current().secret, &salt, &info);
                        match self.room_for_another(&owner).await {
                            Ok(()) => {
                                let key = Key {
                                    id: new_id("key"),
                                    owner: owner.clone(),
                                    algorithm: Algorithm::Aes256gcm,
                                    created_ms: now_ms(),
                                    versions: vec![
                                        self.first_version(Algorithm::Aes256gcm, secret),
                                    ],
                                };
                                self.add(key).await
                            }
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                };
                reply.send(result);
            }
            Request::Rotate { owner, id, reply } => {
                let result = match self.current(&owner, &id).await {
                    Ok(i) => {
                        self.push_version(i);
                        let pushed = self
                            .commit(Changed::Key(i), |keys| {
                                keys[i].versions.pop();
                            })
                            .await;
                        pushed.and_then(|()| self.keys[i].info())
                    }
                    Err(e) => Err(e),
                };
                reply.send(result);
            }
            Request::Delete { owner, id, reply } => {
                let result = match self.current(&owner, &id).await {
                    Ok(i) => {
                        let removed = self.keys.remove(i);
                        let changed = Changed::Removed {
                            owner: removed.owner.clone(),
                            id: removed.id.clone(),
                        };
                        self.commit(changed, move |keys| keys.insert(i, removed))
                            .await
                    }
                    Err(e) => Err(e),
                };
                reply.send(result);
            }
        }
    }

    /// Encrypts with key `id`'s current version. With a vault, the encryptions a version may
    /// make are reserved in the vault, so members encrypting with one key at once reserve in
    /// turn: a reservation overtaken by another member's is made again on the key as it is now.
    async fn encrypt(
        &mut self,
        owner: &str,
        id: &str,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let mut attempts = 1;
        loop {
            match self.encrypt_once(owner, id, plaintext, aad).await {
                Err(Error::Conflict(_)) if attempts < MAX_ATTEMPTS => attempts += 1,
                done => return done,
            }
        }
    }

    async fn encrypt_once(
        &mut self,
        owner: &str,
        id: &str,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let i = self.current(owner, id).await?;
        let k = &self.keys[i];
        if k.algorithm != Algorithm::Aes256gcm {
            return Err(Error::wrong_kind(k.algorithm, "encrypt"));
        }
        self.make_room_to_encrypt(i).await?;
        let v = self.keys[i].current_mut();
        let ciphertext = v.secret.encrypt(v.version, plaintext, aad)?;
        v.encryptions += 1;
        Ok(ciphertext)
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
            shared: None,
            platform: &*self.platform,
            fatal: None,
            max_keys: spec.get(&MAX_KEYS),
            max_encryptions: spec.get(&MAX_ENCRYPTIONS),
        };
        let mut vault = self.vault.clone();
        loop {
            // The node became a member of a cluster (or was one at start): the keys move to the
            // cluster's vault before the next request is served.
            let joined = vault
                .as_mut()
                .and_then(|v| v.borrow_and_update().clone())
                .filter(|_| state.shared.is_none());
            if let Some(joined) = joined {
                state.share(joined).await.map_err(|e| {
                    ServiceError::new(format!("moving the keys to the cluster: {e}"))
                })?;
            }
            let request = match &mut vault {
                Some(v) if state.shared.is_none() => tokio::select! {
                    request = cx.recv() => request,
                    changed = v.changed() => {
                        if changed.is_err() {
                            vault = None;
                        }
                        continue;
                    }
                },
                _ => cx.recv().await,
            };
            let Some(request) = request else { break };
            // `max_keys_per_account` applies live: a request after a new configuration sees it.
            if cx.spec_changes().has_changed().unwrap_or(false) {
                state.max_keys = cx.spec_changes().borrow_and_update().get(&MAX_KEYS);
            }
            state.handle(request).await;
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
