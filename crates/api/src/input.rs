//! Reading what a request brings: JSON bodies, base64 fields, and the service call's own failure.

use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use base64::Engine;
use runtime::CallError;
use serde::de::DeserializeOwned;

use crate::ApiError;
use crate::body::InForce;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A JSON body, read as axum's `Json` reads it, refused in the API's own error shape: 415
/// `request.unsupported_media_type` without `Content-Type: application/json`, 413
/// `request.too_large` over the endpoint's limit, 400 `request.invalid_body` for anything else
/// (bad JSON, an unknown field, a wrong type). It reads the body, so it comes last in a handler's
/// arguments, after the extractors that decide who may call ([`crate::auth::Admin`],
/// [`crate::auth::Allowed`]): a caller who may not call learns that, not what is wrong with the body.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let limit = body_timeout(&request);
        let in_force = request.extensions().get::<InForce>().cloned();
        // Every JSON body of the API is an object: serde's structs would also read an array.
        match within(
            limit,
            axum::Json::<wire::json::Object<T>>::from_request(request, state),
        )
        .await?
        {
            Ok(axum::Json(wire::json::Object(value))) => Ok(Json(value)),
            Err(JsonRejection::MissingJsonContentType(e)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "request.unsupported_media_type",
                format!("{}; send `Content-Type: application/json`", e.body_text()),
            )),
            Err(JsonRejection::BytesRejection(e)) => Err(bytes_rejection(&e, in_force.as_ref())),
            Err(e) => Err(ApiError::bad_request("request.invalid_body", e.body_text())),
        }
    }
}

/// A raw body (a stored value, an ONNX file, a TOML configuration), refused in the API's own
/// error shape: 413 `request.too_large` over the endpoint's limit, 400 `request.invalid_body` when
/// it cannot be read.
#[derive(Debug, Clone, Default)]
pub(crate) struct Raw(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for Raw {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let limit = body_timeout(&request);
        let in_force = request.extensions().get::<InForce>().cloned();
        within(limit, axum::body::Bytes::from_request(request, state))
            .await?
            .map(Raw)
            .map_err(|e| bytes_rejection(&e, in_force.as_ref()))
    }
}

/// How long the server lets a handler read its body (`runtime.body_read_timeout`); in-process,
/// without the server, no limit.
fn body_timeout(request: &Request) -> Option<std::time::Duration> {
    request
        .extensions()
        .get::<crate::server::BodyTimeout>()
        .map(|t| t.0)
}

/// `read`, or 408 `request.body_timeout` once `limit` has passed.
async fn within<T>(
    limit: Option<std::time::Duration>,
    read: impl std::future::Future<Output = T>,
) -> Result<T, ApiError> {
    let Some(limit) = limit else {
        return Ok(read.await);
    };
    tokio::time::timeout(limit, read).await.map_err(|_| {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request.body_timeout",
            format!(
                "the body did not arrive within runtime.body_read_timeout ({})",
                humantime::format_duration(limit)
            ),
        )
    })
}

/// A body that could not be read: over the route's limit (named, when [`crate::body`] set it), or
/// broken off.
fn bytes_rejection(e: &BytesRejection, in_force: Option<&InForce>) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        if let Some(in_force) = in_force {
            return in_force.refusal(None);
        }
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request.too_large",
            format!("{}: the body is over this endpoint's limit", e.body_text()),
        )
    } else {
        ApiError::bad_request("request.invalid_body", e.body_text())
    }
}

pub(crate) fn decode(field: &str, value: &str) -> Result<Vec<u8>, ApiError> {
    B64.decode(value.as_bytes()).map_err(|e| {
        ApiError::bad_request(
            "request.invalid_base64",
            format!("{field} is not base64: {e}"),
        )
    })
}

/// An optional base64 field; absent means empty.
pub(crate) fn decode_optional(field: &str, value: Option<&str>) -> Result<Vec<u8>, ApiError> {
    value
        .map(|v| decode(field, v))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// A call that did not reach an answer: the service is restarting, its circuit is open, or the call
/// ran out of the request's deadline (`service.timeout`, the message naming the service that did
/// not answer in time). All 503 with `Retry-After`.
pub(crate) fn call_error(e: CallError) -> ApiError {
    let retry = match &e {
        CallError::CircuitOpen { retry_after, .. } => retry_after.as_secs().max(1),
        _ => 1,
    };
    let code = match &e {
        CallError::DeadlineExceeded { .. } => "service.timeout",
        _ => "service.unavailable",
    };
    ApiError::unavailable(code, e.to_string(), retry)
}

/// Asks a service and waits for its answer: a call that did not get one is a 503 (`call_error`);
/// the service's own error becomes the API error its `From` impl says.
pub(crate) async fn ask<R, T, E>(
    handle: &runtime::Handle<R>,
    make: impl FnOnce(runtime::Reply<Result<T, E>>) -> R,
) -> Result<T, ApiError>
where
    R: runtime::bus::Operation,
    T: Send + 'static,
    E: Send + 'static,
    ApiError: From<E>,
{
    handle
        .call(make)
        .await
        .map_err(call_error)?
        .map_err(ApiError::from)
}

pub(crate) use crate::budget::MAX_WAIT_S;

/// A job query's `wait_s`, 1 to [`MAX_WAIT_S`] (absent: do not wait). `wait_s=0` is refused rather
/// than read as "do not wait": leave it out for that.
pub(crate) fn wait_s(wait_s: Option<u64>) -> Result<std::time::Duration, ApiError> {
    match wait_s {
        None => Ok(std::time::Duration::ZERO),
        Some(s @ 1..=MAX_WAIT_S) => Ok(std::time::Duration::from_secs(s)),
        Some(_) => Err(ApiError::bad_request(
            "request.invalid_query",
            format!("wait_s is 1 to {MAX_WAIT_S} (leave it out not to wait)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{MAX_WAIT_S, wait_s};

    #[test]
    fn wait_s_is_one_to_thirty_or_absent() {
        assert_eq!(wait_s(None).expect("absent"), Duration::ZERO);
        assert_eq!(wait_s(Some(1)).expect("1"), Duration::from_secs(1));
        assert_eq!(
            wait_s(Some(MAX_WAIT_S)).expect("30"),
            Duration::from_secs(30)
        );
        for refused in [0, MAX_WAIT_S + 1] {
            let e = wait_s(Some(refused)).expect_err("out of range");
            assert_eq!(
                (e.status.as_u16(), e.code),
                (400, "request.invalid_query"),
                "wait_s={refused}"
            );
            assert!(e.message.contains("1 to 30"), "{}", e.message);
        }
    }
}
