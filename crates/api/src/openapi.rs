//! The OpenAPI document. Every route is registered through `utoipa_axum::routes!`, which takes the
//! method and path from the handler's `#[utoipa::path]`, so the router and the document are built
//! from the same declarations; this module adds what is common to all of them: the document's
//! header, the bearer token, and the error answers any endpoint can give.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, ResponseBuilder};

use crate::AppState;
use crate::error::ErrorBody;

/// The document as the handlers declare it, made strict ([`strict`]) once when the router is
/// built; each answer adds the bounds the live configuration sets ([`live`]).
#[derive(Debug, Clone)]
pub(crate) struct Document(pub(crate) Arc<Value>);

impl Document {
    pub(crate) fn new(api: &OpenApi) -> Document {
        let mut doc = serde_json::to_value(api).unwrap_or_default();
        strict(&mut doc);
        Document(Arc::new(doc))
    }
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "OpenAPI 3.1, generated from the handlers, with the \
        bounds the running configuration sets", content_type = "application/json", body = Object)))]
pub(crate) async fn document(
    State(state): State<AppState>,
    Extension(doc): Extension<Document>,
) -> Response {
    let config = state
        .configs
        .config()
        .unwrap_or_else(|| state.config.clone());
    let mut doc = (*doc.0).clone();
    live(&mut doc, &state.config, &config);
    let mut response = doc.to_string().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

const TAGS: &[(&str, &str)] = &[
    (
        "probes",
        "Liveness, readiness and Prometheus metrics. No token.",
    ),
    (
        "orchestration",
        "Services, lifecycle commands, the dependency graph, the bus, anomalies. Admin token.",
    ),
    (
        "config",
        "Hot configuration: show, apply, history, versions, rollback. Admin token.",
    ),
    (
        "events",
        "The hash-chained event journal, by cursor and live. Admin token.",
    ),
    (
        "attestation",
        "The enclave's identity and quotes. Admin token.",
    ),
    (
        "cluster",
        "The cluster on PostgreSQL (docs/cluster.md): its members (admin token), its creation \
         (admin token), and admission by attestation (no token: the joiner's quote is checked).",
    ),
    (
        "accounts",
        "Accounts and their tokens. Creating, listing, disabling and deleting need the admin \
         token; an account token reads and manages its own (`me`).",
    ),
    (
        "crypto",
        "Keys owned by the caller's account, sealed to the enclave. Account token (scope `crypto`).",
    ),
    (
        "storage",
        "The caller's namespace of encrypted, rollback-evident values. Account token (scope \
         `storage`).",
    ),
    (
        "computation",
        "Sandboxed JavaScript runs and jobs for the caller's account. Account token (scope \
         `computation`).",
    ),
    (
        "oracle",
        "External data, aggregated and signed by an attested key. Account token (scope `oracle`).",
    ),
    (
        "ai",
        "ONNX inference and training, models kept sealed in the caller's account. Account token \
         (scope `ai`).",
    ),
    (
        "dashboard",
        "The operator's page and its assets. No token (the page asks for one).",
    ),
    ("meta", "This document."),
];

/// The security scheme of the operations only the admin token may use.
pub(crate) const ADMIN_SCHEME: &str = "admin";

/// Marks every operation of `api` as needing the admin token (the `admin` scheme).
pub(crate) fn admin_only(api: &mut OpenApi) {
    for item in api.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            op.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
                ADMIN_SCHEME,
                Vec::<String>::new(),
            )]);
        }
    }
}

