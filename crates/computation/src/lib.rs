//! The computation service: sandboxed JavaScript on QuickJS (rquickjs). Each run gets a fresh
//! runtime and context with limits on wall time, memory, stack, result size and console output,
//! and a capability API scoped to its caller's account (`kv` on the caller's storage namespace,
//! `crypto` with the caller's keys, `console`). Runs are synchronous (`Run`) or jobs (`Submit`,
//! then `Job`, `Wait`, `Cancel`, `Jobs`), and execute on a bounded pool of worker threads sized by
//! the spec's `resources.cpu_cores`, with a watchdog for scripts stuck in builtins.
//!
//! The incarnation never blocks: it checks a request, hands it to the pool and goes on; workers
//! answer synchronous runs directly and report jobs back to the incarnation, which owns the job
//! table. See `sandbox.rs` for the script convention.

mod capabilities;
mod fair;
mod jobs;
mod limits;
mod outcome;
mod pool;
mod run;
mod sandbox;
mod service;

use std::time::Duration;

use runtime::{Reply, ServiceName};

pub use capabilities::{DETERMINISTIC_NOW_MS, MAX_LIST_KEYS, MAX_RANDOM_BYTES};
pub use jobs::{JobInfo, JobState};
pub use limits::{
    ACCOUNT_WORKER_SHARE, DEFAULT_CONSOLE_BYTES, DEFAULT_MEMORY_BYTES, DEFAULT_OUTPUT_BYTES,
    DEFAULT_STACK_BYTES, DEFAULT_TIME_MS, LimitOverrides, Limits, MAX_ACTIVE_PER_ACCOUNT,
    MAX_ARGS_BYTES, MAX_CODE_BYTES, MAX_CONSOLE_BYTES, MAX_FINISHED_JOBS, MAX_KEPT_BYTES,
    MAX_KEPT_BYTES_PER_ACCOUNT, MAX_MEMORY_BYTES, MAX_OUTPUT_BYTES, MAX_QUEUED_RUNS,
    MAX_STACK_BYTES, MAX_TIME_MS, TIME_CEILING_BOUND,
};
pub use outcome::{ConsoleLine, Ending, JsonText, Level, Outcome};
pub use pool::PoolStats;
pub use service::Computation;
pub use wire::computation::Program;

pub const NAME: ServiceName = ServiceName::from_static("computation");

/// The default deadline of a call through the handle: above the longest run the ceilings allow
/// (30 s, plus the watchdog's half again), with room for a wait in the queue.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What callers can do about a request that was not run. A script that throws, times out or runs
/// out of memory is not an error: it is an [`Outcome`] with its [`Ending`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No such job for this owner (also for other owners' jobs).
    #[error("no job {0:?}")]
    NotFound(String),
    #[error(
        "{what} is {size} bytes; the limit is {limit} (services.computation.{setting}): send less"
    )]
    TooLarge {
        what: &'static str,
        size: u64,
        limit: u64,
        setting: &'static str,
    },
    #[error(
        "limits.{what} = {requested} is above the ceiling {ceiling} (services.computation.{setting}): ask for at most {ceiling}"
    )]
    AboveCeiling {
        what: &'static str,
        requested: u64,
        ceiling: u64,
        setting: &'static str,
    },
    #[error("{0}")]
    BadInput(String),
    /// Every worker is busy and the queue is full; retry later.
    #[error(
        "every computation worker is busy and the queue is full (services.computation.{MAX_QUEUED_RUNS}); retry later"
    )]
    Busy,
    /// The owner already has this many runs and jobs queued or running; retry when one ends.
    #[error(
        "{active} runs and jobs of this account are queued or running, the most services.computation.{MAX_ACTIVE_PER_ACCOUNT} allows; retry when one has ended"
    )]
    TooManyActive { active: usize },
    /// The service stopped (a restart, a failure, a shutdown) while the run was going: it did not
    /// finish, and asking again reaches the next incarnation.
    #[error(
        "the computation service stopped while the run was going (a restart or a shutdown); it did not finish: retry"
    )]
    Interrupted,
    /// The request's deadline passed while the run was going: the run was stopped, since nobody
    /// was waiting for its result any more.
    #[error(
        "the request's deadline passed while the run was going, and it was stopped: retry with a later deadline (x-cloister-deadline-ms) or a shorter script"
    )]
    DeadlinePassed,
    #[error("internal: {0}")]
    Internal(String),
}

impl runtime::Classify for Error {
    fn kind(&self) -> runtime::ErrorKind {
        use runtime::ErrorKind;
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::TooLarge { .. } => ErrorKind::TooLarge,
            Error::AboveCeiling { .. } => ErrorKind::Unprocessable,
            Error::BadInput(_) => ErrorKind::Invalid,
            Error::Busy => ErrorKind::Unavailable {
                retry_after: RETRY_AFTER,
            },
            Error::TooManyActive { .. } => ErrorKind::Limited {
                retry_after: RETRY_AFTER,
            },
            Error::Interrupted | Error::DeadlinePassed => ErrorKind::Unavailable {
                retry_after: RETRY_AFTER,
            },
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "computation.job_not_found",
            Error::TooLarge { .. } => "computation.too_large",
            Error::AboveCeiling { .. } => "computation.above_ceiling",
            Error::BadInput(_) => "computation.bad_input",
            Error::Busy => "computation.busy",
            Error::TooManyActive { .. } => "computation.too_many_active",
            Error::Interrupted => "computation.interrupted",
            Error::DeadlinePassed => "computation.deadline_passed",
            Error::Internal(_) => "computation.internal",
        }
    }
}

