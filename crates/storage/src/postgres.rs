//! The PostgreSQL layer: the same records as the redb path, in three tables, through a small pool
//! of connections and prepared statements.
//!
//! - `storage_values`: `(namespace, key)` → record, the bytes `db.rs` stores (format | version |
//!   AES-GCM ciphertext from the crypto service). Namespace and key are `bytea` so they order as
//!   the redb path orders them (bytewise) and hold any string; they are plaintext, as in redb:
//!   listing by prefix needs them in order.
//! - `storage_namespaces`: namespace → the id of its key in the crypto service.
//! - `storage_commit`: one row, the number of the last commit, cluster-wide: every commit moves it
//!   from `n` to `n + 1` in the same transaction as its data. A group of writes locks the row
//!   before it is prepared (`lock.rs`), so the number orders every commit of every node, and a
//!   value's version (bound into its ciphertext) only grows. Dropping a namespace does not lock:
//!   if the number moved past `n` meanwhile it writes nothing ([`Committed::Overtaken`]), and the
//!   service tries again at the new number.
//!
//! - `cloister_cluster` and `cloister_nodes` (migration 2): the cluster's one row (its id, its
//!   admission policy, a check value of its key, never the key) and its members with their
//!   heartbeats; the `cluster` crate reads and writes them (docs/cluster.md).
//! - `crypto_keys` (migration 3): the crypto service's keys once the node is a member of a
//!   cluster, each record wrapped by the cluster key, with the revision its writes move
//!   (`cluster/src/vault.rs`).
//! - `storage_usage` (migration 5): each namespace's number of values and their bytes, as its quota
//!   counts them, written in the transaction of every commit that changes them, so a quota check
//!   reads one row instead of counting the namespace.
//! - `cloister_removed` (migration 4): the nodes removed from the cluster, which may not join
//!   or register again.
//! - migration 6, the cluster key's rotation (`cluster/src/rotation.rs`): the key's
//!   `generation` in `cloister_cluster`, each key's in `crypto_keys`, each member's static key
//!   and its tag in `cloister_nodes`, and `cloister_grants`, the new key sealed to each member.
//!
//! `cloister_schema` records which migrations ran; [`Pg::connect`] applies the missing ones at
//! start, idempotently, under a lock.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use crate::Error;
use crate::db::{DbError, Listed, Record, Usage};

#[path = "lock.rs"]
mod lock;
pub(crate) use lock::Locked;

/// The longest one database operation may take, if the request's own deadline is not sooner.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections at most: the service has one writer, and reads are served one at a time.
const POOL_SIZE: usize = 4;

/// The migrations, in order; `cloister_schema` holds how many ran. Never edit one that shipped:
/// add the next.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE storage_commit (
        id boolean PRIMARY KEY DEFAULT true CHECK (id),
        seq bigint NOT NULL CHECK (seq >= 0)
    );
    INSERT INTO storage_commit (id, seq) VALUES (true, 0);
    CREATE TABLE storage_namespaces (
        namespace bytea PRIMARY KEY,
        key_id text NOT NULL
    );
    CREATE TABLE storage_values (
        namespace bytea NOT NULL,
        key bytea NOT NULL,
        record bytea NOT NULL,
        PRIMARY KEY (namespace, key)
    );
