//! Jobs: runs submitted to finish in the background, kept per owner with their outcome in a
//! [`runtime::jobs::Table`] that the service's incarnation owns. This module says what a job is
//! and how a worker's reports change it.

use runtime::clock::now_ms;
use serde::Serialize;

use crate::Error;
use crate::outcome::{Ending, Outcome};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    Running,
    Completed,
    /// The script threw, did not parse, returned something without a JSON form or a promise that
    /// never settled; or the run could not start (see `error`).
    Failed,
    TimedOut,
    Cancelled,
    MemoryLimit,
    StackOverflow,
    OutputTooLarge,
    ConsoleLimit,
}

impl JobState {
    pub fn is_finished(self) -> bool {
        !matches!(self, JobState::Pending | JobState::Running)
    }

    fn of(ending: &Ending) -> JobState {
        match ending {
            Ending::Completed => JobState::Completed,
            Ending::Error { .. }
            | Ending::SyntaxError { .. }
            | Ending::NotSerializable { .. }
            | Ending::NeverSettled => JobState::Failed,
            Ending::TimedOut { .. } => JobState::TimedOut,
            Ending::Cancelled { .. } => JobState::Cancelled,
            Ending::MemoryLimit => JobState::MemoryLimit,
            Ending::StackOverflow => JobState::StackOverflow,
            Ending::OutputTooLarge { .. } => JobState::OutputTooLarge,
            Ending::ConsoleLimit { .. } => JobState::ConsoleLimit,
        }
    }
}

/// A job as its owner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct JobInfo {
    /// Random and unguessable: `job_` and 32 hex digits.
    pub id: String,
    pub state: JobState,
    pub created_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    /// Once finished (unless the run could not start at all).
    pub outcome: Option<Outcome>,
    /// Why the run could not start, for a job that failed without an outcome.
    pub error: Option<String>,
}

impl runtime::jobs::Info for JobInfo {
    fn is_finished(&self) -> bool {
        self.state.is_finished()
    }
}

impl JobInfo {
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
    pub(crate) fn start(&mut self) {
        if self.state == JobState::Pending {
            self.state = JobState::Running;
            self.started_ms = Some(now_ms());
        }
    }

    /// The job's run ended (or could not start).
    pub(crate) fn finish(&mut self, result: Result<Outcome, Error>) {
        match result {
            Ok(outcome) => {
                self.state = JobState::of(&outcome.ending);
                self.outcome = Some(outcome);
            }
            Err(e) => {
                self.state = JobState::Failed;
                self.error = Some(e.to_string());
            }
        }
        self.finished_ms = Some(now_ms());
    }
}
