//! The ai service over HTTP: ONNX models (upload, list, describe, delete, predict) and training
//! jobs, all in the caller's account.

use account::Area;
use ai::{JobList, ModelList, PredictInput, Request, TrainRequest};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::{Allowed, Caller, op};
use crate::error::ErrorBody;
use crate::input::{self, Raw, ask, wait_s};
use crate::{ApiError, AppState};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadQuery {
    /// A name to recognise the model by (default `model`).
    name: Option<String>,
}

/// Uploads an ONNX model (the raw file as the body). It is loaded and checked before it is kept,
/// sealed, in the caller's account.
#[utoipa::path(post, path = "/v1/ai/models", tag = "ai", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The ONNX file"),
    responses(
        (status = 201, description = "Kept; its inputs and outputs", body = ai::ModelInfo),
        (status = 413, description = "Over `max_model_bytes`, or too large for the memory budget (`ai.too_large`)", body = ErrorBody),
        (status = 422, description = "Not a model tract can run (`ai.invalid_model`), with the reason", body = ErrorBody),
    ))]
pub(crate) async fn upload(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<op::AiModels>,
    query: Result<Query<UploadQuery>, QueryRejection>,
    Raw(file): Raw,
) -> Result<Response, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::bad_request("request.invalid_query", e.body_text()))?;
    let info = ask(&state.ai, |reply| Request::Upload {
        owner: caller.owner().into(),
        name: q.name.unwrap_or_else(|| "model".into()),
        file: file.to_vec(),
        reply,
    })
    .await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// The caller's models, newest first.
#[utoipa::path(get, path = "/v1/ai/models", tag = "ai",
    responses((status = 200, description = "The caller's models", body = ai::ModelList)))]
pub(crate) async fn models(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.allow(Area::Ai, "models")?;
    let models = ask(&state.ai, |reply| Request::Models {
        owner: caller.owner().into(),
        reply,
    })
    .await?;
    Ok(Json(ModelList { models }).into_response())
}

/// One model.
#[utoipa::path(get, path = "/v1/ai/models/{id}", tag = "ai",
    params(("id" = String, Path, description = "A model id")),
    responses(
        (status = 200, description = "The model", body = ai::ModelInfo),
        (status = 404, description = "No such model (`ai.model_not_found`)", body = ErrorBody),
    ))]
pub(crate) async fn model(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.allow(Area::Ai, "models")?;
    let info = ask(&state.ai, |reply| Request::Model {
        owner: caller.owner().into(),
        id,
        reply,
    })
    .await?;
    Ok(Json(info).into_response())
}

