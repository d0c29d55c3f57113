//! Request bodies: every one is read by an extractor that refuses in the API's own error shape
//! (never axum's plain text), and only after who may call has been decided.

use super::*;

/// The operations of the document that take a body, with the body's content type.
fn operations_with_a_body(doc: &Value) -> Vec<(String, String, String, bool)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch"] {
            let Some(op) = item.get(method) else { continue };
            let Some(content) = op["requestBody"]["content"].as_object() else {
                continue;
            };
            let admin = op["security"]
                .as_array()
                .is_some_and(|reqs| reqs.iter().any(|r| r.get("admin").is_some()));
            for content_type in content.keys() {
                ops.push((
                    method.to_uppercase(),
                    path.clone(),
                    content_type.clone(),
                    admin,
                ));
            }
        }
    }
    ops
}

/// Whether an operation needs no token (`security: [{}]`): the cluster's admission exchange, where
/// the joiner's quote is what is checked, decides inside the handler.
fn public(doc: &Value, method: &str, path: &str) -> bool {
    doc["paths"][path][method.to_lowercase()]["security"]
        .as_array()
        .is_some_and(|reqs| {
            reqs.iter()
                .all(|r| r.as_object().is_some_and(|o| o.is_empty()))
        })
}

fn uri(path: &str, id: &str) -> String {
    path.replace("{key}", "some/key")
        .replace("{name}", "app")
        .replace("{id}", id)
}

/// Sends `body` with `content_type` (none when `None`) and `token` (none when `None`); answers
/// the status and the body, which must be the API's JSON error shape.
async fn send_body(
    app: &axum::Router,
    token: Option<&str>,
    method: &str,
    uri: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(c) = content_type {
        req = req.header(header::CONTENT_TYPE, c);
    }
    let response = app
        .clone()
        .oneshot(req.body(Body::from(body)).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|c| c == "application/json");
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null);
    assert!(
        json && body["error"]["code"].is_string() && body["error"]["message"].is_string(),
        "{method} {uri}: {status} is not the API's error shape: {}",
        String::from_utf8_lossy(&bytes)
    );
    (status, body)
}

/// docs/api.md, "Errors": on every endpoint that takes a JSON body, malformed JSON is 400
/// `request.invalid_body` and a body without the JSON content type 415
/// `request.unsupported_media_type`, both in the API's error shape. The list is the OpenAPI
/// document's, so a new endpoint with a body is covered as soon as it is routed.
#[tokio::test]
async fn malformed_json_and_a_wrong_content_type_answer_the_apis_error_shape() {
    let h = harness_with(true, true).await;
    let app = &h.app;
    let (_, _, doc) = send(app, "GET", "/v1/openapi.json", None, "").await;
    let ops = operations_with_a_body(&doc);
    let json: Vec<_> = ops
        .iter()
        .filter(|(_, _, content_type, _)| content_type == "application/json")
        .collect();
    assert!(json.len() >= 15, "only {} JSON bodies: {ops:?}", json.len());
    for (method, path, _, _) in json {
        let uri = uri(path, "nope");
        let (status, body) = send_body(
            app,
            Some(TOKEN),
            method,
            &uri,
            Some("application/json"),
            b"{not json".to_vec(),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("request.invalid_body")),
            "{method} {uri} with malformed JSON: {body}"
        );
        for content_type in [Some("text/plain"), None] {
            let (status, body) =
                send_body(app, Some(TOKEN), method, &uri, content_type, b"{}".to_vec()).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    Some("request.unsupported_media_type")
                ),
                "{method} {uri} with content type {content_type:?}: {body}"
            );
        }
    }
    h.runtime.shutdown().await;
}

/// docs/api.md, "Errors": who may call is decided before the body is read. On every endpoint that
/// takes a body, a request without a token, or with one the runtime does not know, is 401; an
/// account token on an admin endpoint is 403 `auth.admin_only`, and a token without the
/// operation's scope 403 `auth.scope`: whatever the body, here a malformed one.
#[tokio::test]
async fn who_may_call_is_decided_before_a_malformed_body_is_read() {
    let h = harness_with(true, true).await;
    let app = &h.app;
    let (_, _, doc) = send(app, "GET", "/v1/openapi.json", None, "").await;
    let (_, secret, _) = create_account(app, "nobody").await;
    // A token that may only fetch the oracle's key: no endpoint with a body is in its scopes.
    let (status, _, issued) = send(
        app,
        "POST",
        "/v1/accounts/me/tokens",
        Some(&secret),
        r#"{"scopes":["oracle:key"]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let narrow = issued["secret"].as_str().expect("secret").to_owned();
    let malformed = b"{not json".to_vec();
    let ops = operations_with_a_body(&doc);
    for (method, path, content_type, admin) in &ops {
        if public(&doc, method, path) {
            continue;
        }
        let ct = Some(content_type.as_str());
        let uri = uri(path, "me");
        let (status, body) = send_body(app, None, method, &uri, ct, malformed.clone()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("auth.missing_token")),
            "{method} {uri} without a token: {body}"
        );
        let (status, body) = send_body(
            app,
            Some("cls_unknown"),
            method,
            &uri,
            ct,
            malformed.clone(),
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("auth.invalid_token")),
            "{method} {uri} with an unknown token: {body}"
        );
        let (token, want) = if *admin {
            (&secret, "auth.admin_only")
        } else {
            (&narrow, "auth.scope")
        };
        let (status, body) = send_body(app, Some(token), method, &uri, ct, malformed.clone()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some(want)),
            "{method} {uri} with a token that may not call it: {body}"
        );
    }
    h.runtime.shutdown().await;
}

