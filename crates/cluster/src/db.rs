//! The cluster's tables in the storage database (created by storage's migrations 2 to 6):
//! `cloister_cluster`, one row (id, policy, key check value and generation, who made it, when);
//! `cloister_nodes`, one row per node (identity, address, version, key check value, member key,
//! heartbeat); `cloister_removed`; `cloister_grants`, a rotation's new key sealed to each member;
//! and `crypto_keys`, the crypto service's keys wrapped by the cluster key.
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
    /// The cluster key's generation: 1, and one more at each rotation.
    pub(crate) generation: u64,
}

/// A node's row, as it registers.
#[derive(Debug, Clone)]
pub(crate) struct NodeRow<'a> {
    pub(crate) node: &'a str,
    pub(crate) identity: &'a enclave::Identity,
    pub(crate) address: &'a str,
    pub(crate) version: &'a str,
    pub(crate) key_check: &'a [u8; 32],
    /// The generation of the key it holds.
    pub(crate) generation: u64,
    /// Its static X25519 public key, to which a rotation seals the new key.
    pub(crate) member_key: &'a [u8; 32],
    /// That key's tag under the cluster key (`rotation::member_tag`).
    pub(crate) member_tag: &'a [u8; 32],
}

/// A key's row in `crypto_keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyRow {
    pub(crate) id: String,
    pub(crate) revision: u64,
    /// The generation of the cluster key that wraps it.
    pub(crate) generation: u64,
    pub(crate) sealed: Vec<u8>,
}

/// What a conditional write of a key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Put {
    Written,
    /// The key is not at the revision the write replaces.
    Conflict,
    /// The cluster key is at another generation than the write's (this one, now).
    Stale(u64),
}

/// A member as a rotation finds it: its static key and tag, if it registered them.
#[derive(Debug, Clone)]
pub(crate) struct MemberKey {
    pub(crate) node: String,
    pub(crate) generation: u64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) tag: Option<Vec<u8>>,
}

/// What a rotation writes: the new key's check value and each member's grant.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) key_check: [u8; 32],
    pub(crate) grants: Vec<(String, Vec<u8>)>,
}

fn generation_of(n: i64) -> Result<u64, Error> {
    u64::try_from(n).map_err(|_| Error::Database(format!("a generation ({n}) is negative")))
}

