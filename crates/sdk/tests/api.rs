//! The SDK against the real API (the in-process stack served on loopback): each call answers the
//! API's own type with the fields the API filled in, and an error answer is the typed error with
//! the API's code.

use std::time::Duration;

use cloister_sdk::types::accounts::IssueBody;
use cloister_sdk::types::ai::{
    Dataset, JobState as AiJobState, ModelKind, Params, PredictInput, Prediction, Tensor,
    TrainRequest,
};
use cloister_sdk::types::computation::{Ending, JobState, Program};
use cloister_sdk::types::crypto::{Algorithm, Encoding};
use cloister_sdk::types::{Health, Kind, Outcome, RuntimeLevel, ServiceName, State};
use cloister_sdk::{Client, Command, Error, MAX_JOB_WAIT, Write};
use test_support::in_process::{TOKEN, harness_with};
use test_support::source::serve;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_answers_round_trip_through_the_real_api() {
    let h = harness_with(false, true).await;
    let admin = Client::new(&serve(h.app.clone()).await, TOKEN).expect("client");

    // The orchestration read side.
    let list = admin.services().await.expect("services");
    assert_eq!(list.readiness.level, RuntimeLevel::Ready);
    let storage = list
        .services
        .iter()
        .find(|s| s.name.as_str() == "storage")
        .expect("storage is listed");
    assert_eq!(storage.state, State::Running);
    assert_eq!(storage.health, Health::Healthy);
    assert_eq!(storage.replicas.running, 1);
    let app = admin.service("app").await.expect("app");
    assert_eq!(app.dependencies, vec![ServiceName::from_static("base")]);
    assert_eq!(app.kind, Kind::Core);
    assert!(app.layer > 0, "app starts after base");
    let graph = admin.graph().await.expect("graph");
    assert!(
        graph
            .edges
            .iter()
            .any(|e| e.from.as_str() == "app" && e.to.as_str() == "base")
    );
    let restarted = admin
        .command("app", Command::Restart)
        .await
        .expect("restart");
    assert_eq!(restarted.service.as_str(), "app");
    assert!(restarted.accepted, "{}", restarted.message);

    // The journal, by page and live.
    let page = admin.events(0, 5).await.expect("events");
    assert_eq!(page.events.first().map(|e| e.seq), Some(1));
    assert_eq!(page.next, page.events.last().map_or(0, |e| e.seq));
    let mut live = admin.event_stream(0).await.expect("stream");
    let first = live
        .next()
        .await
        .expect("an entry")
        .expect("a readable entry");
    assert_eq!(first.seq, 1);

    // The services, live: a typed sample at once, with the interval's figures beside each.
    let mut samples = admin.service_stream().await.expect("services stream");
    let sample = samples
        .next()
        .await
        .expect("a sample")
        .expect("a readable sample");
    assert_eq!(sample.readiness.level, RuntimeLevel::Ready);
    let sampled = sample
        .services
        .iter()
        .find(|s| s.service.name.as_str() == "storage")
        .expect("storage is sampled");
    assert_eq!(sampled.service.state, State::Running);
    assert!(sampled.window.error_rate <= 1.0, "{sampled:?}");

    // Configuration: the running version, and a rejection as an answer with its problems.
    let running = admin.config().await.expect("config");
    assert!(running.summary.version >= 1);
    let history = admin.config_history().await.expect("history");
    assert_eq!(
        history.versions.first().map(|v| v.version),
        Some(running.summary.version)
    );
    let rejected = admin
        .apply_config("[runtime\n", false)
        .await
        .expect("a rejection is an answer");
    match rejected.outcome {
        Outcome::Rejected { problems } => assert!(!problems.is_empty()),
        other => panic!("not rejected: {other:?}"),
    }
    assert_eq!(
        rejected.error.map(|e| e.code).as_deref(),
        Some("config.rejected")
    );

    // Accounts and tokens.
    let created = admin.create_account("alice").await.expect("create");
    let id = created.account.id.clone();
    assert_eq!(created.account.name, "alice");
    assert_eq!(created.token.info.scopes, vec!["*".to_owned()]);
    assert_eq!(admin.account(&id).await.expect("account"), created.account);
    let issued = admin
        .issue_token(
            &id,
            &IssueBody {
                name: Some("app".into()),
                scopes: Some(vec!["storage".into(), "crypto:sign".into()]),
                expires_in_s: Some(3600),
            },
        )
        .await
        .expect("issue");
    assert_eq!(issued.info.scopes, vec!["storage", "crypto:sign"]);
    assert!(issued.info.expires_ms.is_some());
    let tokens = admin.tokens(&id).await.expect("tokens");
    assert_eq!(tokens.tokens.len(), 2);

    // What an application does with its token: values and signatures.
    let alice = Client::new(admin.base_url(), issued.secret.clone()).expect("client");
    let stored = alice.put("notes/a b", "hello").await.expect("put");
    assert_eq!(stored.key, "notes/a b");
    let value = alice.get("notes/a b").await.expect("get");
    assert_eq!(value.data, b"hello");
    assert_eq!(value.version, stored.version);
    let page = alice.list("notes/", None, None).await.expect("list");
    assert_eq!(page.keys.len(), 1);
    assert_eq!(page.keys[0].key, "notes/a b");
    let signed = alice
        .sign(&created.account.signing_key, b"hello", Some(Encoding::Der))
        .await
        .expect("sign");
    assert_eq!(signed.encoding, Encoding::Der);
    assert_eq!(signed.version, 1);
    let deleted = alice.delete("notes/a b").await.expect("delete");
    assert!(deleted.deleted);
    // A script, with arguments.
    let program = Program::new("console.log('adding'); return args.x + 1;")
        .with_args(&serde_json::json!({ "x": 41 }))
        .expect("args");
    let outcome = admin.run(&program).await.expect("run");
    assert_eq!(outcome.ending, Ending::Completed);
    assert_eq!(outcome.result, serde_json::json!(42));
    assert_eq!(outcome.console.len(), 1);
    assert_eq!(outcome.console[0].text, "adding");

    admin
        .revoke_token(&id, &issued.info.id)
        .await
        .expect("revoke");
    admin.delete_account(&id).await.expect("delete account");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_error_is_the_typed_error_with_its_code() {
    let h = harness_with(false, true).await;
    let url = serve(h.app.clone()).await;
    let admin = Client::new(&url, TOKEN).expect("client");

    let missing = admin.service("nope").await.expect_err("no such service");
    assert_eq!(missing.code(), Some("service.not_found"));
    let Error::Api(api) = &missing else {
        panic!("not the API's error: {missing:?}")
    };
    assert_eq!(api.status.as_u16(), 404);
    assert!(!api.retryable);
    assert_eq!(api.retry_after, None);
    assert!(
        missing
            .to_string()
            .ends_with("(404 Not Found, service.not_found)"),
        "{missing}"
    );

    let absent = admin.get("absent").await.expect_err("no value");
    assert_eq!(absent.code(), Some("storage.not_found"));

    let stranger = Client::new(&url, "cls_not-a-token").expect("client");
    let refused = stranger.services().await.expect_err("a bad token");
    assert_eq!(refused.code(), Some("auth.invalid_token"));
    assert_eq!(refused.api().map(|e| e.status.as_u16()), Some(401));

    // Nobody there: not an API error at all.
    let nobody = Client::new("http://127.0.0.1:9", TOKEN)
        .expect("client")
        .with_timeout(Duration::from_secs(5));
    let unreachable = nobody.services().await.expect_err("nothing listens");
    assert!(
        matches!(unreachable, Error::Unreachable { .. }),
        "{unreachable:?}"
    );
    assert_eq!(unreachable.code(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_batches_jobs_and_the_runtimes_figures_are_typed_too() {
    let h = harness_with(false, true).await;
    let admin = Client::new(&serve(h.app.clone()).await, TOKEN).expect("client");
    let created = admin.create_account("bob").await.expect("create");
    let bob = Client::new(admin.base_url(), created.token.secret.clone()).expect("client");

    // Keys: made, listed, used, rotated, derived from, deleted.
    let aes = bob
        .create_key(Algorithm::Aes256gcm)
        .await
        .expect("generate");
    assert_eq!(aes.algorithm, Algorithm::Aes256gcm);
    assert_eq!(aes.owner, created.account.id);
    assert_eq!(aes.version, 1);
    let listed = bob.keys().await.expect("keys");
    assert!(listed.keys.iter().any(|k| k.id == aes.id));
    let sealed = bob
        .encrypt(&aes.id, b"secret", Some(b"context"))
        .await
        .expect("encrypt");
    assert_ne!(sealed, b"secret");
    let rotated = bob.rotate_key(&aes.id).await.expect("rotate");
    assert_eq!(rotated.version, 2);
    assert_eq!(rotated.versions.len(), 2);
    assert_eq!(bob.key(&aes.id).await.expect("key"), rotated);
    // The version that sealed it still opens it, and only with the same context.
    let opened = bob
        .decrypt(&aes.id, &sealed, Some(b"context"))
        .await
        .expect("decrypt");
    assert_eq!(opened, b"secret");
    let tampered = bob
        .decrypt(&aes.id, &sealed, Some(b"other"))
        .await
        .expect_err("another context");
    assert_eq!(tampered.code(), Some("crypto.integrity"));
    let derived = bob
        .derive_key(&aes.id, b"purpose", Some(b"salt"))
        .await
        .expect("derive");
    assert_eq!(derived.algorithm, Algorithm::Aes256gcm);
    assert_ne!(derived.id, aes.id);
    bob.delete_key(&aes.id).await.expect("delete key");
    let gone = bob.key(&aes.id).await.expect_err("deleted");
    assert_eq!(gone.code(), Some("crypto.key_not_found"));

    // A batch: all of it, in one commit.
    bob.put("b/old", "x").await.expect("put");
    let committed = bob
        .batch([
            Write::put("b/one", "1"),
            Write::put("b/two", [2u8]),
            Write::delete("b/old"),
        ])
        .await
        .expect("batch");
    assert_eq!(
        bob.get("b/one").await.expect("one").version,
        committed.version
    );
    assert_eq!(bob.get("b/two").await.expect("two").data, [2u8]);
    let page = bob.list("b/", None, None).await.expect("list");
    let keys: Vec<&str> = page.keys.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["b/one", "b/two"]);

    // A job: submitted, waited for, listed; one cancelled while it spins.
    let job = bob
        .submit(&Program::new("return 6 * 7;"))
        .await
        .expect("submit");
    let done = bob
        .job(&job.id, Some(Duration::from_secs(30)))
        .await
        .expect("wait");
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(
        done.outcome.expect("an outcome").result,
        serde_json::json!(42)
    );
    let spinning = bob
        .submit(&Program::new("for (;;) {}"))
        .await
        .expect("submit");
    let cancelled = bob.cancel_job(&spinning.id).await.expect("cancel");
    assert_eq!(cancelled.state, JobState::Cancelled);
    let jobs = bob.jobs().await.expect("jobs");
    assert_eq!(jobs.jobs.len(), 2);
    let pool = admin.pool().await.expect("pool");
    assert!(pool.size >= 1);
    assert!(pool.completed_total >= 1);
    let refused = bob.pool().await.expect_err("the pool is the admin's");
    assert_eq!(refused.api().map(|e| e.status.as_u16()), Some(403));

    // The runtime's own figures: the bus saw the calls above, and Prometheus text.
    let bus = admin.bus().await.expect("bus");
    let storage = bus
        .edges
        .iter()
        .find(|e| e.caller.is_none() && e.callee.as_str() == "storage")
        .expect("the API called storage");
    assert!(storage.handled >= 5, "{storage:?}");
    let anomalies = admin.anomalies().await.expect("anomalies");
    assert!(anomalies.anomalies.len() <= bus.edges.len() * 3);
    let metrics = admin.metrics().await.expect("metrics");
    assert!(
        metrics.contains("cloister_"),
        "not Prometheus text: {metrics:.200}"
    );
}

/// The ai endpoints through the SDK: an ONNX model uploaded, listed, run and deleted; a model
/// trained as a job, waited for, and run; every answer the typed one (a prediction is the variant
/// for its kind of model), and an input that does not fit is the typed `ai.shape` error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_predictions_and_training_are_typed() {
    const MLP: &[u8] = include_bytes!("../../ai/tests/fixtures/mlp.onnx");
    let h = harness_with(false, true).await;
    let admin = Client::new(&serve(h.app.clone()).await, TOKEN).expect("client");

    let model = admin
        .upload_model("mlp", MLP.to_vec())
        .await
        .expect("upload");
    assert_eq!(model.name, "mlp");
    assert_eq!(model.kind, ModelKind::Onnx);
    assert_eq!(model.inputs[0].name, "x");
    assert_eq!(admin.model(&model.id).await.expect("model"), model);
    let listed = admin.models().await.expect("models");
    assert_eq!(listed.models, vec![model.clone()]);

    let x = Tensor::f32(vec![2, 4], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]);
    let input = PredictInput::Tensors {
        inputs: [("x".to_owned(), x)].into(),
    };
    let Prediction::Outputs { outputs } = admin.predict(&model.id, &input).await.expect("predict")
    else {
        panic!("an ONNX model answers outputs");
    };
    let y = outputs.values().next().expect("an output");
    assert_eq!(y.shape, vec![2, 3]);
    let wrong = PredictInput::Tensors {
        inputs: [("x".to_owned(), Tensor::f32(vec![1, 3], [0.1, 0.2, 0.3]))].into(),
    };
    let refused = admin
        .predict(&model.id, &wrong)
        .await
        .expect_err("three features where the model takes four");
    assert_eq!(refused.code(), Some("ai.shape"), "{refused}");

    // y = 2x + 1, the last two rows held out.
    let job = admin
        .train(&TrainRequest {
            name: Some("line".into()),
            model: Params::LinearRegression,
            dataset: Dataset {
                features: (1..=10).map(|x| vec![f64::from(x)]).collect(),
                targets: Some((1..=10).map(|x| f64::from(2 * x + 1)).collect()),
            },
            test_fraction: 0.2,
        })
        .await
        .expect("train");
    let done = admin
        .training_job(&job.id, Some(MAX_JOB_WAIT))
        .await
        .expect("job");
    assert_eq!(done.state, AiJobState::Completed, "{done:?}");
    let trained = done.model.expect("the trained model");
    assert_eq!(trained.kind, ModelKind::LinearRegression);
    let jobs = admin.training_jobs().await.expect("jobs");
    assert_eq!(jobs.jobs.len(), 1);
    let features = PredictInput::Features {
        features: vec![vec![20.0]],
    };
    let Prediction::Values { predictions } = admin
        .predict(&trained.id, &features)
        .await
        .expect("predict")
    else {
        panic!("a linear regression answers values");
    };
    assert!((predictions[0] - 41.0).abs() < 1e-6, "{predictions:?}");

    admin.delete_model(&model.id).await.expect("delete");
    let gone = admin.model(&model.id).await.expect_err("deleted");
    assert_eq!(gone.code(), Some("ai.model_not_found"), "{gone}");
}

/// `with_deadline` sends the deadline on every call, in whole milliseconds (at least one), and a
/// client without one sends none: here a server that answers with the header it got.
#[tokio::test]
async fn a_clients_deadline_goes_with_every_call() {
    use axum::http::HeaderMap;
    use cloister_sdk::DEADLINE_HEADER;

    async fn echo(headers: HeaderMap) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
        let got = headers
            .get(DEADLINE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        let body =
            serde_json::json!({"error": {"code": "echo", "message": got, "retryable": false}});
        (axum::http::StatusCode::NOT_FOUND, axum::Json(body))
    }
    let app = axum::Router::new()
        .route("/v1/storage/{*key}", axum::routing::get(echo).put(echo))
        .route("/v1/services", axum::routing::get(echo));
    let base = serve(app).await;
    let sent = |e: Error| e.api().expect("the echo").message.clone();

    let client = Client::new(&base, "token").expect("client");
    assert_eq!(sent(client.get("k").await.expect_err("echo")), "none");
    let client = client.with_deadline(Duration::from_millis(1500));
    assert_eq!(client.deadline(), Some(Duration::from_millis(1500)));
    assert_eq!(sent(client.get("k").await.expect_err("echo")), "1500");
    assert_eq!(sent(client.put("k", "v").await.expect_err("echo")), "1500");
    assert_eq!(sent(client.services().await.expect_err("echo")), "1500");
    let tiny = client.with_deadline(Duration::from_micros(10));
    assert_eq!(sent(tiny.get("k").await.expect_err("echo")), "1");
}
