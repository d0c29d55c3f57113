//! The API in-process through `tower::ServiceExt::oneshot`: auth, errors, commands, events, metrics.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use runtime::journal::Event;
use runtime::{
    Builder, Context, Journal, Kind, RuntimeLevel, Service, ServiceError, ServiceName, Spec,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const TOKEN: &str = "test-admin-token";

struct Echo(Spec);

impl Service for Echo {
    type Request = runtime::Reply<()>;
    fn spec(&self) -> Spec {
        self.0.clone()
    }
    async fn run(&self, mut cx: Context<Self::Request>) -> Result<(), ServiceError> {
        while let Some(reply) = cx.recv().await {
            reply.send(());
        }
        Ok(())
    }
}

fn spec(name: &str, deps: &[&str]) -> Spec {
    let mut s = Spec::new(ServiceName::new(name).expect("name"), Kind::Core);
    s.dependencies = deps
        .iter()
        .map(|d| ServiceName::new(d).expect("name"))
        .collect();
    s.recovery.backoff.jitter = 0.0;
    s
}

fn platform() -> Arc<dyn enclave::Platform> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = enclave::Simulation::open(dir.path(), b"test binary", b"", 1).expect("simulation");
    Arc::new(sim)
}

struct Harness {
    app: axum::Router,
    runtime: runtime::Runtime,
    echo: runtime::Handle<runtime::Reply<()>>,
}

async fn harness(fault_injection: bool) -> Harness {
    harness_with(fault_injection, false).await
}

/// With `storage`, the storage service runs too (real files and blocking commits, so not under a
/// paused clock); without, it is registered but disabled.
async fn harness_with(fault_injection: bool, with_storage: bool) -> Harness {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let echo = b.add(Echo(spec("base", &[])));
    b.add(Echo(spec("app", &["base"])));
    let platform = platform();
    let keys_dir = tempfile::tempdir().expect("tempdir").keep();
    let crypto = b.add(::crypto::Crypto::new(&keys_dir, platform.clone()));
    let storage = b.add(::storage::Storage::new(
        &keys_dir,
        platform.clone(),
        crypto.clone(),
    ));
    let accounts = ::account::Account::new(crypto.clone(), storage.clone(), journal);
    let gate = accounts.gate();
    let account = b.add(accounts);
    let computation = b.add(::computation::Computation::new(
        crypto.clone(),
        storage.clone(),
    ));
    let oracle = b.add(::oracle::Oracle::new(
        crypto.clone(),
        computation.clone(),
        platform.clone(),
    ));
    let ai = b.add(::ai::Ai::new(storage.clone()));
    if !with_storage {
        b.disable(::ai::NAME);
        b.disable(::storage::NAME);
        b.disable(::account::NAME);
        b.disable(::computation::NAME);
        b.disable(::oracle::NAME);
    }
    let runtime = b.start().expect("start");
    runtime
        .readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    let mut config = runtime::config::Config::default();
    config.testing.fault_injection = fault_injection;
    let catalog = vec![spec("base", &[]), spec("app", &["base"])];
    let text = if fault_injection {
        "[testing]\nfault_injection = true\n"
    } else {
        ""
    };
    let (configs, _task) = runtime::reconfig::Controller::spawn(
        runtime.client(),
        catalog,
        text.into(),
        config.clone(),
        Arc::new(|_: &mut runtime::config::Config| {}),
        CancellationToken::new(),
    );
    let state = api::AppState {
        client: runtime.client(),
        admin_token: Arc::from(TOKEN),
        config: Arc::new(config),
        configs,
        platform,
        crypto,
        storage,
        account,
        accounts: gate,
        computation,
        oracle,
        ai,
        shutdown: CancellationToken::new(),
    };
    Harness {
        app: api::router(state),
        runtime,
        echo,
    }
}

async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if !body.is_empty() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let response = app
        .clone()
        .oneshot(req.body(Body::from(body.to_owned())).expect("request"))
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
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, headers, json)
}

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
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("1 dependent"),
        "{body}"
    );
    h.runtime
        .journal()
        .wait_for(0, Duration::from_secs(60), |e| {
            e.service.as_ref().is_some_and(|s| s.as_str() == "base")
                && matches!(e.event, Event::Stopped { .. })
        })
        .await
        .expect("stopped");
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
            "account.deleted"
        ]
    );
    assert!(audits.iter().all(|(_, subject)| *subject == id));
    let text = serde_json::to_string(&entries).expect("json");
    assert!(!text.contains(&secret) && !text.contains(&reader));
    h.runtime.shutdown().await;
}

#[tokio::test]
async fn an_account_is_rate_limited_with_retry_after_and_the_admin_is_not() {
    let h = harness_with(false, true).await;
    let app = &h.app;
    let (_, secret, _) = create_account(app, "busy").await;
    // The default burst is 200 at 100/s: well within 400 requests the bucket runs dry.
    let mut limited = None;
    for n in 0..400 {
        let (status, headers, body) = send(app, "GET", "/v1/crypto/keys", Some(&secret), "").await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((n, headers, body));
            break;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (n, headers, body) = limited.expect("the account is limited within 400 requests");
    assert!(
        n >= 200,
        "limited after only {n} requests; the burst is 200"
    );
    assert_eq!(body["error"]["code"], "auth.rate_limited");
    assert_eq!(body["error"]["retryable"], true);
    let retry: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry >= 1);
    for _ in 0..300 {
        let (status, _, _) = send(app, "GET", "/v1/crypto/keys", Some(TOKEN), "").await;
        assert_eq!(status, StatusCode::OK);
    }
    h.runtime.shutdown().await;
}

#[tokio::test]
async fn account_isolation_matrix() {
    let h = harness_with(false, true).await;
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
    let (status, _, _) = send(app, "GET", "/v1/computation/pool", Some(&alice), "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, pool) = send(app, "GET", "/v1/computation/pool", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pool["live"], pool["size"], "{pool}");
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
