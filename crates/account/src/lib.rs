//! The account service: accounts, their API tokens (random 256-bit secrets kept only as SHA-256
//! digests, each with scopes and an optional expiry), a default P-256 signing key per account in the
//! crypto service with its Neo N3 address, and the per-account rate limit. Records live sealed in the
//! storage service (namespace `@account`); every change is journaled, without secrets. The HTTP API
//! resolves tokens through a [`Gate`], which reads the directory this service publishes.
//!
//! This file is what other crates use: the name, the requests and their answers, the handle, the
//! error, the gate and the settings' names. The service itself is in `service.rs`.

mod address;
mod gate;
pub mod scope;
mod service;

use std::time::Duration;

use runtime::{CallError, Classify, ErrorKind, Reply, ServiceName};
use serde::Serialize;

pub use address::{AddressError, neo_n3, neo_n3_script_hash};
pub use gate::{AuthError, Directory, Gate, Principal, TokenDigest};
pub use runtime::rate::Rate;
pub use scope::{Area, Scope};
pub use service::{Account, MAX_TOKENS, RATE_BURST, RATE_PER_SECOND, SYNC_EVERY};

pub const NAME: ServiceName = ServiceName::from_static("account");

/// What callers can do about a failed operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No such account (for an account token, also another account: the same answer).
    #[error("no account {account:?}")]
    NoAccount { account: String },
    /// The account has no such token.
    #[error("account {account} has no token {token:?}")]
    NoToken { account: String, token: String },
    #[error("{0}")]
    BadInput(String),
    /// Another account has this name: names are unique, so an account can be found by its name.
    #[error("an account named {0:?} exists already")]
    NameTaken(String),
    /// The account already has `count` tokens, and the setting allows `limit`.
    #[error(
        "the account has {count} tokens, the most `services.account.{setting}` allows; revoke one first"
    )]
    TooManyTokens {
        count: usize,
        limit: usize,
        /// The setting the limit comes from ([`MAX_TOKENS`]).
        setting: &'static str,
    },
    /// Crypto or storage did not answer (restarting, circuit open) while doing `what`: retry.
    #[error("{what}: the {} service did not answer: {source}", source.service())]
    Unavailable {
        what: &'static str,
        source: CallError,
    },
    /// The account's record kept changing through other nodes while this one tried to change it
    /// (each attempt read it again and applied the change to what it found): retry.
    #[error(
        "account {account} was changed through another node at the same moment, {attempts} times \
         in a row; retry"
    )]
    Changed { account: String, attempts: u32 },
    /// Crypto or storage answered with an error that retrying will not fix.
    #[error("{0}")]
    Internal(String),
}

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::NoAccount { .. } | Error::NoToken { .. } => ErrorKind::NotFound,
            Error::BadInput(_) => ErrorKind::Invalid,
            Error::NameTaken(_) | Error::TooManyTokens { .. } | Error::Changed { .. } => {
                ErrorKind::Conflict
            }
            Error::Unavailable { .. } => ErrorKind::Unavailable {
                retry_after: Duration::from_secs(1),
            },
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Error::NoAccount { .. } | Error::NoToken { .. } => "account.not_found",
            Error::BadInput(_) => "account.bad_input",
            Error::NameTaken(_) => "account.name_taken",
            Error::TooManyTokens { .. } => "account.too_many_tokens",
            Error::Changed { .. } => "account.changed",
            Error::Unavailable { .. } => "account.unavailable",
            Error::Internal(_) => "account.internal",
        }
    }
}

/// The public description of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AccountInfo {
    pub id: String,
    pub name: String,
    pub created_ms: u64,
    pub disabled: bool,
    /// The crypto key id of the account's default P-256 signing key.
    pub signing_key: String,
    /// Its public key, SEC1 compressed, hex.
    pub public_key: String,
    pub addresses: Addresses,
    pub tokens: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Addresses {
    /// Neo N3 address of the signing key (version 0x35, Base58Check of the verification script hash).
    pub neo_n3: String,
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_ms: u64,
    pub expires_ms: Option<u64>,
}

