//! What can go wrong calling Cloister, with the API's own error body when it answered with one.

use std::time::Duration;

use reqwest::StatusCode;

/// The API's error answer: its HTTP status, its stable code (`storage.not_found`,
/// `auth.invalid_token`, ...), its message for people, and when to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable and machine-readable: `AREA.REASON`; `unknown` when the body was not the API's
    /// error object (a proxy's answer, say).
    pub code: String,
    /// For people: what went wrong and what to do.
    pub message: String,
    /// Whether the same request may succeed later.
    pub retryable: bool,
    /// The `Retry-After` header: when to try again.
    pub retry_after: Option<Duration>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {})", self.message, self.status, self.code)
    }
}

/// Why a call failed. Each variant's cause is its `source()` (print the chain, as `anyhow`'s
/// `{:#}` does, to see it).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No answer: the runtime is not there, or the connection broke before it answered.
    #[error("cannot reach Cloister at {base}")]
    Unreachable {
        /// The client's base URL.
        base: String,
        /// What the HTTP client said.
        #[source]
        source: reqwest::Error,
    },
    /// The API answered with an error.
    #[error("{0}")]
    Api(ApiError),
    /// The answer could not be read to its end (the connection broke off).
    #[error("reading the answer of {url}")]
    Read {
        /// The request's URL.
        url: String,
        /// What the HTTP client said.
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not what this endpoint answers (a different version of Cloister, or not
    /// Cloister at all).
    #[error("{url} did not answer as expected")]
    Decode {
        /// The request's URL.
        url: String,
        /// What did not fit.
        #[source]
        source: serde_json::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
}

impl Error {
    /// The API's error code, when the API answered with an error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api(e) => Some(&e.code),
            _ => None,
        }
    }

    /// The API's error, when it answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(e) => Some(e),
            _ => None,
        }
    }
}

/// The error an answer with `status`, `retry_after` and `body` stands for.
pub(crate) fn from_answer(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> Error {
    let (code, message, retryable) = match serde_json::from_slice::<wire::ErrorBody>(body) {
        Ok(b) => (b.error.code, b.error.message, b.error.retryable),
        Err(_) => ("unknown".to_owned(), "no message".to_owned(), false),
    };
    Error::Api(ApiError {
        status,
        code,
        message,
        retryable,
        retry_after,
    })
}
