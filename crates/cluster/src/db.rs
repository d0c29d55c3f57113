//! The cluster's tables in the storage database (created by storage's migration 2):
//! `cloister_cluster`, one row (id, policy, key check value, who made it, when), and
//! `cloister_nodes`, one row per node (identity, address, version, key check value, heartbeat).
//! Times are the database's clock, so nodes compare heartbeats on one clock.

use std::time::Duration;

use deadpool_postgres::Pool;

use crate::Error;

/// The longest one database operation may take.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// RFC 3339 in UTC with milliseconds, by the database.
const TIME: &str = "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'";

/// The cluster's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) id: String,
    pub(crate) policy: String,
    pub(crate) key_check: Vec<u8>,
    pub(crate) created_by: String,
    pub(crate) created_at: String,
}

/// A node's row, as it registers.
#[derive(Debug, Clone)]
pub(crate) struct NodeRow<'a> {
    pub(crate) node: &'a str,
    pub(crate) identity: &'a enclave::Identity,
    pub(crate) address: &'a str,
    pub(crate) version: &'a str,
    pub(crate) key_check: &'a [u8; 32],
}

fn classify(e: &tokio_postgres::Error) -> Error {
    match e.code() {
        None => Error::Unavailable(e.to_string()),
        Some(code) if code.code().starts_with("08") || code.code().starts_with("57P") => {
            Error::Unavailable(e.to_string())
        }
        Some(_) => Error::Database(match e.as_db_error() {
            Some(db) => format!("PostgreSQL: {}", db.message()),
            None => e.to_string(),
        }),
    }
}

async fn bounded<T>(work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::time::timeout(OPERATION_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Unavailable(
                "the database did not answer in time".into(),
            ))
        })
}

/// A pool to the cluster's database.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    pool: Pool,
}

