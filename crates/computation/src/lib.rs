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
mod jobs;
mod limits;
mod outcome;
mod pool;
mod sandbox;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use runtime::{Context, Kind, Priority, Reply, Service, ServiceError, ServiceName, Spec};
use serde::Deserialize;

pub use capabilities::{DETERMINISTIC_NOW_MS, MAX_LIST_KEYS, MAX_RANDOM_BYTES};
pub use jobs::{JobInfo, JobState};
pub use limits::{
    DEFAULT_CONSOLE_BYTES, DEFAULT_MEMORY_BYTES, DEFAULT_OUTPUT_BYTES, DEFAULT_STACK_BYTES,
    DEFAULT_TIME_MS, LimitOverrides, Limits, MAX_ACTIVE_PER_ACCOUNT, MAX_ARGS_BYTES,
    MAX_CODE_BYTES, MAX_CONSOLE_BYTES, MAX_FINISHED_JOBS, MAX_MEMORY_BYTES, MAX_OUTPUT_BYTES,
    MAX_QUEUED_RUNS, MAX_STACK_BYTES, MAX_TIME_MS, TIME_CEILING_BOUND_MS,
};
pub use outcome::{ConsoleLine, Ending, Level, Outcome};
pub use pool::PoolStats;

use capabilities::Deps;
use jobs::{Cancelling, Jobs};
use limits::{Ceilings, Policy};
use pool::{Pool, Task};
use sandbox::Run;

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
}

/// A script and how to run it, as the API receives it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Program {
    /// The body of an async function: `return` the result (see the crate docs).
    pub code: String,
    /// Available to the script as `args`: kept as the JSON text it came as (no tree is built from
    /// it outside the sandbox); absent is `null`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub args: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Fixes `Date`, `performance.now()`, `Math.random` and `crypto.randomBytes` to values derived
    /// from the code and args, so the same program gives the same result.
    #[serde(default)]
    pub deterministic: bool,
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

/// The recipe: the handles capability calls go through.
#[derive(Debug)]
pub struct Computation {
    crypto: crypto::Handle,
    storage: storage::Handle,
    /// The sandbox ceilings the first incarnation read; later configurations may not change them.
    ceilings: OnceLock<Ceilings>,
}

impl Computation {
    pub fn new(crypto: crypto::Handle, storage: storage::Handle) -> Self {
        Computation {
            crypto: crypto.with_caller(&NAME),
            storage: storage.with_caller(&NAME),
            ceilings: OnceLock::new(),
        }
    }

    pub fn default_spec() -> Spec {
        let spec = Spec::new(NAME, Kind::Core)
            .description(
                "sandboxed JavaScript on QuickJS with time, memory and capability limits, on a bounded pool of worker threads",
            )
            .depends_on(crypto::NAME)
            .depends_on(storage::NAME)
            .priority(Priority::Medium)
            .capability("computation.run")
            .capability("computation.jobs")
            .resources(runtime::spec::Resources {
                // Two runs at the default 64 MiB heap, plus the service's own.
                min_memory_mib: 160,
                max_memory_mib: 1024,
                cpu_cores: 2,
                network_access: false,
            })
            .call_timeout(CALL_TIMEOUT);
        limits::declare(spec)
    }
}

impl Service for Computation {
    type Request = Request;

    fn spec(&self) -> Spec {
        Computation::default_spec()
    }

    fn validate(&self, new: &Spec) -> Result<(), String> {
        limits::check(new)?;
        if new.replicas.max > 1 {
            return Err(
                "computation keeps its jobs in one incarnation: replicas.max must be 1".into(),
            );
        }
        if let Some(started) = self.ceilings.get()
            && let Some(setting) = started.changed(&Ceilings::of(new))
        {
            return Err(format!(
                "services.computation.{setting} is a sandbox ceiling and is read at start only; restart cloister to change it"
            ));
        }
        let max_time = Duration::from_millis(Ceilings::of(new).time_ms);
        if new.call_timeout < max_time + max_time / 2 {
            return Err(format!(
                "call_timeout ({} ms) must be at least 1.5 × max_time_ms ({} ms), or a run at the ceiling would be cut off",
                new.call_timeout.as_millis(),
                max_time.as_millis()
            ));
        }
        Ok(())
    }

