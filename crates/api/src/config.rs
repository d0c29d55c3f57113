//! Hot configuration over HTTP: show, apply (TOML body), history, rollback.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runtime::reconfig::{Outcome, Source, Version};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{ApiError, AppState};

/// Larger bodies are refused before parsing.
const MAX_CONFIG_BYTES: usize = 1 << 20;

fn summary(v: &Version) -> Value {
    json!({
        "version": v.version,
        "hash": v.hash,
        "applied_at": humantime::format_rfc3339_millis(v.applied_at).to_string(),
        "source": v.source,
        "status": v.status,
    })
}

pub(crate) async fn show(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let current = state.configs.current().ok_or_else(|| {
        ApiError::unavailable(
            "config.unavailable",
            "the configuration controller has stopped",
            5,
        )
    })?;
    let mut body = summary(&current);
    body["text"] = Value::String(current.text.to_string());
    body["config"] = serde_json::to_value(&*current.config).unwrap_or(Value::Null);
    Ok(Json(body))
}

/// One kept version, with its text: the dashboard diffs two of them.
pub(crate) async fn version(
    State(state): State<AppState>,
    Path(version): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let version: u64 = version.parse().map_err(|_| {
        ApiError::bad_request(
            "request.invalid_path",
            format!("{version:?} is not a version number"),
        )
    })?;
    let history = state.configs.history();
    let v = history
        .iter()
        .find(|v| v.version == version)
        .ok_or_else(|| {
            let kept: Vec<String> = history.iter().map(|v| v.version.to_string()).collect();
            ApiError::not_found(
                "config.unknown_version",
                format!(
                    "version {version} is not kept (the last {} are: {})",
                    kept.len(),
                    kept.join(", ")
                ),
            )
        })?;
    let mut body = summary(v);
    body["text"] = Value::String(v.text.to_string());
    body["config"] = serde_json::to_value(&*v.config).unwrap_or(Value::Null);
    Ok(Json(body))
}

pub(crate) async fn history(State(state): State<AppState>) -> Json<Value> {
    let versions: Vec<Value> = state.configs.history().iter().rev().map(summary).collect();
    Json(json!({ "versions": versions }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApplyQuery {
    /// Answer after the watch window instead of as soon as the version runs.
    #[serde(default)]
    wait: bool,
}

fn respond(outcome: Option<Outcome>) -> Result<Response, ApiError> {
    let outcome = outcome.ok_or_else(|| {
        ApiError::unavailable(
            "config.unavailable",
            "the configuration controller has stopped",
            5,
        )
    })?;
    let status = match &outcome {
        Outcome::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Outcome::Applied { .. } | Outcome::Unchanged { .. } | Outcome::RolledBack { .. } => {
            StatusCode::OK
        }
    };
    let mut body = serde_json::to_value(&outcome).unwrap_or(Value::Null);
    if let Outcome::Rejected { problems } = &outcome {
        let message = problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        body["error"] =
            json!({ "code": "config.rejected", "message": message, "retryable": false });
    }
    Ok((status, Json(body)).into_response())
}

pub(crate) async fn apply(
    State(state): State<AppState>,
    query: Result<Query<ApplyQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::bad_request("request.invalid_query", e.body_text()))?;
    if body.len() > MAX_CONFIG_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "config.too_large",
            format!("a configuration may be at most {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    let text = String::from_utf8(body.to_vec()).map_err(|_| {
        ApiError::bad_request(
            "request.invalid_body",
            "the configuration must be UTF-8 TOML",
        )
    })?;
    respond(state.configs.apply(text, Source::Api, q.wait).await)
}

pub(crate) async fn rollback(State(state): State<AppState>) -> Result<Response, ApiError> {
    respond(state.configs.rollback().await)
}
