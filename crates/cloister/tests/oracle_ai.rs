//! The oracle and the ai service through the real binary: two sources on loopback, a signed report
//! that an independent implementation (Python's cryptography, from the documented encoding)
//! verifies, `cloister oracle verify` with the key's quote and each value's provenance (JSONPath, or
//! a script's hash), a script refused to a token without `computation:run`, a forged report
//! refused by both; an ONNX model and a trained model that match onnxruntime and scikit-learn; and
//! after a restart, the same oracle key and both models, still answering the same.

const BIN: &str = env!("CARGO_BIN_EXE_cloister");

use std::path::Path;
use std::process::Command;

use reqwest::Method;
use serde_json::{Value, json};
use test_support::server::Server;

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

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../ai/tests/fixtures")
        .join(name)
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).expect("fixture")).expect("json")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn assert_close(a: &[f64], b: &[f64], tolerance: f64) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tolerance, "{x} vs {y}");
    }
}

/// The first case of the MLP fixture: its input as a predict body, and onnxruntime's output.
fn mlp_case() -> (Value, Vec<f64>) {
    let cases = fixture_json("mlp.cases.json");
    let case = &cases["cases"][1];
    let body = json!({ "inputs": { "x": { "shape": case["shape"], "data": case["x"] } } });
    (body, floats(&case["expected"]))
}

