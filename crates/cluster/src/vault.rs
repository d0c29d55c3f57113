//! The cluster's keys in its database (`crypto_keys`, storage's migration 3): the crypto
//! service's [`Vault`](crypto::Vault), each key's record wrapped by the cluster key.
//!
//! ```text
//! wrap key = HKDF-SHA256(salt = none, IKM = cluster key, info = "cloister cluster keystore v1\0" || cluster id, 32 bytes)
//! sealed   = nonce (12, random) || AES-256-GCM(wrap key, nonce, record, AAD)
//! AAD      = "cloister crypto key v1\0" || cluster id (16) || len(owner) (4, BE) || owner || len(id) (4, BE) || id || revision (8, BE)
//! ```
//!
//! So a row is readable only by a holder of the cluster key, and a wrapped record moved to another
//! key, another owner or another revision fails its check. What the binding cannot show is a row
//! put back whole, revision and all, to an older state (a deleted key back, a rotation undone):
//! docs/cluster.md says so.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use crypto::{Entry, Vault, VaultError, VaultFuture};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::db::Db;
use crate::{ClusterId, ClusterKey, Error};

const WRAP_INFO: &[u8] = b"cloister cluster keystore v1\0";
const AAD_LABEL: &[u8] = b"cloister crypto key v1\0";

/// The cluster's keys, through its database.
pub(crate) struct KeyVault {
    db: Db,
    wrap: Wrap,
}

/// What wraps and unwraps the records.
struct Wrap {
    id: ClusterId,
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVault")
            .field("cluster", &self.wrap.id.to_string())
            .finish_non_exhaustive()
    }
}

fn vault_error(e: Error) -> VaultError {
    match e {
        Error::Unavailable(why) => VaultError::Unavailable(why),
        other => VaultError::Failed(other.to_string()),
    }
}

fn associated_data(id: &ClusterId, owner: &str, key: &str, revision: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_LABEL.len() + 16 + 8 + owner.len() + key.len() + 8);
    aad.extend_from_slice(AAD_LABEL);
    aad.extend_from_slice(&id.0);
    for part in [owner, key] {
        aad.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad.extend_from_slice(&revision.to_be_bytes());
    aad
}

impl KeyVault {
    pub(crate) fn new(db: Db, id: ClusterId, key: &ClusterKey) -> KeyVault {
        KeyVault {
            db,
            wrap: Wrap::new(id, key),
        }
    }
}

impl Wrap {
    fn new(id: ClusterId, key: &ClusterKey) -> Wrap {
        let mut wrap = Zeroizing::new([0u8; 32]);
        hkdf::Hkdf::<Sha256>::new(None, key.bytes())
            .expand_multi_info(&[WRAP_INFO, &id.0], wrap.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let cipher = Aes256Gcm::new_from_slice(wrap.as_slice()).expect("a 32-byte key");
        Wrap { id, cipher }
    }

    fn seal(
        &self,
        owner: &str,
        key: &str,
        revision: u64,
        record: &[u8],
    ) -> Result<Vec<u8>, VaultError> {
        let nonce: [u8; 12] = rand::random();
        let aad = associated_data(&self.id, owner, key, revision);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: record,
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Failed("wrapping a key failed".into()))?;
        let mut out = Vec::with_capacity(12 + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn open(&self, owner: &str, row: (String, u64, Vec<u8>)) -> Result<Entry, VaultError> {
        let (key, revision, sealed) = row;
        let refused = || {
            VaultError::Integrity(format!(
                "key {key:?} of {owner:?} at revision {revision} (changed, moved from another \
                 key, or not this cluster's)"
            ))
        };
        if sealed.len() < 12 + 16 {
            return Err(refused());
        }
        let aad = associated_data(&self.id, owner, &key, revision);
        let record = self
            .cipher
            .decrypt(
                Nonce::from_slice(&sealed[..12]),
                Payload {
                    msg: &sealed[12..],
                    aad: &aad,
                },
            )
            .map_err(|_| refused())?;
        Ok(Entry {
            id: key,
            revision,
            record: Zeroizing::new(record),
        })
    }
}

impl Vault for KeyVault {
    fn load<'a>(&'a self, owner: &'a str, id: &'a str) -> VaultFuture<'a, Option<Entry>> {
        Box::pin(async move {
            let row = self.db.key(owner, id).await.map_err(vault_error)?;
            row.map(|row| self.wrap.open(owner, row)).transpose()
        })
    }

    fn list<'a>(&'a self, owner: &'a str) -> VaultFuture<'a, Vec<Entry>> {
        Box::pin(async move {
            let rows = self.db.keys(owner).await.map_err(vault_error)?;
            rows.into_iter()
                .map(|row| self.wrap.open(owner, row))
                .collect()
        })
    }

    fn put<'a>(
        &'a self,
        owner: &'a str,
        id: &'a str,
        revision: u64,
        record: Zeroizing<Vec<u8>>,
    ) -> VaultFuture<'a, bool> {
        Box::pin(async move {
            let sealed = self.wrap.seal(owner, id, revision, &record)?;
            self.db
                .put_key(owner, id, revision, &sealed)
                .await
                .map_err(vault_error)
        })
    }

    fn remove<'a>(&'a self, owner: &'a str, id: &'a str, revision: u64) -> VaultFuture<'a, bool> {
        Box::pin(async move {
            self.db
                .remove_key(owner, id, revision)
                .await
                .map_err(vault_error)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binding_names_owner_key_and_revision_unambiguously() {
        let id = ClusterId([7; 16]);
        // Lengths are part of it: an owner's tail cannot pass for a key's head.
        assert_ne!(
            associated_data(&id, "ab", "c", 1),
            associated_data(&id, "a", "bc", 1)
        );
        assert_ne!(
            associated_data(&id, "a", "b", 1),
            associated_data(&id, "a", "b", 2)
        );
        assert_ne!(
            associated_data(&ClusterId([8; 16]), "a", "b", 1),
            associated_data(&id, "a", "b", 1)
        );
    }

    #[test]
    fn a_record_opens_only_as_the_key_and_revision_it_was_wrapped_for() {
        let id = ClusterId([7; 16]);
        let key = ClusterKey::from_bytes([9; 32]);
        let wrap = Wrap::new(id, &key);
        let sealed = wrap.seal("alice", "key_1", 3, b"record").expect("seal");
        let entry = wrap
            .open("alice", ("key_1".into(), 3, sealed.clone()))
            .expect("opens");
        assert_eq!(
            (entry.revision, entry.record.as_slice()),
            (3, &b"record"[..])
        );
        for (owner, id, revision) in [
            ("bob", "key_1", 3),
            ("alice", "key_2", 3),
            ("alice", "key_1", 2),
        ] {
            let e = wrap
                .open(owner, (id.into(), revision, sealed.clone()))
                .expect_err("moved");
            assert!(matches!(e, VaultError::Integrity(_)), "{e}");
        }
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert!(wrap.open("alice", ("key_1".into(), 3, flipped)).is_err());
        let other = Wrap::new(id, &ClusterKey::from_bytes([1; 32]));
        assert!(other.open("alice", ("key_1".into(), 3, sealed)).is_err());
    }
}
