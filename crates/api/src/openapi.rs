//! The OpenAPI document. Every route is registered through `utoipa_axum::routes!`, which takes the
//! method and path from the handler's `#[utoipa::path]`, so the router and the document are built
//! from the same declarations; this module adds what is common to all of them: the document's
//! header, the bearer token, and the error answers any endpoint can give.

use std::sync::Arc;

use axum::Extension;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, ResponseBuilder};

use crate::error::ErrorBody;

/// The document, rendered once when the router is built.
#[derive(Debug, Clone)]
pub(crate) struct Document(pub(crate) Arc<str>);

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "OpenAPI 3.1, generated from the handlers",
        content_type = "application/json", body = Object)))]
pub(crate) async fn document(Extension(doc): Extension<Document>) -> Response {
    let mut response = doc.0.to_string().into_response();
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