    async fn run(&self, mut cx: Context<Request>) -> Result<(), ServiceError> {
        let spec = cx.spec();
        let ceilings = *self.ceilings.get_or_init(|| Ceilings::of(&spec));
        let mut settings = Settings::of(&spec, ceilings);
        let pool = Pool::start(settings.workers, settings.queue)
            .map_err(|e| ServiceError::new(e.to_string()))?;
        let (events, mut reports) = tokio::sync::mpsc::unbounded_channel();
        let mut state = State {
            deps: Deps {
                crypto: self.crypto.clone(),
                storage: self.storage.clone(),
                tokio: tokio::runtime::Handle::current(),
            },
            pool,
            jobs: Jobs::default(),
            events,
            active: std::collections::HashMap::new(),
            flags: std::collections::HashMap::new(),
            purges: std::collections::HashMap::new(),
        };
        loop {
            tokio::select! {
                request = cx.recv() => {
                    let Some(request) = request else { break };
                    // Settings apply live: re-read only when the spec changed.
                    if cx.spec_changes().has_changed().unwrap_or(false) {
                        let spec = cx.spec_changes().borrow_and_update().clone();
                        settings = Settings::of(&spec, ceilings);
                        state.pool.resize(settings.workers, settings.queue);
                    }
                    state.handle(request, &settings);
                }
                Some(event) = reports.recv() => state.report(event, &settings),
            }
        }
        Ok(())
    }
}

/// What the incarnation reads from its spec.
#[derive(Debug, Clone, Copy)]
struct Settings {
    policy: Policy,
    workers: usize,
    queue: usize,
    keep_finished: usize,
    active_per_owner: usize,
}

impl Settings {
    fn of(spec: &Spec, ceilings: Ceilings) -> Settings {
        let get = |name| usize::try_from(spec.setting_value(name)).unwrap_or(1);
        Settings {
            policy: Policy::new(spec, ceilings),
            workers: usize::from(spec.resources.cpu_cores.max(1)),
            queue: get(MAX_QUEUED_RUNS),
            keep_finished: get(MAX_FINISHED_JOBS),
            active_per_owner: get(MAX_ACTIVE_PER_ACCOUNT),
        }
    }
}

/// A worker's report on a job.
#[derive(Debug)]
enum Report {
    Started {
        owner: String,
        id: String,
    },
    Finished {
        owner: String,
        id: String,
        result: Box<Result<Outcome, Error>>,
    },
    /// A synchronous run ended (answered by its worker or the watchdog).
    RunEnded {
        owner: String,
    },
}

/// One incarnation's state.
struct State {
    deps: Deps,
    pool: Pool,
    jobs: Jobs,
    events: tokio::sync::mpsc::UnboundedSender<Report>,
    /// Runs and jobs queued or running, per owner.
    active: std::collections::HashMap<String, usize>,
    /// The cancel flags of each owner's runs and jobs that may still be going (a flag whose run
    /// has been dropped is only held here, and is pruned).
    flags: std::collections::HashMap<String, Vec<Arc<AtomicBool>>>,
    /// Purges waiting for an owner's last run to end.
    purges: std::collections::HashMap<String, Vec<Reply<()>>>,
}

impl State {
    fn handle(&mut self, request: Request, settings: &Settings) {
        match request {
            Request::Run {
                caller,
                program,
                reply,
            } => {
                let owner = caller.owner.clone();
                let run = match self.prepare(caller, program, settings) {
                    Ok(run) => run,
                    Err(e) => return reply.send(Err(e)),
                };
                self.track(&owner, &run.cancel);
                let events = self.events.clone();
                // Shared so the worker can skip the run if the caller stopped waiting while it
                // was queued.
                let reply = Arc::new(std::sync::Mutex::new(Some(reply)));
                let waiting = reply.clone();
                let task = Task {
                    run,
                    on_start: None,
                    wanted: Some(Box::new(move || {
                        waiting
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .as_ref()
                            .is_some_and(Reply::is_wanted)
                    })),
                    finish: Box::new(move |result| {
                        let reply = reply.lock().unwrap_or_else(|p| p.into_inner()).take();
                        if let Some(reply) = reply {
                            reply.send(result);
                        }
                        let _ = events.send(Report::RunEnded { owner });
                    }),
                };
                if let Err(task) = self.pool.submit(task) {
                    (task.finish)(Err(Error::Busy));
                }
            }
            Request::Submit {
                caller,
                program,
                reply,
            } => {
                let owner = caller.owner.clone();
                let run = match self.prepare(caller, program, settings) {
                    Ok(run) => run,
                    Err(e) => return reply.send(Err(e)),
                };
                let id = jobs::new_id();
                let flag = run.cancel.clone();
                let info = self.jobs.add(&owner, id.clone(), run.cancel.clone());
                let started = {
                    let events = self.events.clone();
                    let (owner, id) = (owner.clone(), id.clone());
                    Box::new(move || {
                        let _ = events.send(Report::Started { owner, id });
                    })
                };
                let finish = {
                    let events = self.events.clone();
                    let (owner, id) = (owner.clone(), id.clone());
                    Box::new(move |result| {
                        let _ = events.send(Report::Finished {
                            owner,
                            id,
                            result: Box::new(result),
                        });
                    })
                };
                let task = Task {
                    run,
                    on_start: Some(started),
                    wanted: None,
                    finish,
                };
                if self.pool.submit(task).is_err() {
                    self.jobs.remove(&owner, &id);
                    return reply.send(Err(Error::Busy));
                }
                self.track(&owner, &flag);
                reply.send(Ok(info));
            }
            Request::Job { owner, id, reply } => reply.send(self.jobs.get(&owner, &id)),
            Request::Wait { owner, id, reply } => self.jobs.wait(&owner, &id, reply),
            Request::Cancel { owner, id, reply } => {
                if let Cancelling::Running(flag) = self.jobs.cancel(&owner, &id, reply) {
                    self.pool.cancel(&flag);
                }
            }
            Request::Jobs { owner, reply } => reply.send(Ok(self.jobs.list(&owner))),
            Request::Pool { reply } => reply.send(self.pool.stats()),
            Request::Purge { owner, reply } => {
                for flag in self.flags.remove(&owner).unwrap_or_default() {
                    if Arc::strong_count(&flag) > 1 {
                        self.pool.cancel(&flag);
                    }
                }
                self.jobs.forget(&owner);
                if self.active.contains_key(&owner) {
                    self.purges.entry(owner).or_default().push(reply);
                } else {
                    reply.send(());
                }
            }
        }
    }