/// When a run refused for want of room (a full queue, an account at its share) may be asked again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Who a run acts for: the account whose storage namespace and keys the script may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub owner: String,
    /// The key `crypto.sign(message)` and `crypto.verify(message, signature)` use without a key id.
    pub signing_key: Option<String>,
    /// What the script's capabilities may do: no more than the caller's token may over HTTP.
    pub grants: Grants,
    /// The account's rate limit: each capability call on its data (`kv.*`, `crypto.sign`,
    /// `crypto.verify`) takes a token, as a request does. `None`: not limited (the admin).
    pub allowance: Option<runtime::rate::Allowance>,
    /// Whether the run gets the account's capabilities at all.
    pub capabilities: Capabilities,
}

/// Whether a run may reach its owner's account: `kv` and `crypto` (each call as [`Grants`]
/// allows), or nothing of the account's at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capabilities {
    /// `kv`, `crypto` and `console`, acting for the owner.
    Account,
    /// `console` only. Reading the global `kv` or `crypto` stops the run there, with
    /// [`Ending::CapabilityRefused`] naming it; the script cannot catch its way past. For runs that
    /// must depend on their arguments alone (an oracle extraction script).
    None,
}

/// Which capability calls a run may make, from the caller's token scopes (`storage:get` grants
/// `kv.get`, `crypto:sign` grants `crypto.sign`, ...). `crypto.sha256`, `crypto.randomBytes` and
/// `console` touch nothing of the account's and are always there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grants {
    pub kv_get: bool,
    pub kv_put: bool,
    pub kv_delete: bool,
    pub kv_list: bool,
    pub sign: bool,
    pub verify: bool,
}

impl Grants {
    pub const ALL: Grants = Grants {
        kv_get: true,
        kv_put: true,
        kv_delete: true,
        kv_list: true,
        sign: true,
        verify: true,
    };
    pub const NONE: Grants = Grants {
        kv_get: false,
        kv_put: false,
        kv_delete: false,
        kv_list: false,
        sign: false,
        verify: false,
    };
}

type Answer<T> = Reply<Result<T, Error>>;

/// Requests to the computation service. Every job request names the owner it acts for.
#[derive(Debug)]
pub enum Request {
    /// Runs the program and answers its outcome when it ends.
    Run {
        caller: Caller,
        program: Program,
        reply: Answer<Outcome>,
    },
    /// Queues the program as a job and answers at once with the pending job.
    Submit {
        caller: Caller,
        program: Program,
        reply: Answer<JobInfo>,
    },
    /// The job as it is now.
    Job {
        owner: String,
        id: String,
        reply: Answer<JobInfo>,
    },
    /// The job once it has finished (at once if it has).
    Wait {
        owner: String,
        id: String,
        reply: Answer<JobInfo>,
    },
    /// Cancels the job: a pending one is answered at once; a running one is interrupted and
    /// answered once it has stopped; a finished one is answered as it is.
    Cancel {
        owner: String,
        id: String,
        reply: Answer<JobInfo>,
    },
    /// The owner's jobs, oldest first.
    Jobs {
        owner: String,
        reply: Answer<Vec<JobInfo>>,
    },
    Pool {
        reply: Reply<PoolStats>,
    },
    /// Cancels every run and job of `owner`, answers once all of them have ended, and forgets the
    /// owner's jobs: for an account being deleted (its tokens are already refused).
    Purge {
        owner: String,
        reply: Reply<()>,
    },
}

impl runtime::bus::Operation for Request {
    fn operation(&self) -> &'static str {
        match self {
            Request::Run { .. } => "run",
            Request::Submit { .. } => "submit",
            Request::Job { .. } => "job",
            Request::Wait { .. } => "wait",
            Request::Cancel { .. } => "cancel",
            Request::Jobs { .. } => "jobs",
            Request::Pool { .. } => "pool",
            Request::Purge { .. } => "purge",
        }
    }
}

pub type Handle = runtime::Handle<Request>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use runtime::{Classify, ErrorKind};

    use super::Error;

    /// The kind and the stable code of each variant, as the API answers them (docs/api.md).
    #[test]
    fn every_error_has_its_kind_and_code() {
        let limited = Duration::from_secs(1);
        let table = [
            (
                Error::NotFound("job_x".into()),
                ErrorKind::NotFound,
                "computation.job_not_found",
            ),
            (
                Error::TooLarge {
                    what: "code",
                    size: 2,
                    limit: 1,
                    setting: "max_code_bytes",
                },
                ErrorKind::TooLarge,
                "computation.too_large",
            ),
            (
                Error::AboveCeiling {
                    what: "time_ms",
                    requested: 2,
                    ceiling: 1,
                    setting: "max_time_ms",
                },
                ErrorKind::Unprocessable,
                "computation.above_ceiling",
            ),
            (
                Error::BadInput("x".into()),
                ErrorKind::Invalid,
                "computation.bad_input",
            ),
            (
                Error::Busy,
                ErrorKind::Unavailable {
                    retry_after: limited,
                },
                "computation.busy",
            ),
            (
                Error::TooManyActive { active: 32 },
                ErrorKind::Limited {
                    retry_after: limited,
                },
                "computation.too_many_active",
            ),
            (
                Error::Interrupted,
                ErrorKind::Unavailable {
                    retry_after: limited,
                },
                "computation.interrupted",
            ),
            (
                Error::DeadlinePassed,
                ErrorKind::Unavailable {
                    retry_after: limited,
                },
                "computation.deadline_passed",
            ),
            (
                Error::Internal("x".into()),
                ErrorKind::Internal,
                "computation.internal",
            ),
        ];
        for (error, kind, code) in table {
            assert_eq!((error.kind(), error.code()), (kind, code), "{error:?}");
        }
    }
}
