//! The API in-process through `tower::ServiceExt::oneshot`: auth, errors, commands, events, metrics.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use runtime::journal::Event;
use runtime::{Journal, RuntimeLevel, ServiceName};
use serde_json::Value;
use tower::ServiceExt;

use test_support::in_process::{Harness, Setup, TOKEN, harness, harness_with, send, start};

#[tokio::test(start_paused = true)]
async fn probes_are_open_and_admin_endpoints_need_the_token() {
    let h = harness(false).await;
    let (status, _, body) = send(&h.app, "GET", "/livez", None, "").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("alive"))
    );
    let (status, _, body) = send(&h.app, "GET", "/readyz", None, "").await;
    assert_eq!(
        (status, body["level"].as_str()),
        (StatusCode::OK, Some("ready"))
    );

    let (status, _, body) = send(&h.app, "GET", "/v1/services", None, "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("auth.missing_token"))
    );
    let (status, _, body) = send(&h.app, "GET", "/v1/services", Some("wrong"), "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("auth.invalid_token"))
    );
    assert_eq!(body["error"]["retryable"], Value::Bool(false));

    let (status, _, body) = send(&h.app, "GET", "/v1/services", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = body["services"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    // storage is registered but disabled in this harness: listed, not started.
    assert_eq!(
        names,
        [
            "base",
            "app",
            "crypto",
            "storage",
            "account",
            "computation",
            "oracle",
            "ai"
        ]
    );
    let app = &body["services"][1];
    assert_eq!(app["state"], "running");
    assert_eq!(app["type"], "core");
    assert_eq!(app["dependencies"][0], "base");
    assert_eq!(app["replicas"]["running"], 1);
    h.runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn unknown_services_and_routes_are_404_with_stable_codes() {
    let h = harness(false).await;
    for uri in ["/v1/services/nope", "/v1/services/NOT%20A%20NAME"] {
        let (status, _, body) = send(&h.app, "GET", uri, Some(TOKEN), "").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("service.not_found")),
            "{uri}"
        );
    }
    let (status, _, body) =
        send(&h.app, "POST", "/v1/services/nope/restart", Some(TOKEN), "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("service.not_found"))
    );
    let (status, _, body) = send(&h.app, "GET", "/v1/nothing", None, "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("http.not_found"))
    );
    // Fault injection is off: the endpoint does not exist.
    let (status, _, _) = send(
        &h.app,
        "POST",
        "/v1/services/base/faults",
        Some(TOKEN),
        r#"{"kind":"panic"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    h.runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn faults_restart_the_service_and_show_in_events_and_metrics() {
    let h = harness(true).await;
    let (status, _, body) = send(
        &h.app,
        "POST",
        "/v1/services/base/faults",
        Some(TOKEN),
        r#"{"kind":"explode"}"#,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("request.invalid_body"))
    );
    let since = h.runtime.journal().last_seq();
    let (status, _, body) = send(
        &h.app,
        "POST",
        "/v1/services/base/faults",
        Some(TOKEN),
        r#"{"kind":"panic"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    h.runtime
        .journal()
        .wait_for(since, Duration::from_secs(60), |e| {
            matches!(e.event, Event::Up { .. })
        })
        .await
        .expect("restarted");
    h.echo.call(|r| r).await.expect("served after restart");

    let (status, _, body) = send(
        &h.app,
        "GET",
        &format!("/v1/events?since={since}"),
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let kinds: Vec<&str> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["event"]["kind"].as_str())
        .collect();
    for k in [
        "fault_injected",
        "exited",
        "backoff_scheduled",
        "starting",
        "up",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let (status, _, body) = send(&h.app, "GET", "/v1/events?since=abc", Some(TOKEN), "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("request.invalid_query"))
    );

    let (_, _, body) = send(&h.app, "GET", "/v1/services/base", Some(TOKEN), "").await;
    assert_eq!(body["restart_count"], 1);
    assert_eq!(body["requests"]["total"], 1);

    let (status, headers, body) = send(&h.app, "GET", "/metrics", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap_or("")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = body.as_str().expect("text");
    for line in [
        "cloister_service_restarts_total{service=\"base\"} 1",
        "cloister_service_state{service=\"base\",state=\"running\"} 1",
        "cloister_service_up{service=\"app\"} 1",
        "cloister_bus_requests_total{caller=\"external\",callee=\"base\",outcome=\"handled\"} 1",
        "cloister_bus_request_duration_seconds_count{caller=\"external\",callee=\"base\"} 1",
        "cloister_runtime_ready 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from\n{text}"
        );
    }
    h.runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn commands_answer_with_the_state() {
    let h = harness(false).await;
    let (status, _, body) = send(&h.app, "POST", "/v1/services/base/stop", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let stopped = |name: &'static str| {
        move |e: &runtime::journal::Entry| {
            e.service.as_ref().is_some_and(|s| s.as_str() == name)
                && matches!(e.event, Event::Stopped { .. })
        }
    };
    let base = h
        .runtime
        .journal()
        .wait_for(0, Duration::from_secs(60), stopped("base"))
        .await
        .expect("base stopped");
    // Its dependent went first.
    let app = h
        .runtime
        .journal()
        .wait_for(0, Duration::from_secs(60), stopped("app"))
        .await
        .expect("app stopped");
    assert!(
        app.seq < base.seq,
        "app stopped at {}, base at {}",
        app.seq,
        base.seq
    );
    let (status, _, body) = send(&h.app, "GET", "/readyz", None, "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body["reasons"].as_array().is_some_and(|r| !r.is_empty()));
    let (status, _, body) = send(&h.app, "POST", "/v1/services/base/stop", Some(TOKEN), "").await;
    assert_eq!(
        (status, body["accepted"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    let (status, _, _) = send(&h.app, "POST", "/v1/services/app/start", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let mut ready = h.runtime.readiness();
    ready
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready again");
    let (_, _, graph) = send(&h.app, "GET", "/v1/graph", Some(TOKEN), "").await;
    assert_eq!(
        graph["layers"],
        serde_json::json!([
            ["crypto", "base"],
            ["storage", "app"],
            ["account", "computation", "ai"],
            ["oracle"]
        ])
    );
    assert_eq!(
        graph["edges"],
        serde_json::json!([
            { "from": "app", "to": "base" },
            { "from": "storage", "to": "crypto" },
            { "from": "account", "to": "crypto" },
            { "from": "account", "to": "storage" },
            { "from": "computation", "to": "crypto" },
            { "from": "computation", "to": "storage" },
            { "from": "oracle", "to": "crypto" },
            { "from": "oracle", "to": "computation" },
            { "from": "ai", "to": "storage" }
        ])
    );
    h.runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn config_is_shown_applied_rejected_and_kept_in_history() {
    let h = harness(false).await;
    let (status, _, body) = send(&h.app, "GET", "/v1/config", Some(TOKEN), "").await;
    assert_eq!(
        (status, body["version"].as_u64()),
        (StatusCode::OK, Some(1))
    );

    let mut req = Request::builder().method("PUT").uri("/v1/config?wait=true");
    req = req.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    let bad = "[services.base]\nqueue_capacity = \"many\"\n[enclave]\nthreads = 4\n";
    let response = h
        .app
        .clone()
        .oneshot(req.body(Body::from(bad)).expect("req"))
        .await
        .expect("resp");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = serde_json::from_slice(
        &response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes(),
    )
    .expect("json");
    assert_eq!(body["outcome"], "rejected");
    assert_eq!(body["error"]["code"], "config.rejected");
    let paths: Vec<&str> = body["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["path"].as_str())
        .collect();
    assert_eq!(paths, ["services.base.queue_capacity"]);

    let good = "[services.base]\nqueue_capacity = 64\n";
    let mut req = Request::builder().method("PUT").uri("/v1/config?wait=true");
    req = req.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    let response = h
        .app
        .clone()
        .oneshot(req.body(Body::from(good)).expect("req"))
        .await
        .expect("resp");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = serde_json::from_slice(
        &response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes(),
    )
    .expect("json");
    assert_eq!(
        (body["outcome"].as_str(), body["version"].as_u64()),
        (Some("applied"), Some(2)),
        "{body}"
    );

    let (_, _, history) = send(&h.app, "GET", "/v1/config/history", Some(TOKEN), "").await;
    let versions: Vec<u64> = history["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .filter_map(|v| v["version"].as_u64())
        .collect();
    assert_eq!(versions, [2, 1]);
    let (status, _, body) = send(&h.app, "POST", "/v1/config/rollback", Some(TOKEN), "").await;
    assert_eq!(
        (status, body["outcome"].as_str(), body["to"].as_u64()),
        (StatusCode::OK, Some("rolled_back"), Some(1))
    );
    let (_, _, service) = send(&h.app, "GET", "/v1/services/base", Some(TOKEN), "").await;
    assert_eq!(service["circuits"][0]["state"], "closed");
    h.runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn hostile_config_bodies_get_clear_errors_and_change_nothing() {
    let h = harness(false).await;
    let put = |body: Vec<u8>| {
        let req = Request::builder()
            .method("PUT")
            .uri("/v1/config")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::from(body))
            .expect("req");
        h.app.clone().oneshot(req)
    };
    let cases: Vec<(Vec<u8>, StatusCode)> = vec![
        (vec![0xff, 0xfe, 0x00, 0x80], StatusCode::BAD_REQUEST),
        (vec![b'x'; 2 << 20], StatusCode::PAYLOAD_TOO_LARGE),
        (b"[[[[".to_vec(), StatusCode::UNPROCESSABLE_ENTITY),
        (b"services = 1\n".to_vec(), StatusCode::UNPROCESSABLE_ENTITY),
        (
            b"[services.base]\nenabled = \"yes\"\n".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "[runtime]\nlisten = \"\u{202e}\"\n".as_bytes().to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (body, want) in cases {
        let response = put(body).await.expect("response");
        assert_eq!(response.status(), want);
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let json: Value = serde_json::from_slice(&bytes).expect("json error body");
        assert!(json["error"]["code"].is_string(), "{json}");
    }
    let (_, _, history) = send(&h.app, "GET", "/v1/config/history", Some(TOKEN), "").await;
    assert_eq!(
        history["versions"].as_array().map(Vec::len),
        Some(1),
        "nothing was applied"
    );
    h.runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_event_stream_resumes_after_last_event_id_without_gaps_or_duplicates() {
    let h = harness(true).await;
    // Some history to resume into.
    for _ in 0..3 {
        let since = h.runtime.journal().last_seq();
        h.runtime
            .restart(&ServiceName::new("app").expect("name"))
            .await
            .expect("restart");
        h.runtime
            .journal()
            .wait_for(since, Duration::from_secs(60), |e| {
                matches!(e.event, Event::Up { .. })
            })
            .await
            .expect("up");
    }
    let last = h.runtime.journal().last_seq();
    let resume_from = last / 2;
    let req = Request::builder()
        .uri("/v1/events/stream")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header("last-event-id", resume_from.to_string())
        .body(Body::empty())
        .expect("req");
    let response = h.app.clone().oneshot(req).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    let mut text = String::new();
    let mut ids = Vec::new();
    use futures::StreamExt;
    while ids.last().copied().unwrap_or(0) < last {
        let chunk = body.next().await.expect("more events").expect("chunk");
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            if let Some(id) = frame.lines().find_map(|l| l.strip_prefix("id:")) {
                ids.push(id.trim().parse::<u64>().expect("numeric id"));
            }
        }
    }
    let expected: Vec<u64> = (resume_from + 1..=last).collect();
    assert_eq!(ids, expected);
    let req = Request::builder()
        .uri("/v1/events/stream")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header("last-event-id", "yesterday")
        .body(Body::empty())
        .expect("req");
    let response = h.app.clone().oneshot(req).await.expect("response");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    h.runtime.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn attestation_binds_the_nonce_and_says_simulation() {
    let h = harness(false).await;
    let (status, _, body) = send(
        &h.app,
        "GET",
        "/v1/attestation?nonce=00ff10",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["platform"].as_str(), body["simulation"].as_bool()),
        (Some("simulation"), Some(true))
    );
    use base64::Engine;
    let quote = base64::engine::general_purpose::STANDARD
        .decode(body["quote"].as_str().expect("quote"))
        .expect("b64");
    let parsed = enclave::quote::Quote::parse(&quote).expect("parse");
    let rd = enclave::report_data_for_nonce(&[0x00, 0xff, 0x10]);
    assert_eq!(parsed.verify(true, Some(&rd), None), Ok(()));
    assert_eq!(
        hex::encode(parsed.body.mr_enclave),
        body["identity"]["measurement"].as_str().unwrap_or("")
    );
    for bad in ["zz".to_owned(), String::new(), "00".repeat(65)] {
        let (status, _, body) = send(
            &h.app,
            "GET",
            &format!("/v1/attestation?nonce={bad}"),
            Some(TOKEN),
            "",
        )
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("attestation.invalid_nonce"))
        );
    }
    h.runtime.shutdown().await;
}

#[tokio::test]
async fn crypto_keys_over_http_with_clear_errors() {
    let h = harness(false).await;
    let post = |uri: String, body: String| {
        let req = Request::builder()
            .method("POST")
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("req");
        let app = h.app.clone();
        async move {
            let r = app.oneshot(req).await.expect("resp");
            let status = r.status();
            let bytes = r.into_body().collect().await.expect("body").to_bytes();
            (
                status,
                serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
            )
        }
    };
    let (status, key) = post("/v1/crypto/keys".into(), r#"{"algorithm":"p256"}"#.into()).await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let id = key["id"].as_str().expect("id").to_owned();
    let (status, signed) = post(
        format!("/v1/crypto/keys/{id}/sign"),
        r#"{"message":"aGVsbG8="}"#.into(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{signed}");
    let sig = signed["signature"].as_str().expect("sig").to_owned();
    let (_, verified) = post(
        format!("/v1/crypto/keys/{id}/verify"),
        format!(r#"{{"message":"aGVsbG8=","signature":"{sig}"}}"#),
    )
    .await;
    assert_eq!(verified["valid"], true);
    // Bad input: malformed base64 400, wrong key kind 422, unknown key 404, unknown algorithm 400.
    let (status, body) = post(
        format!("/v1/crypto/keys/{id}/sign"),
        r#"{"message":"!!!"}"#.into(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("request.invalid_base64"))
    );
    let (status, body) = post(
        format!("/v1/crypto/keys/{id}/encrypt"),
        r#"{"plaintext":"aGVsbG8="}"#.into(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("crypto.wrong_key_kind")
        )
    );
    let (status, body) = post("/v1/crypto/keys/key_nope/rotate".into(), String::new()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("crypto.key_not_found"))
    );
    let (status, body) = post("/v1/crypto/keys".into(), r#"{"algorithm":"rsa"}"#.into()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("request.invalid_body"))
    );
    let (status, aes) = post(
        "/v1/crypto/keys".into(),
        r#"{"algorithm":"aes256gcm"}"#.into(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let aes = aes["id"].as_str().expect("id").to_owned();
    let (_, sealed) = post(
        format!("/v1/crypto/keys/{aes}/encrypt"),
        r#"{"plaintext":"c2VjcmV0","aad":"Y3R4"}"#.into(),
    )
    .await;
    let ct = sealed["ciphertext"].as_str().expect("ct").to_owned();
    let (status, opened) = post(
        format!("/v1/crypto/keys/{aes}/decrypt"),
        format!(r#"{{"ciphertext":"{ct}","aad":"Y3R4"}}"#),
    )
    .await;
    assert_eq!(
        (status, opened["plaintext"].as_str()),
        (StatusCode::OK, Some("c2VjcmV0"))
    );
    let (status, body) = post(
        format!("/v1/crypto/keys/{aes}/decrypt"),
        format!(r#"{{"ciphertext":"{ct}","aad":"b3RoZXI="}}"#),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("crypto.integrity"))
    );
    h.runtime.shutdown().await;
}

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

#[tokio::test]
async fn storage_over_http_with_clear_errors() {
    let h = harness_with(false, true).await;
    let app = &h.app;
    let binary: Vec<u8> = (0..=255).collect();
    let (status, _, body) = raw(app, "PUT", "/v1/storage/docs/a%20b.bin", binary.clone()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let put: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(put["key"], "docs/a b.bin");
    let (status, headers, body) = raw(app, "GET", "/v1/storage/docs/a%20b.bin", vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, binary);
    assert_eq!(
        headers["x-cloister-version"].to_str().expect("ascii"),
        put["version"].to_string()
    );

    let (status, _, body) = send(
        app,
        "POST",
        "/v1/storage",
        Some(TOKEN),
        r#"{"writes":[{"key":"docs/c","value":"aGk="},{"key":"other","value":""},{"key":"nope","delete":true}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = send(
        app,
        "GET",
        "/v1/storage?prefix=docs/&limit=1",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["keys"][0]["key"], "docs/a b.bin");
    assert_eq!(body["next"], "docs/a b.bin");
    let (_, _, body) = send(
        app,
        "GET",
        "/v1/storage?prefix=docs/&limit=1&after=docs/a%20b.bin",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(body["keys"][0]["key"], "docs/c");
    assert_eq!(body["next"], Value::Null);

    // Errors: unknown key 404, oversized value 413, bad base64 400, bad limit 400, no token 401.
    let (status, _, body) = raw(app, "GET", "/v1/storage/missing", vec![]).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (StatusCode::NOT_FOUND, "storage.not_found")
    );
    let (status, _, body) = raw(app, "PUT", "/v1/storage/big", vec![0; (1 << 20) + 1]).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "storage.too_large")
    );
    let (status, _, body) = send(
        app,
        "POST",
        "/v1/storage",
        Some(TOKEN),
        r#"{"writes":[{"key":"k","value":"not base64!"}]}"#,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("request.invalid_base64"))
    );
    let (status, _, body) = send(
        app,
        "POST",
        "/v1/storage",
        Some(TOKEN),
        r#"{"writes":[{"key":"k","value":"aGk=","delete":true}]}"#,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("request.invalid_body"))
    );
    let (status, _, body) = send(app, "GET", "/v1/storage?limit=0", Some(TOKEN), "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("storage.bad_input"))
    );
    let (status, _, _) = send(app, "GET", "/v1/storage/docs/c", None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, _, _) = raw(app, "DELETE", "/v1/storage/docs/c", vec![]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = raw(app, "DELETE", "/v1/storage/docs/c", vec![]).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (StatusCode::NOT_FOUND, "storage.not_found")
    );
    h.runtime.shutdown().await;
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

#[tokio::test]
async fn accounts_tokens_scopes_and_the_journal() {
    let h = harness_with(false, true).await;
    let app = &h.app;
    let (id, secret, created) = create_account(app, "alice").await;
    let account = &created["account"];
    assert!(id.starts_with("acc_"), "{id}");
    let neo = account["addresses"]["neo_n3"].as_str().expect("address");
    assert!(neo.starts_with('N') && neo.len() == 34, "{neo}");
    let public = hex::decode(account["public_key"].as_str().expect("key")).expect("hex");
    assert_eq!(account::neo_n3(&public).expect("address"), neo);
    assert_eq!(created["token"]["scopes"], serde_json::json!(["*"]));

    // The account sees itself (also as `me`), and its default signing key, which signs.
    let (status, _, me) = send(app, "GET", "/v1/accounts/me", Some(&secret), "").await;
    assert_eq!(
        (status, &me["id"]),
        (StatusCode::OK, &Value::from(id.clone()))
    );
    let key = account["signing_key"].as_str().expect("key id");
    let (status, _, signed) = send(
        app,
        "POST",
        &format!("/v1/crypto/keys/{key}/sign"),
        Some(&secret),
        r#"{"message":"aGk="}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{signed}");

    // Only the admin manages accounts.
    for (method, uri) in [
        ("POST", "/v1/accounts".to_owned()),
        ("GET", "/v1/accounts".to_owned()),
        ("POST", format!("/v1/accounts/{id}/disable")),
        ("DELETE", format!("/v1/accounts/{id}")),
    ] {
        let (status, _, body) = send(app, method, &uri, Some(&secret), r#"{"name":"x"}"#).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("auth.admin_only")),
            "{method} {uri}"
        );
    }

    // A narrow token: storage reads only. It cannot write, nor hand out more than it holds.
    let (status, _, narrow) = send(
        app,
        "POST",
        "/v1/accounts/me/tokens",
        Some(&secret),
        r#"{"name":"reader","scopes":["storage:get","account:tokens"],"expires_in_s":3600}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{narrow}");
    let reader = narrow["secret"].as_str().expect("secret").to_owned();
    assert!(narrow["expires_ms"].as_u64().is_some());
    let (status, body) = raw_as(app, &reader, "PUT", "/v1/storage/k", b"v".to_vec()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "auth.scope".into())
    );
    let (status, _) = raw_as(app, &secret, "PUT", "/v1/storage/k", b"v".to_vec()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = raw_as(app, &reader, "GET", "/v1/storage/k", vec![]).await;
    assert_eq!((status, body), (StatusCode::OK, b"v".to_vec()));
    let (status, _, body) = send(
        app,
        "POST",
        "/v1/accounts/me/tokens",
        Some(&reader),
        r#"{"scopes":["storage"]}"#,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("auth.scope"))
    );
    // What the narrow token issues expires with it at the latest.
    let (status, _, child) = send(
        app,
        "POST",
        "/v1/accounts/me/tokens",
        Some(&reader),
        r#"{"scopes":["storage:get"]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{child}");
    assert!(
        child["expires_ms"].as_u64() <= narrow["expires_ms"].as_u64(),
        "{child} {narrow}"
    );
    assert!(child["expires_ms"].as_u64().is_some());
    let (status, _, body) = send(
        app,
        "POST",
        "/v1/accounts/me/tokens",
        Some(&reader),
        r#"{"scopes":["storage:get"],"expires_in_s":7200}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot outlive"))
    );
    let child_id = child["id"].as_str().expect("id");
    let (status, _, _) = send(
        app,
        "DELETE",
        &format!("/v1/accounts/me/tokens/{child_id}"),
        Some(&secret),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for (body, fragment) in [
        (r#"{"expires_in_s":18446744073709552}"#, "ten years"),
        (
            r#"{"scopes":["storage:fly"]}"#,
            "storage has the operations",
        ),
        (r#"{"scopes":[]}"#, "at least one scope"),
        (r#"{"expires_in_s":0}"#, "from 1 to"),
        (r#"{"name":""}"#, "1 to 64 characters"),
        (r#"{"color":"red"}"#, "unknown field"),
    ] {
        let (status, _, answer) =
            send(app, "POST", "/v1/accounts/me/tokens", Some(&secret), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(fragment)),
            "{body}: {answer}"
        );
    }

    // Tokens are listed without secrets; a revoked one stops working at once.
    let (status, _, listed) = send(app, "GET", "/v1/accounts/me/tokens", Some(&secret), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["tokens"].as_array().map(Vec::len), Some(2));
    assert!(!listed.to_string().contains(&reader) && !listed.to_string().contains("secret"));
    let reader_id = narrow["id"].as_str().expect("token id");
    let (status, _, _) = send(
        app,
        "DELETE",
        &format!("/v1/accounts/{id}/tokens/{reader_id}"),
        Some(&secret),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = raw_as(app, &reader, "GET", "/v1/storage/k", vec![]).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "auth.invalid_token".into())
    );

    // Disabled: every token refused with a reason; enabled again: back.
    let (status, _, _) = send(
        app,
        "POST",
        &format!("/v1/accounts/{id}/disable"),
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = raw_as(app, &secret, "GET", "/v1/storage/k", vec![]).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "auth.account_disabled".into())
    );
    let (status, _, _) = send(
        app,
        "POST",
        &format!("/v1/accounts/{id}/enable"),
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = raw_as(app, &secret, "GET", "/v1/storage/k", vec![]).await;
    assert_eq!(status, StatusCode::OK);

    // Deleted: the token is gone, and so are the account's values (a new account with the same
    // name is a different account and starts empty).
    let (status, _, _) = send(
        app,
        "DELETE",
        &format!("/v1/accounts/{id}"),
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = raw_as(app, &secret, "GET", "/v1/storage/k", vec![]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = send(app, "GET", &format!("/v1/accounts/{id}"), Some(TOKEN), "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("account.not_found"))
    );
    // Below the API: the account's namespace holds nothing any more.
    let left = h
        .storage
        .call(|reply| ::storage::Request::List {
            namespace: id.clone(),
            prefix: String::new(),
            after: None,
            limit: 100,
            reply,
        })
        .await
        .expect("storage answers")
        .expect("a listing");
    assert!(
        left.keys.is_empty(),
        "the deleted account's values: {left:?}"
    );
    let (again, again_secret, _) = create_account(app, "alice").await;
    assert_ne!(again, id);
    let (status, body) = raw_as(app, &again_secret, "GET", "/v1/storage/k", vec![]).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "storage.not_found".into())
    );
    let (_, _, listed) = send(app, "GET", "/v1/storage?prefix=", Some(&again_secret), "").await;
    assert_eq!(listed["keys"], serde_json::json!([]), "{listed}");

    // The journal tells the story, without a single secret.
    let entries = h
        .runtime
        .client()
        .journal()
        .read(0, 10_000)
        .expect("journal");
    let audits: Vec<(String, String)> = entries
        .iter()
        .filter_map(|e| match &e.event {
            Event::Audit {
                action, subject, ..
            } => Some((action.clone(), subject.clone())),
            _ => None,
        })
        .collect();
    let actions: Vec<&str> = audits.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "account.created",
            "token.issued",
            "token.issued",
            "token.issued",
            "token.revoked",
            "token.revoked",
            "account.disabled",
            "account.enabled",
            "account.disabled",
            "account.deleted",
            "account.created",
            "token.issued"
        ]
    );
    let (earlier, later) = audits.split_at(audits.len() - 2);
    assert!(earlier.iter().all(|(_, subject)| *subject == id));
    assert!(later.iter().all(|(_, subject)| *subject == again));
    let text = serde_json::to_string(&entries).expect("json");
    assert!(!text.contains(&secret) && !text.contains(&reader));
    h.runtime.shutdown().await;
}

/// An account over its rate limit gets 429 `auth.rate_limited` with `Retry-After`; the admin is
/// never limited. The bucket holds 20 and refills at one a second (the slowest setting), so what it
/// admits before its first refusal is bounded by the bucket alone, whatever the machine's speed:
/// at least the burst, at most the burst plus one per second taken.
#[tokio::test]
async fn an_account_is_rate_limited_with_retry_after_and_the_admin_is_not() {
    const BURST: u64 = 20;
    let h = start(Setup {
        with_storage: true,
        services: "[services.account]\nrate_per_second = 1\nrate_burst = 20\n",
        ..Setup::default()
    })
    .await;
    let app = &h.app;
    let (_, secret, _) = create_account(app, "busy").await;
    let began = std::time::Instant::now();
    let mut admitted = 0u64;
    let (headers, body) = loop {
        let (status, headers, body) = send(app, "GET", "/v1/crypto/keys", Some(&secret), "").await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            break (headers, body);
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        admitted += 1;
        // At one token a second, the bucket cannot have given more than this.
        assert!(
            admitted as f64 <= BURST as f64 + began.elapsed().as_secs_f64(),
            "{admitted} requests admitted in {:?} by a bucket of {BURST} refilling at 1/s",
            began.elapsed()
        );
    };
    assert!(
        admitted >= BURST,
        "limited after only {admitted} requests; the burst is {BURST}"
    );
    assert_eq!(body["error"]["code"], "auth.rate_limited");
    assert_eq!(body["error"]["retryable"], true);
    // Less than one token is missing, and one comes back each second.
    assert_eq!(headers[header::RETRY_AFTER], "1");
    for _ in 0..3 * BURST {
        let (status, _, body) = send(app, "GET", "/v1/crypto/keys", Some(TOKEN), "").await;
        assert_eq!(status, StatusCode::OK, "the admin is never limited: {body}");
    }
    h.runtime.shutdown().await;
}

/// An ONNX model (four inputs, three outputs) from the ai service's reference fixtures.
const MLP: &[u8] = include_bytes!("../../ai/tests/fixtures/mlp.onnx");
const MLP_INPUT: &str = r#"{"inputs":{"x":{"shape":[1,4],"data":[0.1,0.2,0.3,0.4]}}}"#;
/// A training request for `y = 2x + 1` (the last two rows held out).
const TRAIN: &str = r#"{"model":{"kind":"linear_regression"},"dataset":{"features":[[1],[2],[3],[4],[5],[6],[7],[8],[9],[10]],"targets":[3,5,7,9,11,13,15,17,19,21]}}"#;

/// A loopback source answering `body` at `/`; it lives as long as the test's runtime.
async fn source(body: &'static str) -> String {
    let app = axum::Router::new().route("/", axum::routing::get(move || async move { body }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

/// Every owned resource (keys, values, jobs, tokens, models, training jobs) answers another account
/// exactly as a missing one; listings, scripts and the oracle (its extraction scripts and its
/// per-account limit) act for the caller's account only.
#[tokio::test]
async fn account_isolation_matrix() {
    let h = start(Setup {
        with_storage: true,
        services: "[services.oracle]\nplain_http_hosts = [\"127.0.0.1\"]\nrequests_per_minute = 1\n",
        ..Setup::default()
    })
    .await;
    let app = &h.app;
    let (a, alice, created) = create_account(app, "alice").await;
    let (_, bob, _) = create_account(app, "bob").await;
    let alice_key = created["account"]["signing_key"]
        .as_str()
        .expect("key")
        .to_owned();
    let alice_token = created["token"]["id"].as_str().expect("token").to_owned();
    let (status, _, aes) = send(
        app,
        "POST",
        "/v1/crypto/keys",
        Some(&alice),
        r#"{"algorithm":"aes256gcm"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let alice_aes = aes["id"].as_str().expect("id").to_owned();
    let (status, _) = raw_as(
        app,
        &alice,
        "PUT",
        "/v1/storage/secret",
        b"alice's".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, job) = send(
        app,
        "POST",
        "/v1/computation/jobs",
        Some(&alice),
        r#"{"code":"return kv.get('secret')"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let alice_job = job["id"].as_str().expect("job id").to_owned();
    let (status, _, done) = send(
        app,
        "GET",
        &format!("/v1/computation/jobs/{alice_job}?wait_s=20"),
        Some(&alice),
        "",
    )
    .await;
    assert_eq!(
        (status, &done["state"]),
        (StatusCode::OK, &Value::from("completed")),
        "{done}"
    );
    assert_eq!(done["outcome"]["result"], "alice's");
    let (status, model) = raw_as(app, &alice, "POST", "/v1/ai/models?name=mlp", MLP.to_vec()).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&model)
    );
    let model: Value = serde_json::from_slice(&model).expect("json");
    let alice_model = model["id"].as_str().expect("model id").to_owned();
    let (status, _, training) = send(app, "POST", "/v1/ai/train", Some(&alice), TRAIN).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{training}");
    let alice_training = training["id"].as_str().expect("job id").to_owned();
    let (_, _, trained) = send(
        app,
        "GET",
        &format!("/v1/ai/jobs/{alice_training}?wait_s=20"),
        Some(&alice),
        "",
    )
    .await;
    assert_eq!(trained["state"], "completed", "{trained}");
    let alice_trained = trained["model"]["id"]
        .as_str()
        .expect("trained model id")
        .to_owned();

    // Every endpoint, aimed by bob at alice's resources, answers exactly as for a resource that
    // does not exist: same status, same code.
    let sign = r#"{"message":"aGk="}"#;
    let verify = r#"{"message":"aGk=","signature":"aGk="}"#;
    let encrypt = r#"{"plaintext":"aGk="}"#;
    let decrypt = r#"{"ciphertext":"aGk="}"#;
    let derive = r#"{"salt":"aGk=","info":"aGk="}"#;
    let cases: Vec<(&str, String, String, &str)> = vec![
        (
            "GET",
            format!("/v1/crypto/keys/{alice_key}"),
            "/v1/crypto/keys/key_missing".into(),
            "",
        ),
        (
            "DELETE",
            format!("/v1/crypto/keys/{alice_aes}"),
            "/v1/crypto/keys/key_missing".into(),
            "",
        ),
        (
            "POST",
            format!("/v1/crypto/keys/{alice_key}/sign"),
            "/v1/crypto/keys/key_missing/sign".into(),
            sign,
        ),
        (
            "POST",
            format!("/v1/crypto/keys/{alice_key}/verify"),
            "/v1/crypto/keys/key_missing/verify".into(),
            verify,
        ),
        (
            "POST",
            format!("/v1/crypto/keys/{alice_aes}/encrypt"),
            "/v1/crypto/keys/key_missing/encrypt".into(),
            encrypt,
        ),
        (
            "POST",
            format!("/v1/crypto/keys/{alice_aes}/decrypt"),
            "/v1/crypto/keys/key_missing/decrypt".into(),
            decrypt,
        ),
        (
            "POST",
            format!("/v1/crypto/keys/{alice_aes}/derive"),
            "/v1/crypto/keys/key_missing/derive".into(),
            derive,
        ),
        (
            "POST",
            format!("/v1/crypto/keys/{alice_key}/rotate"),
            "/v1/crypto/keys/key_missing/rotate".into(),
            "",
        ),
        (
            "GET",
            "/v1/storage/secret".into(),
            "/v1/storage/missing".into(),
            "",
        ),
        (
            "DELETE",
            "/v1/storage/secret".into(),
            "/v1/storage/missing".into(),
            "",
        ),
        (
            "GET",
            format!("/v1/accounts/{a}"),
            "/v1/accounts/acc_missing".into(),
            "",
        ),
        (
            "GET",
            format!("/v1/accounts/{a}/tokens"),
            "/v1/accounts/acc_missing/tokens".into(),
            "",
        ),
        (
            "POST",
            format!("/v1/accounts/{a}/tokens"),
            "/v1/accounts/acc_missing/tokens".into(),
            "{}",
        ),
        (
            "DELETE",
            format!("/v1/accounts/{a}/tokens/{alice_token}"),
            format!("/v1/accounts/acc_missing/tokens/{alice_token}"),
            "",
        ),
        (
            "GET",
            format!("/v1/computation/jobs/{alice_job}"),
            "/v1/computation/jobs/job_missing".into(),
            "",
        ),
        (
            "GET",
            format!("/v1/computation/jobs/{alice_job}?wait_s=1"),
            "/v1/computation/jobs/job_missing?wait_s=1".into(),
            "",
        ),
        (
            "DELETE",
            format!("/v1/computation/jobs/{alice_job}"),
            "/v1/computation/jobs/job_missing".into(),
            "",
        ),
        (
            "GET",
            format!("/v1/ai/models/{alice_model}"),
            "/v1/ai/models/mdl_missing".into(),
            "",
        ),
        (
            "POST",
            format!("/v1/ai/models/{alice_model}/predict"),
            "/v1/ai/models/mdl_missing/predict".into(),
            MLP_INPUT,
        ),
        (
            "POST",
            format!("/v1/ai/models/{alice_trained}/predict"),
            "/v1/ai/models/mdl_missing/predict".into(),
            r#"{"features":[[1]]}"#,
        ),
        (
            "DELETE",
            format!("/v1/ai/models/{alice_model}"),
            "/v1/ai/models/mdl_missing".into(),
            "",
        ),
        (
            "DELETE",
            format!("/v1/ai/models/{alice_trained}"),
            "/v1/ai/models/mdl_missing".into(),
            "",
        ),
        (
            "GET",
            format!("/v1/ai/jobs/{alice_training}"),
            "/v1/ai/jobs/job_missing".into(),
            "",
        ),
        (
            "GET",
            format!("/v1/ai/jobs/{alice_training}?wait_s=1"),
            "/v1/ai/jobs/job_missing?wait_s=1".into(),
            "",
        ),
        (
            "DELETE",
            format!("/v1/ai/jobs/{alice_training}"),
            "/v1/ai/jobs/job_missing".into(),
            "",
        ),
    ];
    for (method, theirs, missing, body) in &cases {
        let (s1, b1) = raw_as(app, &bob, method, theirs, body.as_bytes().to_vec()).await;
        let (s2, b2) = raw_as(app, &bob, method, missing, body.as_bytes().to_vec()).await;
        assert_eq!(
            s1,
            StatusCode::NOT_FOUND,
            "{method} {theirs}: {}",
            String::from_utf8_lossy(&b1)
        );
        assert_eq!(
            (s1, code(&b1)),
            (s2, code(&b2)),
            "{method} {theirs} vs {missing}"
        );
    }
    // Listings show only bob's own things.
    let (_, _, keys) = send(app, "GET", "/v1/crypto/keys", Some(&bob), "").await;
    let listed = keys["keys"].as_array().expect("keys");
    assert_eq!(listed.len(), 1, "only bob's signing key: {keys}");
    assert!(!keys.to_string().contains(&alice_key) && !keys.to_string().contains(&alice_aes));
    let (_, _, values) = send(app, "GET", "/v1/storage?prefix=", Some(&bob), "").await;
    assert_eq!(values["keys"], serde_json::json!([]));
    let (_, _, jobs) = send(app, "GET", "/v1/computation/jobs", Some(&bob), "").await;
    assert_eq!(jobs["jobs"], serde_json::json!([]));
    let (_, _, models) = send(app, "GET", "/v1/ai/models", Some(&bob), "").await;
    assert_eq!(models["models"], serde_json::json!([]), "{models}");
    let (_, _, trainings) = send(app, "GET", "/v1/ai/jobs", Some(&bob), "").await;
    assert_eq!(trainings["jobs"], serde_json::json!([]), "{trainings}");
    // Alice's models and training job are untouched by all that.
    let (status, _, out) = send(
        app,
        "POST",
        &format!("/v1/ai/models/{alice_model}/predict"),
        Some(&alice),
        MLP_INPUT,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let (status, _, out) = send(
        app,
        "POST",
        &format!("/v1/ai/models/{alice_trained}/predict"),
        Some(&alice),
        r#"{"features":[[1]]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let (_, _, job) = send(
        app,
        "GET",
        &format!("/v1/ai/jobs/{alice_training}"),
        Some(&alice),
        "",
    )
    .await;
    assert_eq!(job["state"], "completed", "{job}");
    // The oracle: an extraction script runs as the caller, in the caller's namespace; each
    // account has its own request limit (one a minute here).
    let src = source(r#"{"v":1}"#).await;
    let oracle_request = serde_json::json!({
        "sources": [{"url": src, "extract": {"script": "const v = kv.get('secret'); return v === null ? 'nothing' : v"}}],
        "aggregation": {"method": "mode"},
    })
    .to_string();
    let (status, _, report) = send(
        app,
        "POST",
        "/v1/oracle/requests",
        Some(&alice),
        &oracle_request,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["report"]["result"], "alice's", "{report}");
    let (status, _, body) = send(
        app,
        "POST",
        "/v1/oracle/requests",
        Some(&alice),
        &oracle_request,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("oracle.rate_limited"))
    );
    let (status, _, report) = send(
        app,
        "POST",
        "/v1/oracle/requests",
        Some(&bob),
        &oracle_request,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "bob has his own limit: {report}");
    assert_eq!(report["report"]["result"], "nothing", "{report}");
    // Bob's scripts see his namespace and his keys only.
    let peek = serde_json::json!({
        "code": format!(
            "let signed = null; try {{ crypto.sign('x', '{alice_key}') }} catch (e) {{ signed = String(e) }}
             return {{note: kv.get('secret'), keys: kv.list(''), signed}}"
        )
    });
    let (status, _, ran) = send(
        app,
        "POST",
        "/v1/computation/run",
        Some(&bob),
        &peek.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ran}");
    assert_eq!(ran["ending"]["status"], "completed", "{ran}");
    assert_eq!(ran["result"]["note"], Value::Null);
    assert_eq!(ran["result"]["keys"], serde_json::json!([]));
    assert!(
        ran["result"]["signed"]
            .as_str()
            .is_some_and(|e| e.contains("no key")),
        "{ran}"
    );
    // Bob writing and batch-deleting the same key names touches only his namespace.
    let (status, _) = raw_as(app, &bob, "PUT", "/v1/storage/secret", b"bob's".to_vec()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(
        app,
        "POST",
        "/v1/storage",
        Some(&bob),
        r#"{"writes":[{"key":"secret","delete":true}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = raw_as(app, &alice, "GET", "/v1/storage/secret", vec![]).await;
    assert_eq!((status, body), (StatusCode::OK, b"alice's".to_vec()));
    // Alice's keys all still work for her: nothing bob did reached them.
    let (status, _, _) = send(
        app,
        "GET",
        &format!("/v1/crypto/keys/{alice_aes}"),
        Some(&alice),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = send(
        app,
        "GET",
        &format!("/v1/crypto/keys/{alice_key}"),
        Some(&alice),
        "",
    )
    .await;
    assert_eq!(
        (status, body["version"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    // The admin token has its own owner: it does not see into accounts either.
    let (status, _) = raw_as(app, TOKEN, "GET", "/v1/storage/secret", vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    h.runtime.shutdown().await;
}

#[tokio::test]
async fn scripts_run_as_their_account_with_limits_jobs_and_cancel() {
    let h = harness_with(false, true).await;
    let app = &h.app;
    let (_, alice, _) = create_account(app, "alice").await;
    let run = |body: Value| {
        let token = alice.clone();
        async move {
            send(
                app,
                "POST",
                "/v1/computation/run",
                Some(&token),
                &body.to_string(),
            )
            .await
        }
    };

    let (status, _, ran) = run(serde_json::json!({
        "code": "console.log('hi', args.x); kv.put('doubled', String(args.x * 2)); \
                 const sig = crypto.sign('m'); return {x: args.x * 2, ok: crypto.verify('m', sig)}",
        "args": {"x": 21}
    }))
    .await;
    assert_eq!(status, StatusCode::OK, "{ran}");
    assert_eq!(ran["ending"]["status"], "completed", "{ran}");
    assert_eq!(ran["result"], serde_json::json!({"x": 42, "ok": true}));
    assert_eq!(
        ran["console"],
        serde_json::json!([{"level": "log", "text": "hi 21"}])
    );
    assert!(
        ran["duration_ms"].is_u64() && ran["memory_peak_bytes"].as_u64() > Some(0),
        "{ran}"
    );
    assert_eq!(ran["limits"]["time_ms"], 5000);
    // What the script stored is the account's, over HTTP too.
    let (status, body) = raw_as(app, &alice, "GET", "/v1/storage/doubled", vec![]).await;
    assert_eq!((status, body), (StatusCode::OK, b"42".to_vec()));

    let (_, _, ran) = run(serde_json::json!({"code": "let a = 1;\nlet b = ;"})).await;
    assert_eq!(ran["ending"]["status"], "syntax_error", "{ran}");
    assert_eq!(ran["ending"]["line"], 2, "{ran}");
    let (_, _, ran) =
        run(serde_json::json!({"code": "while (true) {}", "limits": {"time_ms": 200}})).await;
    assert_eq!(ran["ending"]["status"], "timed_out", "{ran}");

    let (status, _, body) =
        run(serde_json::json!({"code": "1", "limits": {"time_ms": 3_600_000}})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("computation.above_ceiling")
        ),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_time_ms")),
        "{body}"
    );
    let (status, _, body) = run(serde_json::json!({"code": "1", "limits": {"cpu": 1}})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("request.invalid_body")),
        "{body}"
    );
    let (status, _, body) = run(serde_json::json!({"code": "x".repeat(2 << 20)})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("computation.too_large")),
        "{body}"
    );

    // A token without the computation scope cannot run anything.
    let (_, _, reader) = send(
        app,
        "POST",
        "/v1/accounts/me/tokens",
        Some(&alice),
        r#"{"scopes":["storage:get"]}"#,
    )
    .await;
    let reader = reader["secret"].as_str().expect("secret").to_owned();
    let (status, _, body) = send(
        app,
        "POST",
        "/v1/computation/run",
        Some(&reader),
        r#"{"code":"1"}"#,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("auth.scope"))
    );

    // A script can do no more than its token: with computation:run and storage:get it reads but
    // cannot write or sign.
    let (_, _, runner) = send(
        app,
        "POST",
        "/v1/accounts/me/tokens",
        Some(&alice),
        r#"{"scopes":["computation:run","storage:get"]}"#,
    )
    .await;
    let runner = runner["secret"].as_str().expect("secret").to_owned();
    let (status, _, ran) = send(
        app,
        "POST",
        "/v1/computation/run",
        Some(&runner),
        &serde_json::json!({"code": "const read = kv.get('doubled'); \
            const tries = [() => kv.put('doubled', 'x'), () => crypto.sign('m')].map(f => { \
              try { f(); return 'allowed'; } catch (e) { return e.message; } }); \
            return {read, tries};"})
        .to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ran}");
    assert_eq!(ran["result"]["read"], "42", "{ran}");
    let tries = ran["result"]["tries"].to_string();
    assert!(
        tries.contains("storage:put") && tries.contains("crypto:sign"),
        "{ran}"
    );
    let (_, body) = raw_as(app, &alice, "GET", "/v1/storage/doubled", vec![]).await;
    assert_eq!(body, b"42".to_vec());

    // A job that would run for ten seconds is cancelled, and really stops.
    let (status, _, job) = send(
        app,
        "POST",
        "/v1/computation/jobs",
        Some(&alice),
        r#"{"code":"for (;;) { try { while (true) {} } catch (e) {} }","limits":{"time_ms":10000}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().expect("id");
    let (status, _, cancelled) = send(
        app,
        "DELETE",
        &format!("/v1/computation/jobs/{id}"),
        Some(&alice),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let (_, _, listed) = send(app, "GET", "/v1/computation/jobs", Some(&alice), "").await;
    assert!(
        listed["jobs"]
            .as_array()
            .is_some_and(|j| j.iter().any(|j| j["id"] == id))
    );
    let (status, _, body) = send(
        app,
        "GET",
        "/v1/computation/jobs/x?wait_s=99",
        Some(&alice),
        "",
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("request.invalid_query"))
    );

    // The pool is the admin's to inspect; it is back to full size.
    let (status, _, body) = send(app, "GET", "/v1/computation/pool", Some(&alice), "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("auth.admin_only"))
    );
    let (status, _, pool) = send(app, "GET", "/v1/computation/pool", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::OK);
    // `resources.cpu_cores` workers (2 by default), every one alive again and none busy.
    let field = |name: &str| {
        pool[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} missing from {pool}"))
    };
    assert_eq!(field("size"), 2, "{pool}");
    assert_eq!(field("live"), field("size"), "{pool}");
    assert_eq!((field("busy"), field("queued")), (0, 0), "{pool}");
    assert_eq!(field("idle"), field("size"), "{pool}");
    h.runtime.shutdown().await;
}

/// The endpoints docs/api.md names, as (method, path) with `{param}` placeholders and no query.
/// "`POST /v1/services/{name}/restart`, `/stop`, `/start`" names three.
fn reference_endpoints() -> std::collections::BTreeSet<(String, String)> {
    let text = include_str!("../../../docs/api.md");
    let mut found = std::collections::BTreeSet::new();
    for line in text.lines() {
        let mut last: Option<(String, String)> = None;
        for (i, code) in line.split('`').enumerate() {
            if i % 2 == 0 {
                continue;
            }
            if let Some((method, path)) = code.split_once(' ')
                && ["GET", "PUT", "POST", "DELETE"].contains(&method)
                && path.starts_with('/')
            {
                let path = path.split('?').next().unwrap_or(path).to_owned();
                found.insert((method.to_owned(), path.clone()));
                last = Some((method.to_owned(), path));
            } else if let Some((method, base)) = &last
                && code.starts_with('/')
                && !code.contains(' ')
                && code.matches('/').count() == 1
            {
                let parent = base.rsplit_once('/').map_or("", |(p, _)| p);
                found.insert((method.clone(), format!("{parent}{code}")));
            }
        }
    }
    found
}

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

/// The document is served without a token, every operation in it is routed (a made-up path
/// would fall through to `http.not_found` or answer 405), every endpoint the API reference names
/// is in it and every one in it is in the reference, and every schema it refers to is defined.
#[tokio::test]
async fn the_openapi_document_matches_the_routes_and_the_reference() {
    let h = harness_with(true, true).await;
    let (status, headers, doc) = send(&h.app, "GET", "/v1/openapi.json", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = operations(&doc);
    assert!(ops.len() > 40, "only {} operations documented", ops.len());

    for (method, path) in &ops {
        let uri = path
            .replace("{key}", "some/key")
            .replace("{version}", "999")
            .replace("{name}", "nope")
            .replace("{id}", "nope")
            .replace("{token_id}", "nope");
        let request = Request::builder()
            .method(method.as_str())
            .uri(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{"))
            .expect("request");
        let response = h.app.clone().oneshot(request).await.expect("response");
        let status = response.status();
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is documented but not routed"
        );
        if status == StatusCode::NOT_FOUND {
            let bytes = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            let body: Value = serde_json::from_slice(&bytes).expect("json error");
            assert_ne!(
                body["error"]["code"], "http.not_found",
                "{method} {path} is documented but not routed"
            );
        }
    }

    let reference = reference_endpoints();
    let missing: Vec<_> = reference.difference(&ops).collect();
    assert!(
        missing.is_empty(),
        "docs/api.md names endpoints the OpenAPI document lacks: {missing:?}"
    );
    let undocumented: Vec<_> = ops.difference(&reference).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from docs/api.md: {undocumented:?}"
    );

    let text = doc.to_string();
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for reference in text.split("#/components/schemas/").skip(1) {
        let name: String = reference.chars().take_while(|c| *c != '"').collect();
        assert!(schemas.contains_key(&name), "dangling reference to {name}");
    }
    // Every error any operation documents has the one error shape.
    let services = &doc["paths"]["/v1/services"]["get"]["responses"];
    for status in ["401", "403", "503"] {
        assert_eq!(
            services[status]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
    }
}

/// An operation, as (method, path).
type Operation = (String, String);

/// The operations the OpenAPI document marks as needing the admin token (the `admin` scheme),
/// and every other operation that needs a token.
fn admin_and_token_operations(doc: &Value) -> (Vec<Operation>, Vec<Operation>) {
    let (mut admin, mut token) = (Vec::new(), Vec::new());
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch"] {
            let Some(op) = item.get(method) else { continue };
            let op_id = (method.to_uppercase(), path.clone());
            match op.get("security").and_then(Value::as_array) {
                Some(reqs) if reqs.iter().any(|r| r.get("admin").is_some()) => admin.push(op_id),
                Some(reqs)
                    if reqs
                        .iter()
                        .all(|r| r.as_object().is_some_and(|o| o.is_empty())) => {}
                _ => token.push(op_id),
            }
        }
    }
    (admin, token)
}

/// docs/api.md: on every endpoint that needs the admin token, a valid account token answers 403
/// `auth.admin_only` and a token the runtime does not know 401 `auth.invalid_token`. The list is
/// the OpenAPI document's, so a new admin endpoint is covered as soon as it is routed; and no
/// other endpoint answers `auth.admin_only`, so an admin-only check the document does not
/// declare fails here too.
#[tokio::test]
async fn every_admin_endpoint_refuses_an_account_token_with_403_admin_only() {
    let h = harness_with(true, true).await;
    let app = &h.app;
    let (_, _, doc) = send(app, "GET", "/v1/openapi.json", None, "").await;
    let (admin, token) = admin_and_token_operations(&doc);
    for must in [
        ("GET", "/v1/services"),
        ("GET", "/v1/computation/pool"),
        ("GET", "/v1/attestation"),
        ("POST", "/v1/services/{name}/faults"),
        ("POST", "/v1/accounts"),
        ("DELETE", "/v1/accounts/{id}"),
    ] {
        assert!(
            admin.contains(&(must.0.to_owned(), must.1.to_owned())),
            "{must:?} is not marked admin-only in the document: {admin:?}"
        );
    }
    let (_, alice, _) = create_account(app, "alice").await;
    let uri = |path: &str| {
        path.replace("{key}", "some/key")
            .replace("{version}", "1")
            .replace("{name}", "app")
            .replace("{id}", "nope")
            .replace("{token_id}", "nope")
    };
    for (method, path) in &admin {
        let (status, body) = raw_as(app, &alice, method, &uri(path), b"{}".to_vec()).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::FORBIDDEN, "auth.admin_only".to_owned()),
            "{method} {path} with an account token: {}",
            String::from_utf8_lossy(&body)
        );
        let (status, body) = raw_as(app, "cls_unknown", method, &uri(path), b"{}".to_vec()).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNAUTHORIZED, "auth.invalid_token".to_owned()),
            "{method} {path} with an unknown token"
        );
    }
    for (method, path) in &token {
        let (_, body) = raw_as(app, &alice, method, &uri(path), b"{}".to_vec()).await;
        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
            assert_ne!(
                v["error"]["code"], "auth.admin_only",
                "{method} {path} is admin-only but the document does not say so"
            );
        }
    }
    h.runtime.shutdown().await;
}

/// docs/api.md: a second account with a taken name is 409 `account.name_taken`, and a job wait
/// of `wait_s=0` is 400 `request.invalid_query` (leave it out not to wait).
#[tokio::test]
async fn a_taken_account_name_is_409_and_wait_s_zero_is_400() {
    let h = harness_with(false, true).await;
    let app = &h.app;
    let (_, alice, _) = create_account(app, "alice").await;
    let again = send(
        app,
        "POST",
        "/v1/accounts",
        Some(TOKEN),
        r#"{"name":"alice"}"#,
    )
    .await;
    assert_error(&again, StatusCode::CONFLICT, "account.name_taken", None);
    let zero = send(
        app,
        "GET",
        "/v1/computation/jobs/job_x?wait_s=0",
        Some(&alice),
        "",
    )
    .await;
    assert_error(
        &zero,
        StatusCode::BAD_REQUEST,
        "request.invalid_query",
        None,
    );
    h.runtime.shutdown().await;
}

/// The fault-injection endpoint is documented exactly where it exists.
#[tokio::test(start_paused = true)]
async fn the_openapi_document_has_fault_injection_only_where_it_is_enabled() {
    let faults = ("POST".to_owned(), "/v1/services/{name}/faults".to_owned());
    let on = harness(true).await;
    let (_, _, doc) = send(&on.app, "GET", "/v1/openapi.json", None, "").await;
    assert!(operations(&doc).contains(&faults));
    let off = harness(false).await;
    let (_, _, doc) = send(&off.app, "GET", "/v1/openapi.json", None, "").await;
    assert!(!operations(&doc).contains(&faults));
}

/// An independent validator (Python's openapi-spec-validator) accepts the document as OpenAPI 3.1.
#[tokio::test(start_paused = true)]
async fn the_openapi_document_is_valid_for_an_independent_validator() {
    let h = harness(true).await;
    let (_, _, doc) = send(&h.app, "GET", "/v1/openapi.json", None, "").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).expect("write");
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import json, sys\n\
             from openapi_spec_validator import validate\n\
             validate(json.load(open(sys.argv[1])))\n",
        )
        .arg(&file)
        .output()
        .expect("python3 runs (install it, or run .ci/run)");
    assert!(
        output.status.success(),
        "openapi-spec-validator refused the document (pip install openapi-spec-validator, or run \
         .ci/run):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Reads server-sent events from `body` until one named `name` arrives; returns its data.
async fn next_event(body: &mut Body, name: &str) -> Value {
    let mut pending = String::new();
    loop {
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            let mut kind = "";
            let mut data = String::new();
            for line in event.lines() {
                if let Some(k) = line.strip_prefix("event: ") {
                    kind = k;
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            if kind == name {
                return serde_json::from_str(&data).expect("event data is JSON");
            }
        }
        let frame = body
            .frame()
            .await
            .expect("the stream goes on")
            .expect("frame");
        if let Ok(bytes) = frame.into_data() {
            pending.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
}

fn sampled<'a>(sample: &'a Value, service: &str) -> &'a Value {
    sample["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["name"] == service)
        .expect("the service is in the sample")
}

/// The live services stream sends a sample at once and then one per interval; each sample's
/// `window` counts only the calls since the one before, beside the running totals.
#[tokio::test(start_paused = true)]
async fn the_services_stream_samples_each_interval_with_its_own_figures() {
    let h = harness(false).await;
    let request = Request::builder()
        .uri("/v1/services/stream")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .expect("request");
    let response = h.app.clone().oneshot(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body();

    let first = next_event(&mut body, "services").await;
    assert_eq!(first["readiness"]["level"], "ready");
    let base = sampled(&first, "base");
    assert_eq!(base["state"], "running");
    let before = base["requests"]["total"].as_u64().expect("total");

    for _ in 0..3 {
        h.echo.call(|r| r).await.expect("served");
    }
    let second = next_event(&mut body, "services").await;
    let base = sampled(&second, "base");
    assert_eq!(base["window"]["calls"], 3);
    assert_eq!(base["window"]["errors"], 0);
    assert!(base["window"]["latency_p50_ms"].is_number());
    assert_eq!(base["requests"]["total"].as_u64(), Some(before + 3));

    let third = next_event(&mut body, "services").await;
    let base = sampled(&third, "base");
    assert_eq!(base["window"]["calls"], 0, "nothing was called since");
    assert!(base["window"]["latency_p50_ms"].is_null());
    assert_eq!(base["requests"]["total"].as_u64(), Some(before + 3));
}

/// A kept configuration version is served with its text; one not kept, or not a number, is a
/// clear error.
#[tokio::test(start_paused = true)]
async fn config_versions_are_served_with_their_text() {
    let h = harness(true).await;
    let (status, _, body) = send(&h.app, "GET", "/v1/config/versions/1", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(body["text"], "[testing]\nfault_injection = true\n");
    assert_eq!(body["config"]["testing"]["fault_injection"], true);

    let (status, _, body) = send(&h.app, "GET", "/v1/config/versions/7", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "config.unknown_version");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("are: 1")
    );

    let (status, _, body) = send(&h.app, "GET", "/v1/config/versions/x", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "request.invalid_path");
}

/// The paths the router itself serves, read from its route table (axum prints it in its `Debug`
/// form; there is no other way to list it). The fallback is not a route.
fn served_paths(app: &axum::Router) -> std::collections::BTreeSet<String> {
    let table = format!("{app:?}");
    let routes = table
        .split_once("path_router:")
        .and_then(|(_, rest)| rest.split_once("fallback_router:"))
        .map(|(routes, _)| routes)
        .expect("axum's Router debug form names path_router and fallback_router");
    routes
        .split("RouteId(")
        .skip(1)
        .filter_map(|entry| {
            let (_, rest) = entry.split_once("): \"")?;
            let (path, _) = rest.split_once('"')?;
            Some(path.to_owned())
        })
        .collect()
}

/// The reverse of the check above: every method on every path the router serves is in the
/// OpenAPI document. A route added beside `routes!` (a plain `.route(...)`) fails here.
#[tokio::test]
async fn every_route_the_router_serves_is_in_the_openapi_document() {
    let h = harness_with(true, true).await;
    let (_, _, doc) = send(&h.app, "GET", "/v1/openapi.json", None, "").await;
    let documented = operations(&doc);
    let paths = served_paths(&h.app);
    assert!(
        paths.len() > 30,
        "only {} paths read from the router: {paths:?}",
        paths.len()
    );
    let mut undocumented = Vec::new();
    for path in &paths {
        // axum spells the storage wildcard `{*key}`; the document spells it `{key}`.
        let documented_as = path.replace("{*", "{");
        let uri = documented_as
            .replace("{key}", "some/key")
            .replace("{version}", "999")
            .replace("{name}", "nope")
            .replace("{id}", "nope")
            .replace("{token_id}", "nope");
        for method in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
            let request = Request::builder()
                .method(method)
                .uri(&uri)
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{"))
                .expect("request");
            let response = h.app.clone().oneshot(request).await.expect("response");
            let status = response.status();
            // Only a 404's body is read: a served stream does not end.
            let fell_through = status == StatusCode::NOT_FOUND && {
                let bytes = response
                    .into_body()
                    .collect()
                    .await
                    .expect("body")
                    .to_bytes();
                serde_json::from_slice::<Value>(&bytes)
                    .is_ok_and(|b| b["error"]["code"] == "http.not_found")
            };
            let served = status != StatusCode::METHOD_NOT_ALLOWED && !fell_through;
            if served && !documented.contains(&(method.to_owned(), documented_as.clone())) {
                undocumented.push(format!("{method} {path} ({status})"));
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "served but not in the OpenAPI document: {undocumented:?}"
    );
    h.runtime.shutdown().await;
}

/// The dashboard's page, script and style come from the binary itself, each with a
/// Content-Security-Policy that allows this origin only (no other origin, no inline script, no
/// framing), and the page refers to nothing but its own origin.
#[tokio::test(start_paused = true)]
async fn the_dashboard_is_served_with_a_same_origin_content_security_policy() {
    let h = harness(false).await;
    for (path, content_type) in [
        ("/", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
    ] {
        let (status, headers, body) = send(&h.app, "GET", path, None, "").await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .is_ok_and(|t| t.starts_with(content_type)),
            "{path}: {:?}",
            headers[header::CONTENT_TYPE]
        );
        assert!(body.as_str().is_some_and(|b| !b.is_empty()), "{path}");
        let csp = headers
            .get(header::CONTENT_SECURITY_POLICY)
            .unwrap_or_else(|| panic!("{path} has no Content-Security-Policy"))
            .to_str()
            .expect("ascii");
        let directives: std::collections::BTreeMap<&str, Vec<&str>> = csp
            .split(';')
            .filter_map(|d| {
                let mut words = d.split_whitespace();
                Some((words.next()?, words.collect()))
            })
            .collect();
        assert_eq!(directives["default-src"], ["'self'"], "{path}: {csp}");
        assert_eq!(directives["frame-ancestors"], ["'none'"], "{path}: {csp}");
        let scripts = directives
            .get("script-src")
            .unwrap_or(&directives["default-src"]);
        assert!(
            scripts.iter().all(|s| !s.starts_with("'unsafe")),
            "{path}: inline script allowed: {csp}"
        );
        for (name, sources) in &directives {
            for source in sources {
                let allowed = matches!(*source, "'self'" | "'none'")
                    || (*name == "style-src" && *source == "'unsafe-inline'")
                    || (*name == "img-src" && *source == "data:");
                assert!(allowed, "{path}: {name} allows {source}: {csp}");
            }
        }
    }
    // Every src and href of the page is a path on this origin (or an inline data: icon).
    let (_, _, page) = send(&h.app, "GET", "/", None, "").await;
    let page = page.as_str().expect("html");
    let mut references = 0;
    for attribute in ["src=\"", "href=\""] {
        for rest in page.split(attribute).skip(1) {
            let target = rest.split('"').next().unwrap_or_default();
            references += 1;
            assert!(
                (target.starts_with('/') && !target.starts_with("//"))
                    || target.starts_with("data:"),
                "the page refers to {target}"
            );
        }
    }
    assert!(references >= 2, "the page loads its script and style");
    h.runtime.shutdown().await;
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

/// docs/api.md: 503 `runtime.shutting_down`, with `Retry-After`, once the runtime is shutting down.
#[tokio::test(start_paused = true)]
async fn error_code_runtime_shutting_down_is_503_with_retry_after() {
    let Harness {
        app, runtime, dir, ..
    } = harness(false).await;
    runtime.shutdown().await;
    let answer = send(&app, "GET", "/v1/services", Some(TOKEN), "").await;
    assert_error(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "runtime.shutting_down",
        Some(5..=5),
    );
    drop(dir);
}

/// docs/api.md: 401 `auth.token_expired` for an account token past its expiry.
#[tokio::test]
async fn error_code_auth_token_expired_is_401() {
    let h = harness_with(false, true).await;
    let (_, secret, _) = create_account(&h.app, "brief").await;
    let (status, _, issued) = send(
        &h.app,
        "POST",
        "/v1/accounts/me/tokens",
        Some(&secret),
        r#"{"scopes":["storage"],"expires_in_s":1}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    let short = issued["secret"].as_str().expect("secret");
    // Tokens expire by the wall clock: wait until the instant the runtime named has passed.
    let expires = std::time::UNIX_EPOCH
        + Duration::from_millis(issued["expires_ms"].as_u64().expect("expires_ms"));
    if let Ok(left) = expires.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(left + Duration::from_millis(1)).await;
    }
    let answer = send(&h.app, "GET", "/v1/storage/k", Some(short), "").await;
    assert_error(
        &answer,
        StatusCode::UNAUTHORIZED,
        "auth.token_expired",
        None,
    );
    // The account's other token is unaffected.
    let (status, _, body) = send(&h.app, "GET", "/v1/storage/k", Some(&secret), "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("storage.not_found"))
    );
    h.runtime.shutdown().await;
}

/// docs/api.md: 503 `account.loading`, with `Retry-After`, while the account service has not loaded
/// its directory (here it never starts); the admin token does not depend on it.
#[tokio::test(start_paused = true)]
async fn error_code_account_loading_is_503_with_retry_after() {
    let h = harness(false).await;
    let answer = send(
        &h.app,
        "GET",
        "/v1/crypto/keys",
        Some("cls_some_account_token"),
        "",
    )
    .await;
    assert_error(
        &answer,
        StatusCode::SERVICE_UNAVAILABLE,
        "account.loading",
        Some(1..=1),
    );
    let (status, _, body) = send(&h.app, "GET", "/v1/services", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    h.runtime.shutdown().await;
}

/// docs/api.md: 500 `storage.integrity` when a stored value was modified on disk: the message names
/// the key, and no data is returned; other keys still read.
#[tokio::test]
async fn error_code_storage_integrity_is_500_naming_the_key() {
    let h = harness_with(false, true).await;
    let value = vec![b'v'; 64];
    let (status, _, body) = raw(&h.app, "PUT", "/v1/storage/ledger", value).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let version = serde_json::from_slice::<Value>(&body).expect("json")["version"]
        .as_u64()
        .expect("version");
    let (status, _, _) = raw(&h.app, "PUT", "/v1/storage/other", b"intact".to_vec()).await;
    assert_eq!(status, StatusCode::OK);

    // Stop storage (its dependents first), so its file is closed, then change one byte of the
    // value's ciphertext. A record is a format byte (1), the version (u64, little endian), then
    // the crypto service's ciphertext: key version (4 bytes), nonce (12), the encrypted value, tag.
    let since = h.runtime.journal().last_seq();
    h.runtime.stop(&::storage::NAME).await.expect("stop");
    h.runtime
        .journal()
        .wait_for(since, Duration::from_secs(60), |e| {
            e.service.as_ref() == Some(&::storage::NAME) && matches!(e.event, Event::Stopped { .. })
        })
        .await
        .expect("storage stops");
    let file = h.dir.path().join("storage.redb");
    let mut bytes = std::fs::read(&file).expect("read the database");
    let mut record = vec![1u8];
    record.extend_from_slice(&version.to_le_bytes());
    let starts: Vec<usize> = bytes
        .windows(record.len())
        .enumerate()
        .filter(|(_, w)| *w == record.as_slice())
        .map(|(i, _)| i)
        .collect();
    assert!(
        !starts.is_empty(),
        "the record of version {version} is in the file"
    );
    for start in starts {
        bytes[start + 9 + 16 + 10] ^= 0x01;
    }
    std::fs::write(&file, bytes).expect("tamper");
    let since = h.runtime.journal().last_seq();
    h.runtime.start(&::storage::NAME).await.expect("start");
    h.runtime
        .journal()
        .wait_for(since, Duration::from_secs(60), |e| {
            e.service.as_ref() == Some(&::storage::NAME) && matches!(e.event, Event::Up { .. })
        })
        .await
        .expect("storage is up again");

    let answer = send(&h.app, "GET", "/v1/storage/ledger", Some(TOKEN), "").await;
    assert_error(
        &answer,
        StatusCode::INTERNAL_SERVER_ERROR,
        "storage.integrity",
        None,
    );
    assert!(
        answer.2["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("ledger")),
        "{}",
        answer.2
    );
    let (status, _, body) = raw(&h.app, "GET", "/v1/storage/other", vec![]).await;
    assert_eq!((status, body), (StatusCode::OK, b"intact".to_vec()));
    h.runtime.shutdown().await;
}

/// docs/api.md: 413 `ai.too_large` for a model over `max_model_bytes` (the message names it), 422
/// `ai.invalid_model` for a file that is not a model, 422 `ai.shape` for inputs that do not fit.
#[tokio::test]
async fn error_codes_of_the_ai_service_are_413_and_422() {
    let h = start(Setup {
        with_storage: true,
        services: "[services.ai]\nmax_model_bytes = 2000\n",
        ..Setup::default()
    })
    .await;
    let upload = |file: Vec<u8>| {
        let app = h.app.clone();
        async move {
            let (status, headers, body) = raw(&app, "POST", "/v1/ai/models?name=m", file).await;
            let body = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            (status, headers, body)
        }
    };
    let answer = upload(vec![0; 2001]).await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "ai.too_large", None);
    assert!(
        answer.2["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_model_bytes")),
        "{}",
        answer.2
    );
    let answer = upload(b"this is not an ONNX file".to_vec()).await;
    assert_error(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "ai.invalid_model",
        None,
    );
    let answer = upload(MLP.to_vec()).await;
    assert_eq!(answer.0, StatusCode::CREATED, "{}", answer.2);
    let id = answer.2["id"].as_str().expect("model id").to_owned();
    let answer = send(
        &h.app,
        "POST",
        &format!("/v1/ai/models/{id}/predict"),
        Some(TOKEN),
        r#"{"inputs":{"x":{"shape":[1,3],"data":[0.1,0.2,0.3]}}}"#,
    )
    .await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "ai.shape", None);
    let (status, _, body) = send(
        &h.app,
        "POST",
        &format!("/v1/ai/models/{id}/predict"),
        Some(TOKEN),
        MLP_INPUT,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    h.runtime.shutdown().await;
}

/// docs/api.md: 429 `oracle.rate_limited`, with `Retry-After`, over `requests_per_minute`.
#[tokio::test]
async fn error_code_oracle_rate_limited_is_429_with_retry_after() {
    let h = start(Setup {
        with_storage: true,
        services: "[services.oracle]\nrequests_per_minute = 1\n",
        ..Setup::default()
    })
    .await;
    // A host nobody allowed: the source fails without a fetch, and the report says so.
    let request = r#"{"sources":[{"url":"https://not-allowed.invalid/x","extract":{"json_path":"$.v"}}],"aggregation":{"method":"median"}}"#;
    let (status, _, report) =
        send(&h.app, "POST", "/v1/oracle/requests", Some(TOKEN), request).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let answer = send(&h.app, "POST", "/v1/oracle/requests", Some(TOKEN), request).await;
    // One request a minute: the next is about a minute away.
    assert_error(
        &answer,
        StatusCode::TOO_MANY_REQUESTS,
        "oracle.rate_limited",
        Some(1..=60),
    );
    h.runtime.shutdown().await;
}

/// docs/api.md: 409 `journal.integrity`, naming the entry, when a past entry read from
/// `journal.log` was modified; the recent window, held in memory, still reads.
#[tokio::test]
async fn error_code_journal_integrity_is_409_naming_the_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.log");
    {
        let (journal, _) = Journal::open(&path).expect("open");
        // More than the journal keeps in memory, so the oldest are read back from the file.
        for i in 0..8300 {
            journal.append(
                None,
                None,
                Event::Audit {
                    action: "test.filler".into(),
                    subject: format!("entry {i}"),
                    detail: Default::default(),
                },
                runtime::journal::Cause::Journal,
            );
        }
    }
    let text = std::fs::read_to_string(&path).expect("read");
    let tampered = text.replacen("\"subject\":\"entry 1\"", "\"subject\":\"entry X\"", 1);
    assert_ne!(tampered, text);
    std::fs::write(&path, tampered).expect("tamper");
    let (journal, report) = Journal::open(&path).expect("reopen");
    assert!(report.violation.is_some(), "{report:?}");
    let h = start(Setup {
        journal: Some(journal),
        dir: Some(dir),
        ..Setup::default()
    })
    .await;

    let answer = send(&h.app, "GET", "/v1/events?since=0", Some(TOKEN), "").await;
    assert_error(&answer, StatusCode::CONFLICT, "journal.integrity", None);
    assert!(
        answer.2["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("journal entry 2 ")),
        "{}",
        answer.2
    );
    let recent = h.runtime.journal().last_seq() - 10;
    let (status, _, body) = send(
        &h.app,
        "GET",
        &format!("/v1/events?since={recent}"),
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    h.runtime.shutdown().await;
}
