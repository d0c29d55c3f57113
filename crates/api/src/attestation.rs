//! `GET /v1/attestation?nonce=HEX`: the enclave's identity and a quote binding the caller's nonce.

use axum::Json;
use axum::extract::{Query, State};
use base64::Engine;
use serde::Deserialize;
use utoipa::IntoParams;

use wire::attestation::Attestation;

use crate::error::ErrorBody;
use crate::{ApiError, AppState};

const MAX_NONCE: usize = 64;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AttestQuery {
    /// 1 to 64 bytes of hex, bound into the quote's report data (default: the current time, which
    /// proves identity but not freshness).
    #[param(pattern = "^([0-9a-fA-F]{2}){1,64}$")]
    nonce: Option<String>,
}

/// The enclave's identity and a quote binding the caller's nonce.
#[utoipa::path(get, path = "/v1/attestation", tag = "attestation", params(AttestQuery),
    responses(
        (status = 200, description = "Identity and quote", body = Attestation),
        (status = 400, description = "Bad nonce (`attestation.invalid_nonce`)", body = ErrorBody),
        (status = 501, description = "The platform cannot produce quotes (`attestation.unsupported`)", body = ErrorBody),
    ))]
pub(crate) async fn attest(
    State(state): State<AppState>,
    query: Result<Query<AttestQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Attestation>, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::bad_request("request.invalid_query", e.body_text()))?;
    let nonce = match q.nonce.as_deref() {
        Some(text) => hex::decode(text)
            .ok()
            .filter(|n| !n.is_empty() && n.len() <= MAX_NONCE)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "attestation.invalid_nonce",
                    format!("nonce must be 1 to {MAX_NONCE} bytes of hex"),
                )
            })?,
        None => rand_nonce(),
    };
    let report_data = enclave::report_data_for_nonce(&nonce);
    let platform = state.platform.clone();
    let quote = tokio::task::spawn_blocking(move || platform.quote(&report_data))
        .await
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                e.to_string(),
            )
        })?
        .map_err(|e| match e {
            enclave::Error::Unsupported(m) => ApiError::new(
                axum::http::StatusCode::NOT_IMPLEMENTED,
                "attestation.unsupported",
                m,
            ),
            other => ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "attestation.failed",
                other.to_string(),
            ),
        })?;
    let identity = state.platform.identity().clone();
    Ok(Json(Attestation {
        platform: identity.platform,
        simulation: identity.platform == enclave::PlatformKind::Simulation,
        identity,
        nonce: hex::encode(&nonce),
        report_data: hex::encode(report_data),
        report_data_binding:
            "sha256(\"cloister attestation nonce v1\\0\" || nonce) || 32 zero bytes".to_owned(),
        quote: base64::engine::general_purpose::STANDARD.encode(&quote),
    }))
}

fn rand_nonce() -> Vec<u8> {
    use std::time::{SystemTime, UNIX_EPOCH};
    // Without a caller's nonce the quote proves identity, not freshness; the time keeps it unique.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    now.to_le_bytes().to_vec()
}