/// Deletes a model.
#[utoipa::path(delete, path = "/v1/ai/models/{id}", tag = "ai",
    params(("id" = String, Path, description = "A model id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such model", body = ErrorBody),
    ))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.allow(Area::Ai, "models")?;
    ask(&state.ai, |reply| Request::Delete {
        owner: caller.owner().into(),
        id,
        reply,
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Runs a model: `{"inputs": {NAME: {"shape", "data"}}}` for an ONNX model (answers
/// `{"outputs": {NAME: {"shape", "data"}}}`), `{"features": [[...]]}` for a trained one (answers
/// `predictions`, `probabilities` or `clusters`).
#[utoipa::path(post, path = "/v1/ai/models/{id}/predict", tag = "ai",
    params(("id" = String, Path, description = "A model id")),
    request_body = ai::PredictInput,
    responses(
        (status = 200, description = "The outputs (ONNX), or the predictions, probabilities or clusters (trained)", body = ai::Prediction),
        (status = 404, description = "No such model", body = ErrorBody),
        (status = 422, description = "Inputs that do not fit the model (`ai.shape`), with what it takes", body = ErrorBody),
    ))]
pub(crate) async fn predict(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<op::AiPredict>,
    Path(id): Path<String>,
    input::Json(b): input::Json<PredictInput>,
) -> Result<Response, ApiError> {
    let input = b;
    // A small model already loaded answers here, on this task: no bus round trip.
    if let Some(answer) = state
        .ai_inline
        .predict(&state.ai, caller.owner(), &id, &input)
    {
        return Ok(Json(answer.map_err(ApiError::from)?).into_response());
    }
    let answer = ask(&state.ai, |reply| Request::Predict {
        owner: caller.owner().into(),
        id,
        input,
        reply,
    })
    .await?;
    Ok(Json(answer).into_response())
}

/// Trains a model on the dataset as a job; the model is kept in the caller's account when it
/// completes, with its metrics on the held-out rows.
#[utoipa::path(post, path = "/v1/ai/train", tag = "ai", request_body = ai::TrainRequest,
    responses(
        (status = 202, description = "Queued", body = ai::JobInfo),
        (status = 400, description = "A request that breaks this document (`ai.bad_input`, `request.invalid_body`): an empty dataset or row, `k` or `n_init` out of range...", body = ErrorBody),
        (status = 422, description = "A dataset whose parts do not fit together or the kind (`ai.bad_dataset`): ragged rows, targets missing or of another count, labels other than 0/1, too few rows", body = ErrorBody),
        (status = 413, description = "Over `max_dataset_rows`, `max_features` or `max_training_work` (`ai.too_large`)", body = ErrorBody),
        (status = 429, description = "The account has `max_active_jobs_per_account` training jobs queued or running (`ai.too_many_jobs`)", body = ErrorBody),
    ))]
pub(crate) async fn train(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<op::AiTrain>,
    input::Json(b): input::Json<TrainRequest>,
) -> Result<Response, ApiError> {
    let request = Box::new(b);
    let job = ask(&state.ai, |reply| Request::Train {
        owner: caller.owner().into(),
        request,
        reply,
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

/// The caller's training jobs.
#[utoipa::path(get, path = "/v1/ai/jobs", tag = "ai",
    responses((status = 200, description = "The caller's jobs", body = ai::JobList)))]
pub(crate) async fn jobs(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.allow(Area::Ai, "train")?;
    let jobs = ask(&state.ai, |reply| Request::Jobs {
        owner: caller.owner().into(),
        reply,
    })
    .await?;
    Ok(Json(JobList { jobs }).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobQuery {
    /// Wait up to this many seconds (at most 30) for the job to finish.
    #[param(minimum = 1, maximum = 30)]
    wait_s: Option<u64>,
}

/// One training job; with `wait_s`, answers when it finishes or the wait ends.
#[utoipa::path(get, path = "/v1/ai/jobs/{id}", tag = "ai",
    params(("id" = String, Path, description = "A job id"), JobQuery),
    responses(
        (status = 200, description = "The job", body = ai::JobInfo),
        (status = 404, description = "No such job (`ai.job_not_found`)", body = ErrorBody),
    ))]
pub(crate) async fn job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<JobQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.allow(Area::Ai, "train")?;
    let Query(q) =
        query.map_err(|e| ApiError::bad_request("request.invalid_query", e.body_text()))?;
    let wait = wait_s(q.wait_s)?;
    let info = ask(&state.ai, |reply| Request::Job {
        owner: caller.owner().into(),
        id,
        wait,
        reply,
    })
    .await?;
    Ok(Json(info).into_response())
}

/// Cancels a training job; answers once it has stopped.
#[utoipa::path(delete, path = "/v1/ai/jobs/{id}", tag = "ai",
    params(("id" = String, Path, description = "A job id")),
    responses(
        (status = 200, description = "The job, cancelled (or already finished)", body = ai::JobInfo),
        (status = 404, description = "No such job", body = ErrorBody),
    ))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.allow(Area::Ai, "train")?;
    let info = ask(&state.ai, |reply| Request::Cancel {
        owner: caller.owner().into(),
        id,
        reply,
    })
    .await?;
    Ok(Json(info).into_response())
}
