//! Restart latency: from a panic injected into a trivial service (backoff 0, no jitter) to the
//! replacement incarnation answering a call, as percentiles in microseconds, next to a raw tokio peer
//! doing the same restart with nothing else (a worker task told to panic, a task awaiting it that
//! spawns the next worker on the same channel), round by round, and to the raw cost of spawning a
//! tokio task that answers a oneshot. The restart's phases come from the journal's timestamps.
//!
//! Two spans are measured for each: from asking for the fault to the answer (for Cloister this
//! includes `inject_fault`'s round trip through the supervisor, which the peer's message does not
//! make), and from the panic itself (stamped by the bench's panic hook, on the panicking thread) to
//! the answer: the restart alone, for both alike.
//!
//! Each restart starts from a settled runtime: after the answer, outside the measured time, the
//! bench waits for the journal to say the runtime is ready again, so the end of one restart (its
//! last journal entries) does not fall into the next one's time.
//!
//! Run: `cargo bench -p runtime --bench restart` (without `--bench`, as under `cargo test`, it does a
//! few rounds only). `RESTART_JOURNAL=file` keeps the journal in a file, as the binary does.

#![allow(clippy::print_stdout)]

mod support;

use support::{quantile, report};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use runtime::journal::{Event, Fault};
use runtime::{
    Builder, Context, Handle, Journal, Kind, Reply, RuntimeLevel, Service, ServiceError,
    ServiceName, Spec,
};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

const WORKERS: usize = 2;
const NAME: ServiceName = ServiceName::from_static("echo");

/// When the last injected panic began: set by the bench's panic hook, taken after each restart.
static PANICKED_AT: Mutex<Option<Instant>> = Mutex::new(None);

/// The span from the last injected panic to `answered`.
fn since_the_panic(answered: Instant) -> Duration {
    let panicked = PANICKED_AT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .expect("the restart began with a panic");
    answered.duration_since(panicked)
}

/// Answers every request with the generation of the incarnation that handled it.
struct Echo;

impl Service for Echo {
    type Request = Reply<u64>;

    fn spec(&self) -> Spec {
        let mut spec = Spec::new(NAME, Kind::Core);
        spec.recovery.backoff.initial = Duration::ZERO;
        spec.recovery.backoff.jitter = 0.0;
        // Never give up: the intensity limit is not what is measured.
        spec.recovery.max_restarts = u32::MAX;
        spec.recovery.window = Duration::from_millis(1);
        spec
    }

    async fn run(&self, mut cx: Context<Reply<u64>>) -> Result<(), ServiceError> {
        let generation = cx.generation();
        while let Some(reply) = cx.recv().await {
            reply.send(generation);
        }
        Ok(())
    }
}

/// One restart: inject a panic into the current incarnation, then call until the next one answers.
/// (A request that panics would fail calls, which the caller's circuit breaker counts; the
/// injected fault fails none.)
async fn restart_once(
    rt: &runtime::Runtime,
    handle: &Handle<Reply<u64>>,
    before: u64,
) -> (Duration, Duration, u64, SystemTime) {
    let asked = SystemTime::now();
    let start = Instant::now();
    rt.inject_fault(&NAME, Fault::Panic)
        .await
        .expect("the service is running");
    // The call waits in the mailbox while the service restarts; the fault overtakes it (control
    // messages come first), so the old incarnation never answers it.
    let generation = handle
        .call(|reply| reply)
        .await
        .expect("the new incarnation answers");
    let answered = Instant::now();
    assert!(
        generation > before,
        "answered by a new incarnation ({generation} after {before})"
    );
    (
        answered - start,
        since_the_panic(answered),
        generation,
        asked,
    )
}

/// Where a restart's time goes, from the journal's timestamps of the entries still in memory.
#[derive(Default)]
struct Phases {
    /// From the `Exited` entry of the failed incarnation to `BackoffScheduled`.
    exit_to_backoff: Vec<Duration>,
    /// From `BackoffScheduled` (with a delay of 0) to the replacement's `Starting`.
    backoff_to_starting: Vec<Duration>,
    /// From `Starting` to the replacement's `Ready` as the supervisor handled it: usually after the
    /// caller has its answer, so it includes the bench's wait for the runtime to settle.
    starting_to_ready: Vec<Duration>,
    /// From asking for the fault to the failed incarnation's `Exited`.
    asked_to_exited: Vec<Duration>,
    /// From the replacement's `Starting` to its answer reaching the caller.
    starting_to_answered: Vec<Duration>,
}

/// When each restart was asked for and answered, by the generation that failed.
type Asked = std::collections::HashMap<u64, (SystemTime, SystemTime)>;