fn sql_generation(generation: u64) -> Result<i64, Error> {
    i64::try_from(generation)
        .map_err(|_| Error::Internal(format!("generation {generation} is out of range")))
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
                            to_char(created_at AT TIME ZONE 'UTC', {TIME}), generation
                     FROM cloister_cluster"
                ))
                .await
                .map_err(|e| classify(&e))?;
            let row = client.query_opt(&st, &[]).await.map_err(|e| classify(&e))?;
            row.map(|r| {
                Ok(Record {
                    id: r.get(0),
                    policy: r.get(1),
                    key_check: r.get(2),
                    created_by: r.get(3),
                    created_at: r.get(4),
                    generation: generation_of(r.get(5))?,
                })
            })
            .transpose()
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
                         product_id, security_version, address, version, key_check, generation,
                         member_key, member_tag)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                     ON CONFLICT (node_id) DO UPDATE SET platform = EXCLUDED.platform,
                         measurement = EXCLUDED.measurement, signer = EXCLUDED.signer,
                         product_id = EXCLUDED.product_id,
                         security_version = EXCLUDED.security_version,
                         address = EXCLUDED.address, version = EXCLUDED.version,
                         key_check = EXCLUDED.key_check, generation = EXCLUDED.generation,
                         member_key = EXCLUDED.member_key, member_tag = EXCLUDED.member_tag,
                         last_heartbeat = now()",
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
                        &sql_generation(row.generation)?,
                        &row.member_key.as_slice(),
                        &row.member_tag.as_slice(),
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
                            greatest(0, (extract(epoch FROM now() - last_heartbeat) * 1000))::bigint,
                            generation
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
                        generation: generation_of(r.get(12))?,
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
    pub(crate) async fn key(&self, owner: &str, id: &str) -> Result<Option<KeyRow>, Error> {
        bounded(async {
            let client = self.client().await?;
            let st = client
                .prepare_cached(
                    "SELECT id, revision, generation, sealed FROM crypto_keys
                     WHERE owner = $1 AND id = $2",
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
    pub(crate) async fn keys(&self, owner: &str) -> Result<Vec<KeyRow>, Error> {
        bounded(async {
            let client = self.client().await?;
            let st = client
                .prepare_cached(
                    "SELECT id, revision, generation, sealed FROM crypto_keys WHERE owner = $1
                     ORDER BY id",
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

    /// Writes key `id` of `owner` at `revision`, wrapped by the key of `generation`, if the table
    /// holds it at `revision - 1` (no row for revision 1) and the cluster key is at `generation`.
    /// The cluster's row is share-locked by the write, so a rotation's change of generation waits
    /// for it, and a write after that change is refused: no key is written under a replaced
    /// cluster key once a rotation has begun re-wrapping.
    pub(crate) async fn put_key(
        &self,
        owner: &str,
        id: &str,
        revision: u64,
        generation: u64,
        sealed: &[u8],
    ) -> Result<Put, Error> {
        let revision = i64::try_from(revision)
            .map_err(|_| Error::Internal(format!("revision {revision} is out of range")))?;
        let generation = sql_generation(generation)?;
        bounded(async {
            let client = self.client().await?;
            let st = if revision == 1 {
                client
                    .prepare_cached(
                        "INSERT INTO crypto_keys (owner, id, revision, sealed, generation)
                         SELECT $1, $2, $3, $4, $5 FROM cloister_cluster
                         WHERE generation = $5 FOR SHARE
                         ON CONFLICT (owner, id) DO NOTHING",
                    )
                    .await
            } else {
                client
                    .prepare_cached(
                        "UPDATE crypto_keys SET revision = $3::bigint, sealed = $4,
                             generation = $5
                         WHERE owner = $1 AND id = $2 AND revision = $3::bigint - 1
                           AND EXISTS (SELECT 1 FROM cloister_cluster WHERE generation = $5
                                       FOR SHARE)",
                    )
                    .await
            }
            .map_err(|e| classify(&e))?;
            let written = client
                .execute(&st, &[&owner, &id, &revision, &sealed, &generation])
                .await
                .map_err(|e| classify(&e))?;
            if written == 1 {
                return Ok(Put::Written);
            }
            let now: Option<i64> = client
                .query_opt("SELECT generation FROM cloister_cluster", &[])
                .await
                .map_err(|e| classify(&e))?
                .map(|r| r.get(0));
            match now {
                Some(now) if now != generation => Ok(Put::Stale(generation_of(now)?)),
                _ => Ok(Put::Conflict),
            }
        })
        .await
    }

    /// The grant of `generation` to `node`, if a rotation wrote one.
    pub(crate) async fn grant(
        &self,
        generation: u64,
        node: &str,
    ) -> Result<Option<Vec<u8>>, Error> {
        let generation = sql_generation(generation)?;
        bounded(async {
            let client = self.client().await?;
            let row = client
                .query_opt(
                    "SELECT sealed FROM cloister_grants WHERE generation = $1 AND node_id = $2",
                    &[&generation, &node],
                )
                .await
                .map_err(|e| classify(&e))?;
            Ok(row.map(|r| r.get(0)))
        })
        .await
    }

    /// A rotation's one transaction: with the cluster's row locked at generation `from`, `plan`
    /// is made from the members not removed; its grants are written, older grants deleted, and
    /// the cluster's row moved to `from + 1` with the new key's check value. Refused when the
    /// cluster is not at `from` (another member rotated first).
    pub(crate) async fn rotate(
        &self,
        from: u64,
        plan: impl FnOnce(&[MemberKey]) -> Result<Plan, Error>,
    ) -> Result<Plan, Error> {
        let from_sql = sql_generation(from)?;
        let to_sql = sql_generation(from + 1)?;
        bounded(async {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(|e| classify(&e))?;
            let now: i64 = tx
                .query_opt("SELECT generation FROM cloister_cluster FOR UPDATE", &[])
                .await
                .map_err(|e| classify(&e))?
                .ok_or_else(|| Error::Refused("the database records no cluster".into()))?
                .get(0);
            if now != from_sql {
                return Err(Error::Refused(format!(
                    "the cluster key is at generation {now}, and this node holds generation \
                     {from}: another member rotated it; this node takes the new key within a \
                     heartbeat, ask again then"
                )));
            }
            let rows = tx
                .query(
                    "SELECT node_id, generation, member_key, member_tag FROM cloister_nodes
                     WHERE node_id NOT IN (SELECT node_id FROM cloister_removed)
                     ORDER BY node_id",
                    &[],
                )
                .await
                .map_err(|e| classify(&e))?;
            let members = rows
                .into_iter()
                .map(|r| {
                    Ok(MemberKey {
                        node: r.get(0),
                        generation: generation_of(r.get(1))?,
                        key: r.get(2),
                        tag: r.get(3),
                    })
                })
                .collect::<Result<Vec<_>, Error>>()?;
            let plan = plan(&members)?;
            tx.execute(
                "DELETE FROM cloister_grants WHERE generation < $1",
                &[&to_sql],
            )
            .await
            .map_err(|e| classify(&e))?;
            for (node, sealed) in &plan.grants {
                tx.execute(
                    "INSERT INTO cloister_grants (generation, node_id, sealed) VALUES ($1, $2, $3)
                     ON CONFLICT (generation, node_id) DO UPDATE SET sealed = EXCLUDED.sealed",
                    &[&to_sql, node, sealed],
                )
                .await
                .map_err(|e| classify(&e))?;
            }
            tx.execute(
                "UPDATE cloister_cluster SET generation = $1, key_check = $2",
                &[&to_sql, &plan.key_check.as_slice()],
            )
            .await
            .map_err(|e| classify(&e))?;
            tx.commit().await.map_err(|e| classify(&e))?;
            Ok(plan)
        })
        .await
    }

    /// Up to `limit` keys wrapped under a generation below `generation`, with their owners, in
    /// order of owner and id, after `after`.
    pub(crate) async fn keys_below(
        &self,
        generation: u64,
        after: &(String, String),
        limit: i64,
    ) -> Result<Vec<(String, KeyRow)>, Error> {
        let generation = sql_generation(generation)?;
        bounded(async {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT owner, id, revision, generation, sealed FROM crypto_keys
                     WHERE generation < $1 AND (owner, id) > ($2, $3)
                     ORDER BY owner, id LIMIT $4",
                    &[&generation, &after.0, &after.1, &limit],
                )
                .await
                .map_err(|e| classify(&e))?;
            rows.into_iter()
                .map(|r| {
                    let owner: String = r.get(0);
                    let revision: i64 = r.get(2);
                    Ok((
                        owner,
                        KeyRow {
                            id: r.get(1),
                            revision: u64::try_from(revision).map_err(|_| {
                                Error::Database(format!(
                                    "a key's revision ({revision}) is negative"
                                ))
                            })?,
                            generation: generation_of(r.get(3))?,
                            sealed: r.get(4),
                        },
                    ))
                })
                .collect()
        })
        .await
    }

    /// Re-wraps one key: its row takes `sealed` and `generation` if it is still at `revision`
    /// and generation `from`; false if a write or a delete came first.
    pub(crate) async fn rewrap(
        &self,
        owner: &str,
        row: &KeyRow,
        generation: u64,
        sealed: &[u8],
    ) -> Result<bool, Error> {
        let revision = i64::try_from(row.revision)
            .map_err(|_| Error::Internal(format!("revision {} is out of range", row.revision)))?;
        let (from, to) = (sql_generation(row.generation)?, sql_generation(generation)?);
        bounded(async {
            let client = self.client().await?;
            let moved = client
                .execute(
                    "UPDATE crypto_keys SET generation = $5, sealed = $6
                     WHERE owner = $1 AND id = $2 AND revision = $3 AND generation = $4",
                    &[&owner, &row.id, &revision, &from, &to, &sealed],
                )
                .await
                .map_err(|e| classify(&e))?;
            Ok(moved == 1)
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

fn key_row(row: tokio_postgres::Row) -> Result<KeyRow, Error> {
    let revision: i64 = row.get(1);
    let revision = u64::try_from(revision)
        .map_err(|_| Error::Database(format!("a key's revision ({revision}) is negative")))?;
    Ok(KeyRow {
        id: row.get(0),
        revision,
        generation: generation_of(row.get(2))?,
        sealed: row.get(3),
    })
}
