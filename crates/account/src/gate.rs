//! The gate every service request passes: resolves a bearer token to its account and scopes from the
//! account service's published directory (no bus round trip), and applies the per-account rate limit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime::clock::now_ms;
use runtime::{Classify, ErrorKind};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::scope::{self, Area, Scope};
use runtime::rate::{Allowance, Limiter, Rate};

/// Who a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub account: String,
    pub token: String,
    pub scopes: Arc<[Scope]>,
    /// The account's default signing key (a P-256 key in the crypto service).
    pub signing_key: String,
    /// When this token expires (ms since the Unix epoch); `None`: never. A token it issues
    /// cannot outlive it.
    pub expires_ms: Option<u64>,
}

impl Principal {
    pub fn allows(&self, area: Area, operation: &str) -> bool {
        scope::allows(&self.scopes, area, operation)
    }
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the token is not valid for this runtime")]
    Unknown,
    #[error("the token {token} expired; issue a new one")]
    Expired { token: String },
    #[error("the account {account} is disabled")]
    Disabled { account: String },
    /// The account service has not loaded its directory yet (starting or restarting).
    #[error("the account service is starting; retry shortly")]
    Loading,
}

impl Classify for AuthError {
    fn kind(&self) -> ErrorKind {
        match self {
            AuthError::Unknown | AuthError::Expired { .. } => ErrorKind::Unauthenticated,
            AuthError::Disabled { .. } => ErrorKind::Forbidden,
            AuthError::Loading => ErrorKind::Unavailable {
                retry_after: Duration::from_secs(1),
            },
        }
    }

    fn code(&self) -> &'static str {
        match self {
            AuthError::Unknown => "auth.invalid_token",
            AuthError::Expired { .. } => "auth.token_expired",
            AuthError::Disabled { .. } => "auth.account_disabled",
            AuthError::Loading => "account.loading",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub(crate) principal: Principal,
    pub(crate) expires_ms: Option<u64>,
    pub(crate) disabled: bool,
}

/// What the account service publishes after every change: token digests to grants, and the limit.
#[derive(Debug, Clone)]
pub struct Directory {
    pub(crate) loaded: bool,
    pub(crate) grants: HashMap<[u8; 32], Grant>,
    pub(crate) rate: Rate,
}

impl Directory {
    pub(crate) fn loading(rate: Rate) -> Directory {
        Directory {
            loaded: false,
            grants: HashMap::new(),
            rate,
        }
    }
}

/// Only the digest of a token is kept; tokens are 256-bit random, so a fast hash is enough.
pub(crate) fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A token as the directory knows it: the SHA-256 of its secret. The API hashes a presented
/// token once and uses the digest both to compare it with the admin token's and to look it up
/// here ([`Gate::authenticate_digest`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenDigest(pub(crate) [u8; 32]);

impl TokenDigest {
    pub fn of(secret: &str) -> TokenDigest {
        TokenDigest(digest(secret))
    }

    /// Equal digests, in a time that does not depend on where they differ.
    pub fn matches(&self, other: &TokenDigest) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest(..)")
    }
}

/// Buckets kept before idle (full) ones are forgotten.
const BUCKETS_KEPT: usize = 4096;

/// Cheap to clone; every clone sees the directory the account service last published.
#[derive(Debug, Clone)]
pub struct Gate {
    directory: watch::Receiver<Arc<Directory>>,
    buckets: Arc<Limiter>,
}

impl Gate {
    pub(crate) fn new(directory: watch::Receiver<Arc<Directory>>) -> Gate {
        Gate {
            directory,
            buckets: Arc::new(Limiter::new(BUCKETS_KEPT)),
        }
    }

    /// The account and scopes of a bearer token.
    pub fn authenticate(&self, secret: &str) -> Result<Principal, AuthError> {
        self.authenticate_digest(&TokenDigest::of(secret))
    }

    /// [`Gate::authenticate`], for a token already hashed.
    pub fn authenticate_digest(&self, token: &TokenDigest) -> Result<Principal, AuthError> {
        let directory = self.directory.borrow();
        if !directory.loaded {
            return Err(AuthError::Loading);
        }
        let grant = directory.grants.get(&token.0).ok_or(AuthError::Unknown)?;
        if grant.disabled {
            return Err(AuthError::Disabled {
                account: grant.principal.account.clone(),
            });
        }
        if grant.expires_ms.is_some_and(|at| now_ms() >= at) {
            return Err(AuthError::Expired {
                token: grant.principal.token.clone(),
            });
        }
        Ok(grant.principal.clone())
    }

    /// Waits until the account service publishes its directory again (an account or token
    /// changed, or the rate limit did).
    pub async fn changed(&mut self) {
        let _ = self.directory.changed().await;
    }

    /// Takes one request from `account`'s bucket, or says how long to wait.
    pub fn admit(&self, account: &str) -> Result<(), Duration> {
        let rate = self.directory.borrow().rate;
        self.buckets.admit(account, rate, Instant::now())
    }

    /// `account`'s bucket, for work done on its behalf after the request (a script's capability
    /// calls): each call takes a token as a request does. At the rate published now.
    pub fn allowance(&self, account: &str) -> Allowance {
        let rate = self.directory.borrow().rate;
        Allowance::new(self.buckets.clone(), account, rate)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use runtime::{Classify, ErrorKind};

    use super::AuthError;

    /// The kind and the stable code of each refusal, as the API answers them (docs/api.md,
    /// "Authentication"): 401 for a token the runtime does not accept, 403 for a disabled account,
    /// 503 while the directory loads.
    #[test]
    fn every_auth_error_has_its_kind_and_code() {
        let table = [
            (
                AuthError::Unknown,
                ErrorKind::Unauthenticated,
                "auth.invalid_token",
            ),
            (
                AuthError::Expired {
                    token: "tok_1".into(),
                },
                ErrorKind::Unauthenticated,
                "auth.token_expired",
            ),
            (
                AuthError::Disabled {
                    account: "acc_1".into(),
                },
                ErrorKind::Forbidden,
                "auth.account_disabled",
            ),
            (
                AuthError::Loading,
                ErrorKind::Unavailable {
                    retry_after: Duration::from_secs(1),
                },
                "account.loading",
            ),
        ];
        for (error, kind, code) in table {
            assert_eq!((error.kind(), error.code()), (kind, code), "{error:?}");
        }
    }
}
