//! The real binary's log as JSON lines (`CLOISTER_LOG_FORMAT=json`): every line parses, a request's
//! lines carry the id its answer gave the client, and no line carries a secret the run used (the
//! admin token, an account token, a stored value, a key's plaintext, a signed message).

use std::process::Stdio;

use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};
use test_support::server::{self, Server, write_config};

const BIN: &str = env!("CARGO_BIN_EXE_cloister");
const ADMIN: &str = "log-test-admin-token-b8f1c2d9e7a6";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_request_ids_and_no_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let child = server::command(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("CLOISTER_ADMIN_TOKEN", ADMIN)
        .env("CLOISTER_LOG_FORMAT", "json")
        // Everything Cloister logs, at every level, is searched.
        .env("CLOISTER_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn cloister run");
    let server = Server::attach(child, ADMIN);
    server.wait_ready(0).await;

    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let stored = "stored-plaintext-value-5e1f0a";
    let plaintext = "aes-plaintext-secret-93c7d2";
    let message = "signed-message-secret-41ab77";

    let (status, created) = server
        .json(
            Method::POST,
            "/v1/accounts",
            Some(json!({ "name": "logged" })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let account_token = created["token"]["secret"]
        .as_str()
        .expect("token")
        .to_owned();
    let put = server
        .http
        .put(format!("{}/v1/storage/notes/a", server.base))
        .bearer_auth(&account_token)
        .body(stored)
        .send()
        .await
        .expect("put");
    assert!(put.status().is_success(), "{}", put.status());
    let (status, key) = server
        .json_as(
            &account_token,
            Method::POST,
            "/v1/crypto/keys",
            Some(json!({ "algorithm": "aes256gcm" })),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let aes = key["id"].as_str().expect("id");
    let (status, sealed) = server
        .json_as(
            &account_token,
            Method::POST,
            &format!("/v1/crypto/keys/{aes}/encrypt"),
            Some(json!({ "plaintext": b64(plaintext.as_bytes()) })),
        )
        .await;
    assert_eq!(status, 200, "{sealed}");
    let (status, opened) = server
        .json_as(
            &account_token,
            Method::POST,
            &format!("/v1/crypto/keys/{aes}/decrypt"),
            Some(json!({ "ciphertext": sealed["ciphertext"] })),
        )
        .await;
    assert_eq!(status, 200, "{opened}");
    let (status, signer) = server
        .json_as(
            &account_token,
            Method::POST,
            "/v1/crypto/keys",
            Some(json!({ "algorithm": "ed25519" })),
        )
        .await;
    assert_eq!(status, 201, "{signer}");
    let (status, signed) = server
        .json_as(
            &account_token,
            Method::POST,
            &format!(
                "/v1/crypto/keys/{}/sign",
                signer["id"].as_str().expect("id")
            ),
            Some(json!({ "message": b64(message.as_bytes()) })),
        )
        .await;
    assert_eq!(status, 200, "{signed}");
    // A wrong token, which the log must not repeat either.
    let wrong = "wrong-token-never-logged-7d3e9f";
    let (status, _) = server
        .json_as(wrong, Method::GET, "/v1/crypto/keys", None)
        .await;
    assert_eq!(status, 401);

    // The caller's id is taken, echoed, put in the error body and in the log.
    let missing = server
        .http
        .get(format!("{}/v1/storage/no/such/key", server.base))
        .bearer_auth(&account_token)
        .header("x-request-id", "client-chosen-id-42")
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status().as_u16(), 404);
    assert_eq!(
        missing.headers().get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"client-chosen-id-42"[..])
    );
    let body: Value = missing.json().await.expect("error body");
    assert_eq!(body["error"]["request_id"], "client-chosen-id-42", "{body}");
    // An insane one is replaced by a generated id.
    let replaced = server
        .http
        .get(format!("{}/livez", server.base))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .expect("livez");
    let generated = replaced
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("an id")
        .to_owned();
    assert!(generated.starts_with("req_"), "{generated}");
    drop(server);

    let text = std::fs::read_to_string(&log_path).expect("log");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty(), "the log is empty");
    for line in &lines {
        for field in ["timestamp", "level", "target", "fields"] {
            assert!(line.get(field).is_some(), "no {field}: {line}");
        }
    }
    let with_id = |id: &str| {
        lines
            .iter()
            .filter(|l| l["span"]["request_id"] == id)
            .count()
    };
    assert!(
        with_id("client-chosen-id-42") > 0,
        "no log line carries the client's id:\n{text}"
    );
    for secret in [
        ADMIN,
        account_token.as_str(),
        stored,
        plaintext,
        message,
        wrong,
        &b64(plaintext.as_bytes()),
        &b64(message.as_bytes()),
        &b64(stored.as_bytes()),
    ] {
        assert!(
            !text.contains(secret),
            "the log carries the secret {secret:?}"
        );
    }
}
