//! The ai service over HTTP: models uploaded, listed, run and deleted; training jobs; its error codes.

use super::*;

/// docs/api.md: 413 `ai.too_large` for a model over `max_model_bytes` (the message names it), 422
/// `ai.invalid_model` for a file that is not a model, 422 `ai.shape` for inputs that do not fit.
#[tokio::test]
async fn error_codes_of_the_ai_service_are_413_and_422() {
    let h = start(Setup {
        with_storage: true,
        services: "[services.ai]\nmax_model_bytes = 2000\n",
        ..Setup::default()
    })
    .await;
    let upload = |file: Vec<u8>| {
        let app = h.app.clone();
        async move {
            let (status, headers, body) = raw(&app, "POST", "/v1/ai/models?name=m", file).await;
            let body = serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
            (status, headers, body)
        }
    };
    let answer = upload(vec![0; 2001]).await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "ai.too_large", None);
    assert!(
        answer.2["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_model_bytes")),
        "{}",
        answer.2
    );
    let answer = upload(b"this is not an ONNX file".to_vec()).await;
    assert_error(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "ai.invalid_model",
        None,
    );
    let answer = upload(MLP.to_vec()).await;
    assert_eq!(answer.0, StatusCode::CREATED, "{}", answer.2);
    let id = answer.2["id"].as_str().expect("model id").to_owned();
    let answer = send(
        &h.app,
        "POST",
        &format!("/v1/ai/models/{id}/predict"),
        Some(TOKEN),
        r#"{"inputs":{"x":{"shape":[1,3],"data":[0.1,0.2,0.3]}}}"#,
    )
    .await;
    assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "ai.shape", None);
    let (status, _, body) = send(
        &h.app,
        "POST",
        &format!("/v1/ai/models/{id}/predict"),
        Some(TOKEN),
        MLP_INPUT,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    h.runtime.shutdown().await;
}

