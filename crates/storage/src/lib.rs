//! The storage service: a key-value store on redb or PostgreSQL (`store.rs`), one namespace per owner, every value encrypted
//! with AES-256-GCM under its namespace's key, which the crypto service holds and uses (the key never
//! comes here). The associated data binds namespace, key and version, so a ciphertext moved to
//! another key, namespace or version is an integrity error naming the key, never wrong data.
//!
//! Get, put, delete, list by prefix with pagination, and atomic multi-key writes, with size limits
//! from the service's settings. Every commit gets the next sequence number, recorded in the database
//! with a sealed digest of the whole committed state at that number (`digest.rs`), and then in the
//! platform's freshness counter before the write is acknowledged. At start (`fresh.rs`), a database
//! whose content does not match its digest (a record modified, deleted or copied in from an older
//! copy) or whose commit is behind the counter (the host swapped in an older copy) is refused with a
//! [`StateError`] until an operator accepts that exact state.
//!
//! This file is what other crates use: the name, the requests and their answers, the handle, the
//! error and the settings' names. The service itself is in `service.rs`.

mod db;
mod digest;
mod fresh;
mod openers;
pub mod postgres;
mod quota;
mod reads;
mod replay;
mod service;
mod store;

use std::time::Duration;

use runtime::{CallError, Classify, ErrorKind, Reply, ServiceName};

pub use db::{DbError, Listed, Record};
pub use enclave::LOG_SLOTS;
pub use fresh::{StateError, Verified};
pub use quota::{Exceeded, MAX_ACCOUNT_BYTES, MAX_ACCOUNT_KEYS};
pub use reads::{READ_CACHE_BYTES, Reads};
pub use service::{MAX_BATCH_WRITES, MAX_KEY_BYTES, MAX_LIST_LIMIT, MAX_VALUE_BYTES, Storage};

/// Where the records are kept: `[storage] backend` in the configuration.
#[derive(Debug, Clone, Default)]
pub enum Backend {
    /// `DATA_DIR/storage.redb`, on this node only.
    #[default]
    Redb,
    /// A PostgreSQL database (`postgres.rs`).
    Postgres(Box<postgres::Target>),
}

impl Backend {
    /// The PostgreSQL database, if the records are in one (a cluster lives there too).
    pub fn database(&self) -> Option<&postgres::Target> {
        match self {
            Backend::Redb => None,
            Backend::Postgres(target) => Some(target),
        }
    }
}

pub const NAME: ServiceName = ServiceName::from_static("storage");

/// The crypto owner of every namespace key: not an account id, so no account can use these keys.
pub const KEY_OWNER: &str = "@storage";

/// What callers can do about a failed operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("no key {0:?}")]
    NotFound(String),
    #[error("{what} is {size} bytes; the limit is {limit} (services.storage.{setting})")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
        setting: &'static str,
    },
    #[error(transparent)]
    BadInput(BadInput),
    /// The write would take the account's namespace past its quota.
    #[error(
        "the write would make this account hold {used} {what}; its quota is {limit} (services.storage.{setting}); delete something first"
    )]
    Quota {
        what: Exceeded,
        used: u64,
        limit: u64,
        setting: &'static str,
    },
    /// The stored value of `key` was modified, moved or damaged; nothing of it is returned.
    #[error("the stored value of {key:?} fails its integrity check (modified, moved or damaged)")]
    Integrity { key: String },
    /// A conditional put found the key at another version than the one it named.
    #[error(
        "{key:?} changed since it was read (expected {}, found {}): read it again and retry",
        version_text(*expected),
        version_text(*found)
    )]
    Changed {
        key: String,
        expected: Option<u64>,
        found: Option<u64>,
    },
    /// The crypto service could not be reached; retry later.
    #[error("the crypto service is unavailable: {0}")]
    CryptoUnavailable(CallError),
    /// The database (PostgreSQL) cannot be reached now; retry later.
    #[error("the storage database is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("internal: {0}")]
    Internal(String),
}

/// What is wrong with a request, in terms the caller can fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadInput {
    #[error("a key cannot be empty")]
    EmptyKey,
    #[error("a namespace cannot be empty")]
    EmptyNamespace,
    #[error("a batch needs at least one write")]
    EmptyBatch,
    /// A listing's page size out of range; `max` comes from `setting` ([`MAX_LIST_LIMIT`]).
    #[error("limit must be between 1 and {max} (services.storage.{setting})")]
    ListLimit {
        asked: usize,
        max: usize,
        setting: &'static str,
    },
}

