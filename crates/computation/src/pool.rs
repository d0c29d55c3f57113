//! The bounded pool of worker threads that runs scripts, and its watchdog.
//!
//! Workers are plain threads (a script blocks its thread for the whole run), each taking one task at
//! a time from a bounded queue that accounts share fairly ([`crate::fair`]: they take turns, and
//! none holds more than its share of the workers). Every busy worker has a hard deadline, half its run's time limit
//! past the limit itself. QuickJS's interrupt handler stops ordinary scripts at the limit; a script
//! stuck in a builtin that never polls for interrupts is the watchdog's: at the hard deadline it
//! answers the caller with a timed-out outcome, marks the worker abandoned (it exits when its call
//! finally returns, and takes no more work) and starts a replacement, so the pool stays at size.
//!
//! Threads are owned by the pool: dropping it closes the queue (queued tasks are dropped, so their
//! callers see their reply dropped), idle workers exit, busy ones exit after their run, and the
//! watchdog exits once no worker is busy. Nothing joins them: an abandoned worker may be stuck for
//! longer than anyone should wait.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::Error;
use crate::fair::{FairQueue, share};
use crate::limits::{Limits, STACK_CEILING_BOUND, STACK_HEADROOM};
use crate::outcome::{Ending, Outcome};
use crate::run::Run;
use crate::sandbox;

/// Abandoned workers still stuck beyond which the watchdog stops replacing them.
const MAX_ABANDONED: usize = 16;

/// How long a cancelled run may take to notice before the watchdog abandons it.
const CANCEL_GRACE: Duration = Duration::from_millis(200);

/// Where a run's result goes; called exactly once, by the worker or by the watchdog.
pub(crate) type Finish = Box<dyn FnOnce(Result<Outcome, Error>) + Send>;
/// Called when a worker takes the task up.
pub(crate) type OnStart = Box<dyn FnOnce() + Send>;

/// Whether anyone still waits for the run; a run nobody waits for is skipped.
pub(crate) type Wanted = Box<dyn Fn() -> bool + Send>;

/// One run waiting for, or held by, a worker.
pub(crate) struct Task {
    pub(crate) run: Run,
    pub(crate) on_start: Option<OnStart>,
    pub(crate) wanted: Option<Wanted>,
    pub(crate) finish: Finish,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task").field("run", &self.run).finish()
    }
}

pub use wire::computation::PoolStats;

/// The answer slot of a busy run: taken once, by whoever finishes first.
type Answer = Arc<Mutex<Option<Finish>>>;

fn answer(slot: &Answer, result: Result<Outcome, Error>) {
    let finish = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(finish) = finish {
        finish(result);
    }
}

struct Busy {
    owner: String,
    started: Instant,
    hard_deadline: Instant,
    limits: Limits,
    deterministic: bool,
    cancel: Arc<AtomicBool>,
    answer: Answer,
}

struct State {
    queue: FairQueue<Task>,
    queue_capacity: usize,
    size: usize,
    /// Workers one account's runs may hold at once.
    share: usize,
    /// Live workers by id: `None` idle, `Some` busy. Abandoned workers are not here.
    workers: BTreeMap<u64, Option<Busy>>,
    next_id: u64,
    abandoned_running: usize,
    replaced_total: u64,
    completed_total: u64,
    closed: bool,
    /// When the watchdog wakes by itself next (`None`: only when notified). A run whose hard
    /// deadline is later needs no wake-up, which saves a thread switch per run.
    watchdog_wakes: Option<Instant>,
}

