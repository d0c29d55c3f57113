//! The crypto service: keys of four kinds (secp256k1 and P-256 ECDSA, Ed25519, AES-256-GCM), each
//! owned by one account, persisted in a keystore sealed to the enclave. Generate, list, describe
//! (public part only), sign, verify, encrypt, decrypt, derive (HKDF), rotate (the newest version signs
//! and encrypts; older ones still verify and decrypt), delete. Private material never leaves the
//! service. The keystore is rollback-evident: each write is a generation checked against a
//! freshness counter at start (`fresh.rs`).
//!
//! This file is what other crates use: the name, the requests and their answers, the handle and
//! the error. The service itself is in `service.rs`.

mod changes;
mod fresh;
mod keys;
mod keystore;
mod service;
mod vault;

use runtime::{Classify, ErrorKind, Reply, ServiceName};
use serde::Serialize;

pub use fresh::StaleKeystore;
pub use keys::{AES_GCM_MAX_ENCRYPTIONS, Opener};
pub use service::{Crypto, MAX_ENCRYPTIONS, MAX_KEYS, VaultWatch};
pub use vault::{Entry, Vault, VaultError, VaultFuture};

pub use keys::Algorithm;

/// Reads a keystore from the bytes of its two files, the snapshot `keystore.sealed` and the
/// change log `keystore.log`, as the service does at start before it consults the freshness
/// counter: the number of keys and the generation they reach, or why the files are refused.
/// Both files are the host's to write; the fuzz targets (`fuzz/`) call this with any bytes.
pub fn read_keystore(
    snapshot: &[u8],
    log: &[u8],
    platform: &dyn enclave::Platform,
) -> Result<(usize, Option<u64>), Error> {
    let path = std::path::Path::new("keystore.sealed");
    let loaded = keystore::Keystore::new(path).parse(snapshot, platform)?;
    let followed = fresh::follow(loaded, log, path, &changes::path_of(path))?;
    Ok((followed.keys.len(), followed.generation))
}

pub const NAME: ServiceName = ServiceName::from_static("crypto");

/// What callers can do about a failed operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No such key for this owner (also for keys of other owners: they are not to be guessed).
    #[error("no key {0:?}")]
    NotFound(String),
    #[error("a {algorithm} key cannot {operation}")]
    WrongKind {
        algorithm: &'static str,
        operation: &'static str,
    },
    #[error("{0}")]
    BadInput(String),
    #[error(
        "the ciphertext fails its integrity check (modified, or used with other associated data)"
    )]
    Integrity,
    /// Too short to be a ciphertext of this service (the key version, the nonce and the tag).
    #[error("a ciphertext is at least 32 bytes, found {0}")]
    ShortCiphertext(usize),
    /// The account holds `limit` keys, the most the setting allows.
    #[error(
        "the account holds {limit} keys, the most `services.crypto.{setting}` allows; delete one first"
    )]
    TooManyKeys {
        limit: usize,
        /// The setting the limit comes from ([`MAX_KEYS`]).
        setting: &'static str,
    },
    #[error("keystore: {0}")]
    Keystore(String),
    /// The cluster's keys (in its database) cannot be reached now; retry later.
    #[error("the cluster's keys are unavailable: {0}")]
    Unavailable(String),
    /// Another node of the cluster changed the key at the same time; retry.
    #[error("key {0} was changed through another node at the same time; retry")]
    Conflict(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn wrong_kind(algorithm: Algorithm, operation: &'static str) -> Error {
        Error::WrongKind {
            algorithm: algorithm.as_str(),
            operation,
        }
    }
}

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::BadInput(_) => ErrorKind::Invalid,
            // The caller's own ciphertext, not data the host could reach: theirs to look at.
            Error::WrongKind { .. } | Error::Integrity | Error::ShortCiphertext(_) => {
                ErrorKind::Unprocessable
            }
            // Over a size limit, and one that waiting does not lift (429 would promise a retry):
            // 413, as storage's and the ai service's limits answer.
            Error::TooManyKeys { .. } => ErrorKind::TooLarge,
            Error::Unavailable(_) => ErrorKind::Unavailable {
                retry_after: std::time::Duration::from_secs(1),
            },
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Keystore(_) | Error::Internal(_) => ErrorKind::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "crypto.key_not_found",
            Error::WrongKind { .. } => "crypto.wrong_key_kind",
            Error::BadInput(_) => "crypto.bad_input",
            Error::Integrity | Error::ShortCiphertext(_) => "crypto.integrity",
            Error::TooManyKeys { .. } => "crypto.too_many_keys",
            Error::Unavailable(_) => "crypto.unavailable",
            Error::Conflict(_) => "crypto.conflict",
            Error::Keystore(_) | Error::Internal(_) => "crypto.internal",
        }
    }
}