/// The test rows of the linear dataset and scikit-learn's predictions for them.
fn linear_case() -> (Value, Vec<f64>) {
    let data = fixture_json("linear.json");
    let rows = data["features"].as_array().expect("rows");
    let test = &rows[rows.len() - 40..];
    let expected = fixture_json("linear.expected.json");
    (
        json!({ "features": test }),
        floats(&expected["predictions_test"]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oracle_reports_verify_independently_and_models_survive_a_restart() {
    let a = test_support::source::fixed(r#"{"pair": "NEO/USD", "price": 12.25}"#).await;
    let b =
        test_support::source::fixed(r#"{"quotes": [{"pair": "NEO/USD", "last": "12.75"}]}"#).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let server = Server::start(BIN, &config).await;

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
    // Which value came from a script, and which script: its hash, signed with the rest.
    let sources = &report["report"]["sources"];
    let script_hash = sources[1]["script_sha256"].as_str().expect("a script hash");
    assert_eq!(script_hash.len(), 64, "{}", sources[1]);
    assert_eq!(sources[0]["script_sha256"], Value::Null, "{}", sources[0]);
    // The independent verifier checked the mark against the script in the payload.
    assert_eq!(answer["scripts"], json!([null, script_hash]), "{answer}");
    assert!(text.contains("from:    JSONPath $.price"), "{text}");
    assert!(
        text.contains(&format!("from:    script sha256 {script_hash}")),
        "{text}"
    );
    let body_hash = sources[1]["body_sha256"].as_str().expect("a body hash");
    assert!(
        text.contains(&format!("body:    sha256 {body_hash}")),
        "{text}"
    );

    // A token with the oracle scope alone may ask by JSONPath, not run a script.
    let account = created["account"]["id"]
        .as_str()
        .expect("the account's id")
        .to_owned();
    let (status, issued) = server
        .json(
            Method::POST,
            &format!("/v1/accounts/{account}/tokens"),
            Some(json!({ "name": "oracle only", "scopes": ["oracle"] })),
        )
        .await;
    assert_eq!(status, 201, "{issued}");
    let oracle_only = issued["secret"].as_str().expect("secret").to_owned();
    let (status, refused) = server
        .json_as(
            &oracle_only,
            Method::POST,
            "/v1/oracle/requests",
            Some(json!({
                "sources": [{ "url": b, "extract": { "script": "return 1" } }],
                "aggregation": { "method": "mode" },
            })),
        )
        .await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "auth.scope", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("computation:run")),
        "{refused}"
    );
    let (status, answer) = server
        .json_as(
            &oracle_only,
            Method::POST,
            "/v1/oracle/requests",
            Some(json!({
                "sources": [{ "url": a, "extract": { "json_path": "$.price" } }],
                "aggregation": { "method": "median" },
            })),
        )
        .await;
    assert_eq!(status, 200, "{answer}");

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

    // Where the enclave may connect is read at start only.
    let widened = format!(
        "{}\n[services.oracle]\nallowed_hosts = [\"*\"]\n",
        std::fs::read_to_string(&config).expect("config").replace(
            "[services.oracle]\nplain_http_hosts = [\"127.0.0.1\"]\n",
            ""
        )
    );
    let answer = server
        .http
        .put(format!("{}/v1/config", server.base))
        .bearer_auth(test_support::server::TOKEN)
        .body(widened)
        .send()
        .await
        .expect("apply");
    assert_eq!(answer.status(), 422);
    let answer: Value = answer.json().await.expect("json");
    assert!(
        answer["error"]["message"]
            .as_str()
            .expect("message")
            .contains("read at start only"),
        "{answer}"
    );

    // An ONNX model, uploaded raw, answers as onnxruntime does.
    let upload = server
        .http
        .post(format!("{}/v1/ai/models?name=mlp", server.base))
        .bearer_auth(&token)
        .body(std::fs::read(fixture("mlp.onnx")).expect("model"))
        .send()
        .await
        .expect("upload");
    assert_eq!(upload.status(), 201);
    let onnx: Value = upload.json().await.expect("json");
    let onnx_id = onnx["id"].as_str().expect("id").to_owned();
    let (input, expected) = mlp_case();
    let predict = format!("/v1/ai/models/{onnx_id}/predict");
    let (status, out) = server
        .json_as(&token, Method::POST, &predict, Some(input.clone()))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_close(&floats(&out["outputs"]["y"]["data"]), &expected, 1e-5);

    // A linear regression trained here predicts as scikit-learn's does.
    let dataset = fixture_json("linear.json");
    let (status, job) = server
        .json_as(
            &token,
            Method::POST,
            "/v1/ai/train",
            Some(json!({ "name": "prices", "model": { "kind": "linear_regression" }, "dataset": dataset })),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let job_path = format!("/v1/ai/jobs/{}?wait_s=30", job["id"].as_str().expect("id"));
    let (_, job) = server.json_as(&token, Method::GET, &job_path, None).await;
    assert_eq!(job["state"], "completed", "{job}");
    let trained_id = job["model"]["id"].as_str().expect("model id").to_owned();
    let (rows, sklearn) = linear_case();
    let trained_predict = format!("/v1/ai/models/{trained_id}/predict");
    let (status, out) = server
        .json_as(&token, Method::POST, &trained_predict, Some(rows.clone()))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_close(&floats(&out["predictions"]), &sklearn, 1e-6);

    // A dataset with a hole in it is refused before anything runs.
    let holed = fixture_json("nan.json");
    let (status, refused) = server
        .json_as(
            &token,
            Method::POST,
            "/v1/ai/train",
            Some(json!({ "model": { "kind": "linear_regression" }, "dataset": holed })),
        )
        .await;
    assert_eq!(status, 400, "{refused}");

    // The key lives sealed in the crypto service: the same after a restart, so old reports still
    // verify against the new quote.
    assert!(server.terminate().success());
    let server = Server::start(BIN, &config).await;
    let (status, key_after) = server.json(Method::GET, "/v1/oracle/key", None).await;
    assert_eq!(status, 200, "{key_after}");
    assert_eq!(key_after["public_key"], key["public_key"]);
    std::fs::write(&key_file, key_after.to_string()).expect("write");
    let (ok, text) = cli_verify(&report_file, &key_file);
    assert!(ok, "{text}");

    // Both models are still there, sealed in the account's storage, and answer the same.
    let (status, models) = server
        .json_as(&token, Method::GET, "/v1/ai/models", None)
        .await;
    assert_eq!(status, 200, "{models}");
    let ids: Vec<&str> = models["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert!(
        ids.contains(&onnx_id.as_str()) && ids.contains(&trained_id.as_str()),
        "{models}"
    );
    let (status, out) = server
        .json_as(&token, Method::POST, &predict, Some(input))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_close(&floats(&out["outputs"]["y"]["data"]), &expected, 1e-5);
    let (status, out) = server
        .json_as(&token, Method::POST, &trained_predict, Some(rows))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_close(&floats(&out["predictions"]), &sklearn, 1e-6);
}