struct Shared {
    state: Mutex<State>,
    /// Workers wait here for tasks.
    work: Condvar,
    /// The watchdog waits here for the next deadline or a change.
    watch: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The worker threads and their queue.
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Pool {
    /// Starts `size` workers and the watchdog; one account may hold `share_percent` of them.
    pub(crate) fn start(
        size: usize,
        queue_capacity: usize,
        share_percent: u32,
    ) -> Result<Pool, Error> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: FairQueue::default(),
                queue_capacity,
                size: size.max(1),
                share: share(size.max(1), share_percent),
                workers: BTreeMap::new(),
                next_id: 0,
                abandoned_running: 0,
                replaced_total: 0,
                completed_total: 0,
                closed: false,
                watchdog_wakes: None,
            }),
            work: Condvar::new(),
            watch: Condvar::new(),
        });
        {
            let mut state = shared.lock();
            for _ in 0..state.size {
                spawn_worker(&shared, &mut state)?;
            }
        }
        let watchdog = shared.clone();
        std::thread::Builder::new()
            .name("computation-watchdog".into())
            .spawn(move || run_watchdog(&watchdog))
            .map_err(|e| Error::Internal(format!("starting the watchdog thread: {e}")))?;
        Ok(Pool { shared })
    }

    /// Queues `task`, or gives it back if the queue is full.
    pub(crate) fn submit(&self, task: Task) -> Result<(), Box<Task>> {
        let mut state = self.shared.lock();
        if state.closed || state.queue.len() >= state.queue_capacity {
            return Err(Box::new(task));
        }
        let owner = task.run.owner.clone();
        state.queue.push(&owner, task);
        drop(state);
        self.shared.work.notify_one();
        Ok(())
    }

    /// Cancels the run holding `cancel`: its interrupt handler sees the flag, and if it does not
    /// stop within a short grace the watchdog abandons it. A queued run is skipped when its turn
    /// comes.
    pub(crate) fn cancel(&self, cancel: &Arc<AtomicBool>) {
        cancel.store(true, Ordering::Relaxed);
        let mut state = self.shared.lock();
        // Still queued: it never runs; answered here, outside the lock. Decided under the lock, so
        // a run is either taken from the queue here or already held by a worker that will see the
        // flag.
        let queued = state.queue.take(|t| Arc::ptr_eq(&t.run.cancel, cancel));
        let grace = Instant::now() + CANCEL_GRACE;
        for busy in state.workers.values_mut().flatten() {
            if Arc::ptr_eq(&busy.cancel, cancel) && busy.hard_deadline > grace {
                busy.hard_deadline = grace;
            }
        }
        drop(state);
        self.shared.watch.notify_one();
        if let Some(task) = queued {
            (task.finish)(Ok(crate::outcome::without_run(
                Ending::Cancelled { abandoned: false },
                task.run.limits,
                task.run.deterministic,
            )));
        }
    }

    /// Sets the number of workers, the queue bound and an account's share; extra idle workers
    /// exit, missing ones start.
    pub(crate) fn resize(&self, size: usize, queue_capacity: usize, share_percent: u32) {
        let mut state = self.shared.lock();
        state.size = size.max(1);
        state.share = share(state.size, share_percent);
        state.queue_capacity = queue_capacity;
        while state.workers.len() < state.size {
            if let Err(e) = spawn_worker(&self.shared, &mut state) {
                tracing::error!(error = %e, "computation: could not start a worker");
                break;
            }
        }
        drop(state);
        self.shared.work.notify_all();
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let state = self.shared.lock();
        let busy = state.workers.values().filter(|w| w.is_some()).count();
        PoolStats {
            size: state.size,
            live: state.workers.len(),
            idle: state.workers.len() - busy,
            busy,
            queued: state.queue.len(),
            queue_capacity: state.queue_capacity,
            abandoned_running: state.abandoned_running,
            replaced_total: state.replaced_total,
            completed_total: state.completed_total,
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let queued = {
            let mut state = self.shared.lock();
            state.closed = true;
            // Runs still going stop at their next poll rather than at their time limit: nobody
            // will use their results, and they would go on using the account's data.
            for busy in state.workers.values().flatten() {
                busy.cancel.store(true, Ordering::Relaxed);
            }
            state.queue.drain()
        };
        // Dropped outside the lock: dropping a task drops its reply.
        drop(queued);
        self.shared.work.notify_all();
        self.shared.watch.notify_all();
    }
}

