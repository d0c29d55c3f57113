//! Writes the committed seed corpus, `fuzz/corpus/TARGET/NAME`: valid inputs of each parser, made
//! by the project's own code (sealed, signed and chained as Cloister writes them, under the fuzz
//! simulation's fixed root) or taken from its fixtures. Run it again when a format changes:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use cloister_fuzz::{join, simulation_in};
use enclave::Platform;
use p256::ecdsa::signature::Signer as _;
use serde_json::json;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

struct Corpus(PathBuf);

impl Corpus {
    fn put(&self, target: &str, name: &str, bytes: impl AsRef<[u8]>) {
        let dir = self.0.join(target);
        std::fs::create_dir_all(&dir).expect("the corpus directory");
        std::fs::write(dir.join(name), bytes).expect("a seed is written");
    }

    fn copy(&self, target: &str, name: &str, from: &Path) {
        let bytes = std::fs::read(from).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
        self.put(target, name, bytes);
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = root.parent().expect("fuzz/ is in the repository");
    let corpus = Corpus(root.join("corpus"));
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let sim = simulation_in(scratch.path());

    configs(&corpus, repo);
    quotes(&corpus, repo, &sim);
    sealed(&corpus, &sim);
    counters(&corpus, &sim);
    keystores(&corpus);
    journals(&corpus);
    records(&corpus);
    oracle(&corpus, &sim);
    ai(&corpus, repo);
    bodies(&corpus);
}

fn configs(c: &Corpus, repo: &Path) {
    c.copy("config", "demo.toml", &repo.join("examples/demo.toml"));
    c.put("config", "empty.toml", "");
    c.put(
        "config",
        "services.toml",
        "[runtime]\nlisten = \"127.0.0.1:0\"\n\n[services.storage]\nmax_value_bytes = 4096\n\n\
         [services.oracle]\nallowed_hosts = [\"*.example.com\", \"127.0.0.1:9000\"]\n\n\
         [services.ai]\nenabled = false\n",
    );
}

fn quotes(c: &Corpus, repo: &Path, sim: &enclave::Simulation) {
    let dcap = repo.join("crates/enclave/tests/fixtures/dcap");
    c.copy("quote", "sgx_quote", &dcap.join("sgx_quote"));
    c.copy("quote", "tdx_quote", &dcap.join("tdx_quote"));
    let simulated = sim.quote(&[0u8; 64]).expect("a simulation quote");
    c.put("quote", "simulation_quote", simulated);
    c.copy(
        "collateral",
        "sgx_quote_collateral.json",
        &dcap.join("sgx_quote_collateral.json"),
    );
}

fn sealed(c: &Corpus, sim: &enclave::Simulation) {
    for (name, policy, aad, plaintext) in [
        (
            "signer",
            enclave::Policy::Signer,
            b"keystore data key".as_slice(),
            [1u8; 32].as_slice(),
        ),
        (
            "measurement",
            enclave::Policy::Measurement,
            b"".as_slice(),
            b"a value".as_slice(),
        ),
    ] {
        let request = enclave::KeyRequest {
            policy,
            security_version: cloister_fuzz::SECURITY_VERSION,
            key_id: [7; 32],
        };
        let blob = enclave::seal(sim, &request, plaintext, aad).expect("sealed");
        c.put("sealed_blob", name, join(aad, &blob));
    }
}

fn counters(c: &Corpus, sim: &enclave::Simulation) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let counters = enclave::Counters::new(dir.path());
    for n in 1..=2 {
        counters.advance(sim, "fuzz").expect("the counter advances");
        c.copy(
            "counter",
            &format!("at_{n}"),
            &dir.path().join("fuzz.counter"),
        );
    }
}

/// A keystore written by the crypto service itself: keys made, rotated and deleted, so the
/// snapshot has keys and the change log records.
fn keystores(c: &Corpus) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let platform: Arc<dyn Platform> = Arc::new(simulation_in(dir.path()));
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    rt.block_on(async {
        let journal = runtime::Journal::in_memory();
        let mut b = runtime::Builder::new(journal);
        let crypto = b.add(crypto::Crypto::new(dir.path(), platform));
        let running = b.start().expect("the runtime starts");
        running
            .readiness()
            .wait_for(|r| r.level == runtime::RuntimeLevel::Ready)
            .await
            .expect("ready");
        let mut ids = Vec::new();
        for algorithm in [
            crypto::Algorithm::Ed25519,
            crypto::Algorithm::Aes256gcm,
            crypto::Algorithm::P256,
        ] {
            let key = crypto
                .call(|reply| crypto::Request::Generate {
                    owner: "alice".into(),
                    algorithm,
                    reply,
                })
                .await
                .expect("the call is answered")
                .expect("a key is made");
            ids.push(key.id);
        }
        crypto
            .call(|reply| crypto::Request::Rotate {
                owner: "alice".into(),
                id: ids[1].clone(),
                reply,
            })
            .await
            .expect("the call is answered")
            .expect("rotated");
        crypto
            .call(|reply| crypto::Request::Delete {
                owner: "alice".into(),
                id: ids[2].clone(),
                reply,
            })
            .await
            .expect("the call is answered")
            .expect("deleted");
        running.shutdown().await;
    });
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap_or_default();
    let (snapshot, log) = (read("keystore.sealed"), read("keystore.log"));
    assert!(
        !snapshot.is_empty(),
        "the crypto service wrote its keystore"
    );
    c.put("keystore", "with_log", join(&snapshot, &log));
    c.put("keystore", "snapshot_only", join(&snapshot, b""));
}

