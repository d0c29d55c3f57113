//! How much a route's body may weigh, read from the live setting it serves (a stored value is
//! bounded by `max_value_bytes` as it is configured now, not by a fixed ceiling).
//!
//! A body is refused before it is read when its `Content-Length` says it is over, and while it is
//! read when it streams past the limit (chunked, or a length that lies): the server never holds
//! more than the limit of one request's body. The refusal is 413 with the code of the service the
//! route belongs to, and names the setting.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use runtime::config::Config;

use crate::{ApiError, AppState};

/// A route whose body is bounded by a live setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// `PUT /v1/storage/{key}`: the raw value, up to `[services.storage] max_value_bytes`.
    StorageValue,
    /// `POST /v1/ai/models`: the ONNX file, up to `[services.ai] max_model_bytes`.
    Model,
    /// `POST /v1/ai/models/{id}/predict`: input tensors as JSON numbers, `max_input_elements` of
    /// them per tensor at up to [`JSON_NUMBER_BYTES`] each.
    Predict,
    /// `POST /v1/ai/train`: a dataset as JSON, `max_dataset_rows` × `max_features` numbers.
    Train,
    /// `POST /v1/computation/run` and `/jobs`: code and args within their ceilings, twice over for
    /// JSON escapes.
    Run,
}

/// What one number in a JSON array of numbers may take, with its separator (`-1.2345678901234567e-300,`).
const JSON_NUMBER_BYTES: u64 = 26;
/// Room for the rest of a JSON body around its large part.
const ENVELOPE: u64 = 64 << 10;

/// A limit in force: the bytes, the setting that sets them and the code a refusal carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InForce {
    pub(crate) bytes: u64,
    pub(crate) setting: String,
    pub(crate) code: &'static str,
}

impl InForce {
    /// The 413 for a body of `size` bytes (`None`: it streamed past the limit).
    pub(crate) fn refusal(&self, size: Option<u64>) -> ApiError {
        let size = match size {
            Some(size) => format!("{size} bytes"),
            None => "more bytes than that".to_owned(),
        };
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            self.code,
            format!(
                "the body is over this endpoint's limit of {} bytes, from {} (it is {size})",
                self.bytes, self.setting
            ),
        )
    }
}

impl Limit {
    /// The limit as `config` sets it now.
    pub(crate) fn in_force(self, config: &Config) -> InForce {
        let storage = |s| config.setting(&storage::NAME, s) as u64;
        let ai = |s| config.setting(&ai::NAME, s) as u64;
        let named =
            |service: &runtime::ServiceName, setting: &str| format!("services.{service}.{setting}");
        match self {
            Limit::StorageValue => InForce {
                bytes: storage(&storage::MAX_VALUE_BYTES),
                setting: named(&storage::NAME, storage::MAX_VALUE_BYTES.name()),
                code: "storage.too_large",
            },
            Limit::Model => InForce {
                bytes: ai(&ai::MAX_MODEL_BYTES),
                setting: named(&ai::NAME, ai::MAX_MODEL_BYTES.name()),
                code: "ai.too_large",
            },
            Limit::Predict => InForce {
                bytes: ai(&ai::MAX_INPUT_ELEMENTS)
                    .saturating_mul(JSON_NUMBER_BYTES)
                    .saturating_add(ENVELOPE),
                setting: named(&ai::NAME, ai::MAX_INPUT_ELEMENTS.name()),
                code: "request.too_large",
            },
            Limit::Train => InForce {
                bytes: ai(&ai::MAX_DATASET_ROWS)
                    .saturating_mul(ai(&ai::MAX_FEATURES).saturating_add(1))
                    .saturating_mul(JSON_NUMBER_BYTES)
                    .saturating_add(ENVELOPE),
                setting: format!(
                    "{} × {}",
                    named(&ai::NAME, ai::MAX_DATASET_ROWS.name()),
                    named(&ai::NAME, ai::MAX_FEATURES.name())
                ),
                code: "request.too_large",
            },
            Limit::Run => {
                let code = config.setting(&computation::NAME, &computation::MAX_CODE_BYTES);
                let args = config.setting(&computation::NAME, &computation::MAX_ARGS_BYTES);
                InForce {
                    bytes: code
                        .saturating_add(args)
                        .saturating_mul(2)
                        .saturating_add(ENVELOPE),
                    setting: format!(
                        "2 × ({} + {})",
                        named(&computation::NAME, computation::MAX_CODE_BYTES.name()),
                        named(&computation::NAME, computation::MAX_ARGS_BYTES.name())
                    ),
                    code: "request.too_large",
                }
            }
        }
    }
}

/// The middleware: refuses a body whose length is over the route's limit before reading it, and
/// bounds the reading of any other. The route disables axum's own default limit
/// (`DefaultBodyLimit::disable`): this one replaces it.
pub(crate) async fn limit(
    State((state, limit)): State<(AppState, Limit)>,
    request: Request,
    next: Next,
) -> Response {
    let config = state
        .configs
        .config()
        .unwrap_or_else(|| state.config.clone());
    let in_force = limit.in_force(&config);
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = length.filter(|&l| l > in_force.bytes) {
        return in_force.refusal(Some(length)).into_response();
    }
    let bytes = usize::try_from(in_force.bytes).unwrap_or(usize::MAX);
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(in_force);
    let body = axum::body::Body::new(http_body_util::Limited::new(body, bytes));
    next.run(Request::from_parts(parts, body)).await
}
