//! Bus properties: every message ends in exactly one of handled, answered with an error, or
//! dead-lettered, whatever happens to the service meanwhile.

mod support;

use std::time::Duration;

use proptest::prelude::*;
use runtime::journal::Fault;
use runtime::{Builder, Journal, RuntimeLevel};
use support::{Fake, Req, name};
use tokio::time::Instant;

#[derive(Debug, Clone)]
enum Op {
    Echo {
        after_ms: u64,
        deadline_ms: u64,
    },
    Slow {
        after_ms: u64,
        work_ms: u64,
        deadline_ms: u64,
    },
    Crash {
        after_ms: u64,
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
        4 => (0u64..500, 1u64..400).prop_map(|(after_ms, deadline_ms)| Op::Echo { after_ms, deadline_ms }),
        2 => (0u64..500, 1u64..300, 1u64..300).prop_map(|(after_ms, work_ms, deadline_ms)| Op::Slow { after_ms, work_ms, deadline_ms }),
        1 => (0u64..500).prop_map(|after_ms| Op::Crash { after_ms }),
        1 => (0u64..500).prop_map(|after_ms| Op::Panic { after_ms }),
        1 => (0u64..500).prop_map(|after_ms| Op::Stop { after_ms }),
        1 => (0u64..500).prop_map(|after_ms| Op::Start { after_ms }),
    ]
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
        let svc = b.add(Fake::new("svc").spec_mut(|s| {
            s.queue_capacity = queue;
            s.recovery.max_restarts = 1000;
            s.recovery.backoff.initial = Duration::from_millis(50);
        }));
        let runtime = b.start().expect("start");
        runtime
            .readiness()
            .wait_for(|r| r.level == RuntimeLevel::Ready)
            .await
            .expect("ready");
        let t0 = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let mut sent = 0u64;
        for op in ops {
            let svc = svc.clone();
            let client = runtime.client();
            match op {
                Op::Echo {
                    after_ms,
                    deadline_ms,
                } => {
                    sent += 1;
                    tasks.spawn(async move {
                        tokio::time::sleep_until(t0 + Duration::from_millis(after_ms)).await;
                        let _ = svc
                            .call_by(Instant::now() + Duration::from_millis(deadline_ms), |r| {
                                Req::Echo(1, r)
                            })
                            .await;
                    });
                }
                Op::Slow {
                    after_ms,
                    work_ms,
                    deadline_ms,
                } => {
                    sent += 1;
                    tasks.spawn(async move {
                        tokio::time::sleep_until(t0 + Duration::from_millis(after_ms)).await;
                        let deadline = Instant::now() + Duration::from_millis(deadline_ms);
                        let _ = svc
                            .call_by(deadline, |r| Req::Slow(Duration::from_millis(work_ms), r))
                            .await;
                    });
                }
                Op::Crash { after_ms } => {
                    sent += 1;
                    tasks.spawn(async move {
                        tokio::time::sleep_until(t0 + Duration::from_millis(after_ms)).await;
                        let _ = svc.call(Req::Crash).await;
                    });
                }
                Op::Panic { after_ms } => {
                    tasks.spawn(async move {
                        tokio::time::sleep_until(t0 + Duration::from_millis(after_ms)).await;
                        let _ = client.inject_fault(&name("svc"), Fault::Panic).await;
                    });
                }
                Op::Stop { after_ms } => {
                    tasks.spawn(async move {
                        tokio::time::sleep_until(t0 + Duration::from_millis(after_ms)).await;
                        let _ = client.stop(&name("svc")).await;
                    });
                }
                Op::Start { after_ms } => {
                    tasks.spawn(async move {
                        tokio::time::sleep_until(t0 + Duration::from_millis(after_ms)).await;
                        let _ = client.start(&name("svc")).await;
                    });
                }
            }
        }
        while tasks.join_next().await.is_some() {}
        let bus = runtime.bus().clone();
        // Shutdown dead-letters whatever is still queued, so every message is settled afterwards.
        runtime.shutdown().await;
        let edges = bus.edges();
        let edge = edges
            .iter()
            .find(|e| e.callee.as_str() == "svc" && e.caller.is_none())
            .expect("edge");
        prop_assert_eq!(edge.calls, sent);
        prop_assert_eq!(
            edge.handled + edge.errors + edge.dead_lettered,
            edge.calls,
            "{:?}",
            edge
        );
        prop_assert_eq!(bus.dead_letters().total(), edge.dead_lettered);
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn every_message_ends_exactly_once(ops in proptest::collection::vec(op(), 1..40), queue in 1usize..8) {
        run_case(ops, queue)?;
    }
}

#[tokio::test(start_paused = true)]
async fn an_expired_request_is_dead_lettered_with_its_reason() {
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let svc = b.add(Fake::new("svc"));
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    // Occupy the single incarnation, then queue a request that expires while it waits.
    let busy = svc.clone();
    let slow =
        tokio::spawn(async move { busy.call(|r| Req::Slow(Duration::from_secs(2), r)).await });
    tokio::task::yield_now().await;
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