/// docs/api.md, "AI": an ONNX model uploaded (201, described with its inputs and outputs), listed,
/// described, run, and deleted (204); once deleted it is 404 `ai.model_not_found` for every
/// endpoint that names it.
#[tokio::test]
async fn an_onnx_model_is_uploaded_listed_run_and_deleted() {
    let h = harness_with(false, true).await;
    let model = h
        .post("/v1/ai/models?name=mlp")
        .admin()
        .bytes(MLP)
        .send()
        .await
        .status(201)
        .json();
    let id = model["id"].as_str().expect("model id").to_owned();
    assert!(id.starts_with("mdl_"), "{model}");
    assert_eq!(
        (&model["name"], &model["kind"]),
        (&Value::from("mlp"), &Value::from("onnx"))
    );
    assert_eq!(model["size_bytes"], MLP.len());
    assert_eq!(model["inputs"][0]["name"], "x", "{model}");
    assert_eq!(model["inputs"][0]["dtype"], "f32", "{model}");

    let listed = h
        .get("/v1/ai/models")
        .admin()
        .send()
        .await
        .status(200)
        .json();
    assert_eq!(
        listed["models"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(listed["models"][0]["id"], id.as_str());
    let described = h
        .get(&format!("/v1/ai/models/{id}"))
        .admin()
        .send()
        .await
        .status(200)
        .json();
    assert_eq!(described, model);

    let outputs = h
        .post(&format!("/v1/ai/models/{id}/predict"))
        .admin()
        .text(MLP_INPUT)
        .send()
        .await
        .status(200)
        .json();
    let (_, y) = outputs["outputs"]
        .as_object()
        .and_then(|o| o.iter().next())
        .expect("an output");
    assert_eq!(y["shape"], serde_json::json!([1, 3]), "{outputs}");
    assert_eq!(y["data"].as_array().map(Vec::len), Some(3), "{outputs}");

    h.delete(&format!("/v1/ai/models/{id}"))
        .admin()
        .send()
        .await
        .status(204);
    let listed = h
        .get("/v1/ai/models")
        .admin()
        .send()
        .await
        .status(200)
        .json();
    assert_eq!(listed["models"], serde_json::json!([]));
    h.get(&format!("/v1/ai/models/{id}"))
        .admin()
        .send()
        .await
        .error(404, "ai.model_not_found");
    h.post(&format!("/v1/ai/models/{id}/predict"))
        .admin()
        .text(MLP_INPUT)
        .send()
        .await
        .error(404, "ai.model_not_found");
    h.delete(&format!("/v1/ai/models/{id}"))
        .admin()
        .send()
        .await
        .error(404, "ai.model_not_found");
    h.runtime.shutdown().await;
}

/// docs/api.md, "AI": a training request is a 202 job; waited for, the job completes with a model
/// whose metrics are measured on the held-out rows, which predicts; the job is listed, and
/// cancelling a finished job answers it as it finished. An unknown job is 404 `ai.job_not_found`.
#[tokio::test]
async fn a_training_job_completes_with_a_model_that_predicts() {
    let h = harness_with(false, true).await;
    let job = h
        .post("/v1/ai/train")
        .admin()
        .text(TRAIN)
        .send()
        .await
        .status(202)
        .json();
    let id = job["id"].as_str().expect("job id").to_owned();
    assert!(id.starts_with("job_"), "{job}");
    let done = h
        .get(&format!("/v1/ai/jobs/{id}?wait_s=30"))
        .admin()
        .send()
        .await
        .status(200)
        .json();
    assert_eq!(done["state"], "completed", "{done}");
    let model = done["model"]["id"]
        .as_str()
        .expect("the trained model's id");

    let described = h
        .get(&format!("/v1/ai/models/{model}"))
        .admin()
        .send()
        .await
        .status(200)
        .json();
    assert_eq!(
        described, done["model"],
        "the job's model is the stored one"
    );
    assert_eq!(described["kind"], "linear_regression", "{described}");
    let r2 = described["metrics"]["r2_test"].as_f64().expect("r2_test");
    assert!(
        (r2 - 1.0).abs() < 1e-9,
        "y = 2x + 1 is fitted exactly: {described}"
    );
    let predicted = h
        .post(&format!("/v1/ai/models/{model}/predict"))
        .admin()
        .json(&serde_json::json!({ "features": [[11.0], [0.0]] }))
        .send()
        .await
        .status(200)
        .json();
    let predictions: Vec<f64> = predicted["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert_eq!(predictions.len(), 2, "{predicted}");
    assert!((predictions[0] - 23.0).abs() < 1e-6, "{predicted}");
    assert!((predictions[1] - 1.0).abs() < 1e-6, "{predicted}");

    let jobs = h.get("/v1/ai/jobs").admin().send().await.status(200).json();
    assert!(
        jobs["jobs"]
            .as_array()
            .is_some_and(|j| j.iter().any(|j| j["id"] == id.as_str())),
        "{jobs}"
    );
    let cancelled = h
        .delete(&format!("/v1/ai/jobs/{id}"))
        .admin()
        .send()
        .await
        .status(200)
        .json();
    assert_eq!(
        cancelled["state"], "completed",
        "finished before: {cancelled}"
    );
    for answer in [
        h.get("/v1/ai/jobs/job_nope").admin().send().await,
        h.delete("/v1/ai/jobs/job_nope").admin().send().await,
    ] {
        answer.error(404, "ai.job_not_found");
    }
    h.runtime.shutdown().await;
}

/// docs/api.md, the ai service's other errors: 400 `ai.bad_input` for what breaks the API
/// document (an empty dataset, `k` of 0), 422 `ai.bad_dataset` for a dataset whose parts fit the
/// document but not each other or the kind (ragged rows, labels other than 0/1, `k` over the
/// training rows), 400 `request.invalid_body` (a `null` where a number should be), 500
/// `ai.integrity` for an ONNX file changed in storage by hand, and 503
/// `service.unavailable` while the service is disabled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_codes_of_the_ai_service_are_400_422_500_and_503() {
    let h = harness_with(false, true).await;
    for (why, body, expected) in [
        (
            "ragged",
            r#"{"model":{"kind":"linear_regression"},"dataset":{"features":[[1],[2,3],[4]],"targets":[1,2,3]}}"#,
            (422, "ai.bad_dataset"),
        ),
        (
            "labels other than 0/1",
            r#"{"model":{"kind":"logistic_regression"},"dataset":{"features":[[1],[2],[3],[4]],"targets":[0,1,2,1]}}"#,
            (422, "ai.bad_dataset"),
        ),
        (
            "k over the training rows",
            r#"{"model":{"kind":"kmeans","k":9},"dataset":{"features":[[1],[2],[3]]}}"#,
            (422, "ai.bad_dataset"),
        ),
        (
            "k of 0",
            r#"{"model":{"kind":"kmeans","k":0},"dataset":{"features":[[1],[2],[3]]}}"#,
            (400, "ai.bad_input"),
        ),
        (
            "an empty dataset",
            r#"{"model":{"kind":"linear_regression"},"dataset":{"features":[],"targets":[]}}"#,
            (400, "ai.bad_input"),
        ),
    ] {
        let answer = h.post("/v1/ai/train").admin().text(body).send().await;
        assert_eq!(
            (
                answer.status.as_u16(),
                answer.body()["error"]["code"].as_str()
            ),
            (expected.0, Some(expected.1)),
            "{why}: {}",
            answer.body()
        );
    }
    h.post("/v1/ai/train")
        .admin()
        .text(r#"{"model":{"kind":"linear_regression"},"dataset":{"features":[[1],[null]],"targets":[1,2]}}"#)
        .send()
        .await
        .error(400, "request.invalid_body");

    // The file of an uploaded model, changed below the ai service (its record keeps the SHA-256),
    // and the service restarted so that nothing of it is cached.
    let model = h
        .post("/v1/ai/models?name=mlp")
        .admin()
        .bytes(MLP)
        .send()
        .await
        .status(201)
        .json();
    let id = model["id"].as_str().expect("model id");
    h.put(&format!("/v1/storage/.ai/models/{id}/0"))
        .admin()
        .bytes(b"not the model any more".to_vec())
        .send()
        .await
        .status(200);
    let since = h.runtime.journal().last_seq();
    h.post("/v1/services/ai/restart")
        .admin()
        .send()
        .await
        .status(202);
    h.runtime
        .journal()
        .wait_for(since, Duration::from_secs(60), |e| {
            e.service.as_ref().is_some_and(|s| s.as_str() == "ai")
                && matches!(e.event, Event::Up { .. })
        })
        .await
        .expect("ai restarted");
    h.post(&format!("/v1/ai/models/{id}/predict"))
        .admin()
        .text(MLP_INPUT)
        .send()
        .await
        .error(500, "ai.integrity");
    h.runtime.shutdown().await;

    // Without storage the ai service is registered but disabled.
    let h = harness(false).await;
    let answer = h
        .get("/v1/ai/models")
        .admin()
        .send()
        .await
        .error(503, "service.unavailable");
    assert!(
        answer.header("retry-after").is_some(),
        "{:?}",
        answer.headers
    );
    h.runtime.shutdown().await;
}

/// docs/api.md, "AI", and docs/security.md: an account past `max_active_jobs_per_account` training
/// jobs queued or running is refused with 429 `ai.too_many_jobs` and `Retry-After` (the message
/// names the setting); another account still trains; a job over `max_training_work` is 413
/// `ai.too_large` with its figure; a running job cancelled ends as cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_is_bounded_per_account_and_in_work() {
    let h = start(Setup {
        with_storage: true,
        services: "[services.ai]\nmax_active_jobs_per_account = 1\nmax_training_work = 10000000000000\n",
        ..Setup::default()
    })
    .await;
    // k-means++ over 20 000 rows with k = 20 000: about 8.1 × 10¹² in work, hours of computing.
    let rows: Vec<Value> = (0..20_000).map(|i| serde_json::json!([i])).collect();
    let long = |n_init: u32| {
        serde_json::json!({
            "model": { "kind": "kmeans", "k": 20_000, "n_init": n_init },
            "dataset": { "features": rows },
            "test_fraction": 0.0,
        })
    };
    let answer = h.post("/v1/ai/train").admin().json(&long(2)).send().await;
    let answer = answer.error(413, "ai.too_large");
    let message = answer.body()["error"]["message"].to_string();
    assert!(
        message.contains("16240000000000") && message.contains("max_training_work"),
        "{message}"
    );
    let job = h
        .post("/v1/ai/train")
        .admin()
        .json(&long(1))
        .send()
        .await
        .status(202)
        .json();
    let id = job["id"].as_str().expect("job id").to_owned();
    let refused = h
        .post("/v1/ai/train")
        .admin()
        .text(TRAIN)
        .send()
        .await
        .error(429, "ai.too_many_jobs");
    assert!(
        refused.header("retry-after").is_some(),
        "{:?}",
        refused.headers
    );
    let message = refused.body()["error"]["message"].to_string();
    assert!(
        message.contains("services.ai.max_active_jobs_per_account"),
        "{message}"
    );
    let (_, bob, _) = create_account(&h.app, "bob").await;
    let bobs = h
        .post("/v1/ai/train")
        .token(&bob)
        .text(TRAIN)
        .send()
        .await
        .status(202)
        .json();
    let cancelled = h
        .delete(&format!("/v1/ai/jobs/{id}"))
        .admin()
        .send()
        .await
        .status(200)
        .json();
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let bobs = h
        .get(&format!(
            "/v1/ai/jobs/{}?wait_s=30",
            bobs["id"].as_str().expect("id")
        ))
        .token(&bob)
        .send()
        .await
        .status(200)
        .json();
    assert_eq!(bobs["state"], "completed", "{bobs}");
    h.runtime.shutdown().await;
}

/// docs/api.md and docs/ai.md: tensors of every common type over HTTP. A model whose inputs are
/// i64, bool and f32 with an anonymous batch dimension (as skl2onnx writes it) is taken, lists
/// its types, and answers i64 exactly (beyond 2^53), NaN as the string "NaN" and bools as
/// booleans; a value outside its type, or another `dtype`, is a 422 `ai.shape` naming the input.
/// A model tract cannot type is a 422 `ai.invalid_model` naming the input to give a shape.
#[tokio::test]
async fn tensors_of_every_type_travel_exactly_and_typing_errors_name_the_input() {
    const DTYPES: &[u8] = include_bytes!("../../../ai/tests/fixtures/dtypes.onnx");
    const UNSHAPED: &[u8] = include_bytes!("../../../ai/tests/fixtures/unshaped.onnx");
    let h = start(Setup {
        with_storage: true,
        ..Setup::default()
    })
    .await;
    let (status, _, model) =
        raw(&h.app, "POST", "/v1/ai/models?name=dtypes", DTYPES.to_vec()).await;
    assert_eq!(status, StatusCode::CREATED);
    let model: Value = serde_json::from_slice(&model).expect("JSON");
    let types: Vec<(&str, &str)> = model["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|i| {
            (
                i["name"].as_str().expect("name"),
                i["dtype"].as_str().expect("dtype"),
            )
        })
        .collect();
    assert_eq!(
        types,
        [("ids", "i64"), ("mask", "bool"), ("x", "f32")],
        "{model}"
    );
    assert_eq!(
        model["inputs"][0]["shape"],
        serde_json::json!([null]),
        "{model}"
    );
    let id = model["id"].as_str().expect("id").to_owned();
    let predict = |body: &'static str| {
        let app = h.app.clone();
        let uri = format!("/v1/ai/models/{id}/predict");
        async move { send(&app, "POST", &uri, Some(TOKEN), body).await }
    };
    let (status, _, answer) = predict(
        r#"{"inputs":{"ids":{"dtype":"i64","shape":[3],"data":[9007199254740993,-5,0]},
            "mask":{"dtype":"bool","shape":[3],"data":[true,false,true]},
            "x":{"shape":[3],"data":["NaN",2.5,"-Infinity"]}}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let outputs = &answer["outputs"];
    assert_eq!(outputs["next"]["dtype"], "i64");
    assert_eq!(
        outputs["next"]["data"],
        serde_json::json!([9_007_199_254_740_994_i64, -4, 1])
    );
    assert_eq!(
        outputs["picked"]["data"],
        serde_json::json!(["NaN", -2.5, "-Infinity"])
    );
    assert_eq!(outputs["nan"]["dtype"], "bool");
    assert_eq!(
        outputs["nan"]["data"],
        serde_json::json!([true, false, false])
    );
    for (body, says) in [
        (
            r#"{"inputs":{"ids":{"dtype":"i64","shape":[1],"data":[1.5]},"mask":{"dtype":"bool","shape":[1],"data":[true]},"x":{"shape":[1],"data":[1]}}}"#,
            "input \"ids\" element 0 (1.5) is not an integer",
        ),
        (
            r#"{"inputs":{"ids":{"shape":[1],"data":[1]},"mask":{"dtype":"bool","shape":[1],"data":[true]},"x":{"shape":[1],"data":[1]}}}"#,
            "input \"ids\" is i64 in the model; the request gives f32",
        ),
        (
            r#"{"inputs":{"ids":{"dtype":"i64","shape":[1],"data":[1]},"mask":{"dtype":"bool","shape":[1],"data":[1]},"x":{"shape":[1],"data":[1]}}}"#,
            "input \"mask\" element 0 (1) is not true or false",
        ),
    ] {
        let answer = predict(body).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "ai.shape", None);
        let message = answer.2["error"]["message"].as_str().expect("message");
        assert!(message.contains(says), "{message:?} should say {says:?}");
    }
    let (status, _, body) = raw(&h.app, "POST", "/v1/ai/models?name=u", UNSHAPED.to_vec()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(body["error"]["code"], "ai.invalid_model");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("input \"x\"") && message.contains("give the input a shape"),
        "{message}"
    );
    h.runtime.shutdown().await;
}
