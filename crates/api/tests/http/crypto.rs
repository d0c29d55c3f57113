//! Keys over HTTP: create, sign, verify, rotate, and the errors each answers.

use super::*;

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

/// docs/api.md: 413 `crypto.too_many_keys` for a key past `[services.crypto]
/// max_keys_per_account`, naming the setting.
#[tokio::test(start_paused = true)]
async fn error_code_crypto_too_many_keys_is_413_naming_the_setting() {
    let h = start(Setup {
        services: "[services.crypto]\nmax_keys_per_account = 1\n",
        ..Setup::default()
    })
    .await;
    let body = r#"{"algorithm":"ed25519"}"#;
    let (status, _, key) = send(&h.app, "POST", "/v1/crypto/keys", Some(TOKEN), body).await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let (status, _, refused) = send(&h.app, "POST", "/v1/crypto/keys", Some(TOKEN), body).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("crypto.too_many_keys")),
        "{refused}"
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("services.crypto.max_keys_per_account")),
        "{refused}"
    );
    h.runtime.shutdown().await;
}
