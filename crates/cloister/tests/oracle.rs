//! The oracle through the real binary: two sources on loopback, a signed report that an independent
//! implementation (Python's cryptography, from the documented encoding) verifies, `cloister oracle
//! verify` with the key's quote, a forged report refused by both, and the same key after a restart.

mod support;

use std::path::Path;
use std::process::Command;

use axum::Router;
use axum::routing::get;
use reqwest::Method;
use serde_json::{Value, json};
use support::Server;

/// A loopback source answering `body` at `/`.
async fn source(body: &'static str) -> String {
    let app = Router::new().route("/", get(move || async move { body }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

fn config(dir: &Path) -> std::path::PathBuf {
    let text = format!(
        "[runtime]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n\
         [services.oracle]\nplain_http_hosts = [\"127.0.0.1\"]\n",
        dir.join("data").display()
    );
    let path = dir.join("cloister.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn python_verify(report: &Path) -> (bool, Value) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../oracle/tests/verify_report.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(report)
        .output()
        .expect("python3 runs (with pyca/cryptography: .ci/run installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let answer = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "the verifier printed no JSON: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), answer)
}

fn cli_verify(report: &Path, quote: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cloister"))
        .args(["oracle", "verify"])
        .arg(report)
        .arg("--quote")
        .arg(quote)
        .output()
        .expect("cloister runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_from_two_loopback_sources_verifies_independently() {
    let a = source(r#"{"pair": "NEO/USD", "price": 12.25}"#).await;
    let b = source(r#"{"quotes": [{"pair": "NEO/USD", "last": "12.75"}]}"#).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let server = Server::start(&config).await;

    // An account with the oracle scope only asks; scripts run as that account.
    let (status, created) = server
        .json(
            Method::POST,
            "/v1/accounts",
            Some(json!({ "name": "feeds" })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"]["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let request = json!({
        "sources": [
            { "url": a, "extract": { "json_path": "$.price" } },
            { "url": b, "extract": { "script":
                "const q = JSON.parse(args.body).quotes.find(q => q.pair === 'NEO/USD'); return Number(q.last);" } },
        ],
        "aggregation": { "method": "median", "min_agreeing": 2 },
    });
    let (status, report) = server
        .json_as(&token, Method::POST, "/v1/oracle/requests", Some(request))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["report"]["result"], json!(12.5));
    assert_eq!(report["report"]["agreeing"], 2);

    let report_file = dir.path().join("report.json");
    std::fs::write(&report_file, report.to_string()).expect("write");
    let (ok, answer) = python_verify(&report_file);
    assert!(ok, "{answer}");
    assert_eq!(answer["result"], json!(12.5));
    assert_eq!(answer["enclave"]["platform"], "simulation");

    let (status, key) = server
        .json_as(&token, Method::GET, "/v1/oracle/key", None)
        .await;
    assert_eq!(status, 200, "{key}");
    let key_file = dir.path().join("key.json");
    std::fs::write(&key_file, key.to_string()).expect("write");
    let (ok, text) = cli_verify(&report_file, &key_file);
    assert!(ok, "{text}");
    assert!(text.contains("SIMULATION"), "{text}");
    assert!(text.contains("12.5 (2 of 2 sources agree)"), "{text}");

    // A report whose payload was changed is refused by both.
    let mut forged = report.clone();
    let payload = report["payload"]
        .as_str()
        .expect("payload")
        .replace("12.5", "13.5");
    forged["payload"] = Value::String(payload);
    let forged_file = dir.path().join("forged.json");
    std::fs::write(&forged_file, forged.to_string()).expect("write");
    let (ok, answer) = python_verify(&forged_file);
    assert!(!ok, "{answer}");
    let (ok, text) = cli_verify(&forged_file, &key_file);
    assert!(!ok && text.contains("signature does not verify"), "{text}");

    // The key lives sealed in the crypto service: the same after a restart, so old reports still
    // verify against the new quote.
    assert!(server.terminate().success());
    let server = Server::start(&config).await;
    let (status, key_after) = server.json(Method::GET, "/v1/oracle/key", None).await;
    assert_eq!(status, 200, "{key_after}");
    assert_eq!(key_after["public_key"], key["public_key"]);
    std::fs::write(&key_file, key_after.to_string()).expect("write");
    let (ok, text) = cli_verify(&report_file, &key_file);
    assert!(ok, "{text}");
}