",
    "
    CREATE TABLE cloister_cluster (
        id boolean PRIMARY KEY DEFAULT true CHECK (id),
        cluster_id text NOT NULL,
        policy text NOT NULL,
        key_check bytea NOT NULL,
        created_by text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE cloister_nodes (
        node_id text PRIMARY KEY,
        platform text NOT NULL,
        measurement bytea NOT NULL,
        signer bytea NOT NULL,
        product_id integer NOT NULL,
        security_version integer NOT NULL,
        address text NOT NULL,
        version text NOT NULL,
        key_check bytea NOT NULL,
        joined_at timestamptz NOT NULL DEFAULT now(),
        last_heartbeat timestamptz NOT NULL DEFAULT now()
    );
",
    "
    CREATE TABLE crypto_keys (
        owner text NOT NULL,
        id text NOT NULL,
        revision bigint NOT NULL CHECK (revision > 0),
        sealed bytea NOT NULL,
        PRIMARY KEY (owner, id)
    );
",
    "
    CREATE TABLE cloister_removed (
        node_id text PRIMARY KEY,
        removed_by text NOT NULL,
        removed_at timestamptz NOT NULL DEFAULT now()
    );
",
    "
    CREATE TABLE storage_usage (
        namespace bytea PRIMARY KEY,
        keys bigint NOT NULL CHECK (keys >= 0),
        bytes bigint NOT NULL CHECK (bytes >= 0)
    );
    INSERT INTO storage_usage (namespace, keys, bytes)
        SELECT namespace, count(*), sum(length(key) + length(record))
        FROM storage_values GROUP BY namespace;
",
    "
    ALTER TABLE cloister_cluster
        ADD COLUMN generation bigint NOT NULL DEFAULT 1 CHECK (generation > 0);
    ALTER TABLE cloister_nodes
        ADD COLUMN generation bigint NOT NULL DEFAULT 0,
        ADD COLUMN member_key bytea,
        ADD COLUMN member_tag bytea;
    ALTER TABLE crypto_keys
        ADD COLUMN generation bigint NOT NULL DEFAULT 1 CHECK (generation > 0);
    CREATE TABLE cloister_grants (
        generation bigint NOT NULL,
        node_id text NOT NULL,
        sealed bytea NOT NULL,
        PRIMARY KEY (generation, node_id)
    );
",
];

/// A PostgreSQL database to store in: a parsed connection URL (`postgres://user@host:port/db`, or
/// the `key=value` form). Its `Debug` does not show the password.
#[derive(Clone)]
pub struct Target(tokio_postgres::Config);

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("hosts", &self.0.get_hosts())
            .field("ports", &self.0.get_ports())
            .field("dbname", &self.0.get_dbname())
            .field("user", &self.0.get_user())
            .finish_non_exhaustive()
    }
}

/// A database URL that cannot be used; the message says why, without the URL (it may hold a
/// password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the database URL {0}")]
pub struct BadTarget(String);

impl Target {
    /// Parses a connection URL. TLS to the database is not supported yet: a URL that requires it
    /// (`sslmode=require`) is refused here rather than failing at every connection.
    pub fn parse(url: &str) -> Result<Target, BadTarget> {
        let url = url.trim();
        if url.is_empty() {
            return Err(BadTarget("is empty".into()));
        }
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| BadTarget(format!("is not a PostgreSQL URL: {e}")))?;
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(BadTarget(
                "asks for sslmode=require, and this build connects without TLS: reach the \
                 database over a private network or a unix socket, and drop sslmode"
                    .into(),
            ));
        }
        if config.get_hosts().is_empty() {
            return Err(BadTarget("names no host".into()));
        }
        if config.get_dbname().is_none() {
            return Err(BadTarget("names no database".into()));
        }
        Ok(Target(config))
    }
}

/// Whether a failure is the database being out of reach (a retry may succeed) or something else.
fn classify(e: &tokio_postgres::Error) -> Error {
    use tokio_postgres::error::SqlState;
    match e.code() {
        // No server-side error: the connection closed, could not be made, or timed out.
        None => Error::Unavailable(e.to_string()),
        Some(code)
            if code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::TOO_MANY_CONNECTIONS =>
        {
            Error::Unavailable(e.to_string())
        }
        Some(_) => Error::Database(DbError(match e.as_db_error() {
            Some(db) => format!("PostgreSQL: {}", db.message()),
            None => e.to_string(),
        })),
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> Error {
    match e {
        deadpool_postgres::PoolError::Backend(e) => classify(&e),
        other => Error::Unavailable(other.to_string()),
    }
}

/// Runs `work` within the operation timeout (or the request's deadline, if sooner): a database
/// that does not answer is unavailable, never a hang.
async fn bounded<T>(work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    let limit = tokio::time::Instant::now() + OPERATION_TIMEOUT;
    let until =
        runtime::deadline::earliest(Some(limit), runtime::deadline::current()).unwrap_or(limit);
    tokio::time::timeout_at(until, work)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Unavailable(
                "the database did not answer in time".into(),
            ))
        })
}

