//! The storage service over HTTP: raw bodies for single values, JSON (base64 values) for batches.
//! Each account has its own namespace (the admin token has its own, `admin`).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use storage::{Request, Write};
use utoipa::IntoParams;

use wire::storage::{BatchBody, Committed, Deleted, Listed, Page, Stored};

use crate::auth::{Allowed, Caller, op};
use crate::error::ErrorBody;
use crate::input::{self, Raw, ask, decode};
use crate::{ApiError, AppState};
use account::Area;

/// The header carrying a value's version (the commit that wrote it).
pub(crate) use wire::storage::VERSION_HEADER;

/// Stores the raw body at `key` in the caller's namespace, durably (acknowledged after commit).
#[utoipa::path(put, path = "/v1/storage/{key}", tag = "storage", params(("key" = String, Path, description = "The key; may contain `/`")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The value, raw"),
    responses((status = 200, description = "Stored", body = Stored),
        (status = 413, description = "Larger than `[services.storage] max_value_bytes` (`storage.too_large`)", body = ErrorBody)))]
pub(crate) async fn put(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<op::StoragePut>,
    Path(key): Path<String>,
    Raw(body): Raw,
) -> Result<Response, ApiError> {
    let version = ask(&state.storage, |reply| Request::Put {
        namespace: caller.owner().into(),
        key: key.clone(),
        value: body.to_vec(),
        reply,
    })
    .await?;
    Ok(Json(Stored { key, version }).into_response())
}

/// The value at `key`, raw, with its version in `x-cloister-version`.
#[utoipa::path(get, path = "/v1/storage/{key}", tag = "storage", params(("key" = String, Path, description = "The key; may contain `/`")),
    responses((status = 200, description = "The value", content_type = "application/octet-stream", body = Vec<u8>,
            headers(("x-cloister-version" = u64, description = "The commit that wrote it"))),
        (status = 404, description = "No value (`storage.not_found`)", body = ErrorBody),
        (status = 500, description = "Tampered or rolled back (`storage.integrity`): never returned as data", body = ErrorBody)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    caller.allow(Area::Storage, "get")?;
    // A value the service has cached answers here, on this task: no bus round trip.
    let cached = state
        .storage_reads
        .get(&state.storage, caller.owner(), &key);
    let value = match cached {
        Some(value) => value,
        None => {
            ask(&state.storage, |reply| Request::Get {
                namespace: caller.owner().into(),
                key,
                reply,
            })
            .await?
        }
    };
    let mut response = value.data.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(VERSION_HEADER, HeaderValue::from(value.version));
    Ok(response)
}

/// Deletes the value at `key`.
#[utoipa::path(delete, path = "/v1/storage/{key}", tag = "storage", params(("key" = String, Path, description = "The key; may contain `/`")),
    responses((status = 200, description = "Deleted", body = Deleted), (status = 404, description = "No value", body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    caller.allow(Area::Storage, "delete")?;
    let version = ask(&state.storage, |reply| Request::Delete {
        namespace: caller.owner().into(),
        key: key.clone(),
        reply,
    })
    .await?;
    Ok(Json(Deleted {
        key,
        version,
        deleted: true,
    })
    .into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only keys starting with this.
    #[serde(default)]
    prefix: String,
    /// At most this many (default 100; at most `[services.storage] max_list_limit`).
    #[param(minimum = 1)]
    limit: Option<usize>,
    /// Start after this key (the previous page's `next`).
    after: Option<String>,
}

/// Keys (with sizes and versions) in the caller's namespace, by prefix, in pages.
#[utoipa::path(get, path = "/v1/storage", tag = "storage", params(ListQuery),
    responses((status = 200, description = "A page of keys", body = Page)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
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
    let page = Page {
        keys: page
            .keys
            .into_iter()
            .map(|l| Listed {
                key: l.key,
                version: l.version,
            })
            .collect(),
        next: page.next,
    };
    Ok(Json(page).into_response())
}

/// Puts and deletes in one atomic commit.
#[utoipa::path(post, path = "/v1/storage", tag = "storage", request_body = BatchBody,
    responses((status = 200, description = "Committed", body = Committed), (status = 400, description = "A write is malformed", body = ErrorBody)))]
pub(crate) async fn batch(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<op::StorageBatch>,
    input::Json(b): input::Json<BatchBody>,
) -> Result<Response, ApiError> {
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
    Ok(Json(Committed { version }).into_response())
}
