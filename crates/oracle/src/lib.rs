//! The oracle service: fetches external data from allowed hosts, extracts a value from each source
//! (a JSONPath, or a script run by the computation service as the caller), aggregates them (median,
//! mode or quorum, with a minimum number of agreeing sources) and returns a report signed by a key
//! that lives in the crypto service and is bound to the enclave by a quote.
//!
//! It is the only service with network access: its spec declares `network_access`, it refuses to
//! start without it, and its crate is the only service crate with an HTTP client.

mod address;
mod aggregate;
mod fetch;
pub mod report;
pub mod request;
mod service;

use std::time::Duration;

use runtime::{Reply, ServiceName};

pub use crate::report::{KeyAttestation, SignedReport, Verified, VerifyError, verify};
pub use crate::request::{
    Aggregation, AggregationMethod, Extraction, Method, OracleRequest, Source,
};
pub use crate::service::{
    ALLOWED_HOSTS, CACHE_TTL_MS, HOST_RATE_PER_SECOND, MAX_RESPONSE_BYTES, MAX_SOURCES, Oracle,
    PLAIN_HTTP_HOSTS, REQUESTS_PER_MINUTE, TIMEOUT_MS,
};

pub const NAME: ServiceName = ServiceName::from_static("oracle");

/// The crypto owner of the oracle's signing key (no account can be named so).
pub const KEY_OWNER: &str = "@oracle";

/// What went wrong with a request as a whole. A source that fails is not an error: the report
/// says so for that source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadInput(String),
    #[error(
        "account {owner} is over [services.oracle] requests_per_minute ({limit}); try again in {retry_after_s} s"
    )]
    RateLimited {
        owner: String,
        limit: i64,
        retry_after_s: u64,
    },
    /// A service the oracle needs did not answer (crypto to sign, computation for a script).
    #[error("{0}")]
    Unavailable(String),
    /// The platform cannot produce a quote.
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Internal(String),
}

impl runtime::Classify for Error {
    fn kind(&self) -> runtime::ErrorKind {
        use runtime::ErrorKind;
        match self {
            Error::BadInput(_) => ErrorKind::Invalid,
            Error::RateLimited { retry_after_s, .. } => ErrorKind::Limited {
                retry_after: Duration::from_secs(*retry_after_s),
            },
            Error::Unavailable(_) => ErrorKind::Unavailable {
                retry_after: Duration::from_secs(1),
            },
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Error::BadInput(_) => "oracle.bad_input",
            Error::RateLimited { .. } => "oracle.rate_limited",
            Error::Unavailable(_) => "oracle.unavailable",
            Error::Unsupported(_) => "oracle.unsupported",
            Error::Internal(_) => "oracle.internal",
        }
    }
}

type Answer<T> = Reply<Result<T, Error>>;

/// Requests to the oracle.
#[derive(Debug)]
pub enum Request {
    /// Fetch, extract, aggregate and sign. Scripts run as `caller`.
    Fetch {
        caller: computation::Caller,
        request: OracleRequest,
        reply: Answer<SignedReport>,
    },
    /// The signing key with a quote binding it.
    Key { reply: Answer<KeyAttestation> },
}

impl runtime::bus::Operation for Request {
    fn operation(&self) -> &'static str {
        match self {
            Request::Fetch { .. } => "fetch",
            Request::Key { .. } => "key",
        }
    }
}

pub type Handle = runtime::Handle<Request>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use runtime::{Classify, ErrorKind};

    use super::Error;

    /// The kind and the stable code of each variant, as the API answers them (docs/api.md).
    #[test]
    fn every_error_has_its_kind_and_code() {
        let table = [
            (
                Error::BadInput("x".into()),
                ErrorKind::Invalid,
                "oracle.bad_input",
            ),
            (
                Error::RateLimited {
                    owner: "acc_x".into(),
                    limit: 60,
                    retry_after_s: 7,
                },
                ErrorKind::Limited {
                    retry_after: Duration::from_secs(7),
                },
                "oracle.rate_limited",
            ),
            (
                Error::Unavailable("x".into()),
                ErrorKind::Unavailable {
                    retry_after: Duration::from_secs(1),
                },
                "oracle.unavailable",
            ),
            (
                Error::Unsupported("x".into()),
                ErrorKind::Unsupported,
                "oracle.unsupported",
            ),
            (
                Error::Internal("x".into()),
                ErrorKind::Internal,
                "oracle.internal",
            ),
        ];
        for (error, kind, code) in table {
            assert_eq!((error.kind(), error.code()), (kind, code), "{error:?}");
        }
    }
}
