//! The storage service itself: the recipe ([`Storage`]) with its settings and start-up freshness
//! check, and one incarnation's [`State`], which serves reads and commits writes in groups.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use runtime::setting::Setting;
use runtime::{CallError, Context, Kind, Priority, Reply, Service, ServiceError, Spec};

use crate::db::{Db, Record, associated_data};
use crate::fresh::{self, COUNTER, COUNTER_POSTGRES, Opened, StateError, Verified};
use crate::openers::Openers;
use crate::postgres::Pg;
use crate::quota::{MAX_ACCOUNT_BYTES, MAX_ACCOUNT_KEYS, Usages};
use crate::reads::{READ_CACHE_BYTES, ReadCache, Reads};
use crate::store::{Fatal, Logged, Store};
use crate::{Backend, BadInput, Error, KEY_OWNER, NAME, Page, Request, Value, Write};

use commit::MAX_ATTEMPTS;
use limits::{Limits, check_namespace};

type Answer<T> = Reply<Result<T, Error>>;

/// Longest key, in bytes (`max_key_bytes`).
pub const MAX_KEY_BYTES: Setting<usize> =
    Setting::new("max_key_bytes", 1024, 1, 65_536, "longest key, in bytes");
/// Largest value, in bytes (`max_value_bytes`).
pub const MAX_VALUE_BYTES: Setting<usize> = Setting::new(
    "max_value_bytes",
    1 << 20,
    1,
    64 << 20,
    "largest value, in bytes",
);
/// Most writes in one atomic batch (`max_batch_writes`).
pub const MAX_BATCH_WRITES: Setting<usize> = Setting::new(
    "max_batch_writes",
    1000,
    1,
    100_000,
    "most writes in one atomic batch",
);
/// Most keys in one page of a listing (`max_list_limit`).
pub const MAX_LIST_LIMIT: Setting<usize> = Setting::new(
    "max_list_limit",
    1000,
    1,
    100_000,
    "most keys in one page of a listing",
);

/// The recipe.
#[derive(Debug)]
pub struct Storage {
    path: PathBuf,
    backend: Backend,
    platform: Arc<dyn enclave::Platform>,
    counters: Arc<enclave::Counters>,
    crypto: crypto::Handle,
    /// The database commit an operator accepted despite the freshness counter; used once.
    accept: Mutex<Option<u64>>,
    /// This node has just been admitted to its cluster: a shared database's commit number is
    /// taken as it is when there is no freshness counter yet (`fresh::open_postgres`).
    newcomer: bool,
    /// Values read lately, decrypted (`reads.rs`); lent out as [`Reads`].
    cache: Arc<ReadCache>,
}

impl Storage {
    /// Storage in `data_dir/storage.redb`, encrypting through `crypto`.
    pub fn new(
        data_dir: &Path,
        platform: Arc<dyn enclave::Platform>,
        crypto: crypto::Handle,
    ) -> Storage {
        Storage {
            path: data_dir.join("storage.redb"),
            backend: Backend::Redb,
            counters: Arc::new(enclave::Counters::new(data_dir)),
            platform,
            crypto: crypto.with_caller(&NAME),
            accept: Mutex::new(None),
            newcomer: false,
            cache: Arc::default(),
        }
    }

    /// Reads of values the service has cached, answered on the caller's own task (the HTTP
    /// API's): see [`Reads`].
    pub fn reads(&self) -> Reads {
        Reads(self.cache.clone())
    }

    /// The read cache's budget under `spec`: none on a database other nodes write to too.
    fn cache_budget(&self, spec: &Spec) -> usize {
        match self.backend {
            Backend::Redb => spec.get(&READ_CACHE_BYTES),
            Backend::Postgres(_) => 0,
        }
    }

    /// Says this node has just been admitted to its cluster (it has no freshness counter for the
    /// shared database yet, and nothing to compare its commit number with).
    pub fn newcomer(mut self, newcomer: bool) -> Storage {
        self.newcomer = newcomer;
        self
    }

    /// Accepts, once, a database at commit `seq` that disagrees with the freshness counter (an
    /// operator restoring a backup, or a lost counter file).
    pub fn accept_rollback(self, seq: Option<u64>) -> Storage {
        *self.accept.lock().unwrap_or_else(|p| p.into_inner()) = seq;
        self
    }

