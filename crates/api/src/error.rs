//! The API's error: an HTTP status, a stable machine code, a human message, and whether to retry.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use runtime::{Classify, ErrorKind};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds after which a retry may succeed; set for 503s.
    pub retry_after: Option<u64>,
    /// Whether the failure is already in the log (an internal error, under its reference).
    pub(crate) logged: bool,
}

/// Every error answer has this shape, whatever the status; the type lives in `wire`, where the
/// SDK reads it too.
pub use wire::{ErrorBody, ErrorDetail};

impl From<&ApiError> for ErrorBody {
    fn from(e: &ApiError) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: e.code.to_owned(),
                message: e.message.clone(),
                retryable: e.retry_after.is_some(),
                request_id: crate::request_id::current(),
            },
        }
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            logged: false,
        }
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 429 with `Retry-After`: the caller's account is over its rate limit.
    pub fn rate_limited(message: impl Into<String>, retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "auth.rate_limited", message)
        }
    }

    /// 403: the token is valid but its scopes do not include this operation.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, code, message)
    }
}

impl ApiError {
    /// The one place where a kind of failure becomes an HTTP status. An internal error's body
    /// names no detail: it carries a reference that the log line carries too.
    pub fn classified<E: Classify + ?Sized>(e: &E) -> ApiError {
        let message = e.to_string();
        let code = e.code();
        match e.kind() {
            ErrorKind::NotFound => ApiError::not_found(code, message),
            ErrorKind::Invalid => ApiError::bad_request(code, message),
            ErrorKind::Unprocessable => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
            ErrorKind::TooLarge => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code, message),
            ErrorKind::Conflict => ApiError::new(StatusCode::CONFLICT, code, message),
            ErrorKind::Unauthenticated => ApiError::new(StatusCode::UNAUTHORIZED, code, message),
            ErrorKind::Forbidden => ApiError::forbidden(code, message),
            ErrorKind::Limited { retry_after } => ApiError {
                retry_after: Some(whole_seconds(retry_after)),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message)
            },
            ErrorKind::Unavailable { retry_after } => {
                ApiError::unavailable(code, message, whole_seconds(retry_after))
            }
            ErrorKind::Unsupported => ApiError::new(StatusCode::NOT_IMPLEMENTED, code, message),
            ErrorKind::Integrity => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code, message),
            ErrorKind::Internal => {
                let reference = runtime::id::new_id("err");
                tracing::error!(%reference, code, error = %message, "internal error");
                ApiError {
                    logged: true,
                    ..ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        code,
                        format!(
                            "an internal error; the runtime's log has the details under reference {reference}"
                        ),
                    )
                }
            }
        }
    }
}

/// `Retry-After` in whole seconds, at least one.
fn whole_seconds(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() && self.retry_after.is_none() && !self.logged {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let mut response = (self.status, Json(ErrorBody::from(&self))).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// `From` for every error type the API answers with, each said once here and classified beside its
/// enum (its kind and code), so a handler's `?` and [`crate::input::ask`] turn it into the one answer
/// [`ApiError::classified`] gives.
macro_rules! classified {
    ($($error:ty),* $(,)?) => {$(
        impl From<$error> for ApiError {
            fn from(e: $error) -> ApiError {
                ApiError::classified(&e)
            }
        }
    )*};
}

classified![
    runtime::Error,
    runtime::journal::JournalError,
    crypto::Error,
    storage::Error,
    account::Error,
    account::AuthError,
    computation::Error,
    oracle::Error,
    ai::Error,
    cluster::Error,
];
