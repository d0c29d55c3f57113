//! Scripts over HTTP: runs as their account, limits, jobs and cancel.

use super::*;

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