fn as_i64(n: u64) -> Result<i64, Error> {
    i64::try_from(n)
        .map_err(|_| Error::Internal(format!("commit number {n} is past PostgreSQL's bigint")))
}

fn as_u64(n: i64) -> Result<u64, Error> {
    u64::try_from(n).map_err(|_| {
        Error::Database(DbError(format!(
            "a negative number ({n}) where a count or commit number belongs"
        )))
    })
}

/// The smallest byte string above every string that starts with `prefix` (UTF-8 never holds
/// 0xFF, so the last byte can always be raised); `None` for the empty prefix.
fn prefix_end(prefix: &str) -> Option<Vec<u8>> {
    let mut end = prefix.as_bytes().to_vec();
    let last = end.pop()?;
    end.push(last + 1);
    Some(end)
}

/// A pool of connections to `target`, with the schema brought up to date: for the cluster's own
/// tables (`cloister_cluster`, `cloister_nodes`), which share this database and its migrations.
pub async fn migrated_pool(target: &Target) -> Result<Pool, Error> {
    Ok(Pg::connect(target).await?.pool)
}

/// The PostgreSQL store: a pool, connected and migrated.
pub(crate) struct Pg {
    pool: Pool,
    /// Why the last operation found the database out of reach; `None` once one succeeds.
    outage: std::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg")
            .field("pool", &self.pool.status())
            .finish()
    }
}

