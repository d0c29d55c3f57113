//! Jobs: runs submitted to finish in the background, kept per owner with their outcome. The table
//! belongs to the service's incarnation; workers report through it (started, finished), and it
//! answers waiters when a job ends. Finished jobs are kept up to a bound per owner, oldest dropped
//! first. Another owner's job id is simply not found: existence is never revealed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use runtime::Reply;
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

struct Job {
    info: JobInfo,
    /// Order of submission within the owner's jobs.
    seq: u64,
    cancel: Arc<AtomicBool>,
    waiters: Vec<Reply<Result<JobInfo, Error>>>,
}

#[derive(Default)]
struct Owned {
    jobs: HashMap<String, Job>,
    finished: VecDeque<String>,
}

/// Every owner's jobs.
#[derive(Default)]
pub(crate) struct Jobs {
    owners: HashMap<String, Owned>,
    next_seq: u64,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("owners", &self.owners.len())
            .finish()
    }
}

/// What to do about a cancel that could not be answered at once.
pub(crate) enum Cancelling {
    /// The job is running: stop it with this flag; the reply waits for its end.
    Running(Arc<AtomicBool>),
    /// Answered already.
    Done,
}

impl Jobs {
    fn job(&self, owner: &str, id: &str) -> Result<&Job, Error> {
        self.owners
            .get(owner)
            .and_then(|o| o.jobs.get(id))
            .ok_or_else(|| not_found(id))
    }

    fn job_mut(&mut self, owner: &str, id: &str) -> Result<&mut Job, Error> {
        self.owners
            .get_mut(owner)
            .and_then(|o| o.jobs.get_mut(id))
            .ok_or_else(|| not_found(id))
    }

    /// Records a new pending job.
    pub(crate) fn add(&mut self, owner: &str, id: String, cancel: Arc<AtomicBool>) -> JobInfo {
        let info = JobInfo {
            id: id.clone(),
            state: JobState::Pending,
            created_ms: now_ms(),
            started_ms: None,
            finished_ms: None,
            outcome: None,
            error: None,
        };
        self.next_seq += 1;
        let job = Job {
            info: info.clone(),
            seq: self.next_seq,
            cancel,
            waiters: Vec::new(),
        };
        self.owners
            .entry(owner.to_owned())
            .or_default()
            .jobs
            .insert(id, job);
        info
    }

    /// Forgets a job that never reached the pool.
    pub(crate) fn remove(&mut self, owner: &str, id: &str) {
        if let Some(o) = self.owners.get_mut(owner) {
            o.jobs.remove(id);
            if o.jobs.is_empty() {
                self.owners.remove(owner);
            }
        }
    }

    pub(crate) fn started(&mut self, owner: &str, id: &str) {
        if let Ok(job) = self.job_mut(owner, id)
            && job.info.state == JobState::Pending
        {
            job.info.state = JobState::Running;
            job.info.started_ms = Some(now_ms());
        }
    }

    /// Records the end of a job, answers its waiters and drops the owner's oldest finished jobs
    /// beyond `keep`. A job that already ended (cancelled while pending) stays as it was.
    pub(crate) fn finished(
        &mut self,
        owner: &str,
        id: &str,
        result: Result<Outcome, Error>,
        keep: usize,
    ) {
        let Ok(job) = self.job_mut(owner, id) else {
            return;
        };
        if job.info.state.is_finished() {
            return;
        }
        match result {
            Ok(outcome) => {
                job.info.state = JobState::of(&outcome.ending);
                job.info.outcome = Some(outcome);
            }
            Err(e) => {
                job.info.state = JobState::Failed;
                job.info.error = Some(e.to_string());
            }
        }
        job.info.finished_ms = Some(now_ms());
        for waiter in job.waiters.drain(..) {
            waiter.send(Ok(job.info.clone()));
        }
        let Some(o) = self.owners.get_mut(owner) else {
            return;
        };
        o.finished.push_back(id.to_owned());
        while o.finished.len() > keep.max(1) {
            if let Some(old) = o.finished.pop_front() {
                o.jobs.remove(&old);
            }
        }
    }

    pub(crate) fn get(&self, owner: &str, id: &str) -> Result<JobInfo, Error> {
        self.job(owner, id).map(|j| j.info.clone())
    }

    /// Answers `reply` when the job has finished (at once if it has).
    pub(crate) fn wait(&mut self, owner: &str, id: &str, reply: Reply<Result<JobInfo, Error>>) {
        match self.job_mut(owner, id) {
            Ok(job) if job.info.state.is_finished() => reply.send(Ok(job.info.clone())),
            Ok(job) => {
                // Waiters whose callers gave up (an HTTP wait that timed out) are dropped here.
                job.waiters.retain(Reply::is_wanted);
                job.waiters.push(reply);
            }
            Err(e) => reply.send(Err(e)),
        }
    }

    /// Cancels a job: a pending or running one is stopped through its flag (the pool drops a queued
    /// one at once) and `reply` waits for its end; a finished one is answered as it is.
    pub(crate) fn cancel(
        &mut self,
        owner: &str,
        id: &str,
        reply: Reply<Result<JobInfo, Error>>,
    ) -> Cancelling {
        let job = match self.job_mut(owner, id) {
            Ok(job) => job,
            Err(e) => {
                reply.send(Err(e));
                return Cancelling::Done;
            }
        };
        match job.info.state {
            // Whether a pending job is still queued or a worker has just taken it (its start
            // report may not have arrived yet) is the pool's to decide, under its lock: either way
            // the end arrives as a finish report, which answers the reply.
            JobState::Pending | JobState::Running => {
                job.waiters.retain(Reply::is_wanted);
                job.waiters.push(reply);
                Cancelling::Running(job.cancel.clone())
            }
            _ => {
                reply.send(Ok(job.info.clone()));
                Cancelling::Done
            }
        }
    }

    /// Forgets every job of `owner` (their runs were cancelled); waiters get `NotFound`.
    pub(crate) fn forget(&mut self, owner: &str) {
        if let Some(owned) = self.owners.remove(owner) {
            for (id, job) in owned.jobs {
                for waiter in job.waiters {
                    waiter.send(Err(not_found(&id)));
                }
            }
        }
    }

    /// The owner's jobs, oldest first.
    pub(crate) fn list(&self, owner: &str) -> Vec<JobInfo> {
        let Some(o) = self.owners.get(owner) else {
            return Vec::new();
        };
        let mut jobs: Vec<&Job> = o.jobs.values().collect();
        jobs.sort_by_key(|j| j.seq);
        jobs.into_iter().map(|j| j.info.clone()).collect()
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(id.to_owned())
}
