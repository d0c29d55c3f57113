//! The oracle service: fetches external data from allowed hosts, extracts a value from each source
//! (a JSONPath, or a script the computation service runs without capabilities and deterministic),
//! aggregates them (median, mode or quorum, with a minimum number of agreeing sources) and returns a
//! report signed by a key that lives in the crypto service and is bound to the enclave by a quote.
//! The report says how each value was obtained (a script's value carries the script's SHA-256).
//!
//! It is the only service with network access: its spec declares `network_access`, it refuses to
//! start without it, and its crate is the only service crate with an HTTP client.

mod address;
mod aggregate;
pub mod canonical;
mod fetch;
pub mod report;
pub mod request;
mod service;

use std::time::Duration;

use runtime::{Reply, ServiceName};

pub use crate::report::{KeyAttestation, SignedReport, Verified, VerifyError, verify};
pub use crate::request::{
    Aggregation, AggregationMethod, Extraction, Method, NotExtracted, OracleRequest, RequestLimits,
    Source, extract_json_path,
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
    /// The request is refused before anything is fetched. `field` names what is wrong
    /// (`sources`, `aggregation.min_agreeing`, `headers`, `extract.json_path`...), inside
    /// `sources[source_index]` when it is about one source; `reason` is the whole sentence.
    #[error("{}{reason}", source_index.map(|i| format!("sources[{i}]: ")).unwrap_or_default())]
    BadInput {
        source_index: Option<usize>,
        field: &'static str,
        reason: String,
    },
    /// Like `BadInput`, for what the API document cannot say: parts that do not fit together
    /// (`min_agreeing` over the number of sources, `max_deviation` without `median`, a body on a
    /// GET), a JSONPath that does not parse, a header the oracle does not send, a script that
    /// reads `kv` or `crypto`.
    #[error("{}{reason}", source_index.map(|i| format!("sources[{i}]: ")).unwrap_or_default())]
    Unfit {
        source_index: Option<usize>,
        field: &'static str,
        reason: String,
    },
    #[error(
        "account {owner} is over [services.oracle] requests_per_minute ({limit}); try again in {retry_after_s} s"
    )]
    RateLimited {
        owner: String,
        limit: i64,
        retry_after_s: u64,
    },
    /// A service the oracle needs did not answer while it was doing `what` (crypto to sign):
    /// retry after [`Error::retry_after`].
    #[error("the {} service did not {what}: {source}", source.service())]
    Unavailable {
        what: &'static str,
        source: runtime::CallError,
    },
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
            Error::BadInput { .. } => ErrorKind::Invalid,
            Error::Unfit { .. } => ErrorKind::Unprocessable,
            Error::RateLimited { retry_after_s, .. } => ErrorKind::Limited {
                retry_after: Duration::from_secs(*retry_after_s),
            },
            Error::Unavailable { source, .. } => ErrorKind::Unavailable {
                retry_after: source.retry_after(),
            },
            Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Error::BadInput { .. } => "oracle.bad_input",
            Error::Unfit { .. } => "oracle.unfit",
            Error::RateLimited { .. } => "oracle.rate_limited",
            Error::Unavailable { .. } => "oracle.unavailable",
            Error::Unsupported(_) => "oracle.unsupported",
            Error::Internal(_) => "oracle.internal",
        }
    }
}

type Answer<T> = Reply<Result<T, Error>>;

/// Requests to the oracle.
#[derive(Debug)]
pub enum Request {
    /// Fetch, extract, aggregate and sign, for `owner` (an account id, or `admin`): its request
    /// limit, its cache entries and its fetch budget per host. Extraction scripts run as `owner`
    /// without capabilities and deterministic (see [`request::Extraction::Script`]).
    Fetch {
        owner: String,
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

    use runtime::{CallError, Classify, ErrorKind};

    use super::Error;

    /// The kind and the stable code of each variant, as the API answers them (docs/api.md).
    #[test]
    fn every_error_has_its_kind_and_code() {
        let table = [
            (
                Error::BadInput {
                    source_index: Some(2),
                    field: "headers",
                    reason: "at most 16 headers".into(),
                },
                ErrorKind::Invalid,
                "oracle.bad_input",
            ),
            (
                Error::Unfit {
                    source_index: Some(0),
                    field: "extract.json_path",
                    reason: "extract.json_path \"x\": not a JSONPath".into(),
                },
                ErrorKind::Unprocessable,
                "oracle.unfit",
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
                Error::Unavailable {
                    what: "sign",
                    source: CallError::Interrupted {
                        service: crypto::NAME,
                    },
                },
                ErrorKind::Unavailable {
                    retry_after: Duration::from_secs(1),
                },
                "oracle.unavailable",
            ),
            // An open circuit says when it half-opens: that is the retry the caller is told.
            (
                Error::Unavailable {
                    what: "sign",
                    source: CallError::CircuitOpen {
                        service: crypto::NAME,
                        retry_after: Duration::from_secs(9),
                    },
                },
                ErrorKind::Unavailable {
                    retry_after: Duration::from_secs(9),
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

    /// The typed fields keep the sentences the API has always answered.
    #[test]
    fn typed_errors_keep_their_messages() {
        let e = Error::Unfit {
            source_index: Some(1),
            field: "body",
            reason: "a GET sends no body".into(),
        };
        assert_eq!(e.to_string(), "sources[1]: a GET sends no body");
        let e = Error::BadInput {
            source_index: None,
            field: "sources",
            reason: "give at least one source".into(),
        };
        assert_eq!(e.to_string(), "give at least one source");
        let e = Error::Unavailable {
            what: "sign",
            source: CallError::Interrupted {
                service: crypto::NAME,
            },
        };
        assert!(
            e.to_string()
                .starts_with("the crypto service did not sign: "),
            "{e}"
        );
    }
}