fn spawn_worker(shared: &Arc<Shared>, state: &mut State) -> Result<(), Error> {
    let id = state.next_id;
    state.next_id += 1;
    let worker = shared.clone();
    let stack = usize::try_from(STACK_CEILING_BOUND).unwrap_or(8 << 20) + STACK_HEADROOM;
    std::thread::Builder::new()
        .name(format!("computation-{id}"))
        .stack_size(stack)
        .spawn(move || run_worker(&worker, id))
        .map_err(|e| Error::Internal(format!("starting a worker thread: {e}")))?;
    state.workers.insert(id, None);
    Ok(())
}

fn run_worker(shared: &Shared, id: u64) {
    // The runtime and context for the next run, made while there is nothing to do.
    let mut fresh: Option<sandbox::Fresh> = None;
    let mut prepare_failed = false;
    let mut state = shared.lock();
    loop {
        if !state.workers.contains_key(&id) {
            return;
        }
        if state.closed || state.workers.len() > state.size {
            state.workers.remove(&id);
            drop(state);
            shared.watch.notify_one();
            return;
        }
        let share = state.share;
        let Some((owner, task)) = state.queue.pop(share) else {
            if fresh.is_none() && !prepare_failed {
                drop(state);
                fresh = sandbox::Fresh::new()
                    .inspect_err(|e| tracing::warn!(error = %e, "computation: preparing a runtime"))
                    .ok();
                // Tried once per idle spell: a failure (out of memory) is not retried in a loop.
                prepare_failed = fresh.is_none();
                state = shared.lock();
                continue;
            }
            state = shared.work.wait(state).unwrap_or_else(|p| p.into_inner());
            continue;
        };
        let Task {
            run,
            on_start,
            wanted,
            finish,
        } = task;
        if wanted.is_some_and(|wanted| !wanted()) {
            // The caller gave up (its deadline passed while the run was queued).
            drop(state);
            drop(finish);
            state = shared.lock();
            state.queue.ended(&owner);
            continue;
        }
        if run.cancel.load(Ordering::Relaxed) {
            drop(state);
            finish(Ok(crate::outcome::without_run(
                Ending::Cancelled { abandoned: false },
                run.limits,
                run.deterministic,
            )));
            state = shared.lock();
            state.queue.ended(&owner);
            continue;
        }
        let started = Instant::now();
        let hard_deadline = started + crate::limits::hard_time(&run.limits);
        let slot: Answer = Arc::new(Mutex::new(Some(finish)));
        state.workers.insert(
            id,
            Some(Busy {
                owner: owner.clone(),
                started,
                hard_deadline,
                limits: run.limits,
                deterministic: run.deterministic,
                cancel: run.cancel.clone(),
                answer: slot.clone(),
            }),
        );
        let wake_watchdog = state
            .watchdog_wakes
            .is_none_or(|wakes| hard_deadline < wakes);
        drop(state);
        if wake_watchdog {
            shared.watch.notify_one();
        }
        if let Some(on_start) = on_start {
            on_start();
        }
        let prepared = fresh.take();
        prepare_failed = false;
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| sandbox::execute(&run, prepared)))
                .unwrap_or_else(|_| Err(Error::Internal("the sandbox panicked".into())));
        let result = caller_gone_if(&run, result);
        drop(run);
        state = shared.lock();
        match state.workers.get_mut(&id) {
            Some(busy) => {
                *busy = None;
                state.completed_total += 1;
                state.queue.ended(&owner);
                // The watchdog only needs to hear of a finished run when it is waiting to exit.
                let closed = state.closed;
                drop(state);
                answer(&slot, interrupted_if(closed, result));
                if closed {
                    shared.watch.notify_one();
                }
                state = shared.lock();
            }
            None => {
                // Abandoned while stuck: the watchdog answered and a replacement took our place.
                state.abandoned_running = state.abandoned_running.saturating_sub(1);
                return;
            }
        }
    }
}