/// A newly issued token: the only time its secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IssuedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    pub secret: String,
}

/// A new account and its first token (every scope, no expiry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Created {
    pub account: AccountInfo,
    pub token: IssuedToken,
}

/// What a new token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    pub name: String,
    pub scopes: Vec<Scope>,
    /// Expires this long after it is issued; `None`: never (unless `not_after` says otherwise).
    pub ttl: Option<Duration>,
    /// Expires at this time (ms since the Unix epoch) at the latest: the expiry of the token that
    /// issues it.
    pub not_after: Option<u64>,
}

type Answer<T> = Reply<Result<T, Error>>;

/// Requests to the account service. Who may ask is the API's business (admin, or the account itself).
#[derive(Debug)]
pub enum Request {
    Create {
        name: String,
        reply: Answer<Created>,
    },
    Get {
        id: String,
        reply: Answer<AccountInfo>,
    },
    List {
        reply: Answer<Vec<AccountInfo>>,
    },
    /// Disables (or enables again) every token of the account; its data stays.
    SetDisabled {
        id: String,
        disabled: bool,
        reply: Answer<AccountInfo>,
    },
    /// Removes the account, its tokens, its keys and its stored values.
    Delete {
        id: String,
        reply: Answer<()>,
    },
    IssueToken {
        id: String,
        grant: TokenGrant,
        reply: Answer<IssuedToken>,
    },
    Tokens {
        id: String,
        reply: Answer<Vec<TokenInfo>>,
    },
    RevokeToken {
        id: String,
        token: String,
        reply: Answer<()>,
    },
}

impl runtime::bus::Operation for Request {
    fn operation(&self) -> &'static str {
        match self {
            Request::Create { .. } => "create",
            Request::Get { .. } => "get",
            Request::List { .. } => "list",
            Request::SetDisabled { .. } => "set_disabled",
            Request::Delete { .. } => "delete",
            Request::IssueToken { .. } => "issue_token",
            Request::Tokens { .. } => "tokens",
            Request::RevokeToken { .. } => "revoke_token",
        }
    }
}

pub type Handle = runtime::Handle<Request>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use runtime::{CallError, Classify, ErrorKind};

    use super::Error;

    #[test]
    fn every_error_has_its_kind_and_code() {
        let table = [
            (
                Error::NoAccount {
                    account: "acc_1".into(),
                },
                ErrorKind::NotFound,
                "account.not_found",
            ),
            (
                Error::NoToken {
                    account: "acc_1".into(),
                    token: "tok_1".into(),
                },
                ErrorKind::NotFound,
                "account.not_found",
            ),
            (
                Error::BadInput("empty".into()),
                ErrorKind::Invalid,
                "account.bad_input",
            ),
            (
                Error::NameTaken("alice".into()),
                ErrorKind::Conflict,
                "account.name_taken",
            ),
            (
                Error::TooManyTokens {
                    count: 3,
                    limit: 3,
                    setting: super::MAX_TOKENS.name(),
                },
                ErrorKind::Conflict,
                "account.too_many_tokens",
            ),
            (
                Error::Unavailable {
                    what: "saving the account",
                    source: CallError::Interrupted {
                        service: storage::NAME,
                    },
                },
                ErrorKind::Unavailable {
                    retry_after: Duration::from_secs(1),
                },
                "account.unavailable",
            ),
            (
                Error::Internal("bug".into()),
                ErrorKind::Internal,
                "account.internal",
            ),
        ];
        for (error, kind, code) in table {
            assert_eq!((error.kind(), error.code()), (kind, code), "{error:?}");
        }
    }

    #[test]
    fn an_unavailable_error_names_what_and_which_service() {
        let e = Error::Unavailable {
            what: "creating the signing key",
            source: CallError::Interrupted {
                service: crypto::NAME,
            },
        };
        assert!(
            e.to_string()
                .starts_with("creating the signing key: the crypto service did not answer: "),
            "{e}"
        );
    }
}
