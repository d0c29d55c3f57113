//! Scripts as background jobs, and the worker pool they run on.

use std::time::Duration;

use reqwest::Method;
use wire::computation::{JobInfo, JobList, PoolStats, Program};

use crate::client::{Client, segment};
use crate::error::Error;

/// The longest wait `GET /v1/computation/jobs/{id}?wait_s=` takes.
pub const MAX_JOB_WAIT: Duration = Duration::from_secs(30);

impl Client {
    /// `POST /v1/computation/jobs`: queues the script as a job of the caller's and answers it
    /// pending (`computation.too_many_active` past the account's bound, `computation.busy` when
    /// the queue is full).
    pub async fn submit(&self, program: &Program) -> Result<JobInfo, Error> {
        self.call_with(Method::POST, "/v1/computation/jobs", program)
            .await
    }

    /// `GET /v1/computation/jobs`: the caller's jobs, the most recent finished ones included.
    pub async fn jobs(&self) -> Result<JobList, Error> {
        self.call(Method::GET, "/v1/computation/jobs").await
    }

    /// `GET /v1/computation/jobs/{id}`: the job; with `wait`, answers as soon as it finishes or
    /// when the wait (whole seconds, 1 to 30: see [`MAX_JOB_WAIT`]) is over, whichever is first.
    pub async fn job(&self, id: &str, wait: Option<Duration>) -> Result<JobInfo, Error> {
        let path = format!("/v1/computation/jobs/{}", segment(id, false));
        self.waiting(path, wait).await
    }

    /// `DELETE /v1/computation/jobs/{id}`: a queued job never runs, a running one is interrupted;
    /// answers the job once it has stopped (or as it finished, if it already had).
    pub async fn cancel_job(&self, id: &str) -> Result<JobInfo, Error> {
        let path = format!("/v1/computation/jobs/{}", segment(id, false));
        self.call(Method::DELETE, &path).await
    }

    /// `GET /v1/computation/pool` (admin): the worker pool's figures.
    pub async fn pool(&self) -> Result<PoolStats, Error> {
        self.call(Method::GET, "/v1/computation/pool").await
    }
}

impl Client {
    /// `GET path`, with `?wait_s=` when there is a `wait` (clamped to 1 to 30 seconds), and the
    /// call given that long on top of its usual timeout: the wait is the server's.
    pub(crate) async fn waiting<T: serde::de::DeserializeOwned>(
        &self,
        mut path: String,
        wait: Option<Duration>,
    ) -> Result<T, Error> {
        let Some(wait) = wait else {
            return self.call(Method::GET, &path).await;
        };
        let secs = wait.as_secs().clamp(1, MAX_JOB_WAIT.as_secs());
        path.push_str(&format!("?wait_s={secs}"));
        let (request, url) = self.request(Method::GET, &path);
        let request = request.timeout(self.timeout() + Duration::from_secs(secs));
        self.send(request, url).await?.into_result()
    }
}
