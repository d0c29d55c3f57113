//! A corpus of hostile scripts (`common/corpus.rs`), each run through the service with small
//! limits. Every one must end with a typed ending that names the limit it hit, within the memory
//! limit as the runtime measured it; the service must keep serving after each, and nothing one run
//! does to the injected API may be seen by the next. Afterwards the pool is back at full size, every
//! worker the watchdog gave up was replaced, and at least one was. How long each takes to end is the
//! hostile bench's (`benches/hostile.rs`), not a test's: wall time depends on the machine.

mod common;
#[path = "common/corpus.rs"]
mod corpus;

use common::{caller, program, start};
use computation::{Ending, Error, LimitOverrides, Program};
use corpus::{
    CONSOLE, FINALIZER_BOMB, FINALIZER_PROBE, MEMORY, OUTPUT, PROBE, STUCK_IN_A_BUILTIN, TIME_MS,
    ends_as, limits,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_scripts_end_with_a_typed_ending_and_leave_nothing_behind() {
    let f = start(|_| {}).await;
    let me = caller("mallory");
    assert_eq!(f.run("mallory", PROBE).await.result, json!(true));
    let corpus = corpus::corpus();
    assert!(corpus.len() >= 40, "{} cases", corpus.len());
    let mut failures = Vec::new();
    let mut abandoned = 0;
    for case in &corpus {
        let outcome = f
            .run_as(
                me.clone(),
                Program {
                    limits: limits(),
                    ..program(case.code)
                },
            )
            .await;
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{}: refused: {e}", case.name));
                continue;
            }
        };
        if !case.endings.iter().any(|e| ends_as(&outcome.ending, e)) {
            failures.push(format!(
                "{}: ended {:?}, expected one of {:?}",
                case.name, outcome.ending, case.endings
            ));
        }
        // The outcome names the limits that applied, and an ending at a limit names that limit.
        let applied = &outcome.limits;
        if (
            applied.time_ms,
            applied.memory_bytes,
            applied.output_bytes,
            applied.console_bytes,
        ) != (TIME_MS, MEMORY, OUTPUT, CONSOLE)
        {
            failures.push(format!("{}: ran with {applied:?}", case.name));
        }
        match &outcome.ending {
            Ending::ConsoleLimit { limit } if *limit != CONSOLE => {
                failures.push(format!("{}: console limit {limit}", case.name));
            }
            Ending::OutputTooLarge { size, limit } if *limit != OUTPUT || size <= limit => {
                failures.push(format!("{}: output {size} over {limit}", case.name));
            }
            _ => {}
        }
        // QuickJS refuses any allocation past the limit, so no measured heap is larger.
        if outcome.memory_peak_bytes > MEMORY {
            failures.push(format!(
                "{}: heap peak {} over the limit {MEMORY}",
                case.name, outcome.memory_peak_bytes
            ));
        }
        if let Some(expected) = &case.result
            && outcome.ending == Ending::Completed
            && &outcome.result != expected
        {
            failures.push(format!(
                "{}: result {} instead of {expected}",
                case.name, outcome.result
            ));
        }
        if matches!(outcome.ending, Ending::TimedOut { abandoned: true }) {
            abandoned += 1;
        }
        // The service keeps serving, and nothing leaked into the next run.
        let next = f.run("mallory", PROBE).await;
        if next.result != json!(true) {
            failures.push(format!("{}: the next run saw {next:?}", case.name));
        }
    }

    // Requests refused before they run.
    let big_args = f
        .run_as(
            me.clone(),
            Program {
                args: common::args(json!("x".repeat(2 << 20))),
                ..program("return args.length")
            },
        )
        .await;
    assert!(
        matches!(big_args, Err(Error::TooLarge { setting, .. }) if setting == computation::MAX_ARGS_BYTES.name()),
        "{big_args:?}"
    );
    let big_code = f
        .run_as(me.clone(), program(&" ".repeat((1 << 20) + 1)))
        .await;
    assert!(
        matches!(big_code, Err(Error::TooLarge { setting, .. }) if setting == computation::MAX_CODE_BYTES.name()),
        "{big_code:?}"
    );

    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The pool is at full size: every worker the watchdog gave up on (at least the one stuck in a
    // builtin) was replaced, and nothing is left running but the stuck threads.
    let pool = f.pool().await;
    assert!(abandoned >= 1, "{pool:?}");
    assert_eq!(pool.replaced_total, abandoned, "{pool:?}");
    assert_eq!(
        (pool.size, pool.live, pool.busy, pool.queued),
        (2, 2, 0, 0),
        "{pool:?}"
    );
    assert_eq!(
        completed_value(&f.run("mallory", "return 1 + 1").await),
        json!(2)
    );
    f.rt.shutdown().await;
}

