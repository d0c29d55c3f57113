//! Bus properties: every message ends in exactly one of handled, answered with an error, or
//! dead-lettered, whatever happens to the service meanwhile; and what each caller sees agrees with
//! how its message ended.

mod support;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use runtime::bus::DeadLetterReason;
use runtime::journal::Fault;
use runtime::{
    Builder, CallError, Context, Handle, Journal, Kind, Reply, RuntimeLevel, Service, ServiceError,
    Spec,
};
use support::{Fake, Req, name};
use tokio::time::Instant;

/// What the service itself saw, by request id: independent of the bus's own bookkeeping.
#[derive(Debug, Default)]
struct Log {
    /// Every request an incarnation was handed.
    received: Vec<u64>,
    /// Every request an incarnation answered.
    answered: Vec<u64>,
}

/// A request carrying its id: worked on for `work`, or crashing the incarnation holding it.
struct Job {
    id: u64,
    work: Duration,
    crash: bool,
    reply: Reply<u64>,
}

impl runtime::bus::Operation for Job {
    fn operation(&self) -> &'static str {
        if self.crash { "crash" } else { "work" }
    }
}

/// A service that logs what it receives and answers, and answers each job with its id.
struct Ledger {
    spec: Spec,
    log: Arc<Mutex<Log>>,
}

impl Ledger {
    fn new(spec: impl FnOnce(&mut Spec)) -> (Self, Arc<Mutex<Log>>) {
        let mut s = Spec::new(name("svc"), Kind::Core);
        s.recovery.backoff.jitter = 0.0;
        spec(&mut s);
        let log = Arc::new(Mutex::new(Log::default()));
        (
            Ledger {
                spec: s,
                log: log.clone(),
            },
            log,
        )
    }
}

impl Service for Ledger {
    type Request = Job;

    fn spec(&self) -> Spec {
        self.spec.clone()
    }

    async fn run(&self, mut cx: Context<Job>) -> Result<(), ServiceError> {
        while let Some(job) = cx.recv().await {
            self.log.lock().expect("log").received.push(job.id);
            if job.crash {
                panic!("crashed while handling job {}", job.id);
            }
            if !job.work.is_zero() {
                tokio::time::sleep(job.work).await;
            }
            job.reply.send(job.id);
            self.log.lock().expect("log").answered.push(job.id);
        }
        Ok(())
    }
}

/// The caller of call `id`: one edge per call, so the bus's figures and dead letters can be told
/// apart call by call.
fn caller(id: u64) -> runtime::ServiceName {
    name(&format!("c{id}"))
}

#[derive(Debug, Clone)]
enum Op {
    Call {
        after_ms: u64,
        work_ms: u64,
        deadline_ms: u64,
    },
    Crash {
        after_ms: u64,
        deadline_ms: u64,
    },
    Panic {
        after_ms: u64,
    },
    Stop {
        after_ms: u64,
    },
    Start {
        after_ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..500, 1u64..400).prop_map(|(after_ms, deadline_ms)| Op::Call { after_ms, work_ms: 0, deadline_ms }),
        2 => (0u64..500, 1u64..300, 1u64..300).prop_map(|(after_ms, work_ms, deadline_ms)| Op::Call { after_ms, work_ms, deadline_ms }),
        1 => (0u64..500, 1u64..400).prop_map(|(after_ms, deadline_ms)| Op::Crash { after_ms, deadline_ms }),
        1 => (0u64..500).prop_map(|after_ms| Op::Panic { after_ms }),
        1 => (0u64..500).prop_map(|after_ms| Op::Stop { after_ms }),
        1 => (0u64..500).prop_map(|after_ms| Op::Start { after_ms }),
    ]
}

/// One call as its caller saw it.
#[derive(Debug)]
struct Seen {
    id: u64,
    deadline: Instant,
    returned: Instant,
    result: Result<u64, CallError>,
}