fn journals(c: &Corpus) {
    use runtime::journal::{Cause, Event};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("journal.jsonl");
    let (journal, _) = runtime::Journal::open(&path).expect("a new journal");
    let storage = runtime::ServiceName::from_static("storage");
    journal.append(
        None,
        None,
        Event::RuntimeStarted {
            version: "0.1.0".into(),
            services: 6,
        },
        Cause::Startup,
    );
    journal.append(Some(&storage), Some(1), Event::Registered, Cause::Startup);
    journal.append(
        Some(&storage),
        Some(1),
        Event::RuntimeStopping,
        Cause::Operator {
            command: "stop".into(),
        },
    );
    drop(journal);
    let bytes = std::fs::read(&path).expect("the journal file");
    c.put("journal", "three_entries", &bytes);
    c.put("journal", "torn_tail", &bytes[..bytes.len() - 20]);
}

fn records(c: &Corpus) {
    for (name, version, ciphertext) in [
        ("v1", 1u64, &b"0123456789abcdef-tag"[..]),
        ("empty", 7, &[]),
    ] {
        let record = storage::Record {
            version,
            ciphertext: ciphertext.to_vec(),
        };
        c.put("storage_record", name, record.encode());
    }
}

fn oracle(c: &Corpus, sim: &enclave::Simulation) {
    let request = json!({
        "sources": [
            {"url": "https://api.example.com/price", "extract": {"json_path": "$.data.price"}},
            {"url": "https://prices.example.net/v1", "method": "POST", "headers": {"accept": "application/json"},
             "body": "{\"pair\":\"BTC-USD\"}", "extract": {"script": "return JSON.parse(args.body).p;"}}
        ],
        "aggregation": {"method": "median", "min_agreeing": 1, "max_deviation": 0.05}
    });
    c.put("oracle_request", "two_sources.json", request.to_string());
    c.put(
        "oracle_request",
        "quorum.json",
        json!({"sources": [{"url": "https://a.example.com/x", "extract": {"json_path": "$.v"}}],
               "aggregation": {"method": "quorum"}})
        .to_string(),
    );
    for (name, path, body) in [
        ("price", "$.data.price", json!({"data": {"price": 42.5}})),
        (
            "filter",
            "$.items[?@.id == 2].v",
            json!({"items": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]}),
        ),
        (
            "descendants",
            "$..x",
            json!({"a": {"x": 1}, "b": [{"x": 2}]}),
        ),
    ] {
        c.put(
            "json_path",
            name,
            join(path.as_bytes(), body.to_string().as_bytes()),
        );
    }

    // A report signed as the oracle signs one, with its key's attestation.
    let key = p256::ecdsa::SigningKey::from_slice(&[3u8; 32]).expect("a P-256 scalar");
    let public = key
        .verifying_key()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec();
    let request: oracle::OracleRequest = serde_json::from_value(request).expect("a request");
    let enclave = serde_json::to_value(sim.identity()).expect("an identity serializes");
    let payload = json!({
        "format": oracle::report::FORMAT,
        "request_hash": request.hash(),
        "request": request,
        "sources": [
            {"url": "https://api.example.com/price", "host": "api.example.com", "method": "GET",
             "status": 200, "body_sha256": "00", "fetched_at_ms": 1, "cached": false,
             "extraction": "json_path", "script_sha256": null, "value": 42.5, "error": null},
            {"url": "https://prices.example.net/v1", "host": "prices.example.net", "method": "POST",
             "status": 200, "body_sha256": "00", "fetched_at_ms": 1, "cached": false,
             "extraction": "script",
             "script_sha256": hex::encode(<sha2::Sha256 as sha2::Digest>::digest("return JSON.parse(args.body).p;")),
             "value": 42.0, "error": null}
        ],
        "aggregation": {"method": "median", "min_agreeing": 1, "max_deviation": 0.05},
        "result": 42.25,
        "agreeing": 2,
        "error": null,
        "timestamp_ms": 1,
        "enclave": enclave,
        "signer": {"algorithm": oracle::report::ALGORITHM, "public_key": B64.encode(&public)},
    });
    let text = oracle::canonical::canonical_json(&payload);
    let signature: p256::ecdsa::Signature = key.sign(text.as_bytes());
    let report =
        json!({"payload": text, "signature": B64.encode(signature.to_bytes()), "report": payload});
    let report_data = oracle::report::key_report_data(&public);
    let attestation = json!({
        "algorithm": oracle::report::ALGORITHM,
        "public_key": B64.encode(&public),
        "simulation": true,
        "enclave": sim.identity(),
        "report_data": hex::encode(report_data),
        "report_data_binding": "sha256(\"cloister oracle key v1\\0\" || public_key) || 32 zero bytes",
        "quote": B64.encode(sim.quote(&report_data).expect("a quote")),
    });
    let trust = enclave::quote::Trust {
        allow_simulation: true,
        hardware: None,
    };
    oracle::verify(&report.to_string(), Some(&attestation.to_string()), &trust)
        .expect("the seed report verifies");
    c.put(
        "oracle_report",
        "attested",
        join(
            report.to_string().as_bytes(),
            attestation.to_string().as_bytes(),
        ),
    );
}