fn version_text(version: Option<u64>) -> String {
    match version {
        Some(v) => format!("version {v}"),
        None => "no value".to_owned(),
    }
}

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::TooLarge { .. } | Error::Quota { .. } => ErrorKind::TooLarge,
            Error::BadInput(_) => ErrorKind::Invalid,
            Error::Integrity { .. } => ErrorKind::Integrity,
            Error::Changed { .. } => ErrorKind::Conflict,
            Error::CryptoUnavailable(_) | Error::Unavailable(_) => ErrorKind::Unavailable {
                retry_after: Duration::from_secs(1),
            },
            Error::Database(_) | Error::Internal(_) => ErrorKind::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "storage.not_found",
            Error::TooLarge { .. } => "storage.too_large",
            Error::Quota { .. } => "storage.quota_exceeded",
            Error::BadInput(_) => "storage.bad_input",
            Error::Integrity { .. } => "storage.integrity",
            Error::Changed { .. } => "storage.changed",
            Error::CryptoUnavailable(_) => "storage.crypto_unavailable",
            Error::Unavailable(_) => "storage.unavailable",
            Error::Database(_) => "storage.database",
            Error::Internal(_) => "storage.internal",
        }
    }
}

/// A value read back, with the version (commit sequence number) that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub data: Vec<u8>,
    pub version: u64,
}

/// One page of a listing; `next` is the `after` of the next page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[schema(as = StoragePage)]
pub struct Page {
    pub keys: Vec<Listed>,
    pub next: Option<String>,
}

/// One write of an atomic batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put {
        key: String,
        value: Vec<u8>,
    },
    /// Deleting an absent key in a batch is a no-op.
    Delete {
        key: String,
    },
}

type Answer<T> = Reply<Result<T, Error>>;

/// Requests to the storage service. `namespace` is the owner the caller acts for.
#[derive(Debug)]
pub enum Request {
    Get {
        namespace: String,
        key: String,
        reply: Answer<Value>,
    },
    /// Answers the new version.
    Put {
        namespace: String,
        key: String,
        value: Vec<u8>,
        reply: Answer<u64>,
    },
    /// Puts `value` only if the key is at version `current` now (`None`: only if it is absent),
    /// checked in the commit that writes it, so no other write (of this node or another) can come
    /// in between; answers the new version, or [`Error::Changed`] with the version found.
    PutIf {
        namespace: String,
        key: String,
        value: Vec<u8>,
        current: Option<u64>,
        reply: Answer<u64>,
    },
    /// `NotFound` if the key is absent.
    Delete {
        namespace: String,
        key: String,
        reply: Answer<u64>,
    },
    List {
        namespace: String,
        prefix: String,
        after: Option<String>,
        limit: usize,
        reply: Answer<Page>,
    },
    /// All or nothing, as one commit; answers its version.
    Batch {
        namespace: String,
        writes: Vec<Write>,
        reply: Answer<u64>,
    },
    /// Deletes every value of the namespace and its key (in the crypto service), as one commit;
    /// answers its version. For an account being deleted.
    DropNamespace {
        namespace: String,
        reply: Answer<u64>,
    },
}

impl runtime::bus::Operation for Request {
    fn operation(&self) -> &'static str {
        match self {
            Request::Get { .. } => "get",
            Request::Put { .. } => "put",
            Request::PutIf { .. } => "put_if",
            Request::Delete { .. } => "delete",
            Request::List { .. } => "list",
            Request::Batch { .. } => "batch",
            Request::DropNamespace { .. } => "drop_namespace",
        }
    }
}

pub type Handle = runtime::Handle<Request>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use runtime::{CallError, Classify, ErrorKind};

    use super::{DbError, Error};

    #[test]
    fn every_error_has_its_kind_and_code() {
        let table = [
            (
                Error::NotFound("k".into()),
                ErrorKind::NotFound,
                "storage.not_found",
            ),
            (
                Error::TooLarge {
                    what: "the value",
                    size: 2,
                    limit: 1,
                    setting: super::MAX_VALUE_BYTES.name(),
                },
                ErrorKind::TooLarge,
                "storage.too_large",
            ),
            (
                Error::Quota {
                    what: super::Exceeded::Bytes,
                    used: 2,
                    limit: 1,
                    setting: super::MAX_ACCOUNT_BYTES.name(),
                },
                ErrorKind::TooLarge,
                "storage.quota_exceeded",
            ),
            (
                Error::BadInput(super::BadInput::EmptyKey),
                ErrorKind::Invalid,
                "storage.bad_input",
            ),
            (
                Error::Integrity { key: "k".into() },
                ErrorKind::Integrity,
                "storage.integrity",
            ),
            (
                Error::CryptoUnavailable(CallError::Interrupted {
                    service: crypto::NAME,
                }),
                ErrorKind::Unavailable {
                    retry_after: Duration::from_secs(1),
                },
                "storage.crypto_unavailable",
            ),
            (
                Error::Unavailable("connection refused".into()),
                ErrorKind::Unavailable {
                    retry_after: Duration::from_secs(1),
                },
                "storage.unavailable",
            ),
            (
                Error::Database(DbError("damaged".into())),
                ErrorKind::Internal,
                "storage.database",
            ),
            (
                Error::Internal("bug".into()),
                ErrorKind::Internal,
                "storage.internal",
            ),
        ];
        for (error, kind, code) in table {
            assert_eq!((error.kind(), error.code()), (kind, code), "{error:?}");
        }
    }
}
