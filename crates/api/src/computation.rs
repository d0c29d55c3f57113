//! The computation service over HTTP: synchronous runs and jobs, each acting for the caller's
//! account (its storage namespace, its keys, its jobs). A script that throws, runs out of time or
//! memory is still a 200 with an outcome that says how it ended; 4xx is for requests that cannot
//! run at all (too large, limits above the ceiling, malformed).

use account::Area;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use computation::{Caller as RunAs, Capabilities, Grants, Program, Request};
use serde::Deserialize;
use utoipa::IntoParams;
use wire::computation::JobList;

use crate::auth::{Allowed, Caller, op};
use crate::error::ErrorBody;
use crate::input::{self, ask, call_error, wait_s};
use crate::{ApiError, AppState};

/// The run acts for the caller, and its capabilities can do what the caller's token can over HTTP,
/// each call taken from the account's rate limit as a request is (the admin has none).
pub(crate) fn run_as(state: &AppState, caller: &Caller) -> RunAs {
    let may = |area, operation| caller.may(area, operation);
    RunAs {
        allowance: match caller {
            Caller::Admin => None,
            Caller::Account(principal) => Some(state.accounts.allowance(&principal.account)),
        },
        owner: caller.owner().to_owned(),
        signing_key: caller.signing_key().map(str::to_owned),
        grants: Grants {
            kv_get: may(Area::Storage, "get"),
            kv_put: may(Area::Storage, "put"),
            kv_delete: may(Area::Storage, "delete"),
            kv_list: may(Area::Storage, "list"),
            sign: may(Area::Crypto, "sign"),
            verify: may(Area::Crypto, "verify"),
        },
        capabilities: Capabilities::Account,
    }
}

/// Runs a script and answers with how it ended: a script that throws, runs out of time or memory
/// is still a 200 whose outcome says so.
#[utoipa::path(post, path = "/v1/computation/run", tag = "computation", request_body = Program,
    responses((status = 200, description = "The outcome", body = computation::Outcome),
        (status = 413, description = "Code or args above their limits (`computation.too_large`)", body = ErrorBody),
        (status = 422, description = "A limit above its ceiling (`computation.above_ceiling`)", body = ErrorBody),
        (status = 429, description = "Too much queued or running for this account (`computation.too_many_active`)", body = ErrorBody),
        (status = 503, description = "The queue is full (`computation.busy`), the service stopped while the run was going (`computation.interrupted`), or the request's deadline passed while it ran (`computation.deadline_passed`): retry", body = ErrorBody)))]
pub(crate) async fn run(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<op::ComputationRun>,
    input::Json(b): input::Json<Program>,
) -> Result<Response, ApiError> {
    let program = b;
    // The service's call timeout outlasts its longest time limit (its `validate` keeps it so).
    let outcome = ask(&state.computation, |reply| Request::Run {
        caller: run_as(&state, &caller),
        program,
        reply,
    })
    .await?;
    Ok(Json(outcome).into_response())
}

/// Queues a script as a job.
#[utoipa::path(post, path = "/v1/computation/jobs", tag = "computation", request_body = Program,
    responses((status = 202, description = "Queued", body = wire::computation::JobInfo),
        (status = 413, description = "Code or args above their limits (`computation.too_large`)", body = ErrorBody),
        (status = 422, description = "A limit above its ceiling (`computation.above_ceiling`)", body = ErrorBody),
        (status = 429, description = "Too much queued or running for this account (`computation.too_many_active`)", body = ErrorBody),
        (status = 503, description = "The queue is full (`computation.busy`)", body = ErrorBody)))]
pub(crate) async fn submit(
    State(state): State<AppState>,
    Allowed(caller, _): Allowed<op::ComputationJobs>,
    input::Json(b): input::Json<Program>,
) -> Result<Response, ApiError> {
    let program = b;
    let job = ask(&state.computation, |reply| Request::Submit {
        caller: run_as(&state, &caller),
        program,
        reply,
    })
    .await?;
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

/// The caller's jobs (the most recent finished ones are kept).
#[utoipa::path(get, path = "/v1/computation/jobs", tag = "computation",
    responses((status = 200, description = "The caller's jobs", body = JobList)))]
pub(crate) async fn jobs(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.allow(Area::Computation, "jobs")?;
    let jobs = ask(&state.computation, |reply| Request::Jobs {
        owner: caller.owner().to_owned(),
        reply,
    })
    .await?;
    Ok(Json(JobList { jobs }).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobQuery {
    /// Wait up to this many seconds (1 to 30) for the job to finish before answering.
    #[param(minimum = 1, maximum = 30)]
    wait_s: Option<u64>,
}

/// One job; with `wait_s`, answers when it finishes or the wait ends.
#[utoipa::path(get, path = "/v1/computation/jobs/{id}", tag = "computation", params(("id" = String, Path, description = "A job id"), JobQuery),
    responses((status = 200, description = "The job", body = wire::computation::JobInfo),
        (status = 404, description = "No such job (`computation.job_not_found`)", body = ErrorBody)))]
pub(crate) async fn job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    query: Result<Query<JobQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    caller.allow(Area::Computation, "jobs")?;
    let Query(query) =
        query.map_err(|e| ApiError::bad_request("request.invalid_query", e.body_text()))?;
    let wait = wait_s(query.wait_s)?;
    let owner = caller.owner().to_owned();
    if !wait.is_zero() {
        let waited = tokio::time::timeout(
            wait,
            state.computation.call(|reply| Request::Wait {
                owner: owner.clone(),
                id: id.clone(),
                reply,
            }),
        )
        .await;
        // Not finished within the wait: answer the job as it is now.
        if let Ok(answer) = waited {
            let job = answer.map_err(call_error)?.map_err(ApiError::from)?;
            return Ok(Json(job).into_response());
        }
    }
    let job = ask(&state.computation, |reply| Request::Job {
        owner,
        id,
        reply,
    })
    .await?;
    Ok(Json(job).into_response())
}

/// Cancels a job: a queued one never runs, a running one is interrupted; answers once it stopped.
#[utoipa::path(delete, path = "/v1/computation/jobs/{id}", tag = "computation", params(("id" = String, Path, description = "A job id")),
    responses((status = 200, description = "The job, cancelled (or already finished)", body = wire::computation::JobInfo),
        (status = 404, description = "No such job", body = ErrorBody)))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.allow(Area::Computation, "jobs")?;
    let job = ask(&state.computation, |reply| Request::Cancel {
        owner: caller.owner().to_owned(),
        id,
        reply,
    })
    .await?;
    Ok(Json(job).into_response())
}

/// The worker pool (admin): size, idle, busy, abandoned workers still running, replacements.
#[utoipa::path(get, path = "/v1/computation/pool", tag = "computation",
    responses((status = 200, description = "The pool's figures", body = wire::computation::PoolStats)))]
pub(crate) async fn pool(State(state): State<AppState>) -> Result<Response, ApiError> {
    let stats = state
        .computation
        .call(|reply| Request::Pool { reply })
        .await
        .map_err(call_error)?;
    Ok(Json(stats).into_response())
}
