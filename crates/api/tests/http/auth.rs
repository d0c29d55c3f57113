//! Who may call what: the admin token, account tokens and their scopes, rate limits, expiry.

use super::*;

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

/// docs/api.md: `/metrics` is open by default; with `[runtime] metrics_auth = true` it answers as
/// an admin endpoint: 401 `auth.missing_token` without a token, 401 `auth.invalid_token` for an
/// unknown one, 403 `auth.admin_only` for an account token, the figures for the admin token.
#[tokio::test]
async fn metrics_need_the_admin_token_when_metrics_auth_is_on() {
    let open = harness(false).await;
    let (status, _, body) = send(&open.app, "GET", "/metrics", None, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    open.runtime.shutdown().await;

    let h = start(Setup {
        with_storage: true,
        metrics_auth: true,
        ..Setup::default()
    })
    .await;
    let (status, _, body) = send(&h.app, "GET", "/metrics", None, "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("auth.missing_token")),
        "{body}"
    );
    let (status, _, body) = send(&h.app, "GET", "/metrics", Some("cls_unknown"), "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("auth.invalid_token"))
    );
    let (_, alice, _) = create_account(&h.app, "alice").await;
    let (status, _, body) = send(&h.app, "GET", "/metrics", Some(&alice), "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("auth.admin_only"))
    );
    let (status, _, body) = send(&h.app, "GET", "/metrics", Some(TOKEN), "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.as_str()
            .is_some_and(|t| t.lines().any(|l| l == "cloister_runtime_ready 1")),
        "{body}"
    );
    h.runtime.shutdown().await;
}

/// The constants deployments are checked against (`api::probes`, read by the Kubernetes
/// manifests' test) name the routes the API serves, unauthenticated.
#[tokio::test(start_paused = true)]
async fn probe_paths_are_routes() {
    let h = harness(false).await;
    for path in [
        api::probes::LIVEZ,
        api::probes::READYZ,
        api::probes::METRICS,
    ] {
        let (status, _, _) = send(&h.app, "GET", path, None, "").await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
}
