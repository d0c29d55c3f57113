//! Hot configuration: shown, applied, rejected, kept in history.

use super::*;

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