/// Promise: a script stuck in a builtin that never returns to the interrupt handler is answered by
/// the watchdog at its hard deadline, as a timed-out run the watchdog abandoned; its worker is
/// given up and replaced, and the pool serves on at full size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_replaces_a_worker_stuck_in_a_builtin() {
    // One account may hold every worker here, so the two runs below can run at once.
    let f = start(|spec| spec.set(&computation::ACCOUNT_WORKER_SHARE, 100)).await;
    let before = f.pool().await;
    assert_eq!((before.size, before.live, before.replaced_total), (2, 2, 0));
    let stuck = Program {
        limits: LimitOverrides {
            time_ms: Some(50),
            ..Default::default()
        },
        ..program(STUCK_IN_A_BUILTIN)
    };
    let outcome = f
        .run_as(caller("mallory"), stuck)
        .await
        .expect("an outcome");
    assert_eq!(
        outcome.ending,
        Ending::TimedOut { abandoned: true },
        "{outcome:?}"
    );
    assert_eq!(outcome.limits.time_ms, 50);

    let pool = f.pool().await;
    // The stuck thread is still inside its builtin, and a new worker took its place.
    assert_eq!(pool.abandoned_running, 1, "{pool:?}");
    assert_eq!(pool.replaced_total, 1, "{pool:?}");
    assert_eq!((pool.size, pool.live, pool.busy), (2, 2, 0), "{pool:?}");
    // Both workers serve: two runs at once, each holding its worker until the other has started.
    let both =
        "kv.put(args, 'here'); while (kv.get(args === 'a' ? 'b' : 'a') === null) {} return args;";
    let run = |name: &'static str| {
        f.run_as(
            caller("mallory"),
            Program {
                args: common::args(json!(name)),
                // Time enough for the other to start on any machine; one worker alone would
                // time out here.
                limits: LimitOverrides {
                    time_ms: Some(30_000),
                    ..Default::default()
                },
                ..program(both)
            },
        )
    };
    let (a, b) = tokio::join!(run("a"), run("b"));
    assert_eq!(completed_value(&a.expect("a")), json!("a"));
    assert_eq!(completed_value(&b.expect("b")), json!("b"));
    f.rt.shutdown().await;
}

/// Promise (issue #18 item 6): a script whose memory runs out in promise jobs after its result has
/// settled ends `memory_limit`, not `completed` with the result it returned; so does one whose
/// finalizers exhaust the heap (where QuickJS runs finalizers within a run). After each, the same
/// pool serves a trivial run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_exhausted_after_the_result_settled_ends_the_run_as_memory_limit() {
    let f = start(|_| {}).await;
    let me = caller("mallory");
    let limited = |code: &str| Program {
        limits: LimitOverrides {
            memory_bytes: Some(32 << 20),
            time_ms: Some(10_000),
            ..Default::default()
        },
        ..program(code)
    };
    // A chain of promises that each return a new promise, each holding a little more memory.
    let chain = "const grow = (keep) => new Promise((resolve) => resolve(keep))
                   .then((k) => grow([k, new Array(10000).fill(0)]));
                 grow(null);
                 return 'settled';";
    let outcome = f
        .run_as(me.clone(), limited(chain))
        .await
        .expect("an outcome");
    assert_eq!(outcome.ending, Ending::MemoryLimit, "{outcome:?}");
    assert_eq!(outcome.ending.code(), "memory_limit");
    assert_eq!(outcome.result.value(), json!(null));
    assert_eq!(
        completed_value(&f.run("mallory", "return 1 + 1").await),
        json!(2)
    );

    // Finalizers: if QuickJS runs them within a run, a finalizer bomb ends at the memory limit;
    // if it does not, the probe says so and the bomb's result stands.
    let runs_finalizers = completed_value(&f.run("mallory", FINALIZER_PROBE).await);
    let bomb = f
        .run_as(me.clone(), limited(FINALIZER_BOMB))
        .await
        .expect("an outcome");
    if runs_finalizers == json!(true) {
        assert_eq!(bomb.ending, Ending::MemoryLimit, "{bomb:?}");
    } else {
        assert_eq!(runs_finalizers, json!(false));
        assert_eq!(completed_value(&bomb), json!("settled"));
    }
    assert_eq!(
        completed_value(&f.run("mallory", "return 1 + 1").await),
        json!(2)
    );
    let pool = f.pool().await;
    assert_eq!((pool.size, pool.live, pool.busy), (2, 2, 0), "{pool:?}");
    f.rt.shutdown().await;
}

fn completed_value(outcome: &computation::Outcome) -> serde_json::Value {
    assert_eq!(outcome.ending, Ending::Completed, "{outcome:?}");
    outcome.result.value()
}