impl Db {
    /// Connects to `target`, with the schema brought up to date.
    pub(crate) async fn connect(target: &storage::postgres::Target) -> Result<Db, Error> {
        let pool = storage::postgres::migrated_pool(target)
            .await
            .map_err(Error::from_storage)?;
        Ok(Db { pool })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, Error> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => classify(&e),
            other => Error::Unavailable(other.to_string()),
        })
    }

    /// The cluster's row, if it was created.
    pub(crate) async fn cluster(&self) -> Result<Option<Record>, Error> {
        bounded(async {
            let client = self.client().await?;
            let st = client
                .prepare_cached(&format!(
                    "SELECT cluster_id, policy, key_check, created_by,
                            to_char(created_at AT TIME ZONE 'UTC', {TIME})
                     FROM cloister_cluster"
                ))
                .await
                .map_err(|e| classify(&e))?;
            let row = client.query_opt(&st, &[]).await.map_err(|e| classify(&e))?;
            Ok(row.map(|r| Record {
                id: r.get(0),
                policy: r.get(1),
                key_check: r.get(2),
                created_by: r.get(3),
                created_at: r.get(4),
            }))
        })
        .await
    }

    /// Records the cluster; false when one is recorded already (it is never replaced).
    pub(crate) async fn create(
        &self,
        id: &str,
        policy: &str,
        key_check: &[u8],
        created_by: &str,
    ) -> Result<bool, Error> {
        bounded(async {
            let client = self.client().await?;
            let inserted = client
                .execute(
                    "INSERT INTO cloister_cluster (cluster_id, policy, key_check, created_by)
                     VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
                    &[&id, &policy, &key_check, &created_by],
                )
                .await
                .map_err(|e| classify(&e))?;
            Ok(inserted == 1)
        })
        .await
    }

    /// Registers a node (or updates its row: a restart, a new address), heartbeat now.
    pub(crate) async fn register(&self, row: &NodeRow<'_>) -> Result<(), Error> {
        bounded(async {
            let client = self.client().await?;
            let platform = match row.identity.platform {
                enclave::PlatformKind::Simulation => "simulation",
                enclave::PlatformKind::Gramine => "gramine",
            };
            client
                .execute(
                    "INSERT INTO cloister_nodes (node_id, platform, measurement, signer,
                         product_id, security_version, address, version, key_check)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (node_id) DO UPDATE SET platform = EXCLUDED.platform,
                         measurement = EXCLUDED.measurement, signer = EXCLUDED.signer,
                         product_id = EXCLUDED.product_id,
                         security_version = EXCLUDED.security_version,
                         address = EXCLUDED.address, version = EXCLUDED.version,
                         key_check = EXCLUDED.key_check, last_heartbeat = now()",
                    &[
                        &row.node,
                        &platform,
                        &row.identity.measurement.as_slice(),
                        &row.identity.signer.as_slice(),
                        &i32::from(row.identity.product_id),
                        &i32::from(row.identity.security_version),
                        &row.address,
                        &row.version,
                        &row.key_check.as_slice(),
                    ],
                )
                .await
                .map_err(|e| classify(&e))?;
            Ok(())
        })
        .await
    }

    /// Moves a node's heartbeat to now; false when it has no row.
    pub(crate) async fn heartbeat(&self, node: &str) -> Result<bool, Error> {
        bounded(async {
            let client = self.client().await?;
            let st = client
                .prepare_cached(
                    "UPDATE cloister_nodes SET last_heartbeat = now() WHERE node_id = $1",
                )
                .await
                .map_err(|e| classify(&e))?;
            let moved = client
                .execute(&st, &[&node])
                .await
                .map_err(|e| classify(&e))?;
            Ok(moved == 1)
        })
        .await
    }

    /// Every registered node, by id.
    pub(crate) async fn members(&self) -> Result<Vec<wire::cluster::Member>, Error> {
        bounded(async {
            let client = self.client().await?;
            let st = client
                .prepare_cached(&format!(
                    "SELECT node_id, platform, measurement, signer, product_id, security_version,
                            address, version, key_check,
                            to_char(joined_at AT TIME ZONE 'UTC', {TIME}),
                            to_char(last_heartbeat AT TIME ZONE 'UTC', {TIME}),
                            greatest(0, (extract(epoch FROM now() - last_heartbeat) * 1000))::bigint
                     FROM cloister_nodes ORDER BY node_id"
                ))
                .await
                .map_err(|e| classify(&e))?;
            let rows = client.query(&st, &[]).await.map_err(|e| classify(&e))?;
            let number = |n: i32, what: &str| {
                u16::try_from(n).map_err(|_| {
                    Error::Database(format!("a node's {what} ({n}) is not a 16-bit number"))
                })
            };
            rows.into_iter()
                .map(|r| {
                    let measurement: Vec<u8> = r.get(2);
                    let signer: Vec<u8> = r.get(3);
                    let key_check: Vec<u8> = r.get(8);
                    let age: i64 = r.get(11);
                    Ok(wire::cluster::Member {
                        node: r.get(0),
                        platform: r.get(1),
                        measurement: hex::encode(measurement),
                        signer: hex::encode(signer),
                        product_id: number(r.get(4), "product id")?,
                        security_version: number(r.get(5), "security version")?,
                        address: r.get(6),
                        version: r.get(7),
                        key_check: hex::encode(key_check),
                        joined_at: r.get(9),
                        last_heartbeat: r.get(10),
                        heartbeat_age_ms: u64::try_from(age).unwrap_or(0),
                    })
                })
                .collect()
        })
        .await
    }

    /// Records `node` as removed (by `by`) and deletes its row, in one transaction; answers
    /// whether it had a row.
    pub(crate) async fn remove_node(&self, node: &str, by: &str) -> Result<bool, Error> {
        bounded(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(|e| classify(&e))?;
            tx.execute(
                "INSERT INTO cloister_removed (node_id, removed_by) VALUES ($1, $2)
                 ON CONFLICT (node_id) DO NOTHING",
                &[&node, &by],
            )
            .await
            .map_err(|e| classify(&e))?;
            let deleted = tx
                .execute("DELETE FROM cloister_nodes WHERE node_id = $1", &[&node])
                .await
                .map_err(|e| classify(&e))?;
            tx.commit().await.map_err(|e| classify(&e))?;
            Ok(deleted == 1)
        })
        .await
    }

    /// Whether `node` was removed from the cluster.
    pub(crate) async fn is_removed(&self, node: &str) -> Result<bool, Error> {
        bounded(async {
            let client = self.client().await?;
            let st = client
                .prepare_cached("SELECT 1 FROM cloister_removed WHERE node_id = $1")
                .await
                .map_err(|e| classify(&e))?;
            let row = client
                .query_opt(&st, &[&node])
                .await
                .map_err(|e| classify(&e))?;
            Ok(row.is_some())
        })
        .await
    }

    /// Key `id` of `owner` in `crypto_keys`: its id, revision and wrapped record.
    pub(crate) async fn key(
        &self,
        owner: &str,
        id: &str,
    ) -> Result<Option<(String, u64, Vec<u8>)>, Error> {
        bounded(async {
            let client = self.client().await?;
            let st = client
                .prepare_cached(
                    "SELECT id, revision, sealed FROM crypto_keys WHERE owner = $1 AND id = $2",
                )
                .await
                .map_err(|e| classify(&e))?;
            let row = client
                .query_opt(&st, &[&owner, &id])
                .await
                .map_err(|e| classify(&e))?;
            row.map(key_row).transpose()
        })
        .await
    }

    /// Every key of `owner` in `crypto_keys`.
    pub(crate) async fn keys(&self, owner: &str) -> Result<Vec<(String, u64, Vec<u8>)>, Error> {
        bounded(async {
            let client = self.client().await?;
            let st = client
                .prepare_cached(
                    "SELECT id, revision, sealed FROM crypto_keys WHERE owner = $1 ORDER BY id",
                )
                .await
                .map_err(|e| classify(&e))?;
            let rows = client
                .query(&st, &[&owner])
                .await
                .map_err(|e| classify(&e))?;
            rows.into_iter().map(key_row).collect()
        })
        .await
    }

    /// Writes key `id` of `owner` at `revision` if the table holds it at `revision - 1` (no
    /// row for revision 1); false, and nothing written, otherwise.
    pub(crate) async fn put_key(
        &self,
        owner: &str,
        id: &str,
        revision: u64,
        sealed: &[u8],
    ) -> Result<bool, Error> {
        let revision = i64::try_from(revision)
            .map_err(|_| Error::Internal(format!("revision {revision} is out of range")))?;
        bounded(async {
            let client = self.client().await?;
            let st = if revision == 1 {
                client
                    .prepare_cached(
                        "INSERT INTO crypto_keys (owner, id, revision, sealed)
                         VALUES ($1, $2, $3, $4) ON CONFLICT (owner, id) DO NOTHING",
                    )
                    .await
            } else {
                client
                    .prepare_cached(
                        "UPDATE crypto_keys SET revision = $3::bigint, sealed = $4
                         WHERE owner = $1 AND id = $2 AND revision = $3::bigint - 1",
                    )
                    .await
            }
            .map_err(|e| classify(&e))?;
            let written = client
                .execute(&st, &[&owner, &id, &revision, &sealed])
                .await
                .map_err(|e| classify(&e))?;
            Ok(written == 1)
        })
        .await
    }

    /// Deletes key `id` of `owner` if the table holds it at `revision`.
    pub(crate) async fn remove_key(
        &self,
        owner: &str,
        id: &str,
        revision: u64,
    ) -> Result<bool, Error> {
        let revision = i64::try_from(revision)
            .map_err(|_| Error::Internal(format!("revision {revision} is out of range")))?;
        bounded(async {
            let client = self.client().await?;
            let st = client
                .prepare_cached(
                    "DELETE FROM crypto_keys WHERE owner = $1 AND id = $2 AND revision = $3",
                )
                .await
                .map_err(|e| classify(&e))?;
            let removed = client
                .execute(&st, &[&owner, &id, &revision])
                .await
                .map_err(|e| classify(&e))?;
            Ok(removed == 1)
        })
        .await
    }
}

fn key_row(row: tokio_postgres::Row) -> Result<(String, u64, Vec<u8>), Error> {
    let revision: i64 = row.get(1);
    let revision = u64::try_from(revision)
        .map_err(|_| Error::Database(format!("a key's revision ({revision}) is negative")))?;
    Ok((row.get(0), revision, row.get(2)))
}
