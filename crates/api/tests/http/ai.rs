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
