//! Jobs: runs submitted to finish in the background, kept per owner with their outcome in a
//! [`runtime::jobs::Table`] that the service's incarnation owns. What a job is on the wire
//! ([`JobInfo`], [`JobState`]) lives in `wire::computation`; this module says how a worker's reports
//! change it.

use runtime::clock::now_ms;

use crate::Error;
use crate::outcome::Outcome;

pub use wire::computation::{JobInfo, JobState};

/// A job just submitted.
pub(crate) fn pending(id: &str) -> JobInfo {
    JobInfo {
        id: id.to_owned(),
        state: JobState::Pending,
        created_ms: now_ms(),
        started_ms: None,
        finished_ms: None,
        outcome: None,
        error: None,
    }
}

/// A worker took the job.
pub(crate) fn start(job: &mut JobInfo) {
    if job.state == JobState::Pending {
        job.state = JobState::Running;
        job.started_ms = Some(now_ms());
    }
}

/// The job's run ended (or could not start).
pub(crate) fn finish(job: &mut JobInfo, result: Result<Outcome, Error>) {
    match result {
        Ok(outcome) => {
            job.state = JobState::of(&outcome.ending);
            job.outcome = Some(outcome);
        }
        Err(e) => {
            job.state = JobState::Failed;
            job.error = Some(e.to_string());
        }
    }
    job.finished_ms = Some(now_ms());
}
