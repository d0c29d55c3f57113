//! The API in-process through `tower::ServiceExt::oneshot`, one module per area; the harness and
//! the fluent client are `test_support::in_process`.

mod accounts;
mod ai;
mod attestation;
mod auth;
mod bodies;
mod computation;
mod config;
mod crypto;
mod dashboard;
mod events;
mod openapi;
mod oracle;
mod orchestration;
mod storage;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use runtime::journal::Event;
use runtime::{Journal, RuntimeLevel, ServiceName};
use serde_json::Value;
use tower::ServiceExt;

use test_support::in_process::{Harness, Setup, TOKEN, harness, harness_with, send, start};

async fn raw(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Vec<u8>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from(body))
        .expect("request");
    let response = app.clone().oneshot(req).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, headers, bytes.to_vec())
}

fn code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body).expect("a JSON error")["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `raw`, with any token.
async fn raw_as(
    app: &axum::Router,
    token: &str,
    method: &str,
    uri: &str,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if body.starts_with(b"{") {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Body::from(body)).expect("request");
    let response = app.clone().oneshot(req).await.expect("response");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, bytes.to_vec())
}

/// Creates an account (as the admin) and returns its id, its first token and its description.
async fn create_account(app: &axum::Router, name: &str) -> (String, String, Value) {
    let (status, _, body) = send(
        app,
        "POST",
        "/v1/accounts",
        Some(TOKEN),
        &format!(r#"{{"name":"{name}"}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["account"]["id"].as_str().expect("id").to_owned();
    let secret = body["token"]["secret"].as_str().expect("secret").to_owned();
    (id, secret, body)
}

/// An ONNX model (four inputs, three outputs) from the ai service's reference fixtures.
const MLP: &[u8] = include_bytes!("../../../ai/tests/fixtures/mlp.onnx");
const MLP_INPUT: &str = r#"{"inputs":{"x":{"shape":[1,4],"data":[0.1,0.2,0.3,0.4]}}}"#;
/// A training request for `y = 2x + 1` (the last two rows held out).
const TRAIN: &str = r#"{"model":{"kind":"linear_regression"},"dataset":{"features":[[1],[2],[3],[4],[5],[6],[7],[8],[9],[10]],"targets":[3,5,7,9,11,13,15,17,19,21]}}"#;

fn operations(doc: &Value) -> std::collections::BTreeSet<(String, String)> {
    let mut ops = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// Asserts an error answer at the HTTP layer: its status, its stable code, whether it says to
/// retry, and the `Retry-After` (in seconds, within `retry_after`) that goes with a retry.
fn assert_error(
    (status, headers, body): &(StatusCode, axum::http::HeaderMap, Value),
    want: StatusCode,
    code: &str,
    retry_after: Option<std::ops::RangeInclusive<u64>>,
) {
    assert_eq!(
        (*status, body["error"]["code"].as_str()),
        (want, Some(code)),
        "{body}"
    );
    assert!(body["error"]["message"].is_string(), "{body}");
    assert_eq!(
        body["error"]["retryable"],
        Value::Bool(retry_after.is_some()),
        "{body}"
    );
    let header = headers
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().expect("ascii").parse::<u64>().expect("seconds"));
    match retry_after {
        Some(range) => assert!(
            header.is_some_and(|s| range.contains(&s)),
            "{code}: Retry-After {header:?}, expected within {range:?}"
        ),
        None => assert_eq!(header, None, "{code} says not to retry"),
    }
}
