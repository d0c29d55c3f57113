//! The body of every error answer.

use serde::{Deserialize, Serialize};

/// Every error answer has this shape, whatever the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"error": {"code": "storage.not_found", "message": "no value at \"a/b\"", "retryable": false}}))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong: a stable code, a message for people, whether to retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable: `AREA.REASON`, e.g. `auth.invalid_token`, `config.rejected`.
    pub code: String,
    /// For people: what went wrong and what to do.
    pub message: String,
    /// Whether the same request may succeed later (a 503 or 429 with `Retry-After`).
    pub retryable: bool,
    /// The request's id, as in the answer's `x-request-id` header and the server's log lines
    /// for it (absent where the answer was not made by the API's server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}