fn ai(c: &Corpus, repo: &Path) {
    let fixtures = repo.join("crates/ai/tests/fixtures");
    for model in [
        "batch.onnx",
        "conv.onnx",
        "dtypes.onnx",
        "mlp.onnx",
        "trees.onnx",
        "unshaped.onnx",
        "panic_on_load.onnx",
        "panic_on_predict.onnx",
    ] {
        c.copy("onnx", model, &fixtures.join(model));
    }
    let rows: Vec<Vec<f64>> = (0..12)
        .map(|i| vec![f64::from(i), f64::from(i % 3) * 0.5])
        .collect();
    let linear: Vec<f64> = rows.iter().map(|r| 2.0 * r[0] - r[1] + 1.0).collect();
    let labels: Vec<f64> = (0..12).map(|i| f64::from(i % 2)).collect();
    for (name, body) in [
        (
            "linear.json",
            json!({"model": {"kind": "linear_regression"}, "dataset": {"features": rows, "targets": linear}}),
        ),
        (
            "logistic.json",
            json!({"name": "l", "model": {"kind": "logistic_regression", "c": 0.5},
            "dataset": {"features": rows, "targets": labels}, "test_fraction": 0.25}),
        ),
        (
            "kmeans.json",
            json!({"model": {"kind": "kmeans", "k": 2, "n_init": 2, "seed": 7},
            "dataset": {"features": rows}}),
        ),
    ] {
        c.put("dataset", name, body.to_string());
        c.put(
            "api_bodies",
            &format!("train_{name}"),
            [&[13u8][..], body.to_string().as_bytes()].concat(),
        );
    }
}

/// One valid body per endpoint, behind the byte `api_bodies` picks the endpoint by.
fn bodies(c: &Corpus) {
    let body = |n: u8, v: serde_json::Value| [&[n][..], v.to_string().as_bytes()].concat();
    for (name, bytes) in [
        ("account_create", body(0, json!({"name": "alice"}))),
        (
            "token_issue",
            body(
                1,
                json!({"name": "ci", "scopes": ["storage:read", "crypto"], "expires_in_s": 3600}),
            ),
        ),
        ("fault", body(2, json!({"kind": "panic"}))),
        (
            "storage_batch",
            body(
                3,
                json!({"writes": [{"key": "a", "value": "aGVsbG8="}, {"key": "b", "delete": true}]}),
            ),
        ),
        ("key_generate", body(4, json!({"algorithm": "ed25519"}))),
        (
            "sign",
            body(5, json!({"message": "aGVsbG8=", "encoding": "der"})),
        ),
        (
            "verify",
            body(6, json!({"message": "aGVsbG8=", "signature": "AAAA"})),
        ),
        (
            "encrypt",
            body(7, json!({"plaintext": "aGVsbG8=", "aad": "eA=="})),
        ),
        (
            "decrypt",
            body(8, json!({"ciphertext": "aGVsbG8=", "aad": "eA=="})),
        ),
        (
            "derive",
            body(9, json!({"salt": "c2FsdA==", "info": "aW5mbw=="})),
        ),
        (
            "run",
            body(
                10,
                json!({"code": "return args.x + 1;", "args": {"x": 1}, "limits": {"time_ms": 100}, "deterministic": true}),
            ),
        ),
        (
            "oracle",
            body(
                11,
                json!({"sources": [{"url": "https://a.example.com/x", "extract": {"json_path": "$.v"}}], "aggregation": {"method": "mode"}}),
            ),
        ),
        (
            "predict_tensors",
            body(
                12,
                json!({"inputs": {"x": {"dtype": "f32", "shape": [1, 2], "data": [1.5, "NaN"]}}}),
            ),
        ),
        (
            "predict_rows",
            body(12, json!({"features": [[1.0, 2.0], [3.0, 4.0]]})),
        ),
    ] {
        c.put("api_bodies", name, bytes);
    }
}