impl Pg {
    /// A pool to `target`, with the schema brought up to date. Connections are made when needed
    /// and made again after the database comes back.
    pub(crate) async fn connect(target: &Target) -> Result<Pg, Error> {
        let mut config = target.0.clone();
        config.connect_timeout(OPERATION_TIMEOUT);
        config.application_name("cloister");
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(OPERATION_TIMEOUT))
            .create_timeout(Some(OPERATION_TIMEOUT))
            .recycle_timeout(Some(OPERATION_TIMEOUT))
            .build()
            .map_err(|e| Error::Internal(format!("the connection pool: {e}")))?;
        let pg = Pg {
            pool,
            outage: std::sync::Mutex::new(None),
        };
        bounded(pg.migrate()).await?;
        Ok(pg)
    }

    /// As [`bounded`], remembering whether the database answered (for the service's health).
    async fn bounded<T>(&self, work: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        let result = bounded(work).await;
        let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Err(Error::Unavailable(why)) => *outage = Some(why.clone()),
            _ => *outage = None,
        }
        result
    }

    /// Why the database is out of reach, if the last operation found it so.
    pub(crate) fn outage(&self) -> Option<String> {
        self.outage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, Error> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Applies the migrations this build knows and the database has not seen, in one
    /// transaction under a lock (two nodes starting at once migrate once).
    async fn migrate(&self) -> Result<(), Error> {
        let mut client = self.client().await?;
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS cloister_schema (
                     version integer PRIMARY KEY,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 )",
            )
            .await
            .map_err(|e| classify(&e))?;
        let tx = client.transaction().await.map_err(|e| classify(&e))?;
        tx.batch_execute("LOCK TABLE cloister_schema IN EXCLUSIVE MODE")
            .await
            .map_err(|e| classify(&e))?;
        let row = tx
            .query_one("SELECT coalesce(max(version), 0) FROM cloister_schema", &[])
            .await
            .map_err(|e| classify(&e))?;
        let at: i32 = row.get(0);
        let known = MIGRATIONS.len() as i32;
        if at > known {
            return Err(Error::Database(DbError(format!(
                "the database's schema is at version {at}, newer than this build knows ({known}): \
                 a newer Cloister wrote it"
            ))));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(at as usize) {
            tx.batch_execute(sql).await.map_err(|e| classify(&e))?;
            tx.execute(
                "INSERT INTO cloister_schema (version) VALUES ($1)",
                &[&(i as i32 + 1)],
            )
            .await
            .map_err(|e| classify(&e))?;
        }
        tx.commit().await.map_err(|e| classify(&e))
    }

    /// The number of the last commit.
    pub(crate) async fn seq(&self) -> Result<u64, Error> {
        self.bounded(async {
            let client = self.client().await?;
            let st = client
                .prepare_cached("SELECT seq FROM storage_commit")
                .await
                .map_err(|e| classify(&e))?;
            let row = client.query_one(&st, &[]).await.map_err(|e| classify(&e))?;
            as_u64(row.get(0))
        })
        .await
    }

    /// Sets the commit number to `to` (an operator's accept: no number is ever reused).
    pub(crate) async fn set_seq(&self, to: u64) -> Result<(), Error> {
        self.bounded(async {
            let client = self.client().await?;
            client
                .execute("UPDATE storage_commit SET seq = $1", &[&as_i64(to)?])
                .await
                .map_err(|e| classify(&e))?;
            Ok(())
        })
        .await
    }

    pub(crate) async fn namespace_key(&self, namespace: &str) -> Result<Option<String>, Error> {
        self.bounded(async {
            let client = self.client().await?;
            let st = client
                .prepare_cached("SELECT key_id FROM storage_namespaces WHERE namespace = $1")
                .await
                .map_err(|e| classify(&e))?;
            let row = client
                .query_opt(&st, &[&namespace.as_bytes()])
                .await
                .map_err(|e| classify(&e))?;
            Ok(row.map(|r| r.get(0)))
        })
        .await
    }

    pub(crate) async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.bounded(async {
            let client = self.client().await?;
            let st = client
                .prepare_cached(
                    "SELECT record FROM storage_values WHERE namespace = $1 AND key = $2",
                )
                .await
                .map_err(|e| classify(&e))?;
            let row = client
                .query_opt(&st, &[&namespace.as_bytes(), &key.as_bytes()])
                .await
                .map_err(|e| classify(&e))?;
            Ok(row.map(|r| r.get(0)))
        })
        .await
    }

    /// As `Db::list`: up to `limit` keys of `namespace` starting with `prefix`, strictly after
    /// `after`, in byte order; and whether more follow.
    pub(crate) async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Listed>, bool), Error> {
        self.bounded(async {
            let client = self.client().await?;
            // The record's first 9 bytes are its format and version: the ciphertext stays put.
            let st = client
                .prepare_cached(
                    "SELECT key, substring(record FROM 1 FOR 9) FROM storage_values
                     WHERE namespace = $1 AND key >= $2 AND ($3::bytea IS NULL OR key < $3)
                       AND ($4::bytea IS NULL OR key > $4)
                     ORDER BY key LIMIT $5",
                )
                .await
                .map_err(|e| classify(&e))?;
            let end = prefix_end(prefix);
            let rows = client
                .query(
                    &st,
                    &[
                        &namespace.as_bytes(),
                        &prefix.as_bytes(),
                        &end.as_deref(),
                        &after.map(str::as_bytes),
                        &(limit as i64 + 1),
                    ],
                )
                .await
                .map_err(|e| classify(&e))?;
            let more = rows.len() > limit;
            let mut out = Vec::with_capacity(rows.len().min(limit));
            for row in rows.into_iter().take(limit) {
                let key: Vec<u8> = row.get(0);
                let head: Vec<u8> = row.get(1);
                let key = String::from_utf8(key).map_err(|_| {
                    Error::Database(DbError(format!(
                        "a key in namespace {namespace:?} is not UTF-8: the row was written by \
                         something other than Cloister"
                    )))
                })?;
                // A damaged record still lists (with version 0): reading it names the damage.
                out.push(Listed {
                    key,
                    version: Record::version_of(&head).unwrap_or(0),
                });
            }
            Ok((out, more))
        })
        .await
    }

    /// What `namespace` holds: its keys, and their bytes as stored (key and record).
    pub(crate) async fn usage(&self, namespace: &str) -> Result<Usage, Error> {
        self.bounded(async {
            let client = self.client().await?;
            let st = client
                .prepare_cached("SELECT keys, bytes FROM storage_usage WHERE namespace = $1")
                .await
                .map_err(|e| classify(&e))?;
            let row = client
                .query_opt(&st, &[&namespace.as_bytes()])
                .await
                .map_err(|e| classify(&e))?;
            // No row: no value was ever committed there (migration 5 counted the ones before).
            Ok(match row {
                Some(row) => Usage {
                    keys: as_u64(row.get(0))?,
                    bytes: as_u64(row.get(1))?,
                },
                None => Usage::default(),
            })
        })
        .await
    }

    /// The bytes one stored entry takes (key and record), if it exists.
    pub(crate) async fn entry_bytes(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Option<u64>, Error> {
        self.bounded(async {
            let client = self.client().await?;
            let st = client
                .prepare_cached(
                    "SELECT (length(key) + length(record))::bigint FROM storage_values
                     WHERE namespace = $1 AND key = $2",
                )
                .await
                .map_err(|e| classify(&e))?;
            let row = client
                .query_opt(&st, &[&namespace.as_bytes(), &key.as_bytes()])
                .await
                .map_err(|e| classify(&e))?;
            row.map(|r| as_u64(r.get(0))).transpose()
        })
        .await
    }

    /// Deletes every value of `namespace` and its key mapping, as commit `seq`; answers how many
    /// values there were, or nothing if another node committed `seq` first.
    pub(crate) async fn drop_namespace(
        &self,
        seq: u64,
        namespace: &str,
    ) -> Result<Option<usize>, Error> {
        self.bounded(async {
            let mut client = self.client().await?;
            let advance = client
                .prepare_cached("UPDATE storage_commit SET seq = $1 WHERE seq = $2")
                .await
                .map_err(|e| classify(&e))?;
            let tx = client.transaction().await.map_err(|e| classify(&e))?;
            if let Committed::Overtaken = advance_commit(&tx, &advance, seq).await? {
                return Ok(None);
            }
            let dropped = tx
                .execute(
                    "DELETE FROM storage_values WHERE namespace = $1",
                    &[&namespace.as_bytes()],
                )
                .await
                .map_err(|e| classify(&e))?;
            tx.execute(
                "DELETE FROM storage_namespaces WHERE namespace = $1",
                &[&namespace.as_bytes()],
            )
            .await
            .map_err(|e| classify(&e))?;
            tx.execute(
                "DELETE FROM storage_usage WHERE namespace = $1",
                &[&namespace.as_bytes()],
            )
            .await
            .map_err(|e| classify(&e))?;
            tx.commit().await.map_err(|e| classify(&e))?;
            Ok(Some(dropped as usize))
        })
        .await
    }
}