fn run_case(ops: Vec<Op>, queue: usize) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let journal = Journal::in_memory();
        let mut b = Builder::new(journal.clone());
        let (ledger, log) = Ledger::new(|s| {
            s.queue_capacity = queue;
            s.recovery.max_restarts = 1000;
            s.recovery.backoff.initial = Duration::from_millis(50);
        });
        let svc = b.add(ledger);
        let runtime = b.start().expect("start");
        runtime
            .readiness()
            .wait_for(|r| r.level == RuntimeLevel::Ready)
            .await
            .expect("ready");
        let t0 = Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        let mut commands = tokio::task::JoinSet::new();
        for (id, op) in (0u64..).zip(ops) {
            let client = runtime.client();
            let handle = svc.with_caller(&caller(id));
            let call = |after_ms: u64, deadline_ms: u64, work_ms: u64, crash: bool| async move {
                tokio::time::sleep_until(t0 + Duration::from_millis(after_ms)).await;
                let deadline = Instant::now() + Duration::from_millis(deadline_ms);
                let result = handle
                    .call_by(deadline, |reply| Job {
                        id,
                        work: Duration::from_millis(work_ms),
                        crash,
                        reply,
                    })
                    .await;
                Seen {
                    id,
                    deadline,
                    returned: Instant::now(),
                    result,
                }
            };
            match op {
                Op::Call {
                    after_ms,
                    work_ms,
                    deadline_ms,
                } => {
                    calls.spawn(call(after_ms, deadline_ms, work_ms, false));
                }
                Op::Crash {
                    after_ms,
                    deadline_ms,
                } => {
                    calls.spawn(call(after_ms, deadline_ms, 0, true));
                }
                Op::Panic { after_ms } => {
                    commands.spawn(async move {
                        tokio::time::sleep_until(t0 + Duration::from_millis(after_ms)).await;
                        let _ = client.inject_fault(&name("svc"), Fault::Panic).await;
                    });
                }
                Op::Stop { after_ms } => {
                    commands.spawn(async move {
                        tokio::time::sleep_until(t0 + Duration::from_millis(after_ms)).await;
                        let _ = client.stop(&name("svc")).await;
                    });
                }
                Op::Start { after_ms } => {
                    commands.spawn(async move {
                        tokio::time::sleep_until(t0 + Duration::from_millis(after_ms)).await;
                        let _ = client.start(&name("svc")).await;
                    });
                }
            }
        }
        let mut seen = Vec::new();
        while let Some(call) = calls.join_next().await {
            seen.push(call.expect("a call task"));
        }
        while commands.join_next().await.is_some() {}
        let bus = runtime.bus().clone();
        // Shutdown dead-letters whatever is still queued, so every message is settled afterwards.
        runtime.shutdown().await;
        let log = log.lock().expect("log");
        let letters = bus.dead_letters().letters();
        let edges = bus.edges();
        for call in &seen {
            account(call, &log, &letters, &edges)?;
        }
        // No letter, delivery or answer for a message nobody sent.
        prop_assert_eq!(
            bus.dead_letters().total(),
            letters.len() as u64,
            "letters were dropped from the queue"
        );
        prop_assert!(
            letters.iter().all(|l| l
                .from
                .as_ref()
                .is_some_and(|f| seen.iter().any(|c| &caller(c.id) == f))),
            "{:?}",
            letters
        );
        prop_assert!(
            log.received.len() + letters.len() <= seen.len(),
            "{:?}",
            log
        );
        Ok(())
    })
}

