//! The cluster's keys in its database (`crypto_keys`, storage's migration 3): the crypto
//! service's [`Vault`](crypto::Vault), each key's record wrapped by the cluster key (`keys.rs`
//! gives the format).
//!
//! So a row is readable only by a holder of the cluster key, and a wrapped record moved to another
//! key, another owner or another revision fails its check. What the binding cannot show is a row
//! put back whole, revision and all, to an older state (a deleted key back, a rotation undone):
//! docs/cluster.md says so.
//!
//! Each row also names the *generation* of the cluster key that wraps it (`rotation.rs`). A row
//! of a newer generation than this node holds, or a write refused as stale, makes the node take
//! its grant of the new key first; a row of the generation before is opened with the previous key
//! the node keeps until every row is re-wrapped.

use std::sync::{Arc, Weak};

use crypto::{Entry, Vault, VaultError, VaultFuture};
use zeroize::Zeroizing;

use crate::Error;
use crate::db::{KeyRow, Put};
use crate::keys::Keyholder;

/// The cluster's keys, through its database, wrapped by the key the node holds at each call.
pub(crate) struct KeyVault {
    node: Weak<dyn Keyholder>,
}

impl std::fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVault").finish_non_exhaustive()
    }
}

fn vault_error(e: Error) -> VaultError {
    match e {
        Error::Unavailable(why) => VaultError::Unavailable(why),
        other => VaultError::Failed(other.to_string()),
    }
}

impl KeyVault {
    pub(crate) fn new(node: Weak<dyn Keyholder>) -> KeyVault {
        KeyVault { node }
    }

    fn node(&self) -> Result<Arc<dyn Keyholder>, VaultError> {
        self.node
            .upgrade()
            .ok_or_else(|| VaultError::Unavailable("the node is shutting down".into()))
    }

    /// Opens `row`, taking this node's grant of a newer cluster key first if the row needs it.
    async fn open(
        &self,
        node: &dyn Keyholder,
        owner: &str,
        row: KeyRow,
    ) -> Result<Entry, VaultError> {
        let mut held = node.current().map_err(vault_error)?;
        if row.generation > held.generation {
            node.follow().await.map_err(vault_error)?;
            held = node.current().map_err(vault_error)?;
        }
        held.wrap_of(row.generation)
            .ok_or_else(|| {
                VaultError::Unavailable(format!(
                    "key {:?} of {owner:?} is wrapped by generation {} of the cluster key, and \
                     this node holds generation {}: a rotation is re-wrapping the keys; try again",
                    row.id, row.generation, held.generation
                ))
            })?
            .open(owner, row)
    }
}

impl Vault for KeyVault {
    fn load<'a>(&'a self, owner: &'a str, id: &'a str) -> VaultFuture<'a, Option<Entry>> {
        Box::pin(async move {
            let node = self.node()?;
            let row = node.db().map_err(vault_error)?.key(owner, id).await;
            match row.map_err(vault_error)? {
                Some(row) => self.open(&*node, owner, row).await.map(Some),
                None => Ok(None),
            }
        })
    }

    fn list<'a>(&'a self, owner: &'a str) -> VaultFuture<'a, Vec<Entry>> {
        Box::pin(async move {
            let node = self.node()?;
            let rows = node.db().map_err(vault_error)?.keys(owner).await;
            let mut entries = Vec::new();
            for row in rows.map_err(vault_error)? {
                entries.push(self.open(&*node, owner, row).await?);
            }
            Ok(entries)
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
            let node = self.node()?;
            let db = node.db().map_err(vault_error)?;
            // At most one rotation can pass between reading the generation and writing.
            for _ in 0..2 {
                let held = node.current().map_err(vault_error)?;
                let sealed = held.wrap.seal(owner, id, revision, &record)?;
                match db
                    .put_key(owner, id, revision, held.generation, &sealed)
                    .await
                    .map_err(vault_error)?
                {
                    Put::Written => return Ok(true),
                    Put::Conflict => return Ok(false),
                    Put::Stale(now) if now > held.generation => {
                        node.follow().await.map_err(vault_error)?;
                    }
                    Put::Stale(now) => {
                        return Err(VaultError::Failed(format!(
                            "the cluster key is at generation {now} in the database, older than \
                             generation {} this node holds: the database was restored from \
                             before a rotation",
                            held.generation
                        )));
                    }
                }
            }
            Err(VaultError::Unavailable(
                "the cluster key was rotated twice during one write; try again".into(),
            ))
        })
    }

    fn remove<'a>(&'a self, owner: &'a str, id: &'a str, revision: u64) -> VaultFuture<'a, bool> {
        Box::pin(async move {
            let node = self.node()?;
            node.db()
                .map_err(vault_error)?
                .remove_key(owner, id, revision)
                .await
                .map_err(vault_error)
        })
    }
}