pub use wire::crypto::{KeyInfo, VersionInfo};

/// A signature and the key version that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Signed {
    pub signature: Vec<u8>,
    pub version: u32,
}

type Answer<T> = Reply<Result<T, Error>>;

/// Requests to the crypto service. Every one names the owner it acts for.
#[derive(Debug)]
pub enum Request {
    Generate {
        owner: String,
        algorithm: Algorithm,
        reply: Answer<KeyInfo>,
    },
    List {
        owner: String,
        reply: Answer<Vec<KeyInfo>>,
    },
    Describe {
        owner: String,
        id: String,
        reply: Answer<KeyInfo>,
    },
    Sign {
        owner: String,
        id: String,
        message: Vec<u8>,
        der: bool,
        reply: Answer<Signed>,
    },
    /// Valid if any version of the key verifies it.
    Verify {
        owner: String,
        id: String,
        message: Vec<u8>,
        signature: Vec<u8>,
        reply: Answer<bool>,
    },
    Encrypt {
        owner: String,
        id: String,
        plaintext: Vec<u8>,
        aad: Vec<u8>,
        reply: Answer<Vec<u8>>,
    },
    Decrypt {
        owner: String,
        id: String,
        ciphertext: Vec<u8>,
        aad: Vec<u8>,
        reply: Answer<Vec<u8>>,
    },
    /// The key's versions as an [`Opener`], for decrypting inside the process without a request
    /// per ciphertext (an AES-256-GCM key only).
    Lend {
        owner: String,
        id: String,
        reply: Answer<Opener>,
    },
    /// A new AES-256-GCM key derived with HKDF-SHA256 from the current version of `id`.
    Derive {
        owner: String,
        id: String,
        salt: Vec<u8>,
        info: Vec<u8>,
        reply: Answer<KeyInfo>,
    },
    Rotate {
        owner: String,
        id: String,
        reply: Answer<KeyInfo>,
    },
    Delete {
        owner: String,
        id: String,
        reply: Answer<()>,
    },
}

impl runtime::bus::Operation for Request {
    fn operation(&self) -> &'static str {
        match self {
            Request::Generate { .. } => "generate",
            Request::List { .. } => "list",
            Request::Describe { .. } => "describe",
            Request::Sign { .. } => "sign",
            Request::Verify { .. } => "verify",
            Request::Encrypt { .. } => "encrypt",
            Request::Decrypt { .. } => "decrypt",
            Request::Lend { .. } => "lend",
            Request::Derive { .. } => "derive",
            Request::Rotate { .. } => "rotate",
            Request::Delete { .. } => "delete",
        }
    }
}

/// The handle other services and the API hold.
pub type Handle = runtime::Handle<Request>;

#[cfg(test)]
mod tests {
    use runtime::{Classify, ErrorKind};

    use super::Error;

    #[test]
    fn every_error_has_its_kind_and_code() {
        let table = [
            (
                Error::NotFound("k".into()),
                ErrorKind::NotFound,
                "crypto.key_not_found",
            ),
            (
                Error::WrongKind {
                    algorithm: "aes256gcm",
                    operation: "sign",
                },
                ErrorKind::Unprocessable,
                "crypto.wrong_key_kind",
            ),
            (
                Error::BadInput("short".into()),
                ErrorKind::Invalid,
                "crypto.bad_input",
            ),
            (
                Error::Integrity,
                ErrorKind::Unprocessable,
                "crypto.integrity",
            ),
            (
                Error::ShortCiphertext(3),
                ErrorKind::Unprocessable,
                "crypto.integrity",
            ),
            (
                Error::TooManyKeys {
                    limit: 2,
                    setting: "max_keys_per_account",
                },
                ErrorKind::TooLarge,
                "crypto.too_many_keys",
            ),
            (
                Error::Keystore("disk".into()),
                ErrorKind::Internal,
                "crypto.internal",
            ),
            (
                Error::Internal("bug".into()),
                ErrorKind::Internal,
                "crypto.internal",
            ),
        ];
        for (error, kind, code) in table {
            assert_eq!((error.kind(), error.code()), (kind, code), "{error:?}");
        }
    }
}