/// Fills in what every operation shares. `routed` is the document the router collected.
pub(crate) fn finish(mut api: OpenApi) -> OpenApi {
    api.info.title = "Cloister".into();
    api.info.version = env!("CARGO_PKG_VERSION").into();
    api.info.description = Some(
        "The HTTP API of Cloister, an enclave service runtime. Every error answers with the same \
         JSON shape (`ErrorBody`): a stable `code`, a `message` for people, and whether a retry \
         may succeed. 503 and 429 carry `Retry-After`."
            .into(),
    );
    api.info.license = None;
    api.info.contact = None;
    api.tags = Some(
        TAGS.iter()
            .map(|(name, description)| {
                utoipa::openapi::tag::TagBuilder::new()
                    .name(*name)
                    .description(Some(*description))
                    .build()
            })
            .collect(),
    );
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "token",
        SecurityScheme::Http(
            Http::builder()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The admin token (`cloister-data/admin.token` or `CLOISTER_ADMIN_TOKEN`) or an \
                     account token (`cls_...`)",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        ADMIN_SCHEME,
        SecurityScheme::Http(
            Http::builder()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The admin token only. An account token answers 403 `auth.admin_only`; a \
                     token the runtime does not know, 401 `auth.invalid_token`",
                ))
                .build(),
        ),
    );
    components.schemas.insert(
        "ErrorBody".into(),
        <ErrorBody as utoipa::PartialSchema>::schema(),
    );
    let mut detail = Vec::new();
    <ErrorBody as utoipa::ToSchema>::schemas(&mut detail);
    components.schemas.extend(detail);
    // A signed report names its payload's schema, which the oracle owns, by name (the report
    // itself is `wire`'s, below the oracle).
    components.schemas.insert(
        "ReportPayload".into(),
        <oracle::report::ReportPayload as utoipa::PartialSchema>::schema(),
    );
    let mut payload = Vec::new();
    <oracle::report::ReportPayload as utoipa::ToSchema>::schemas(&mut payload);
    components.schemas.extend(payload);
    api.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
        "token",
        Vec::<String>::new(),
    )]);
    for item in api.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            // Handlers are named for what they do within their area (`list`, `get`): prefix the
            // area so every operation id is unique.
            if let (Some(tag), Some(id)) =
                (op.tags.as_ref().and_then(|t| t.first()), &op.operation_id)
            {
                op.operation_id = Some(format!("{tag}_{id}"));
            }
            add_common_errors(op);
        }
    }
    api
}

/// The answers any endpoint may give besides its own: a bad token, a missing scope, the rate
/// limit, a service restarting, a malformed request, a bug.
fn add_common_errors(op: &mut Operation) {
    let public = op
        .security
        .as_ref()
        .is_some_and(|s| s.iter().all(|r| *r == Default::default()));
    let mut common = vec![
        (
            "400",
            "Malformed request (`request.invalid_body`, `request.invalid_query`...)",
        ),
        (
            "503",
            "The service is restarting or its circuit is open; retry after `Retry-After`",
        ),
        ("500", "A bug: the message says what failed"),
    ];
    if !public {
        common.extend([
            (
                "401",
                "No token, or not a valid one (`auth.invalid_token`, `auth.token_expired`)",
            ),
            (
                "403",
                "The token may not do this (`auth.admin_only`, `auth.scope`, `auth.account_disabled`)",
            ),
            (
                "429",
                "The account is over its rate limit (`auth.rate_limited`); retry after `Retry-After`",
            ),
        ]);
    }
    // A body is read against the route's size limit and `runtime.body_read_timeout`; a JSON body
    // only with its content type.
    let media: Vec<&String> = op
        .request_body
        .as_ref()
        .map(|b| b.content.keys().collect())
        .unwrap_or_default();
    if !media.is_empty() {
        common.extend([
            (
                "413",
                "The body is over this endpoint's limit (`request.too_large`, or the service's own \
                 code naming the setting)",
            ),
            (
                "408",
                "The body did not arrive within `runtime.body_read_timeout` (`request.body_timeout`)",
            ),
        ]);
    }
    if media.iter().any(|m| *m == "application/json") {
        common.push((
            "415",
            "The body is not sent as `Content-Type: application/json` (`request.unsupported_media_type`)",
        ));
    }
    for (status, description) in common {
        if op.responses.responses.contains_key(status) {
            continue;
        }
        let response = ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            )
            .build();
        op.responses
            .responses
            .insert(status.to_owned(), response.into());
    }
}

/// What the server checks that the handlers' declarations cannot say, written into the document
/// so that it is as strict as the server:
/// - an unsigned integer (`u32`, `u64`, `usize`) ends at its type's maximum (a format alone would
///   say `int32`/`int64`, whose range is not the server's);
/// - a raw body or answer is a string of bytes (`format: binary`), and a stored value may be empty;
/// - an event stream's schema describes each event: its `data` is JSON of the declared schema.
pub(crate) fn strict(doc: &mut Value) {
    unsigned_maxima(doc);
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            // `Last-Event-ID` is a sequence number when given; `Option<u64>` would also
            // document it as `null`.
            if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
                for p in params.iter_mut().filter(|p| p["name"] == "Last-Event-ID") {
                    p["required"] = json!(false);
                    p["schema"] = json!({"type": "integer", "minimum": 0, "maximum": u64::MAX});
                }
            }
            if let Some(body) = op.get_mut("requestBody") {
                if path == "/v1/storage/{key}" && method == "put" {
                    // An empty body stores an empty value: over HTTP, no body is an empty one.
                    body["required"] = json!(false);
                }
                raw_and_streams(body);
            }
            if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
                for response in responses.values_mut() {
                    raw_and_streams(response);
                }
            }
        }
    }
}

