//! The backend seam: the one place the service meets its database. Two backends, known and
//! closed, so an enum: redb in the data directory (one node, the default) and PostgreSQL
//! (`postgres.rs`). Both store the same records, so everything above this file (encryption, the
//! associated data, versions, limits, quotas, group commit) is the same code on both.
//!
//! What differs is what each can prove at start. redb keeps a sealed digest of its whole state
//! (`digest.rs`) and the freshness counter follows its commit number; PostgreSQL keeps the commit
//! number, which the counter follows, and each record's AES-GCM tag (`fresh.rs` and
//! docs/security.md say what that does and does not detect).

use std::sync::Arc;

use crate::Error;
use crate::db::{Change, Db, DbError, Listed, Usage};
use crate::digest::{Root, StateKey};
use crate::postgres::{Locked, Pg};

/// One incarnation's database.
#[derive(Debug)]
pub(crate) enum Store {
    Redb {
        db: Arc<Db>,
        /// The state key, and the root of the committed state (`digest.rs`).
        keys: Arc<StateKey>,
        root: Root,
    },
    Postgres(Pg),
}

/// Runs a redb operation on the blocking pool: redb syncs to disk.
async fn blocking<T: Send + 'static>(
    db: &Arc<Db>,
    work: impl FnOnce(&Db) -> Result<T, DbError> + Send + 'static,
) -> Result<T, Error> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || work(&db))
        .await
        .map_err(|e| Error::Internal(format!("the database task: {e}")))?
        .map_err(Error::from)
}

impl Store {
    /// Whether other nodes may commit to this database too (PostgreSQL): then the commit number
    /// can move between two of this node's commits, and what was read may have changed.
    pub(crate) fn shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Whether an error from a commit leaves its outcome unknown (the database may have
    /// committed before the connection broke): only a remote database's can.
    pub(crate) fn outcome_unknown(&self, e: &Error) -> bool {
        matches!(self, Store::Postgres(_)) && matches!(e, Error::Unavailable(_))
    }

    /// Why the database is out of reach now, if it is (a remote database only).
    pub(crate) fn outage(&self) -> Option<String> {
        match self {
            Store::Redb { .. } => None,
            Store::Postgres(pg) => pg.outage(),
        }
    }

    pub(crate) async fn namespace_key(&self, namespace: &str) -> Result<Option<String>, Error> {
        match self {
            Store::Redb { db, .. } => Ok(db.namespace_key(namespace)?),
            Store::Postgres(pg) => pg.namespace_key(namespace).await,
        }
    }

    pub(crate) async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        match self {
            Store::Redb { db, .. } => Ok(db.get(namespace, key)?),
            Store::Postgres(pg) => pg.get(namespace, key).await,
        }
    }

    pub(crate) async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Listed>, bool), Error> {
        match self {
            Store::Redb { db, .. } => Ok(db.list(namespace, prefix, after, limit)?),
            Store::Postgres(pg) => pg.list(namespace, prefix, after, limit).await,
        }
    }

    pub(crate) async fn usage(&self, namespace: &str) -> Result<Usage, Error> {
        match self {
            Store::Redb { db, .. } => Ok(db.usage(namespace)?),
            Store::Postgres(pg) => pg.usage(namespace).await,
        }
    }

    pub(crate) async fn entry_bytes(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Option<u64>, Error> {
        match self {
            Store::Redb { db, .. } => Ok(db.entry_bytes(namespace, key)?),
            Store::Postgres(pg) => pg.entry_bytes(namespace, key).await,
        }
    }

    pub(crate) async fn contains(&self, namespace: &str, key: &str) -> Result<bool, Error> {
        Ok(self.entry_bytes(namespace, key).await?.is_some())
    }

    /// On a shared database: the commit number, locked until the next commit (other nodes' commits
    /// wait for it). None on redb, which has one writer.
    pub(crate) async fn lock(&self) -> Result<Option<Locked>, Error> {
        match self {
            Store::Redb { .. } => Ok(None),
            Store::Postgres(pg) => pg.lock().await.map(Some),
        }
    }

    /// Releases a lock taken for a commit that has nothing to write.
    pub(crate) async fn release(&self, locked: Option<Locked>) {
        if let (Store::Postgres(pg), Some(locked)) = (self, locked) {
            pg.release(locked).await;
        }
    }

    /// Commits `changes` as commit `seq`, recording `new_namespaces` (namespace, key id) and, on
    /// PostgreSQL, the namespaces' `usage` after it, in the transaction `locked` holds (a shared
    /// database is committed to only under the lock). Deletes of absent keys are no-ops. The
    /// freshness counter is the caller's.
    pub(crate) async fn commit(
        &mut self,
        seq: u64,
        new_namespaces: Vec<(String, String)>,
        changes: Vec<Change>,
        usage: Vec<(String, Usage)>,
        locked: Option<Locked>,
    ) -> Result<(), Error> {
        match self {
            Store::Redb { db, keys, root } => {
                let (keys, old) = (keys.clone(), *root);
                *root = blocking(db, move |db| {
                    db.commit(seq, &new_namespaces, &changes, &keys, old)
                })
                .await?;
                Ok(())
            }
            Store::Postgres(pg) => {
                let locked = locked.ok_or_else(|| {
                    Error::Internal("a commit to a shared database without its lock".into())
                })?;
                pg.commit_locked(locked, seq, &new_namespaces, &changes, &usage)
                    .await
            }
        }
    }

    /// Deletes every value of `namespace` and its key mapping, as commit `seq`; answers how many
    /// values there were, or nothing if another node committed `seq` first.
    pub(crate) async fn drop_namespace(
        &mut self,
        seq: u64,
        namespace: &str,
    ) -> Result<Option<usize>, Error> {
        match self {
            Store::Redb { db, keys, root } => {
                let (keys, old, ns) = (keys.clone(), *root, namespace.to_owned());
                let (dropped, new) =
                    blocking(db, move |db| db.drop_namespace(seq, &ns, &keys, old)).await?;
                *root = new;
                Ok(Some(dropped))
            }
            Store::Postgres(pg) => pg.drop_namespace(seq, namespace).await,
        }
    }

    /// The commit number the database holds now (after a commit whose outcome is unknown).
    pub(crate) async fn seq(&self) -> Result<u64, Error> {
        match self {
            Store::Redb { db, .. } => Ok(db.stored()?.seq),
            Store::Postgres(pg) => pg.seq().await,
        }
    }
}