    /// Keeps the records in `backend` instead of `DATA_DIR/storage.redb`. The freshness counter
    /// stays in the data directory, sealed to this node.
    pub fn with_backend(mut self, backend: Backend) -> Storage {
        self.backend = backend;
        self
    }

    pub fn database_path(&self) -> &Path {
        &self.path
    }

    pub fn default_spec() -> Spec {
        Spec::new(NAME, Kind::Core)
            .description(
                "encrypted key-value storage: values sealed under per-namespace keys, tamper- and rollback-evident",
            )
            .depends_on(crypto::NAME)
            .priority(Priority::High)
            .capability("storage.kv")
            .capability("storage.batch")
            .setting(&MAX_KEY_BYTES)
            .setting(&MAX_VALUE_BYTES)
            .setting(&MAX_BATCH_WRITES)
            .setting(&MAX_LIST_LIMIT)
            .setting(&MAX_ACCOUNT_KEYS)
            .setting(&MAX_ACCOUNT_BYTES)
            .setting(&READ_CACHE_BYTES)
    }

    /// Checks the database at start (`fresh.rs`): its content against the sealed digest, its
    /// commit number against the freshness counter. Fixes the one benign gap (a crash between the
    /// database commit and the counter write) and refuses anything else the operator has not
    /// accepted, for the operator (no restart can change it).
    fn check_freshness(&self, db: &Db) -> Result<Opened, ServiceError> {
        let mut accept = self.accept.lock().unwrap_or_else(|p| p.into_inner());
        match fresh::open(db, &*self.platform, &self.counters, *accept) {
            Ok(opened) => {
                if let Some(lifted) = &opened.accepted {
                    *accept = None;
                    tracing::warn!(
                        commit = opened.seq,
                        "storage: the operator accepted a database that {lifted}"
                    );
                }
                Ok(opened)
            }
            Err(e) => Err(refusal(&self.path.display().to_string(), &e)),
        }
    }

    /// Opens the store the recipe names and checks it (`fresh.rs`): the incarnation's store and
    /// the commit number it goes on from.
    async fn open(&self) -> Result<(Store, u64), ServiceError> {
        match &self.backend {
            Backend::Redb => {
                // Opening may repair an interrupted commit and sync: off the async workers.
                let path = self.path.clone();
                let db = tokio::task::spawn_blocking(move || Db::open(&path))
                    .await
                    .map_err(|e| ServiceError::new(format!("opening the database: {e}")))?
                    .map_err(|e| ServiceError::new(e.to_string()))?;
                let opened = self.check_freshness(&db)?;
                let seq = opened.seq;
                let store = self.redb_store(db, opened)?;
                Ok((store, seq))
            }
            Backend::Postgres(target) => {
                // Unreachable now: a failure a restart may fix, with the restart policy's backoff.
                let pg = Pg::connect(target)
                    .await
                    .map_err(|e| ServiceError::new(format!("the PostgreSQL database: {e}")))?;
                let accept = *self.accept.lock().unwrap_or_else(|p| p.into_inner());
                let opened = fresh::open_postgres(
                    &pg,
                    &*self.platform,
                    &self.counters,
                    accept,
                    self.newcomer,
                )
                .await;
                match opened {
                    Ok((seq, lifted)) => {
                        if let Some(lifted) = lifted {
                            *self.accept.lock().unwrap_or_else(|p| p.into_inner()) = None;
                            tracing::warn!(
                                commit = seq,
                                "storage: the operator accepted a PostgreSQL database that {lifted}"
                            );
                        }
                        Ok((Store::Postgres(pg), seq))
                    }
                    Err(e) => Err(refusal("the PostgreSQL database", &e)),
                }
            }
        }
    }

    /// The store over `db`, checked and `opened` at the commit it is at: from here on the counter
    /// carries each commit and reuses its slots (`replay.rs`), so what the database holds now is
    /// synced first (after a crash, the file may hold commits redb had not synced).
    fn redb_store(&self, db: Db, opened: Opened) -> Result<Store, ServiceError> {
        db.sync()
            .map_err(|e| ServiceError::new(format!("syncing the database: {e}")))?;
        let log = self
            .counters
            .log(&*self.platform, COUNTER)
            .map_err(|e| ServiceError::new(format!("the freshness counter: {e}")))?;
        Ok(Store::Redb {
            db: Arc::new(db),
            keys: Arc::new(opened.keys),
            root: opened.root,
            log: Arc::new(Mutex::new(Logged::new(
                log,
                opened.seq,
                self.platform.clone(),
            ))),
        })
    }