/// Accounts for one call: it ended exactly once, and its caller saw what that ending means.
fn account(
    call: &Seen,
    log: &Log,
    letters: &[runtime::bus::Letter],
    edges: &[runtime::bus::EdgeSnapshot],
) -> Result<(), TestCaseError> {
    let id = call.id;
    let count = |ids: &[u64]| ids.iter().filter(|&&i| i == id).count();
    let received = count(&log.received);
    let answered = count(&log.answered);
    let mine: Vec<_> = letters
        .iter()
        .filter(|l| l.from == Some(caller(id)))
        .collect();
    prop_assert!(
        received <= 1,
        "call {} was delivered {} times",
        id,
        received
    );
    prop_assert!(answered <= received, "call {} answered unreceived", id);
    prop_assert!(
        mine.len() <= 1,
        "call {} dead-lettered twice: {:?}",
        id,
        mine
    );

    let handled = answered == 1;
    let dropped = received == 1 && answered == 0;
    let dead = mine.len() == 1;
    let refused = matches!(
        call.result,
        Err(CallError::QueueFull { .. }
            | CallError::Unavailable { .. }
            | CallError::CircuitOpen { .. })
    );
    prop_assert_eq!(
        [handled, dropped, dead, refused]
            .iter()
            .filter(|&&b| b)
            .count(),
        1,
        "call {} must end exactly once: handled {}, dropped {}, dead-lettered {}, refused {}; caller saw {:?}",
        id,
        handled,
        dropped,
        dead,
        refused,
        call
    );

    // What the caller saw agrees with how the message ended.
    match &call.result {
        Ok(v) => {
            prop_assert_eq!(*v, id, "call {} got another call's answer", id);
            prop_assert!(handled, "call {} answered but not handled", id);
        }
        Err(CallError::DeadlineExceeded { .. }) => {
            prop_assert_eq!(
                call.returned,
                call.deadline,
                "call {} timed out before or after its deadline",
                id
            );
        }
        Err(CallError::Interrupted { .. }) => {
            prop_assert!(
                dropped || dead,
                "call {} interrupted, yet its message was {}",
                id,
                if handled { "handled" } else { "never sent" }
            );
        }
        Err(_) => {}
    }
    prop_assert!(
        call.returned <= call.deadline,
        "call {} returned after its deadline: {:?}",
        id,
        call
    );
    if let Some(letter) = mine.first() {
        prop_assert!(
            matches!(
                letter.reason,
                DeadLetterReason::DeadlineExpired | DeadLetterReason::ServiceStopped
            ),
            "{:?}",
            letter
        );
    }

    // The bus's figures for this call's edge tell the same story.
    let edge = edges
        .iter()
        .find(|e| e.caller == Some(caller(id)) && e.callee.as_str() == "svc")
        .expect("every call has its edge");
    prop_assert_eq!(
        (edge.calls, edge.handled, edge.errors, edge.dead_lettered),
        (
            1,
            u64::from(handled),
            u64::from(dropped || refused),
            u64::from(dead)
        ),
        "figures of call {}: {:?}",
        id,
        call
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn every_message_ends_exactly_once(ops in proptest::collection::vec(op(), 1..40), queue in 1usize..8) {
        run_case(ops, queue)?;
    }
}

/// A caller whose deadline passes while the service works on its request sees one outcome, a timeout,
/// and the request still counts once, as handled: never also as an error or a dead letter.
#[tokio::test(start_paused = true)]
async fn an_answer_after_the_deadline_is_a_timeout_for_the_caller_and_handled_once() {
    let (ledger, log) = Ledger::new(|_| {});
    let mut b = Builder::new(Journal::in_memory());
    let svc = b.add(ledger);
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    let job = |id: u64, work_ms: u64| {
        move |reply| Job {
            id,
            work: Duration::from_millis(work_ms),
            crash: false,
            reply,
        }
    };
    // Answered a second after the deadline (call 1), and at the very instant of it (call 3). Each is
    // followed by a request that queues behind it, so that answer means the late one was sent.
    for (id, work_ms) in [(1, 2000), (3, 1000)] {
        let deadline = Instant::now() + Duration::from_secs(1);
        let result = svc
            .with_caller(&caller(id))
            .call_by(deadline, job(id, work_ms))
            .await;
        match result {
            Err(CallError::DeadlineExceeded { .. }) => assert_eq!(Instant::now(), deadline),
            Ok(v) if work_ms == 1000 => assert_eq!(v, id, "answered in time, at the deadline"),
            other => panic!("call {id}: {other:?}"),
        }
        let next = id + 1;
        assert_eq!(
            svc.with_caller(&caller(next)).call(job(next, 0)).await,
            Ok(next)
        );
    }
    let bus = rt.bus().clone();
    rt.shutdown().await;
    let log = log.lock().expect("log");
    assert_eq!(log.received, [1, 2, 3, 4]);
    assert_eq!(log.answered, [1, 2, 3, 4]);
    assert_eq!(
        bus.dead_letters().total(),
        0,
        "{:?}",
        bus.dead_letters().letters()
    );
    for id in [1, 3] {
        let edge = bus
            .edges()
            .into_iter()
            .find(|e| e.caller == Some(caller(id)))
            .expect("edge");
        assert_eq!(
            (edge.calls, edge.handled, edge.errors, edge.dead_lettered),
            (1, 1, 0, 0),
            "call {id}"
        );
    }
}

/// Occupies the single incarnation of `svc` with a request that takes `busy` (on its own task), so
/// that requests sent next wait in the queue; the task answers how that request ended.
async fn occupy_for(
    svc: &Handle<Req>,
    busy: Duration,
) -> tokio::task::JoinHandle<Result<(), CallError>> {
    let svc = svc.clone();
    let slow = tokio::spawn(async move { svc.call(|r| Req::Slow(busy, r)).await });
    tokio::task::yield_now().await;
    slow
}

#[tokio::test(start_paused = true)]
async fn an_expired_request_is_dead_lettered_with_its_reason() {
    let (rt, svc) = support::one_ready_service().await;
    // Occupy the single incarnation, then queue a request that expires while it waits.
    let slow = occupy_for(&svc, Duration::from_secs(2)).await;
    let err = svc
        .call_by(Instant::now() + Duration::from_secs(1), |r| Req::Echo(1, r))
        .await
        .expect_err("expires");
    assert!(matches!(err, runtime::CallError::DeadlineExceeded { .. }));
    assert_eq!(slow.await.expect("join"), Ok(()));
    assert_eq!(svc.call(|r| Req::Echo(2, r)).await, Ok(2));
    let letters = rt.bus().dead_letters().letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].reason,
        runtime::bus::DeadLetterReason::DeadlineExpired
    );
    assert_eq!(letters[0].to.as_str(), "svc");
    rt.shutdown().await;
}