fn phases(journal: &Journal, asked: &Asked) -> Phases {
    let mut phases = Phases::default();
    let entries = journal
        .read(0, usize::MAX)
        .expect("an in-memory journal reads");
    let mut exited = None;
    let mut backoff = None;
    let mut starting = None;
    let since = |earlier: Option<SystemTime>, now: SystemTime| {
        earlier.and_then(|t| now.duration_since(t).ok())
    };
    for entry in entries.iter().filter(|e| e.service.as_ref() == Some(&NAME)) {
        match entry.event {
            Event::Exited { .. } => {
                exited = Some(entry.time);
                if let Some((at, _)) = entry.generation.and_then(|g| asked.get(&g)) {
                    phases.asked_to_exited.extend(since(Some(*at), entry.time));
                }
            }
            Event::BackoffScheduled { .. } => {
                phases
                    .exit_to_backoff
                    .extend(since(exited.take(), entry.time));
                backoff = Some(entry.time);
            }
            Event::Starting { restart: true, .. } => {
                phases
                    .backoff_to_starting
                    .extend(since(backoff.take(), entry.time));
                let failed = entry.generation.map(|g| g - 1);
                if let Some((_, answered)) = failed.and_then(|g| asked.get(&g)) {
                    phases
                        .starting_to_answered
                        .extend(answered.duration_since(entry.time).ok());
                }
                starting = Some(entry.time);
            }
            Event::Ready { .. } => phases
                .starting_to_ready
                .extend(since(starting.take(), entry.time)),
            _ => {}
        }
    }
    phases
}

/// What the raw peer's worker takes from its channel.
enum RawMessage {
    Panic,
    Call(oneshot::Sender<u64>),
}

/// The peer: the same restart in plain tokio, with nothing else. A worker task serves a channel and
/// panics when told to; a supervising task awaits it and, on a panic, spawns the next one on the
/// same channel, where the call waits. No journal, no states, no readiness, no backoff logic: what
/// any in-process restart must pay (the panic, its unwinding, the join, a spawn and the wake-ups).
async fn raw_supervise(messages: async_channel::Receiver<RawMessage>) {
    let mut generation = 0;
    loop {
        generation += 1;
        let worker = tokio::spawn(raw_serve(messages.clone(), generation));
        match worker.await {
            Err(e) if e.is_panic() => continue,
            _ => return,
        }
    }
}

async fn raw_serve(messages: async_channel::Receiver<RawMessage>, generation: u64) {
    while let Ok(message) = messages.recv().await {
        match message {
            RawMessage::Panic => panic!("injected fault: raw peer (generation {generation})"),
            RawMessage::Call(reply) => {
                let _ = reply.send(generation);
            }
        }
    }
}

/// One raw restart: tell the worker to panic, then call until the next one answers.
async fn raw_restart_once(
    messages: &async_channel::Sender<RawMessage>,
    before: u64,
) -> (Duration, Duration, u64) {
    let start = Instant::now();
    messages
        .send(RawMessage::Panic)
        .await
        .expect("the peer runs");
    let (reply, answer) = oneshot::channel();
    messages
        .send(RawMessage::Call(reply))
        .await
        .expect("the peer runs");
    let generation = answer.await.expect("the next worker answers");
    let answered = Instant::now();
    assert!(generation > before, "answered by a new worker");
    (answered - start, since_the_panic(answered), generation)
}

/// The restarts measured: Cloister's and the raw peer's, alternating round by round so that the
/// machine's noise falls on both alike.
struct Measured {
    cloister: Vec<Duration>,
    raw: Vec<Duration>,
    /// From the panic to the answer.
    cloister_from_panic: Vec<Duration>,
    raw_from_panic: Vec<Duration>,
    phases: Phases,
}

async fn measure_restarts(rounds: usize, warm_up: usize) -> Measured {
    // `RESTART_JOURNAL=file`: a journal on disk, as the binary keeps it, instead of in memory.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let journal = match std::env::var("RESTART_JOURNAL").as_deref() {
        Ok("file") => {
            Journal::open(&dir.path().join("journal.log"))
                .expect("a journal file")
                .0
        }
        _ => Journal::in_memory(),
    };
    let mut builder = Builder::new(journal.clone());
    let handle = builder.add(Echo);
    let rt = builder.start().expect("a valid graph");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("the runtime becomes ready");
    let mut generation = handle
        .call(|reply| reply)
        .await
        .expect("the first incarnation answers");
    let (raw, raw_messages) = async_channel::unbounded();
    let raw_supervisor = tokio::spawn(raw_supervise(raw_messages));
    let mut raw_generation = 0;
    let mut samples = Vec::with_capacity(rounds);
    let mut raw_samples = Vec::with_capacity(rounds);
    let mut from_panic = Vec::with_capacity(rounds);
    let mut raw_from_panic = Vec::with_capacity(rounds);
    let mut asked = Asked::new();
    for round in 0..warm_up + rounds {
        let since = journal.last_seq();
        let (elapsed, panicked, next, at) = restart_once(&rt, &handle, generation).await;
        asked.insert(generation, (at, at + elapsed));
        generation = next;
        // Outside the measured time: the restart is over once the runtime is journaled ready
        // again, so one restart's tail (its last entries) does not fall into the next one's time.
        journal
            .wait_for(since, Duration::from_secs(10), |e| {
                matches!(
                    e.event,
                    Event::RuntimeHealth {
                        level: RuntimeLevel::Ready,
                        ..
                    }
                )
            })
            .await
            .expect("the runtime is ready again after a restart");
        let (raw_elapsed, raw_panicked, raw_next) = raw_restart_once(&raw, raw_generation).await;
        raw_generation = raw_next;
        if round >= warm_up {
            samples.push(elapsed);
            raw_samples.push(raw_elapsed);
            from_panic.push(panicked);
            raw_from_panic.push(raw_panicked);
        }
    }
    raw.close();
    raw_supervisor.await.expect("the raw peer's supervisor");
    rt.shutdown().await;
    Measured {
        cloister: samples,
        raw: raw_samples,
        cloister_from_panic: from_panic,
        raw_from_panic,
        phases: phases(&journal, &asked),
    }
}

