//! Hot configuration over HTTP: show, apply (TOML body), history, one kept version, rollback.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runtime::reconfig::{Outcome, Source, Version};
use serde::Deserialize;
use utoipa::IntoParams;

use wire::config::{ApplyAnswer, History, VersionSummary, VersionView};

use crate::auth::Admin;
use crate::error::{ErrorBody, ErrorDetail};
use crate::input::Raw;
use crate::{ApiError, AppState};

/// Larger bodies are refused before parsing.
const MAX_CONFIG_BYTES: usize = 1 << 20;

fn summary(v: &Version) -> VersionSummary {
    VersionSummary {
        version: v.version,
        hash: v.hash.clone(),
        applied_at: humantime::format_rfc3339_millis(v.applied_at).to_string(),
        source: v.source,
        status: v.status,
    }
}

fn full(v: &Version) -> Result<VersionView, ApiError> {
    // The parsed configuration is a document: it travels as the JSON it serializes to.
    let config = serde_json::to_value(&*v.config)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(VersionView {
        summary: summary(v),
        text: v.text.to_string(),
        config,
    })
}

fn stopped() -> ApiError {
    ApiError::unavailable(
        "config.unavailable",
        "the configuration controller has stopped",
        5,
    )
}

/// The running configuration.
#[utoipa::path(get, path = "/v1/config", tag = "config",
    responses((status = 200, description = "The running version", body = VersionView)))]
pub(crate) async fn show(State(state): State<AppState>) -> Result<Json<VersionView>, ApiError> {
    let current = state.configs.current().ok_or_else(stopped)?;
    Ok(Json(full(&current)?))
}

/// One kept version, with its text: the dashboard diffs two of them.
#[utoipa::path(get, path = "/v1/config/versions/{version}", tag = "config",
    params(("version" = u64, Path, description = "A version number from the history")),
    responses(
        (status = 200, description = "The version", body = VersionView),
        (status = 404, description = "Not kept (`config.unknown_version`; the last ten are)", body = ErrorBody),
    ))]
pub(crate) async fn version(
    State(state): State<AppState>,
    Path(version): Path<String>,
) -> Result<Json<VersionView>, ApiError> {
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
    Ok(Json(full(v)?))
}

/// The kept versions (the last ten), newest first.
#[utoipa::path(get, path = "/v1/config/history", tag = "config",
    responses((status = 200, description = "The kept versions", body = History)))]
pub(crate) async fn history(State(state): State<AppState>) -> Json<History> {
    let versions = state.configs.history().iter().rev().map(summary).collect();
    Json(History { versions })
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApplyQuery {
    /// Answer after the watch window (`runtime.config_watch`) instead of as soon as the version
    /// runs, so a rollback shows in the answer.
    #[serde(default)]
    wait: bool,
}

fn respond(outcome: Option<Outcome>) -> Result<Response, ApiError> {
    let outcome = outcome.ok_or_else(stopped)?;
    let (status, error) = match &outcome {
        Outcome::Rejected { problems } => {
            let message = problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            let error = ErrorDetail {
                code: "config.rejected".to_owned(),
                message,
                retryable: false,
                request_id: crate::request_id::current(),
            };
            (StatusCode::UNPROCESSABLE_ENTITY, Some(error))
        }
        Outcome::Applied { .. } | Outcome::Unchanged { .. } | Outcome::RolledBack { .. } => {
            (StatusCode::OK, None)
        }
    };
    Ok((status, Json(ApplyAnswer { outcome, error })).into_response())
}

/// Applies a new configuration (the whole TOML file). It is parsed, checked against what may
/// only change at start, validated by every affected service, applied in dependency order and
/// watched; if health gets worse within the watch window, the previous version comes back.
#[utoipa::path(put, path = "/v1/config", tag = "config",
    params(ApplyQuery),
    request_body(content = String, content_type = "application/toml", description = "The whole configuration, TOML"),
    responses(
        (status = 200, description = "`applied`, `unchanged` or `rolled_back`", body = ApplyAnswer),
        (status = 422, description = "`rejected`: every problem with its path; nothing changed", body = ApplyAnswer),
        (status = 413, description = "Larger than 1 MiB", body = ErrorBody),
    ))]
pub(crate) async fn apply(
    State(state): State<AppState>,
    _: Admin,
    query: Result<Query<ApplyQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Raw, ApiError>,
) -> Result<Response, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::bad_request("request.invalid_query", e.body_text()))?;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "config.too_large",
            format!("a configuration may be at most {MAX_CONFIG_BYTES} bytes"),
        )
    };
    // A body over the server's own limit never reaches this handler whole: the same answer.
    let Raw(body) = body.map_err(|e| match e.status {
        StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        _ => e,
    })?;
    if body.len() > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    let text = String::from_utf8(body.to_vec()).map_err(|_| {
        ApiError::bad_request(
            "request.invalid_body",
            "the configuration must be UTF-8 TOML",
        )
    })?;
    respond(state.configs.apply(text, Source::Api, q.wait).await)
}

/// Applies the version before the running one again.
#[utoipa::path(post, path = "/v1/config/rollback", tag = "config",
    responses(
        (status = 200, description = "`applied` (the earlier version runs again)", body = ApplyAnswer),
        (status = 422, description = "`rejected`: nothing to roll back to", body = ApplyAnswer),
    ))]
pub(crate) async fn rollback(State(state): State<AppState>) -> Result<Response, ApiError> {
    respond(state.configs.rollback().await)
}