/// docs/api.md, "Errors": a body over the endpoint's limit is 413 in the API's error shape, a JSON
/// body as a raw one (a configuration over the server's own body limit is `config.too_large`, as
/// one over 1 MiB is).
#[tokio::test]
async fn a_body_over_the_limit_is_413_in_the_apis_error_shape() {
    let h = harness_with(false, true).await;
    let app = &h.app;
    let over = 2 << 20;
    let mut json = b"{\"message\": \"".to_vec();
    json.resize(over + 1, b'a');
    let (status, body) = send_body(
        app,
        Some(TOKEN),
        "POST",
        "/v1/crypto/keys/key_x/sign",
        Some("application/json"),
        json,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("request.too_large")),
        "{body}"
    );
    let (status, body) = send_body(
        app,
        Some(TOKEN),
        "PUT",
        "/v1/config",
        Some("application/toml"),
        vec![b'#'; over + 1],
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("config.too_large")),
        "{body}"
    );
    h.runtime.shutdown().await;
}

/// A body that counts what the server pulls from it: `chunks` chunks of `chunk` bytes.
fn counted_body(
    chunk: usize,
    chunks: usize,
) -> (Body, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    let pulled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = pulled.clone();
    let sent = futures::stream::iter((0..chunks).map(move |_| {
        count.fetch_add(chunk, Ordering::SeqCst);
        Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![7u8; chunk]))
    }));
    (Body::from_stream(sent), pulled)
}

async fn put_value(
    app: &axum::Router,
    body: Body,
    length: Option<u64>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder()
        .method("PUT")
        .uri("/v1/storage/upload")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    if let Some(length) = length {
        req = req.header(header::CONTENT_LENGTH, length);
    }
    let response = app
        .clone()
        .oneshot(req.body(body).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, body)
}

/// Attack (#14): sixteen uploads announcing 64 MiB each used to be read whole before the storage
/// service refused them. A `Content-Length` over the route's live limit is refused before a byte
/// of the body is read, and a body that streams past the limit is cut off there: the server never
/// pulls more than the limit (and a chunk).
#[tokio::test]
async fn a_body_over_the_live_limit_is_refused_from_its_length_or_while_it_streams() {
    use std::sync::atomic::Ordering;
    let h = start(Setup {
        with_storage: true,
        services: "[services.storage]\nmax_value_bytes = 1000\n",
        ..Setup::default()
    })
    .await;
    let app = &h.app;
    // The length says 64 MiB: answered from it, not a byte of the body read.
    let (body, pulled) = counted_body(4096, 1);
    let answer = put_value(app, body, Some(64 << 20)).await;
    assert_error(
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "storage.too_large",
        None,
    );
    let message = answer.2["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("services.storage.max_value_bytes") && message.contains("67108864"),
        "{message}"
    );
    assert_eq!(pulled.load(Ordering::SeqCst), 0, "not a byte was read");
    // No length, 100 chunks of 100 bytes: cut off past the limit, the rest never pulled.
    let (body, pulled) = counted_body(100, 100);
    let answer = put_value(app, body, None).await;
    assert_error(
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "storage.too_large",
        None,
    );
    assert!(pulled.load(Ordering::SeqCst) <= 1100, "{pulled:?}");
    // At the limit it is stored.
    let (body, _) = counted_body(100, 10);
    let (status, _, stored) = put_value(app, body, None).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    h.runtime.shutdown().await;
}

/// The limit is the setting as it is now: raising `max_value_bytes` in a new configuration
/// version lets a larger value through without a restart, and lowering it refuses it again.
#[tokio::test]
async fn the_body_limit_follows_a_live_configuration_change() {
    let h = start(Setup {
        with_storage: true,
        services: "[services.storage]\nmax_value_bytes = 1000\n",
        ..Setup::default()
    })
    .await;
    let app = &h.app;
    let value = vec![1u8; 3000];
    let (status, _, _) = raw(app, "PUT", "/v1/storage/k", value.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let apply = |text: &'static str| {
        let app = app.clone();
        async move {
            let (status, _, body) = send(&app, "PUT", "/v1/config", Some(TOKEN), text).await;
            assert!(status.is_success(), "{body}");
        }
    };
    apply("[services.storage]\nmax_value_bytes = 4000\n").await;
    let (status, _, body) = raw(app, "PUT", "/v1/storage/k", value.clone()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    apply("[services.storage]\nmax_value_bytes = 2000\n").await;
    let (status, _, body) = raw(app, "PUT", "/v1/storage/k", value).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "storage.too_large")
    );
    h.runtime.shutdown().await;
}