    fn report(&mut self, report: Report, settings: &Settings) {
        match report {
            Report::Started { owner, id } => self.jobs.started(&owner, &id),
            Report::Finished { owner, id, result } => {
                self.jobs
                    .finished(&owner, &id, *result, settings.keep_finished);
                self.ended(&owner);
            }
            Report::RunEnded { owner } => self.ended(&owner),
        }
    }

    /// Refuses a new run or job for an owner already at its share of the pool.
    fn admit(&self, owner: &str, settings: &Settings) -> Result<(), Error> {
        match self.active.get(owner) {
            Some(&active) if active >= settings.active_per_owner => {
                Err(Error::TooManyActive { active })
            }
            _ => Ok(()),
        }
    }

    /// Counts a new run or job of `owner` and keeps its cancel flag for a purge.
    fn track(&mut self, owner: &str, flag: &Arc<AtomicBool>) {
        *self.active.entry(owner.to_owned()).or_default() += 1;
        let flags = self.flags.entry(owner.to_owned()).or_default();
        flags.retain(|f| Arc::strong_count(f) > 1);
        flags.push(flag.clone());
    }

    fn ended(&mut self, owner: &str) {
        if let Some(active) = self.active.get_mut(owner) {
            *active = active.saturating_sub(1);
            if *active == 0 {
                self.active.remove(owner);
                self.flags.remove(owner);
                for reply in self.purges.remove(owner).unwrap_or_default() {
                    reply.send(());
                }
            }
        }
    }

    /// Checks a request once (its owner's share of the pool included), into what a worker runs.
    fn prepare(&self, caller: Caller, program: Program, settings: &Settings) -> Result<Run, Error> {
        self.admit(&caller.owner, settings)?;
        if caller.owner.is_empty() {
            return Err(Error::BadInput("the caller's owner cannot be empty".into()));
        }
        let limits = settings.policy.resolve(&program.limits)?;
        let code_size = program.code.len() as u64;
        if code_size > limits.code_bytes {
            return Err(Error::TooLarge {
                what: "the code",
                size: code_size,
                limit: limits.code_bytes,
                setting: MAX_CODE_BYTES,
            });
        }
        let args_json = program.args.map_or_else(
            || "null".to_owned(),
            |raw| String::from(Box::<str>::from(raw)),
        );
        let args_size = args_json.len() as u64;
        if args_size > limits.args_bytes {
            return Err(Error::TooLarge {
                what: "args (as JSON)",
                size: args_size,
                limit: limits.args_bytes,
                setting: MAX_ARGS_BYTES,
            });
        }
        Ok(Run {
            owner: caller.owner,
            signing_key: caller.signing_key,
            grants: caller.grants,
            code: program.code,
            args_json,
            deterministic: program.deterministic,
            limits,
            deps: self.deps.clone(),
            cancel: Arc::new(AtomicBool::new(false)),
        })
    }
}
