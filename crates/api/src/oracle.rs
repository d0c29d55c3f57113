//! The oracle over HTTP: signed reports of external data, and the attested signing key.

use account::Area;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use oracle::{Extraction, OracleRequest, Request};

use crate::auth::{Allowed, Caller, op};
use crate::error::ErrorBody;
use crate::input::{self, ask};
use crate::{ApiError, AppState};

/// Fetches the sources, extracts a value from each, aggregates them and answers with a signed
/// report. A source that fails (unreachable, slow, too large, not JSON, a path that matches
/// nothing) is reported as such; without enough agreeing sources the report has no result and
/// says why. An extraction script needs the token scope `computation:run` too; it runs as the
/// caller, without capabilities and deterministic, and the report marks its value with its hash.
#[utoipa::path(post, path = "/v1/oracle/requests", tag = "oracle", request_body = OracleRequest,
    responses(
        (status = 200, description = "The signed report", body = oracle::SignedReport),
        (status = 400, description = "A request that breaks this document (`oracle.bad_input`, `request.invalid_body`): no source, too many, a header name that is not a token...", body = ErrorBody),
        (status = 422, description = "What this document cannot say (`oracle.unfit`): a JSONPath that does not parse, `min_agreeing` over the number of sources, `max_deviation` without `median`, a body on a GET, a header the oracle does not send, a script that reads `kv` or `crypto`", body = ErrorBody),
        (status = 403, description = "A script extraction without the scope `computation:run` (`auth.scope`)", body = ErrorBody),
        (status = 429, description = "Over `[services.oracle] requests_per_minute` (`oracle.rate_limited`)", body = ErrorBody),
    ))]
pub(crate) async fn request(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<op::OracleRequest>,
    input::Json(b): input::Json<OracleRequest>,
) -> Result<Response, ApiError> {
    let request = b;
    // A script is a computation run, whoever asks for it.
    if request
        .sources
        .iter()
        .any(|s| matches!(s.extract, Extraction::Script(_)))
    {
        caller.allow(Area::Computation, "run")?;
    }
    let report = ask(&state.oracle, |reply| Request::Fetch {
        owner: caller.owner().to_owned(),
        request,
        reply,
    })
    .await?;
    Ok(Json(report).into_response())
}

/// The oracle's signing key, with a quote whose report data binds it:
/// SHA-256("cloister oracle key v1\0" || public key) followed by 32 zero bytes.
#[utoipa::path(get, path = "/v1/oracle/key", tag = "oracle",
    responses(
        (status = 200, description = "The key and its quote", body = oracle::KeyAttestation),
        (status = 501, description = "The platform cannot produce quotes (`oracle.unsupported`)", body = ErrorBody),
    ))]
pub(crate) async fn key(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.allow(Area::Oracle, "key")?;
    let attestation = ask(&state.oracle, |reply| Request::Key { reply }).await?;
    Ok(Json(attestation).into_response())
}