    /// The name of the freshness counter this recipe's backend advances.
    fn counter(&self) -> &'static str {
        match self.backend {
            Backend::Redb => COUNTER,
            Backend::Postgres(_) => COUNTER_POSTGRES,
        }
    }

    /// Checks the database at rest as a start would (one scan, the digest, the counter) and changes
    /// nothing. The service must not be running: redb opens a file once. redb only: a PostgreSQL
    /// database is checked by starting.
    pub fn verify(&self) -> Result<Verified, StateError> {
        if let Backend::Postgres(_) = self.backend {
            return Err(StateError::Database(crate::DbError(
                "verify reads a redb file; a PostgreSQL database is checked at start".into(),
            )));
        }
        let db = Db::open(&self.path)?;
        fresh::verify(&db, &*self.platform, &self.counters)
    }
}

/// The service's failure for `e`: for the operator, with the command that accepts the database, if
/// it is a refusal.
fn refusal(database: &str, e: &StateError) -> ServiceError {
    let Some(seq) = e.refused_at() else {
        return ServiceError::new(format!("{database}: {e}"));
    };
    let reason = format!(
        "storage refuses to start: {database} {e}. Nothing was read or changed. If this database \
         is the one you mean to run with (say, a restored backup), restart with \
         `cloister run --accept-storage-rollback {seq}`"
    );
    // Said once, where the operator looks first; no restart can change it, so none is tried.
    tracing::error!("{reason}");
    ServiceError::needs_operator(reason)
}

impl Service for Storage {
    type Request = Request;

    fn spec(&self) -> Spec {
        Storage::default_spec()
    }

    fn validate(&self, new: &Spec) -> Result<(), runtime::Veto> {
        if new.replicas.max > 1 {
            return Err("storage has a single writer: replicas.max must be 1".into());
        }
        Ok(())
    }

    async fn run(&self, mut cx: Context<Request>) -> Result<(), ServiceError> {
        let (store, seq) = self.open().await?;
        let mut state = State::new(store, seq, self);
        let mut limits = Limits::of(&cx.spec());
        // What an earlier incarnation cached may not be what this one opened.
        self.cache.reset(self.cache_budget(&cx.spec()));
        let mut degraded = false;
        while let Some(request) = cx.recv().await {
            // Settings apply live: re-read only when the spec changed.
            if cx.spec_changes().has_changed().unwrap_or(false) {
                let spec = cx.spec_changes().borrow_and_update().clone();
                limits = Limits::of(&spec);
                self.cache.set_budget(self.cache_budget(&spec));
            }
            let first = match Pending::of(request) {
                Ok(write) => write,
                Err(other) => {
                    state.other(other, &limits).await?;
                    report_outage(&mut cx, &state.store, &mut degraded);
                    continue;
                }
            };
            // Group commit: every write already waiting joins this one's commit (and its one
            // counter advance), up to the batch limit; a read stops the group and goes next.
            let mut group = vec![first];
            let mut read_next = None;
            while group.len() < limits.batch {
                let Some(next) = cx.try_recv() else { break };
                match Pending::of(next) {
                    Ok(write) => group.push(write),
                    Err(read) => {
                        read_next = Some(read);
                        break;
                    }
                }
            }
            state.commit_group(group, &limits).await?;
            if let Some(other) = read_next {
                state.other(other, &limits).await?;
            }
            report_outage(&mut cx, &state.store, &mut degraded);
        }
        state
            .store
            .close()
            .await
            .map_err(|e| ServiceError::new(format!("syncing the database as it stops: {e}")))
    }
}

/// Reports the service degraded while its database is out of reach, and healthy once it answers
/// again; `degraded` is whether it is reported so now.
fn report_outage(cx: &mut Context<Request>, store: &Store, degraded: &mut bool) {
    match store.outage() {
        Some(why) if !*degraded => {
            *degraded = true;
            cx.set_degraded(format!("the PostgreSQL database cannot be reached: {why}"));
        }
        Some(_) => {}
        None if *degraded => {
            *degraded = false;
            cx.set_healthy();
        }
        None => {}
    }
}

fn unavailable(e: CallError) -> Error {
    Error::CryptoUnavailable(e)
}