/// The bounds the configuration sets, as it is now (`config`) or as it was at start (`start`,
/// for the sandbox's ceilings, which are read at start only).
pub(crate) fn live(
    doc: &mut Value,
    start: &runtime::config::Config,
    config: &runtime::config::Config,
) {
    let storage = |s| config.setting(&storage::NAME, s) as u64;
    if let Some(limit) = parameter(doc, "/v1/storage", "get", "limit") {
        limit["schema"]["maximum"] = json!(storage(&storage::MAX_LIST_LIMIT));
    }
    let schemas = &mut doc["components"]["schemas"];
    if schemas["BatchBody"].is_object() {
        schemas["BatchBody"]["properties"]["writes"]["maxItems"] =
            json!(storage(&storage::MAX_BATCH_WRITES));
    }
    if schemas["OracleRequest"].is_object() {
        schemas["OracleRequest"]["properties"]["sources"]["maxItems"] =
            json!(config.setting(&oracle::NAME, &oracle::MAX_SOURCES));
    }
    if schemas["LimitOverrides"].is_object() {
        let ceiling = |s| start.setting(&computation::NAME, s);
        let time = start.setting(&computation::NAME, &computation::MAX_TIME_MS);
        let limits = &mut schemas["LimitOverrides"]["properties"];
        limits["time_ms"]["maximum"] = json!(u64::try_from(time.as_millis()).unwrap_or(u64::MAX));
        limits["memory_bytes"]["maximum"] = json!(ceiling(&computation::MAX_MEMORY_BYTES));
        limits["stack_bytes"]["maximum"] = json!(ceiling(&computation::MAX_STACK_BYTES));
        limits["output_bytes"]["maximum"] = json!(ceiling(&computation::MAX_OUTPUT_BYTES));
        limits["console_bytes"]["maximum"] = json!(ceiling(&computation::MAX_CONSOLE_BYTES));
    }
}

/// The parameter `name` of `method path`, if the document has it.
fn parameter<'a>(
    doc: &'a mut Value,
    path: &str,
    method: &str,
    name: &str,
) -> Option<&'a mut Value> {
    doc.get_mut("paths")?
        .get_mut(path)?
        .get_mut(method)?
        .get_mut("parameters")?
        .as_array_mut()?
        .iter_mut()
        .find(|p| p["name"] == name)
}

/// Every integer schema with a minimum of 0 or more and no maximum is an unsigned Rust integer:
/// `int32` is a `u8`, `u16` or `u32` (the widest, `u32`, bounds it), anything else a `u64` or
/// `usize`.
fn unsigned_maxima(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let integer = match map.get("type") {
                Some(Value::String(t)) => t == "integer",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
                _ => false,
            };
            if integer
                && map.get("minimum").and_then(Value::as_u64).is_some()
                && !map.contains_key("maximum")
            {
                let maximum = match map.get("format").and_then(Value::as_str) {
                    Some("int32") => u64::from(u32::MAX),
                    _ => u64::MAX,
                };
                map.insert("maximum".into(), json!(maximum));
            }
            map.values_mut().for_each(unsigned_maxima);
        }
        Value::Array(items) => items.iter_mut().for_each(unsigned_maxima),
        _ => {}
    }
}

/// In a request body or a response: raw bytes as `format: binary`; an event stream's schema
/// as the schema of each event, whose `data` holds JSON of the declared schema.
fn raw_and_streams(body: &mut Value) {
    let Some(content) = body.get_mut("content").and_then(Value::as_object_mut) else {
        return;
    };
    for (media, entry) in content.iter_mut() {
        if media == "application/octet-stream" {
            entry["schema"] = json!({"type": "string", "format": "binary"});
        } else if media == "text/event-stream" {
            let data = entry["schema"].take();
            entry["schema"] = json!({
                "type": "object",
                "description": "One server-sent event: its name, its id (where the stream \
                    resumes by id) and its data, JSON",
                "required": ["event", "data"],
                "properties": {
                    "event": {"type": "string"},
                    "id": {"type": "string", "pattern": "^[0-9]+$"},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": data,
                    },
                },
            });
        }
    }
}
