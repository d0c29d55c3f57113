//! The cluster key as a node holds it ([`Held`]: the key, its generation, the key before it after
//! a rotation) and what wraps the crypto service's keys under each generation ([`Wrap`]), with the
//! seam through which the vault reaches the node that holds them ([`Keyholder`]).
//!
//! ```text
//! wrap key = HKDF-SHA256(salt = none, IKM = cluster key, info = "cloister cluster keystore v1\0" || cluster id, 32 bytes)
//! sealed   = nonce (12, random) || AES-256-GCM(wrap key, nonce, record, AAD)
//! AAD      = "cloister crypto key v1\0" || cluster id (16) || len(owner) (4, BE) || owner || len(id) (4, BE) || id || revision (8, BE)
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use crypto::{Entry, VaultError};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::db::{Db, KeyRow};
use crate::sealed::Sealed;
use crate::{ClusterId, ClusterKey, Error};

const WRAP_INFO: &[u8] = b"cloister cluster keystore v1\0";
const AAD_LABEL: &[u8] = b"cloister crypto key v1\0";

/// What the vault needs of the node: the key it holds now, the database, and a way to take a
/// rotation's grant when it meets a newer generation.
pub(crate) trait Keyholder: Send + Sync {
    /// The key held now.
    fn current(&self) -> Result<Arc<Held>, Error>;
    /// The cluster's database.
    fn db(&self) -> Result<&Db, Error>;
    /// Takes this node's grant of the next generation, if the database has moved to it.
    fn follow(&self) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send + '_>>;
}

/// The cluster key this node holds, with its generation and, after a rotation, the key before.
pub(crate) struct Held {
    pub(crate) id: ClusterId,
    pub(crate) key: ClusterKey,
    pub(crate) check: [u8; 32],
    pub(crate) generation: u64,
    pub(crate) previous: Option<ClusterKey>,
    pub(crate) wrap: Wrap,
    pub(crate) previous_wrap: Option<Wrap>,
}

impl Held {
    pub(crate) fn new(sealed: Sealed) -> Held {
        let Sealed {
            id,
            key,
            generation,
            previous,
        } = sealed;
        Held {
            check: key.check(&id),
            wrap: Wrap::new(id, &key),
            previous_wrap: previous.as_ref().map(|k| Wrap::new(id, k)),
            id,
            key,
            generation,
            previous,
        }
    }

    /// What the key file holds for this key.
    pub(crate) fn sealed(&self) -> Sealed {
        Sealed {
            id: self.id,
            key: ClusterKey::from_bytes(*self.key.bytes()),
            generation: self.generation,
            previous: self
                .previous
                .as_ref()
                .map(|k| ClusterKey::from_bytes(*k.bytes())),
        }
    }

    /// The wrap of `generation`: the key held, or the one before it.
    pub(crate) fn wrap_of(&self, generation: u64) -> Option<&Wrap> {
        if generation == self.generation {
            Some(&self.wrap)
        } else if generation + 1 == self.generation {
            self.previous_wrap.as_ref()
        } else {
            None
        }
    }
}

/// What wraps and unwraps the records under one generation of the cluster key.
pub(crate) struct Wrap {
    id: ClusterId,
    cipher: Aes256Gcm,
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

impl Wrap {
    pub(crate) fn new(id: ClusterId, key: &ClusterKey) -> Wrap {
        let mut wrap = Zeroizing::new([0u8; 32]);
        hkdf::Hkdf::<Sha256>::new(None, key.bytes())
            .expand_multi_info(&[WRAP_INFO, &id.0], wrap.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let cipher = Aes256Gcm::new_from_slice(wrap.as_slice()).expect("a 32-byte key");
        Wrap { id, cipher }
    }

    pub(crate) fn seal(
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

    pub(crate) fn open(&self, owner: &str, row: KeyRow) -> Result<Entry, VaultError> {
        let KeyRow {
            id: key,
            revision,
            sealed,
            ..
        } = row;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, revision: u64, sealed: Vec<u8>) -> KeyRow {
        KeyRow {
            id: id.into(),
            revision,
            generation: 1,
            sealed,
        }
    }

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
            .open("alice", row("key_1", 3, sealed.clone()))
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
                .open(owner, row(id, revision, sealed.clone()))
                .expect_err("moved");
            assert!(matches!(e, VaultError::Integrity(_)), "{e}");
        }
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert!(wrap.open("alice", row("key_1", 3, flipped)).is_err());
        let other = Wrap::new(id, &ClusterKey::from_bytes([1; 32]));
        assert!(other.open("alice", row("key_1", 3, sealed)).is_err());
    }
}