/// One incarnation's state.
struct State<'a> {
    store: Store,
    /// The last commit's sequence number.
    seq: u64,
    /// A commit failed without knowing whether the database took it (the connection broke): the
    /// next write first reads where the database is.
    unsettled: bool,
    /// Namespace → crypto key id, as far as seen.
    namespace_keys: HashMap<String, String>,
    /// The namespace keys' openers: reads decrypt here, without a request per value.
    openers: Openers,
    /// What the namespaces written so far hold, for their quotas.
    usages: Usages,
    storage: &'a Storage,
}

impl<'a> State<'a> {
    fn new(store: Store, seq: u64, storage: &'a Storage) -> State<'a> {
        State {
            store,
            seq,
            unsettled: false,
            namespace_keys: HashMap::new(),
            openers: Openers::default(),
            usages: Usages::default(),
            storage,
        }
    }

    /// Serves a request outside the group commit: a read, or dropping a namespace.
    async fn other(&mut self, request: Request, limits: &Limits) -> Result<(), ServiceError> {
        match request {
            Request::DropNamespace { namespace, reply } => {
                self.drop_namespace(namespace, reply).await
            }
            read => {
                self.read(read, limits).await;
                Ok(())
            }
        }
    }

    async fn drop_namespace(
        &mut self,
        namespace: String,
        reply: Answer<u64>,
    ) -> Result<(), ServiceError> {
        if let Err(e) = check_namespace(&namespace) {
            reply.send(Err(e));
            return Ok(());
        }
        match self.settle().await {
            Ok(()) => {}
            Err(Fatal::No(e)) => {
                reply.send(Err(e));
                return Ok(());
            }
            Err(Fatal::Yes(message)) => {
                reply.send(Err(Error::Internal(message.clone())));
                return Err(ServiceError::new(message));
            }
        }
        let mut attempts = 0;
        let (key_id, seq, written) = loop {
            let key_id = match self.key_id(&namespace).await {
                Ok(id) => id,
                Err(e) => {
                    reply.send(Err(e));
                    return Ok(());
                }
            };
            let seq = self.seq + 1;
            self.storage.cache.forget_namespace(&namespace);
            match self.store.drop_namespace(seq, &namespace).await {
                // Overtaken by another node's commit: the namespace's key may have changed.
                Ok(None) if attempts < MAX_ATTEMPTS => {
                    attempts += 1;
                    if let Err(e) = self.catch_up().await {
                        reply.send(Err(e));
                        return Ok(());
                    }
                }
                Ok(None) => {
                    reply.send(Err(Error::Unavailable(format!(
                        "other nodes committed first {MAX_ATTEMPTS} times in a row; retry"
                    ))));
                    return Ok(());
                }
                Ok(Some(dropped)) => break (key_id, seq, Ok(dropped)),
                Err(e) => break (key_id, seq, Err(e)),
            }
        };
        let committed = self.count(seq, written).await;
        match committed {
            Ok(_) => {
                self.seq = seq;
                self.namespace_keys.remove(&namespace);
                self.usages.forget(&namespace);
                if let Some(id) = &key_id {
                    self.openers.forget(id);
                }
                // No value refers to the key any more; without it, no copy of one can be read.
                if let Some(id) = key_id {
                    let deleted = self
                        .storage
                        .crypto
                        .call(|reply| crypto::Request::Delete {
                            owner: KEY_OWNER.into(),
                            id: id.clone(),
                            reply,
                        })
                        .await;
                    if !matches!(deleted, Ok(Ok(()))) {
                        tracing::warn!(%namespace, key = %id, "storage: the dropped namespace's key could not be deleted");
                    }
                }
                reply.send(Ok(seq));
                Ok(())
            }
            Err(Fatal::No(e)) => {
                reply.send(Err(e));
                Ok(())
            }
            Err(Fatal::Yes(message)) => {
                reply.send(Err(Error::Internal(message.clone())));
                Err(ServiceError::new(message))
            }
        }
    }

    /// Serves a read.
    async fn read(&mut self, request: Request, limits: &Limits) {
        match request {
            Request::Get {
                namespace,
                key,
                reply,
            } => reply.send(self.get(&namespace, &key).await),
            Request::List {
                namespace,
                prefix,
                after,
                limit,
                reply,
            } => reply.send(
                self.list(&namespace, &prefix, after.as_deref(), limit, limits)
                    .await,
            ),
            Request::Put { reply, .. }
            | Request::PutIf { reply, .. }
            | Request::Delete { reply, .. }
            | Request::Batch { reply, .. }
            | Request::DropNamespace { reply, .. } => {
                reply.send(Err(Error::Internal("a write taken for a read".into())));
            }
        }
    }

    async fn key_id(&mut self, namespace: &str) -> Result<Option<String>, Error> {
        if let Some(id) = self.namespace_keys.get(namespace) {
            return Ok(Some(id.clone()));
        }
        let id = self.store.namespace_key(namespace).await?;
        if let Some(id) = &id {
            self.namespace_keys.insert(namespace.to_owned(), id.clone());
        }
        Ok(id)
    }

    async fn get(&mut self, namespace: &str, key: &str) -> Result<Value, Error> {
        let got = self.get_once(namespace, key).await;
        // On a shared database another node may have dropped the namespace and made it again,
        // under a new key: a value that does not open with the key remembered is tried once
        // more with the key the database records.
        if matches!(got, Err(Error::Integrity { .. }))
            && self.store.shared()
            && self.namespace_keys.remove(namespace).is_some()
        {
            return self.get_once(namespace, key).await;
        }
        got
    }

    async fn get_once(&mut self, namespace: &str, key: &str) -> Result<Value, Error> {
        check_namespace(namespace)?;
        if let Some(value) = self.storage.cache.get(namespace, key) {
            return Ok(value);
        }
        let Some(bytes) = self.store.get(namespace, key).await? else {
            return Err(Error::NotFound(key.to_owned()));
        };
        let integrity = || Error::Integrity {
            key: key.to_owned(),
        };
        let record = Record::decode(bytes).ok_or_else(integrity)?;
        // A value without a namespace key can only be a record planted from elsewhere.
        let key_id = self.key_id(namespace).await?.ok_or_else(integrity)?;
        let aad = associated_data(namespace, key, record.version);
        let opener = self
            .openers
            .get(&self.storage.crypto, &key_id, &record.ciphertext, key)
            .await?;
        let data = opener.open(&record.ciphertext, &aad).map_err(|e| match e {
            crypto::Error::Integrity | crypto::Error::ShortCiphertext(_) => integrity(),
            other => Error::Internal(format!("the namespace key: {other}")),
        })?;
        let value = Value {
            data,
            version: record.version,
        };
        self.storage.cache.insert(namespace, key, &value);
        Ok(value)
    }

    async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        limits: &Limits,
    ) -> Result<Page, Error> {
        check_namespace(namespace)?;
        if limit == 0 || limit > limits.list {
            return Err(Error::BadInput(BadInput::ListLimit {
                asked: limit,
                max: limits.list,
                setting: MAX_LIST_LIMIT.name(),
            }));
        }
        let (keys, more) = self.store.list(namespace, prefix, after, limit).await?;
        let next = more.then(|| keys.last().map(|l| l.key.clone())).flatten();
        Ok(Page { keys, next })
    }
}

