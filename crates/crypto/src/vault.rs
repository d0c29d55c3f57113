//! Keys that live in a cluster rather than in one enclave: a [`Vault`] holds each key's record
//! (the same record the sealed keystore stores) wrapped by the cluster key, outside the enclave
//! (PostgreSQL, in the `cluster` crate). Every member reads and writes the same keys through it.
//!
//! Each key has a *revision* that every write moves by one, and a write names the revision it
//! replaces: two members changing one key at once cannot both win (the loser answers
//! [`Error::Conflict`](crate::Error::Conflict), and reads the winner's key next). Before it uses a
//! key, the service asks the vault for its revision and keeps its copy only while that is current,
//! so a key rotated or deleted through one member is seen by every other at its next use.

use std::future::Future;
use std::pin::Pin;

use zeroize::Zeroizing;

use crate::keys::Key;
use crate::keystore::Stored;

/// What a vault's operations answer.
pub type VaultFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, VaultError>> + Send + 'a>>;

/// One key as a vault holds it: its revision and its record, unwrapped (the keystore's JSON).
pub struct Entry {
    pub id: String,
    pub revision: u64,
    pub record: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("id", &self.id)
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

/// Why a vault did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    /// Out of reach now (the database is down); a retry may succeed.
    #[error("the cluster's keys cannot be reached: {0}")]
    Unavailable(String),
    /// A record that does not unwrap: changed, moved to another key, or not this cluster's.
    #[error("a key's record in the cluster's database fails its integrity check: {0}")]
    Integrity(String),
    #[error("the cluster's keys: {0}")]
    Failed(String),
}

/// Where a cluster keeps its keys, wrapped.
pub trait Vault: Send + Sync + std::fmt::Debug {
    /// Key `id` of `owner`, if there is one.
    fn load<'a>(&'a self, owner: &'a str, id: &'a str) -> VaultFuture<'a, Option<Entry>>;
    /// Every key of `owner`.
    fn list<'a>(&'a self, owner: &'a str) -> VaultFuture<'a, Vec<Entry>>;
    /// Writes key `id` of `owner` at `revision` if the vault holds it at `revision - 1` (no key
    /// for revision 1); false, and nothing written, if it does not.
    fn put<'a>(
        &'a self,
        owner: &'a str,
        id: &'a str,
        revision: u64,
        record: Zeroizing<Vec<u8>>,
    ) -> VaultFuture<'a, bool>;
    /// Deletes key `id` of `owner` if the vault holds it at `revision`; false if it does not.
    fn remove<'a>(&'a self, owner: &'a str, id: &'a str, revision: u64) -> VaultFuture<'a, bool>;
}

/// A key's record, as a vault stores it (wiped when dropped).
pub(crate) fn record_of(key: &Key) -> Result<Zeroizing<Vec<u8>>, crate::Error> {
    serde_json::to_vec(&Stored::of(key))
        .map(Zeroizing::new)
        .map_err(|e| crate::Error::Internal(format!("encoding key {}: {e}", key.id)))
}

/// The key a vault's record holds, which must be key `id` of `owner`.
pub(crate) fn key_of(owner: &str, entry: &Entry) -> Result<Key, crate::Error> {
    let stored: Stored = serde_json::from_slice(&entry.record)
        .map_err(|e| crate::Error::Keystore(format!("key {}: {e}", entry.id)))?;
    let key = stored
        .key()
        .map_err(|e| crate::Error::Keystore(format!("key {}: {e}", entry.id)))?;
    if key.id != entry.id || key.owner != owner {
        return Err(crate::Error::Keystore(format!(
            "the record of key {} holds key {} of another owner or id",
            entry.id, key.id
        )));
    }
    Ok(key)
}

impl From<VaultError> for crate::Error {
    fn from(e: VaultError) -> crate::Error {
        match e {
            VaultError::Unavailable(why) => crate::Error::Unavailable(why),
            other => crate::Error::Keystore(other.to_string()),
        }
    }
}