/// The floor: spawning a task and receiving its answer on a oneshot.
async fn measure_spawn(rounds: usize, warm_up: usize) -> Vec<Duration> {
    let mut tasks = JoinSet::new();
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..warm_up + rounds {
        let start = Instant::now();
        let (tx, rx) = oneshot::channel();
        tasks.spawn(async move {
            let _ = tx.send(round);
        });
        let answer = rx.await.expect("the task answers");
        let elapsed = start.elapsed();
        assert_eq!(answer, round);
        if round >= warm_up {
            samples.push(elapsed);
        }
        while tasks.try_join_next().is_some() {}
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a spawned task");
    }
    samples
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, warm_up) = if full { (2000, 200) } else { (20, 2) };
    // Each restart panics on purpose; printing thousands of panic messages would be measured too.
    // Any other panic is reported as usual.
    let panics = Arc::new(AtomicU64::new(0));
    let counted = panics.clone();
    let report_panic = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let at = Instant::now();
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("injected fault") {
            counted.fetch_add(1, Ordering::Relaxed);
            *PANICKED_AT.lock().unwrap_or_else(|p| p.into_inner()) = Some(at);
        } else {
            report_panic(info);
        }
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // Everything runs in a worker task, as a service calling another would.
    let (measured, spawned) = rt.block_on(async move {
        let measured = tokio::spawn(async move {
            let restarts = measure_restarts(rounds, warm_up).await;
            let spawned = measure_spawn(rounds, warm_up).await;
            (restarts, spawned)
        });
        measured.await.expect("the measurement task")
    });
    let _ = std::panic::take_hook();
    println!(
        "restart latency, {WORKERS} tokio workers, backoff 0, jitter 0 ({} panics)",
        panics.load(Ordering::Relaxed)
    );
    let Measured {
        cloister,
        raw,
        cloister_from_panic,
        raw_from_panic,
        phases,
    } = measured;
    let ratios = |ours: &[Duration], theirs: &[Duration]| {
        let at = |samples: &[Duration], q| {
            let mut sorted = samples.to_vec();
            sorted.sort();
            quantile(&sorted, q).as_secs_f64()
        };
        let ratio = |q| at(ours, q) / at(theirs, q).max(1e-9);
        println!(
            "  Cloister / the raw peer: p50 {:.2}, p99 {:.2} (rounds alternate)",
            ratio(0.5),
            ratio(0.99)
        );
    };
    report(
        "inject_fault(Panic) -> new incarnation answers",
        cloister.clone(),
    );
    report(
        "peer: raw tokio panic -> join -> respawn answers",
        raw.clone(),
    );
    ratios(&cloister, &raw);
    report(
        "the panic -> new incarnation answers",
        cloister_from_panic.clone(),
    );
    report(
        "peer: the panic -> respawned worker answers",
        raw_from_panic.clone(),
    );
    ratios(&cloister_from_panic, &raw_from_panic);
    report("baseline: tokio::spawn + oneshot answer", spawned);
    println!("phases of the restarts still in the in-memory journal (wall clock):");
    let Phases {
        exit_to_backoff,
        backoff_to_starting,
        starting_to_ready,
        asked_to_exited,
        starting_to_answered,
    } = phases;
    report("  fault asked -> Exited", asked_to_exited);
    report("  Exited -> BackoffScheduled", exit_to_backoff);
    report("  BackoffScheduled (0 ms) -> Starting", backoff_to_starting);
    report(
        "  Starting -> Ready (handled after the answer)",
        starting_to_ready,
    );
    report("  Starting -> answer received", starting_to_answered);
}