/// Whether a commit was written, or overtaken by another node's commit of the same number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum Committed {
    Done,
    /// The commit number was past `seq - 1`: nothing was written.
    Overtaken,
}

/// Moves the commit number from `seq - 1` to `seq` in `tx`, unless another node moved it first.
async fn advance_commit(
    tx: &deadpool_postgres::Transaction<'_>,
    advance: &tokio_postgres::Statement,
    seq: u64,
) -> Result<Committed, Error> {
    let previous = seq
        .checked_sub(1)
        .ok_or_else(|| Error::Internal("commit 0 is never written".into()))?;
    let moved = tx
        .execute(advance, &[&as_i64(seq)?, &as_i64(previous)?])
        .await
        .map_err(|e| classify(&e))?;
    Ok(if moved == 1 {
        Committed::Done
    } else {
        Committed::Overtaken
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_where_its_last_byte_is_raised() {
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("a/").as_deref(), Some(&b"a0"[..]));
        assert_eq!(prefix_end("é").as_deref(), Some(&[0xc3, 0xaa][..]));
    }

    #[test]
    fn targets_are_parsed_once_with_a_reason_for_each_refusal() {
        assert!(Target::parse("postgres://u@127.0.0.1:5432/db").is_ok());
        assert!(Target::parse("host=/run/pg dbname=db user=u").is_ok());
        for (url, reason) in [
            ("", "is empty"),
            ("\n", "is empty"),
            ("mysql://x", "is not a PostgreSQL URL"),
            ("postgres://u@h/db?sslmode=require", "sslmode=require"),
            ("postgres://u@127.0.0.1", "names no database"),
        ] {
            let e = Target::parse(url).expect_err(url).to_string();
            assert!(e.contains(reason), "{url:?}: {e}");
        }
        let shown = format!(
            "{:?}",
            Target::parse("postgres://u:hunter2@h/db").expect("ok")
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