/// A write request waiting for its group's commit.
struct Pending {
    namespace: String,
    writes: Vec<Write>,
    /// A single delete names a missing key; deletes in a batch do not.
    must_exist: bool,
    /// A conditional put's version of the key as its caller read it (`Some(None)`: absent).
    current: Option<Option<u64>>,
    reply: Answer<u64>,
}

impl Pending {
    /// The write in `request`, or the request back if it is a read.
    fn of(request: Request) -> Result<Pending, Request> {
        match request {
            Request::Put {
                namespace,
                key,
                value,
                reply,
            } => Ok(Pending {
                namespace,
                writes: vec![Write::Put { key, value }],
                must_exist: false,
                current: None,
                reply,
            }),
            Request::PutIf {
                namespace,
                key,
                value,
                current,
                reply,
            } => Ok(Pending {
                namespace,
                writes: vec![Write::Put { key, value }],
                must_exist: false,
                current: Some(current),
                reply,
            }),
            Request::Delete {
                namespace,
                key,
                reply,
            } => Ok(Pending {
                namespace,
                writes: vec![Write::Delete { key }],
                must_exist: true,
                current: None,
                reply,
            }),
            Request::Batch {
                namespace,
                writes,
                reply,
            } => Ok(Pending {
                namespace,
                writes,
                must_exist: false,
                current: None,
                reply,
            }),
            read => Err(read),
        }
    }
}

#[path = "commit.rs"]
mod commit;
#[path = "durable.rs"]
mod durable;
#[path = "limits.rs"]
mod limits;

#[cfg(test)]
#[path = "tamper.rs"]
mod tamper;
