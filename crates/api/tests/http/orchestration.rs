//! Services, commands, faults and the live services stream.

use super::*;

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
