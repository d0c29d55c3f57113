//! The backend seam: the one place the service meets its database. Two backends, known and
//! closed, so an enum: redb in the data directory (one node, the default) and PostgreSQL
//! (`postgres.rs`). Both store the same records, so everything above this file (encryption, the
//! associated data, versions, limits, quotas, group commit) is the same code on both.
//!
//! What differs is what each can prove at start. redb keeps a sealed digest of its whole state
//! (`digest.rs`) and the freshness counter follows its commit number; PostgreSQL keeps the commit
//! number, which the counter follows, and each record's AES-GCM tag (`fresh.rs` and
//! docs/security.md say what that does and does not detect).

use std::sync::{Arc, Mutex};

use enclave::{CounterLog, Platform};

use crate::Error;
use crate::db::{Change, Db, DbError, Listed, Usage};
use crate::digest::{Root, StateKey};
use crate::postgres::{Locked, Pg};
use crate::replay::{self, LOG_SLOTS};

/// A write's failure, and whether it leaves the incarnation unable to go on: `Yes` when the
/// database and the freshness counter may disagree, which only a fresh start (and its freshness
/// check) sorts out.
#[derive(Debug)]
pub(crate) enum Fatal {
    No(Error),
    Yes(String),
}

/// The freshness counter of a redb store, whose advances carry the commits (`replay.rs`), and the
/// last commit the database holds durably.
#[derive(Debug)]
pub(crate) struct Logged {
    log: CounterLog,
    durable: u64,
    platform: Arc<dyn Platform>,
}

impl Logged {
    /// `log` at the database's commit `durable`, which is on disk.
    pub(crate) fn new(log: CounterLog, durable: u64, platform: Arc<dyn Platform>) -> Logged {
        Logged {
            log,
            durable,
            platform,
        }
    }

    /// Commits `seq` (what it changes is `entry`) through `write`, told whether to sync. A commit
    /// that fits a slot goes to the counter first, synced, and to the database without a sync
    /// unless the counter's slots would otherwise outrun what the database holds durably; a
    /// larger one goes to the database first, synced, and the counter follows carrying nothing.
    fn commit<T>(
        &mut self,
        seq: u64,
        entry: &[u8],
        write: impl FnOnce(bool) -> Result<T, DbError>,
    ) -> Result<T, Fatal> {
        let counter = |e: enclave::SealError| {
            Fatal::Yes(format!("advancing the freshness counter to {seq}: {e}"))
        };
        if entry.len() <= CounterLog::CAPACITY {
            self.log
                .advance(&*self.platform, seq, entry)
                .map_err(counter)?;
            // The slot the next commit takes holds commit `seq + 1 - LOG_SLOTS`: that one must be
            // in the database durably by then.
            let durable = seq.saturating_sub(self.durable) >= LOG_SLOTS;
            let written = write(durable).map_err(|e| {
                Fatal::Yes(format!(
                    "commit {seq} is in the freshness counter, but the database did not take it \
                     ({e}); the next start applies it from the counter"
                ))
            })?;
            if durable {
                self.durable = seq;
            }
            Ok(written)
        } else {
            let written = write(true).map_err(|e| Fatal::No(Error::from(e)))?;
            self.durable = seq;
            self.log
                .advance(&*self.platform, seq, &[])
                .map_err(counter)?;
            Ok(written)
        }
    }
}

/// Commits `seq` (what it changes is `entry`) through `write` with the counter in `log`
/// ([`Logged::commit`]), on the blocking pool: it syncs.
async fn logged<T: Send + 'static>(
    log: &Arc<Mutex<Logged>>,
    seq: u64,
    entry: Vec<u8>,
    write: impl FnOnce(bool) -> Result<T, DbError> + Send + 'static,
) -> Result<T, Fatal> {
    let log = log.clone();
    tokio::task::spawn_blocking(move || {
        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
        log.commit(seq, &entry, write)
    })
    .await
    .unwrap_or_else(|e| Err(Fatal::Yes(format!("the database task: {e}"))))
}

/// One incarnation's database.
#[derive(Debug)]
pub(crate) enum Store {
    Redb {
        db: Arc<Db>,
        /// The state key, and the root of the committed state (`digest.rs`).
        keys: Arc<StateKey>,
        root: Root,
        /// The freshness counter, which this store advances with each commit.
        log: Arc<Mutex<Logged>>,
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

    /// Whether this store advances the freshness counter itself, with each commit (redb); on
    /// PostgreSQL the service advances it after the commit.
    pub(crate) fn counts_itself(&self) -> bool {
        matches!(self, Store::Redb { .. })
    }

    /// Makes every commit so far durable: when the service stops, so the next start finds them in
    /// the database rather than in the counter.
    pub(crate) async fn close(&self) -> Result<(), Error> {
        match self {
            Store::Redb { db, .. } => blocking(db, |db| db.sync()).await,
            Store::Postgres(_) => Ok(()),
        }
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
    /// database is committed to only under the lock). Deletes of absent keys are no-ops. On redb
    /// the freshness counter advances with the commit ([`Store::counts_itself`]).
    pub(crate) async fn commit(
        &mut self,
        seq: u64,
        new_namespaces: Vec<(String, String)>,
        changes: Vec<Change>,
        usage: Vec<(String, Usage)>,
        locked: Option<Locked>,
    ) -> Result<(), Fatal> {
        match self {
            Store::Redb {
                db,
                keys,
                root,
                log,
            } => {
                let (db, keys, old) = (db.clone(), keys.clone(), *root);
                let entry = replay::encode_commit(&new_namespaces, &changes);
                *root = logged(log, seq, entry, move |durable| {
                    db.commit(seq, &new_namespaces, &changes, &keys, old, durable)
                })
                .await?;
                Ok(())
            }
            Store::Postgres(pg) => {
                let locked = locked.ok_or_else(|| {
                    Fatal::No(Error::Internal(
                        "a commit to a shared database without its lock".into(),
                    ))
                })?;
                pg.commit_locked(locked, seq, &new_namespaces, &changes, &usage)
                    .await
                    .map_err(Fatal::No)
            }
        }
    }

    /// Deletes every value of `namespace` and its key mapping, as commit `seq`; answers how many
    /// values there were, or nothing if another node committed `seq` first.
    pub(crate) async fn drop_namespace(
        &mut self,
        seq: u64,
        namespace: &str,
    ) -> Result<Option<usize>, Fatal> {
        match self {
            Store::Redb {
                db,
                keys,
                root,
                log,
            } => {
                let (db, keys, old, ns) = (db.clone(), keys.clone(), *root, namespace.to_owned());
                let entry = replay::encode_drop(namespace);
                let (dropped, new) = logged(log, seq, entry, move |durable| {
                    db.drop_namespace(seq, &ns, &keys, old, durable)
                })
                .await?;
                *root = new;
                Ok(Some(dropped))
            }
            Store::Postgres(pg) => pg.drop_namespace(seq, namespace).await.map_err(Fatal::No),
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
