//! The ai service: ONNX models and trained ones, predictions, training jobs.

use std::time::Duration;

use reqwest::Method;
use wire::ai::{JobInfo, JobList, ModelInfo, ModelList, PredictInput, Prediction, TrainRequest};

use crate::client::{Client, segment};
use crate::error::Error;

impl Client {
    /// `POST /v1/ai/models?name=`: uploads an ONNX file, which is loaded and checked before it is
    /// kept, sealed, in the caller's account (`ai.invalid_model` with the reason when it cannot
    /// run, `ai.too_large` past the service's limits).
    pub async fn upload_model(&self, name: &str, onnx: Vec<u8>) -> Result<ModelInfo, Error> {
        let path = format!("/v1/ai/models?name={}", segment(name, false));
        let (request, url) = self.request(Method::POST, &path);
        let request = request
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(onnx);
        self.send(request, url).await?.into_result()
    }

    /// `GET /v1/ai/models`: the caller's models, newest first.
    pub async fn models(&self) -> Result<ModelList, Error> {
        self.call(Method::GET, "/v1/ai/models").await
    }

    /// `GET /v1/ai/models/{id}`: one model, with its inputs and outputs or its metrics.
    pub async fn model(&self, id: &str) -> Result<ModelInfo, Error> {
        self.call(Method::GET, &model_path(id, "")).await
    }

    /// `DELETE /v1/ai/models/{id}`.
    pub async fn delete_model(&self, id: &str) -> Result<(), Error> {
        self.call_empty(Method::DELETE, &model_path(id, "")).await
    }

    /// `POST /v1/ai/models/{id}/predict`: named tensors for an ONNX model
    /// ([`PredictInput::Tensors`]), rows of features for a trained one
    /// ([`PredictInput::Features`]); `ai.shape` says what the model takes when they do not fit.
    pub async fn predict(&self, id: &str, input: &PredictInput) -> Result<Prediction, Error> {
        self.call_with(Method::POST, &model_path(id, "/predict"), input)
            .await
    }

    /// `POST /v1/ai/train`: queues a training job and answers it pending; the model is kept when
    /// it completes (see [`Client::training_job`]).
    pub async fn train(&self, request: &TrainRequest) -> Result<JobInfo, Error> {
        self.call_with(Method::POST, "/v1/ai/train", request).await
    }

    /// `GET /v1/ai/jobs`: the caller's training jobs.
    pub async fn training_jobs(&self) -> Result<JobList, Error> {
        self.call(Method::GET, "/v1/ai/jobs").await
    }

    /// `GET /v1/ai/jobs/{id}`: the job; with `wait`, answers as soon as it finishes or when the
    /// wait (whole seconds, 1 to 30: see [`MAX_JOB_WAIT`](crate::MAX_JOB_WAIT)) is over, whichever is first.
    pub async fn training_job(&self, id: &str, wait: Option<Duration>) -> Result<JobInfo, Error> {
        let path = format!("/v1/ai/jobs/{}", segment(id, false));
        self.waiting(path, wait).await
    }

    /// `DELETE /v1/ai/jobs/{id}`: cancels the job; answers it once it has stopped (or as it
    /// finished, if it already had).
    pub async fn cancel_training(&self, id: &str) -> Result<JobInfo, Error> {
        let path = format!("/v1/ai/jobs/{}", segment(id, false));
        self.call(Method::DELETE, &path).await
    }
}

fn model_path(id: &str, tail: &str) -> String {
    format!("/v1/ai/models/{}{tail}", segment(id, false))
}