/// A caller that stops waiting before its deadline is never told the deadline came, so the
/// receiver compares the deadline with the clock: its request, still queued past it, is
/// dead-lettered all the same, and an unexpired one from a caller that stopped waiting is handled.
#[tokio::test(start_paused = true)]
async fn a_request_whose_caller_left_is_dead_lettered_once_its_deadline_passed_in_the_queue() {
    let (rt, svc) = support::one_ready_service().await;
    // Occupy the single incarnation for 2 s; queue two requests behind it, whose callers leave
    // at once: one with a deadline at 1 s, one with a deadline at 10 s.
    let slow = occupy_for(&svc, Duration::from_secs(2)).await;
    for (x, secs) in [(1, 1), (2, 10)] {
        let mut left = Box::pin(
            svc.call_by(Instant::now() + Duration::from_secs(secs), |r| {
                Req::Echo(x, r)
            }),
        );
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            left.as_mut().poll(&mut cx).is_pending(),
            "queued behind the slow request"
        );
        drop(left);
    }
    assert_eq!(slow.await.expect("join"), Ok(()));
    assert_eq!(svc.call(|r| Req::Echo(3, r)).await, Ok(3));
    let letters = rt.bus().dead_letters().letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].reason, DeadLetterReason::DeadlineExpired);
    let edge = rt
        .bus()
        .edges()
        .into_iter()
        .find(|e| e.caller.is_none() && e.callee.as_str() == "svc")
        .expect("the edge");
    assert_eq!(
        (edge.calls, edge.handled, edge.dead_lettered),
        (4, 3, 1),
        "the slow request, echo 2 (whose caller left before its deadline) and echo 3 handled"
    );
    rt.shutdown().await;
}