/// What a run's caller is told: a run the closing pool cancelled (its incarnation stopped or
/// failed) did not end by its caller's choice or its own, and is a retryable error, not a
/// `cancelled` outcome.
fn interrupted_if(closed: bool, result: Result<Outcome, Error>) -> Result<Outcome, Error> {
    match result {
        Ok(outcome) if closed && matches!(outcome.ending, Ending::Cancelled { .. }) => {
            Err(Error::Interrupted)
        }
        result => result,
    }
}

/// A run stopped because its caller's deadline passed (not by a cancel) is a retryable error, so
/// that an answer that races the caller's own timeout never reads as a `cancelled` outcome. That
/// includes a run that ended in an error thrown after the deadline: a capability call made with
/// the caller's deadline fails with a JavaScript error when it passes, and the script may end with
/// it before the interrupt handler stops it (the test that found this race:
/// `a_run_ends_with_its_callers_deadline_in_a_capability_call_or_a_loop`).
fn caller_gone_if(run: &Run, result: Result<Outcome, Error>) -> Result<Outcome, Error> {
    match result {
        Ok(outcome)
            if matches!(
                outcome.ending,
                Ending::Cancelled { .. } | Ending::Error { .. }
            ) && !run.cancel.load(Ordering::Relaxed)
                && run
                    .caller_deadline
                    .is_some_and(|deadline| Instant::now() >= deadline) =>
        {
            Err(Error::DeadlinePassed)
        }
        result => result,
    }
}

fn run_watchdog(shared: &Arc<Shared>) {
    let mut state = shared.lock();
    loop {
        let now = Instant::now();
        let expired: Vec<u64> = state
            .workers
            .iter()
            .filter_map(|(id, w)| w.as_ref().filter(|b| b.hard_deadline <= now).map(|_| *id))
            .collect();
        let mut abandoned = Vec::with_capacity(expired.len());
        for id in expired {
            if let Some(Some(busy)) = state.workers.remove(&id) {
                state.abandoned_running += 1;
                // Answered for here: the account's share is free again (the stuck thread is
                // counted in `abandoned_running`, and bounded by MAX_ABANDONED).
                state.queue.ended(&busy.owner);
                abandoned.push(busy);
                // Each stuck thread keeps its stack and heap until its builtin returns: past a
                // bound the pool shrinks instead of growing without end.
                if state.abandoned_running > MAX_ABANDONED {
                    tracing::error!(
                        stuck = state.abandoned_running,
                        "computation: too many workers stuck in builtins; not replacing this one"
                    );
                } else if !state.closed {
                    match spawn_worker(shared, &mut state) {
                        Ok(()) => state.replaced_total += 1,
                        Err(error) => tracing::error!(
                            %error,
                            "computation: could not replace an abandoned worker"
                        ),
                    }
                }
            }
        }
        if !abandoned.is_empty() {
            let closed = state.closed;
            drop(state);
            for busy in abandoned {
                let cancelled = busy.cancel.load(Ordering::Relaxed);
                tracing::warn!(
                    limit_ms = busy.limits.time_ms,
                    cancelled,
                    "computation: abandoned a worker stuck in a builtin that does not poll for interrupts"
                );
                let ending = if cancelled {
                    Ending::Cancelled { abandoned: true }
                } else {
                    Ending::TimedOut { abandoned: true }
                };
                let mut outcome =
                    crate::outcome::without_run(ending, busy.limits, busy.deterministic);
                outcome.duration_ms = busy.started.elapsed().as_millis() as u64;
                answer(&busy.answer, interrupted_if(closed, Ok(outcome)));
            }
            state = shared.lock();
            continue;
        }
        let busy_deadline = state
            .workers
            .values()
            .flatten()
            .map(|b| b.hard_deadline)
            .min();
        if state.closed && busy_deadline.is_none() {
            return;
        }
        state.watchdog_wakes = busy_deadline;
        state = match busy_deadline {
            Some(deadline) => {
                let wait = deadline.saturating_duration_since(Instant::now());
                shared
                    .watch
                    .wait_timeout(state, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            None => shared.watch.wait(state).unwrap_or_else(|p| p.into_inner()),
        };
    }
}
