//! The cluster-wide commit number's lock: a commit on a shared database locks `storage_commit`'s
//! row before its group is prepared, so the commits of all nodes are made one at a time.

use super::{Pg, as_i64, as_u64, bounded, classify};
use crate::Error;
use crate::db::{Change, Usage};

/// The cluster's commit number, locked for this node's next commit: a transaction open on one
/// connection, holding `storage_commit`'s row, so that other nodes' commits wait for this one
/// instead of being overtaken by it. Dropped without [`Pg::commit_locked`] (a failed prepare, an
/// error), its connection is closed, and the database rolls the transaction back: it never goes
/// back to the pool mid-transaction.
pub(crate) struct Locked {
    client: Option<deadpool_postgres::Object>,
    /// The number of the last commit, as the lock found it.
    pub(crate) seq: u64,
}

impl std::fmt::Debug for Locked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locked").field("seq", &self.seq).finish()
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}

impl Pg {
    /// Locks the commit number for this node's next commit (waiting while another node holds it).
    pub(crate) async fn lock(&self) -> Result<Locked, Error> {
        let mut locked = Locked {
            client: None,
            seq: 0,
        };
        let seq = self
            .bounded(async {
                let client = locked.client.insert(self.client().await?);
                client
                    .batch_execute("BEGIN")
                    .await
                    .map_err(|e| classify(&e))?;
                let st = client
                    .prepare_cached("SELECT seq FROM storage_commit FOR UPDATE")
                    .await
                    .map_err(|e| classify(&e))?;
                let row = client.query_one(&st, &[]).await.map_err(|e| classify(&e))?;
                as_u64(row.get(0))
            })
            .await?;
        locked.seq = seq;
        Ok(locked)
    }

    /// Releases the lock without a commit (nothing in the group was to be written).
    pub(crate) async fn release(&self, mut locked: Locked) {
        let Some(client) = locked.client.as_ref() else {
            return;
        };
        if bounded(async {
            client
                .batch_execute("ROLLBACK")
                .await
                .map_err(|e| classify(&e))
        })
        .await
        .is_ok()
        {
            // Rolled back: the connection goes back to the pool (else `Drop` closes it).
            locked.client = None;
        }
    }

    /// Commits `changes` and `new_namespaces` as commit `seq` (the locked number plus one) in the
    /// locked transaction, and releases the lock.
    pub(crate) async fn commit_locked(
        &self,
        mut locked: Locked,
        seq: u64,
        new_namespaces: &[(String, String)],
        changes: &[Change],
        usage: &[(String, Usage)],
    ) -> Result<(), Error> {
        if Some(seq) != locked.seq.checked_add(1) {
            return Err(Error::Internal(format!(
                "commit {seq} under a lock taken at {}",
                locked.seq
            )));
        }
        self.bounded(async {
            let client = locked
                .client
                .as_mut()
                .ok_or_else(|| Error::Internal("a lock without its connection".into()))?;
            let advance = client
                .prepare_cached("UPDATE storage_commit SET seq = $1")
                .await
                .map_err(|e| classify(&e))?;
            client
                .execute(&advance, &[&as_i64(seq)?])
                .await
                .map_err(|e| classify(&e))?;
            write_changes(client, new_namespaces, changes, usage).await?;
            client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| classify(&e))?;
            Ok(())
        })
        .await?;
        // Committed: the connection goes back to the pool.
        locked.client = None;
        Ok(())
    }
}

/// Writes `new_namespaces`, `changes` and the namespaces' `usage` after them on `client`,
/// inside the caller's transaction.
async fn write_changes(
    client: &deadpool_postgres::Object,
    new_namespaces: &[(String, String)],
    changes: &[Change],
    usage: &[(String, Usage)],
) -> Result<(), Error> {
    let set_usage = client
        .prepare_cached(
            "INSERT INTO storage_usage (namespace, keys, bytes) VALUES ($1, $2, $3)
             ON CONFLICT (namespace) DO UPDATE SET keys = EXCLUDED.keys, bytes = EXCLUDED.bytes",
        )
        .await
        .map_err(|e| classify(&e))?;
    let upsert_namespace = client
        .prepare_cached(
            "INSERT INTO storage_namespaces (namespace, key_id) VALUES ($1, $2)
             ON CONFLICT (namespace) DO UPDATE SET key_id = EXCLUDED.key_id",
        )
        .await
        .map_err(|e| classify(&e))?;
    let put = client
        .prepare_cached(
            "INSERT INTO storage_values (namespace, key, record) VALUES ($1, $2, $3)
             ON CONFLICT (namespace, key) DO UPDATE SET record = EXCLUDED.record",
        )
        .await
        .map_err(|e| classify(&e))?;
    let delete = client
        .prepare_cached("DELETE FROM storage_values WHERE namespace = $1 AND key = $2")
        .await
        .map_err(|e| classify(&e))?;
    for (namespace, key_id) in new_namespaces {
        client
            .execute(&upsert_namespace, &[&namespace.as_bytes(), key_id])
            .await
            .map_err(|e| classify(&e))?;
    }
    for change in changes {
        let done = match change {
            Change::Put {
                namespace,
                key,
                record,
            } => {
                client
                    .execute(&put, &[&namespace.as_bytes(), &key.as_bytes(), record])
                    .await
            }
            Change::Delete { namespace, key } => {
                client
                    .execute(&delete, &[&namespace.as_bytes(), &key.as_bytes()])
                    .await
            }
        };
        done.map_err(|e| classify(&e))?;
    }
    for (namespace, u) in usage {
        client
            .execute(
                &set_usage,
                &[&namespace.as_bytes(), &as_i64(u.keys)?, &as_i64(u.bytes)?],
            )
            .await
            .map_err(|e| classify(&e))?;
    }
    Ok(())
}
