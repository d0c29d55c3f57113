//! Signing keys the crypto service lends to the HTTP API, which signs with them on the request's own
//! task: no bus round trip per signature, and signatures made on every worker instead of on the
//! service's one task (a signature is most of a sign request's work: 20 µs for Ed25519 here).
//!
//! Everything runs in one enclave, so a lent key does not leave the process it was sealed to. What
//! lending must not change is what a signature means:
//!
//! - **Only the service lends, and only what it has just signed with.** A key is lent when the
//!   service signs with it (so the owner, the key and its algorithm were checked there), as its
//!   current version; the API's own checks (the token and its scope) run before either path.
//! - **A key is taken back before its change is answered.** Rotating or deleting a key takes it
//!   out first, under the same lock the API looks it up with, so a signature asked for after the
//!   change was acknowledged is made by the service, with the key as it is now. A signature that
//!   looked the key up just before is one the service would have made before the change.
//! - **Not in a cluster.** With the keys in the cluster's vault, another node may rotate or delete
//!   a key, which only the service sees (it reads the vault per request): the service lends
//!   nothing there, and takes back everything when the node joins one.
//! - **A new incarnation starts with nothing lent**, and nothing is signed here while the service
//!   does not take requests (stopped, failed, restarting).

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::time::Instant;

use crate::keys::Secret;
use crate::{Algorithm, Error, Handle, Signed};

/// The operation a signature is counted as, here as on the bus ([`crate::Request::Sign`]).
const SIGN: &str = "sign";

/// One key's current version, as lent.
struct Lent {
    algorithm: Algorithm,
    version: u32,
    /// A copy of the version's secret, parsed (it was just used); wiped when dropped.
    secret: Secret,
}

/// The keys lent, by owner, then id. Shared by the service's recipe (every incarnation) and every
/// [`Signers`].
#[derive(Default)]
pub(crate) struct Lending {
    keys: RwLock<HashMap<String, HashMap<String, Arc<Lent>>>>,
}

impl std::fmt::Debug for Lending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lent: usize = self.read().values().map(HashMap::len).sum();
        f.debug_struct("Lending").field("lent", &lent).finish()
    }
}

impl Lending {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, HashMap<String, Arc<Lent>>>> {
        // Nothing under the lock panics; a poisoned map is whole.
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, HashMap<String, Arc<Lent>>>> {
        self.keys.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Lends key `id` of `owner` at `version`, whose secret has just signed.
    pub(crate) fn lend(
        &self,
        owner: &str,
        id: &str,
        algorithm: Algorithm,
        version: u32,
        secret: &Secret,
    ) {
        let lent = Arc::new(Lent {
            algorithm,
            version,
            secret: secret.clone(),
        });
        (self.write().entry(owner.to_owned()).or_default()).insert(id.to_owned(), lent);
    }

    /// Takes key `id` of `owner` back: from now on only the service signs with it.
    pub(crate) fn take_back(&self, owner: &str, id: &str) {
        let mut keys = self.write();
        if let Some(ids) = keys.get_mut(owner) {
            ids.remove(id);
            if ids.is_empty() {
                keys.remove(owner);
            }
        }
    }

    /// Takes every key back.
    pub(crate) fn take_back_all(&self) {
        self.write().clear();
    }

    fn get(&self, owner: &str, id: &str) -> Option<Arc<Lent>> {
        self.read().get(owner)?.get(id).cloned()
    }
}

/// Lent by the service's recipe ([`crate::Crypto::signers`]): signs with a key the service has lent,
/// on the caller's own task, as the service would, and counts the signature in the service's
/// figures. It signs only while the service takes requests.
#[derive(Clone)]
pub struct Signers {
    lending: Arc<Lending>,
}

impl std::fmt::Debug for Signers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signers").finish_non_exhaustive()
    }
}

impl Signers {
    pub(crate) fn new(lending: Arc<Lending>) -> Self {
        Signers { lending }
    }

    /// `message` signed with key `id` of `owner`, if it can be signed here: the service behind
    /// `service` takes requests and has lent the key. `None` otherwise: send the request to the
    /// service ([`crate::Request::Sign`]), which lends the key as it signs.
    pub fn sign(
        &self,
        service: &Handle,
        owner: &str,
        id: &str,
        message: &[u8],
        der: bool,
    ) -> Option<Result<Signed, Error>> {
        if !service.is_open() {
            return None;
        }
        let started = Instant::now();
        let lent = self.lending.get(owner, id)?;
        let signed = (lent.secret.sign(lent.algorithm, message, der)).map(|signature| Signed {
            signature,
            version: lent.version,
        });
        service.count_local(SIGN, started);
        Some(signed)
    }
}