/// A success between failures ends their run, also with the latency figures off (where a call that
/// ends reads the clock only for a breaker with something to record): two crashes, a success and two
/// more crashes leave a breaker of three in a row closed, and a third crash then opens it.
#[tokio::test(start_paused = true)]
async fn a_success_between_failures_ends_their_run_with_the_figures_off() {
    let mut b = Builder::new(Journal::in_memory());
    let svc = b.add(Fake::new("svc").spec_mut(|s| {
        s.breaker.consecutive_failures = 3;
        s.recovery.max_restarts = 100;
        s.recovery.backoff.initial = Duration::from_millis(10);
    }));
    let caller = svc.with_caller(&name("caller"));
    let rt = b.start().expect("start");
    rt.bus().set_metrics(false);
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    let state = |bus: &runtime::Bus| {
        bus.edges()
            .into_iter()
            .find(|e| e.caller.as_ref().map(|c| c.as_str()) == Some("caller"))
            .map(|e| e.breaker.state)
    };
    let crash = || async {
        let e = caller.call(Req::Crash).await.expect_err("crash");
        assert!(matches!(e, runtime::CallError::Interrupted { .. }), "{e}");
    };
    crash().await;
    crash().await;
    assert_eq!(caller.call(|r| Req::Echo(1, r)).await, Ok(1));
    crash().await;
    crash().await;
    assert_eq!(state(rt.bus()), Some(runtime::bus::BreakerState::Closed));
    crash().await;
    assert_eq!(state(rt.bus()), Some(runtime::bus::BreakerState::Open));
    rt.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_breaker_opens_fails_fast_probes_and_closes() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let svc = b.add(Fake::new("svc").spec_mut(|s| {
        s.breaker.consecutive_failures = 3;
        s.breaker.open_for = Duration::from_secs(5);
        s.recovery.max_restarts = 100;
        s.recovery.backoff.initial = Duration::from_millis(10);
    }));
    let caller = svc.with_caller(&name("caller"));
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    // Three requests that crash the incarnation: three failures in a row on this edge.
    for _ in 0..3 {
        let e = caller.call(Req::Crash).await.expect_err("crash");
        assert!(matches!(e, runtime::CallError::Interrupted { .. }), "{e}");
    }
    let t = Instant::now();
    let e = caller.call(|r| Req::Echo(1, r)).await.expect_err("open");
    assert!(
        matches!(e, runtime::CallError::CircuitOpen { .. }) && e.is_retryable(),
        "{e}"
    );
    assert_eq!(t.elapsed(), Duration::ZERO, "an open circuit fails fast");
    // Other edges into the same service are not affected.
    assert_eq!(svc.call(|r| Req::Echo(2, r)).await, Ok(2));
    let state = |bus: &runtime::Bus| {
        bus.edges()
            .into_iter()
            .find(|e| e.caller.as_ref().map(|c| c.as_str()) == Some("caller"))
            .map(|e| e.breaker.state)
    };
    assert_eq!(state(rt.bus()), Some(runtime::bus::BreakerState::Open));
    tokio::time::sleep(Duration::from_secs(5)).await;
    // The half-open probe succeeds and closes the circuit.
    assert_eq!(caller.call(|r| Req::Echo(3, r)).await, Ok(3));
    assert_eq!(state(rt.bus()), Some(runtime::bus::BreakerState::Closed));
    // Opening and closing are journaled, with the edge.
    let circuit: Vec<(String, runtime::bus::BreakerState)> = journal
        .read(0, usize::MAX)
        .expect("read")
        .iter()
        .filter_map(|e| match &e.event {
            runtime::journal::Event::Circuit { caller, state, .. } => Some((
                format!(
                    "{}->{}",
                    caller.as_ref().map_or("external", |c| c.as_str()),
                    e.service.as_ref()?
                ),
                *state,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        circuit,
        [
            ("caller->svc".to_string(), runtime::bus::BreakerState::Open),
            (
                "caller->svc".to_string(),
                runtime::bus::BreakerState::Closed
            ),
        ]
    );
    let snapshot = rt.snapshot().await.expect("snapshot");
    let ops = &snapshot.service("svc").expect("svc").operations;
    let crash = ops
        .iter()
        .find(|o| o.operation == "crash")
        .expect("crash op");
    assert_eq!((crash.calls, crash.errors), (3, 3));
    let echo = ops.iter().find(|o| o.operation == "echo").expect("echo op");
    assert_eq!((echo.calls, echo.errors), (2, 0));
    rt.shutdown().await;
}
