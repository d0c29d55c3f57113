//! The computation service itself: its recipe (the spec and the settings it declares), the
//! incarnation's loop, and the state it owns (the pool, the job table, each owner's share).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use runtime::jobs::{Cancel, KeepBytes, Table};
use runtime::{Context, Kind, Priority, Reply, Service, ServiceError, Spec};
use tokio::task::JoinSet;

use crate::jobs::{self, JobInfo};
use crate::limits::{self, Ceilings, Policy};
use crate::pool::{Pool, Task};
use crate::run::{Deps, Run};
use crate::{
    ACCOUNT_WORKER_SHARE, CALL_TIMEOUT, Caller, Error, MAX_ACTIVE_PER_ACCOUNT, MAX_ARGS_BYTES,
    MAX_CODE_BYTES, MAX_FINISHED_JOBS, MAX_KEPT_BYTES, MAX_KEPT_BYTES_PER_ACCOUNT, MAX_QUEUED_RUNS,
    NAME, Outcome, Program, Request,
};

/// The recipe: the handles capability calls go through.
#[derive(Debug)]
pub struct Computation {
    crypto: crypto::Handle,
    storage: storage::Handle,
}

impl Computation {
    pub fn new(crypto: crypto::Handle, storage: storage::Handle) -> Self {
        Computation {
            crypto: crypto.with_caller(&NAME),
            storage: storage.with_caller(&NAME),
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

    fn validate(&self, new: &Spec) -> Result<(), runtime::Veto> {
        limits::check(new)?;
        if new.replicas.max > 1 {
            return Err(
                "computation keeps its jobs in one incarnation: replicas.max must be 1".into(),
            );
        }
        let max_time = Duration::from_millis(Ceilings::of(new).time_ms);
        if new.call_timeout < max_time + max_time / 2 {
            return Err(format!(
                "call_timeout ({} ms) must be at least 1.5 × max_time_ms ({} ms), or a run at the ceiling would be cut off",
                new.call_timeout.as_millis(),
                max_time.as_millis()
            ).into());
        }
        Ok(())
    }

    async fn run(&self, mut cx: Context<Request>) -> Result<(), ServiceError> {
        let spec = cx.spec();
        let ceilings = Ceilings::of(&spec);
        let mut settings = Settings::of(&spec, ceilings);
        let pool = Pool::start(settings.workers, settings.queue, settings.share)
            .map_err(|e| ServiceError::new(e.to_string()))?;
        let (events, mut reports) = tokio::sync::mpsc::unbounded_channel();
        let mut jobs = Table::new("job", settings.keep_finished);
        jobs.set_keep_bytes(settings.keep_bytes);
        let mut state = State {
            deps: Deps {
                crypto: self.crypto.clone(),
                storage: self.storage.clone(),
                tokio: tokio::runtime::Handle::current(),
            },
            pool,
            jobs,
            waits: JoinSet::new(),
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
                        state.pool.resize(settings.workers, settings.queue, settings.share);
                        state.jobs.set_keep_finished(settings.keep_finished);
                        state.jobs.set_keep_bytes(settings.keep_bytes);
                    }
                    state.handle(request, &settings);
                }
                Some(event) = reports.recv() => state.report(event),
                Some(_) = state.waits.join_next(), if !state.waits.is_empty() => {}
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
    /// Percent of the workers one account may hold.
    share: u32,
    keep_finished: usize,
    keep_bytes: KeepBytes,
    active_per_owner: usize,
}

impl Settings {
    fn of(spec: &Spec, ceilings: Ceilings) -> Settings {
        Settings {
            policy: Policy::new(spec, ceilings),
            workers: usize::from(spec.resources.cpu_cores.max(1)),
            queue: spec.get(&MAX_QUEUED_RUNS),
            share: spec.get(&ACCOUNT_WORKER_SHARE),
            keep_finished: spec.get(&MAX_FINISHED_JOBS),
            keep_bytes: KeepBytes {
                per_owner: usize::try_from(spec.get(&MAX_KEPT_BYTES_PER_ACCOUNT))
                    .unwrap_or(usize::MAX),
                total: usize::try_from(spec.get(&MAX_KEPT_BYTES)).unwrap_or(usize::MAX),
            },
            active_per_owner: spec.get(&MAX_ACTIVE_PER_ACCOUNT),
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
    jobs: Table<JobInfo>,
    /// Replies waiting for a job to end (a wait, a cancel).
    waits: JoinSet<()>,
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
                let mut run = match self.prepare(caller, program, settings) {
                    Ok(run) => run,
                    Err(e) => return reply.send(Err(e)),
                };
                // The request's deadline, on the workers' clock.
                run.caller_deadline = runtime::deadline::current().map(|deadline| {
                    std::time::Instant::now()
                        + deadline.saturating_duration_since(tokio::time::Instant::now())
                });
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
                let mut run = match self.prepare(caller, program, settings) {
                    Ok(run) => run,
                    Err(e) => return reply.send(Err(e)),
                };
                let job = self.jobs.submit(&owner, jobs::pending);
                let (id, flag) = (job.id, job.cancel);
                run.cancel = flag.clone();
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
                reply.send(Ok(job.info));
            }
            Request::Job { owner, id, reply } => {
                reply.send(self.jobs.get(&owner, &id).ok_or(Error::NotFound(id)));
            }
            Request::Wait { owner, id, reply } => match self.jobs.watch(&owner, &id) {
                None => reply.send(Err(Error::NotFound(id))),
                Some(job) => {
                    self.waits.spawn(async move {
                        reply.send(job.finished().await.map_err(|_| Error::NotFound(id)));
                    });
                }
            },
            Request::Cancel { owner, id, reply } => match self.jobs.cancel(&owner, &id) {
                None => reply.send(Err(Error::NotFound(id))),
                Some(Cancel::Finished(info)) => reply.send(Ok(info)),
                // Whether a pending job is still queued or a worker has just taken it (its start
                // report may not have arrived yet) is the pool's to decide, under its lock: either
                // way the end arrives as a finish report, which ends the wait.
                Some(Cancel::Stopping { flag, done }) => {
                    self.pool.cancel(&flag);
                    self.waits.spawn(async move {
                        reply.send(done.finished().await.map_err(|_| Error::NotFound(id)));
                    });
                }
            },
            Request::Jobs { owner, reply } => reply.send(Ok(self.jobs.list(&owner))),
            Request::Pool { reply } => reply.send(self.pool.stats()),
            Request::Purge { owner, reply } => {
                for flag in self.flags.remove(&owner).unwrap_or_default() {
                    if Arc::strong_count(&flag) > 1 {
                        self.pool.cancel(&flag);
                    }
                }
                // Waits on the owner's jobs end now (not found); the purge itself is answered
                // once every run and job of the owner has ended, counted below.
                drop(self.jobs.purge(&owner));
                if self.active.contains_key(&owner) {
                    self.purges.entry(owner).or_default().push(reply);
                } else {
                    reply.send(());
                }
            }
        }
    }

    fn report(&mut self, report: Report) {
        match report {
            Report::Started { owner, id } => self.jobs.update(&owner, &id, jobs::start),
            Report::Finished { owner, id, result } => {
                self.jobs
                    .update(&owner, &id, |job| jobs::finish(job, *result));
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
                setting: MAX_CODE_BYTES.name(),
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
                setting: MAX_ARGS_BYTES.name(),
            });
        }
        Ok(Run {
            owner: caller.owner,
            signing_key: caller.signing_key,
            grants: caller.grants,
            allowance: caller.allowance,
            capabilities: caller.capabilities,
            code: program.code,
            args_json,
            deterministic: program.deterministic,
            limits,
            deps: self.deps.clone(),
            cancel: Arc::new(AtomicBool::new(false)),
            caller_deadline: None,
        })
    }
}
