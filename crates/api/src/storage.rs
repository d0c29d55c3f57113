//! The storage service over HTTP: raw bodies for single values, JSON (base64 values) for batches.
//! Each account has its own namespace (the admin token has its own, `admin`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use storage::{Error, Request, Write};

use crate::auth::Caller;
use crate::input::{ask, body, decode};
use crate::{ApiError, AppState};
use account::Area;
use axum::Extension;

/// The header carrying a value's version (the commit that wrote it).
pub(crate) const VERSION_HEADER: &str = "x-cloister-version";

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match e {
            Error::NotFound(_) => ApiError::not_found("storage.not_found", e.to_string()),
            Error::TooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "storage.too_large",
                e.to_string(),
            ),
            Error::BadInput(_) => ApiError::bad_request("storage.bad_input", e.to_string()),
            Error::Integrity { .. } => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage.integrity",
                e.to_string(),
            ),
            Error::CryptoUnavailable(_) => {
                ApiError::unavailable("storage.crypto_unavailable", e.to_string(), 1)
            }
            Error::Database(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage.database",
                e.to_string(),
            ),
            Error::Internal(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage.internal",
                e.to_string(),
            ),
        }
    }
}

pub(crate) async fn put(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.allow(Area::Storage, "put")?;
    let version = ask(&state.storage, |reply| Request::Put {
        namespace: caller.owner().into(),
        key: key.clone(),
        value: body.to_vec(),
        reply,
    })
    .await?;
    Ok(Json(json!({ "key": key, "version": version })).into_response())
}

pub(crate) async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    caller.allow(Area::Storage, "get")?;
    let value = ask(&state.storage, |reply| Request::Get {
        namespace: caller.owner().into(),
        key,
        reply,
    })
    .await?;
    let mut response = value.data.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(VERSION_HEADER, HeaderValue::from(value.version));
    Ok(response)
}

pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    caller.allow(Area::Storage, "delete")?;
    let version = ask(&state.storage, |reply| Request::Delete {
        namespace: caller.owner().into(),
        key: key.clone(),
        reply,
    })
    .await?;
    Ok(Json(json!({ "key": key, "version": version, "deleted": true })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
    after: Option<String>,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    caller.allow(Area::Storage, "list")?;
    let Query(q) =
        query.map_err(|e| ApiError::bad_request("request.invalid_query", e.body_text()))?;
    let page = ask(&state.storage, |reply| Request::List {
        namespace: caller.owner().into(),
        prefix: q.prefix,
        after: q.after,
        limit: q.limit.unwrap_or(100),
        reply,
    })
    .await?;
    Ok(Json(page).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchBody {
    writes: Vec<BatchWrite>,
}

/// `{"key": K, "value": BASE64}` or `{"key": K, "delete": true}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchWrite {
    key: String,
    value: Option<String>,
    #[serde(default)]
    delete: bool,
}

pub(crate) async fn batch(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    b: Result<Json<BatchBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    caller.allow(Area::Storage, "batch")?;
    let b = body(b)?;
    let writes = b
        .writes
        .into_iter()
        .enumerate()
        .map(|(i, w)| match (w.value, w.delete) {
            (Some(v), false) => decode(&format!("writes[{i}].value"), &v)
                .map(|value| Write::Put { key: w.key, value }),
            (None, true) => Ok(Write::Delete { key: w.key }),
            _ => Err(ApiError::bad_request(
                "request.invalid_body",
                format!("writes[{i}]: give either \"value\" or \"delete\": true"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let version = ask(&state.storage, |reply| Request::Batch {
        namespace: caller.owner().into(),
        writes,
        reply,
    })
    .await?;
    Ok(Json(json!({ "version": version })).into_response())
}
