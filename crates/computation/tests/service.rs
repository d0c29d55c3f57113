//! The computation service through its handle, with real crypto and storage services on the
//! simulation platform.

mod common;

use std::collections::HashSet;

use common::{caller, program, start};
use computation::{Caller, Ending, Error, JobState, LimitOverrides, Program, Request};
use serde_json::json;

const ALICE: &str = "alice";
const BOB: &str = "bob";

fn completed(outcome: &computation::Outcome) -> serde_json::Value {
    assert_eq!(outcome.ending, Ending::Completed, "{outcome:#?}");
    outcome.result.value()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn args_in_result_out_with_console_and_limits() {
    let f = start(|_| {}).await;
    let outcome = f
        .run_as(
            caller(ALICE),
            Program {
                args: common::args(json!({"a": 2, "b": [3, 4]})),
                ..program("console.log('sum of', args.a, args.b); return { sum: args.a + args.b[0] + args.b[1], echo: args };")
            },
        )
        .await
        .expect("run");
    assert_eq!(
        completed(&outcome),
        json!({"sum": 9, "echo": {"a": 2, "b": [3, 4]}})
    );
    assert_eq!(outcome.console.len(), 1);
    assert_eq!(outcome.console[0].text, "sum of 2 [3,4]");
    assert_eq!(outcome.limits.time_ms, 5_000);
    assert_eq!(outcome.limits.memory_bytes, 64 << 20);
    assert!(outcome.memory_peak_bytes > 0);
    assert!(!outcome.deterministic);

    // No return: null. A promise: its settled value. Await works at the top of the body.
    assert_eq!(completed(&f.run(ALICE, "let x = 1;").await), json!(null));
    assert_eq!(
        completed(
            &f.run(
                ALICE,
                "const v = await new Promise(r => r(41)); return v + 1;"
            )
            .await
        ),
        json!(42)
    );
    // A thrown error with its position; a non-JSON result.
    let thrown = f.run(ALICE, "\n\n  null.x;").await;
    match &thrown.ending {
        Ending::Error {
            name, line, column, ..
        } => {
            assert_eq!(name, "TypeError");
            assert_eq!((*line, *column), (Some(3), Some(3)));
        }
        other => panic!("unexpected {other:?}"),
    }
    let cyclic = f.run(ALICE, "const a = {}; a.a = a; return a;").await;
    assert!(
        matches!(cyclic.ending, Ending::NotSerializable { .. }),
        "{cyclic:?}"
    );
    let function = f.run(ALICE, "return () => 1;").await;
    assert!(matches!(function.ending, Ending::NotSerializable { .. }));
    let never = f.run(ALICE, "await new Promise(() => {});").await;
    assert_eq!(never.ending, Ending::NeverSettled);
    // Queued work still runs after the result is settled, and counts.
    let later = f
        .run(
            ALICE,
            "Promise.resolve().then(() => console.log('later')); return 1;",
        )
        .await;
    assert_eq!(later.console[0].text, "later");
    f.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syntax_errors_have_line_and_column() {
    let f = start(|_| {}).await;
    let outcome = f.run(ALICE, "let x = 1;\nlet y = ;").await;
    match outcome.ending {
        Ending::SyntaxError {
            message,
            line,
            column,
        } => {
            assert!(message.contains("unexpected token"), "{message}");
            assert_eq!((line, column), (Some(2), Some(9)));
        }
        other => panic!("unexpected {other:?}"),
    }
    // Positions are in the submitted code, also for one line, and for code that ends too early
    // (where QuickJS stops at the line it appends after the body).
    for (code, expected) in [
        ("let y = ;", (1, 9)),
        ("return 1 +", (1, 11)),
        ("let x = 1;\nreturn x +", (2, 11)),
        ("let x = 1;\nreturn f(x,\n", (3, 1)),
    ] {
        match f.run(ALICE, code).await.ending {
            Ending::SyntaxError { line, column, .. } => assert_eq!(
                (line, column),
                (Some(expected.0), Some(expected.1)),
                "{code:?}"
            ),
            other => panic!("{code:?}: unexpected {other:?}"),
        }
    }
    // A SyntaxError thrown at run time (JSON.parse) is an error, not a syntax error of the code.
    let parse = f.run(ALICE, "return JSON.parse('{');").await;
    assert!(
        matches!(&parse.ending, Ending::Error { name, .. } if name == "SyntaxError"),
        "{parse:?}"
    );
    f.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_round_trip_is_scoped_to_the_owner() {
    let f = start(|_| {}).await;
    let put = f
        .run(
            ALICE,
            "const v = kv.put('greeting', 'hello'); kv.put('g/2', 'two'); return v;",
        )
        .await;
    assert!(completed(&put).as_u64().is_some_and(|v| v > 0), "{put:?}");
    let read = f
        .run(
            ALICE,
            "return [kv.get('greeting'), kv.get('absent'), kv.list('g'), kv.list()];",
        )
        .await;
    assert_eq!(
        completed(&read),
        json!(["hello", null, ["g/2", "greeting"], ["g/2", "greeting"]])
    );
    // Another owner sees nothing of it.
    let other = f
        .run(BOB, "return [kv.get('greeting'), kv.list('')];")
        .await;
    assert_eq!(completed(&other), json!([null, []]));
    // The values are in the owner's storage namespace, as UTF-8.
    let stored = f
        .storage
        .call(|reply| storage::Request::Get {
            namespace: ALICE.into(),
            key: "greeting".into(),
            reply,
        })
        .await
        .expect("call")
        .expect("get");
    assert_eq!(stored.data, b"hello");
    let deleted = f
        .run(
            ALICE,
            "return [kv.delete('greeting'), kv.delete('greeting'), kv.get('greeting')];",
        )
        .await;
    assert_eq!(completed(&deleted), json!([true, false, null]));
    // Bad arguments are script errors that say what is expected.
    let bad = f.run(ALICE, "kv.put('k', 42);").await;
    match &bad.ending {
        Ending::Error { name, message, .. } => {
            assert_eq!(name, "TypeError");
            assert!(message.contains("must be a string"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    f.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crypto_signs_with_the_callers_keys_and_verifies() {
    let f = start(|_| {}).await;
    let key = f
        .crypto
        .call(|reply| crypto::Request::Generate {
            owner: ALICE.into(),
            algorithm: crypto::Algorithm::Ed25519,
            reply,
        })
        .await
        .expect("call")
        .expect("generate");
    let alice = Caller {
        owner: ALICE.into(),
        signing_key: Some(key.id.clone()),
        grants: computation::Grants::ALL,
        allowance: None,
        capabilities: computation::Capabilities::Account,
    };
    let outcome = f
        .run_as(
            alice.clone(),
            Program {
                args: common::args(json!({ "key": key.id })),
                ..program(
                    "const s = crypto.sign('hello');
                     const t = crypto.sign('hello', args.key);
                     return [s === t, crypto.verify('hello', s), crypto.verify('other', s),
                             crypto.verify('hello', t, args.key), s.length,
                             crypto.sha256('abc'), crypto.randomBytes(16).length];",
                )
            },
        )
        .await
        .expect("run");
    assert_eq!(
        completed(&outcome),
        json!([
            true,
            true,
            false,
            true,
            88,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            32
        ])
    );
    // No default key: a script error saying what to pass.
    let none = f.run(ALICE, "return crypto.sign('x');").await;
    assert!(
        matches!(&none.ending, Ending::Error { message, .. } if message.contains("keyId")),
        "{none:?}"
    );
    // Bob cannot use Alice's key, even by id.
    let bob = f
        .run_as(
            caller(BOB),
            Program {
                args: common::args(json!({ "key": key.id })),
                ..program("return crypto.sign('x', args.key);")
            },
        )
        .await
        .expect("run");
    assert!(
        matches!(&bob.ending, Ending::Error { message, .. } if message.contains("no key")),
        "{bob:?}"
    );
    let too_many = f.run(ALICE, "return crypto.randomBytes(1025);").await;
    assert!(matches!(&too_many.ending, Ending::Error { name, .. } if name == "RangeError"));
    f.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deterministic_runs_repeat_and_others_do_not() {
    let f = start(|_| {}).await;
    let code = "return [Math.random(), Math.random(), Date.now(), new Date().toISOString(),
                        crypto.randomBytes(16), performance.now(),
                        (Object.getPrototypeOf(Date).now || (() => 'no clock'))(),
                        Date.UTC(2020, 0, 1)];";
    let run = |deterministic: bool| {
        let f = &f;
        async move {
            f.run_as(
                caller(ALICE),
                Program {
                    args: common::args(json!({"n": 1})),
                    deterministic,
                    ..program(code)
                },
            )
            .await
            .expect("run")
        }
    };
    let (a, b) = (run(true).await, run(true).await);
    assert_eq!(completed(&a), completed(&b));
    assert!(a.deterministic);
    assert_eq!(
        a.result.value()[2],
        json!(computation::DETERMINISTIC_NOW_MS)
    );
    assert_eq!(a.result.value()[3], json!("2000-01-01T00:00:00.000Z"));
    // The real clock is not reachable around the fixed one.
    assert_eq!(a.result.value()[6], json!("no clock"));
    assert_eq!(a.result.value()[7], json!(1_577_836_800_000u64));
    // Other args, other randomness.
    let other_args = f
        .run_as(
            caller(ALICE),
            Program {
                args: common::args(json!({"n": 2})),
                deterministic: true,
                ..program(code)
            },
        )
        .await
        .expect("run");
    assert_ne!(completed(&other_args)[0], a.result.value()[0]);
    let (c, d) = (run(false).await, run(false).await);
    assert_ne!(completed(&c)[0], completed(&d)[0]);
    assert_ne!(c.result.value()[4], d.result.value()[4]);
    assert_ne!(c.result.value()[2], a.result.value()[2]);
    f.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_checked_against_their_ceilings() {
    let f = start(|spec| {
        spec.set(&computation::MAX_CODE_BYTES, 100);
        spec.set(&computation::MAX_ARGS_BYTES, 20);
    })
    .await;
    let above = f
        .run_as(
            caller(ALICE),
            Program {
                limits: LimitOverrides {
                    time_ms: Some(60_000),
                    ..Default::default()
                },
                ..program("return 1")
            },
        )
        .await;
    assert_eq!(
        above,
        Err(Error::AboveCeiling {
            what: "time_ms",
            requested: 60_000,
            ceiling: 30_000,
            setting: computation::MAX_TIME_MS.name(),
        })
    );
    let code = f.run_as(caller(ALICE), program(&"1;".repeat(51))).await;
    assert!(
        matches!(code, Err(Error::TooLarge { setting, size: 102, .. }) if setting == computation::MAX_CODE_BYTES.name()),
        "{code:?}"
    );
    let args = f
        .run_as(
            caller(ALICE),
            Program {
                args: common::args(json!("x".repeat(30))),
                ..program("return 1")
            },
        )
        .await;
    assert!(
        matches!(args, Err(Error::TooLarge { setting, .. }) if setting == computation::MAX_ARGS_BYTES.name()),
        "{args:?}"
    );
    // Lower limits than the defaults apply and are reported.
    let small = f
        .run_as(
            caller(ALICE),
            Program {
                limits: LimitOverrides {
                    time_ms: Some(100),
                    output_bytes: Some(10),
                    ..Default::default()
                },
                ..program("return 'abcdefghijklmnop';")
            },
        )
        .await
        .expect("run");
    assert_eq!(
        small.ending,
        Ending::OutputTooLarge {
            size: 18,
            limit: 10
        }
    );
    assert_eq!(small.limits.time_ms, 100);
    f.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_to_completion_and_are_private_to_their_owner() {
    let f = start(|_| {}).await;
    let job = f.submit(ALICE, program("await null; return 6 * 7;")).await;
    assert!(
        job.id.starts_with("job_") && job.id.len() == 36,
        "{}",
        job.id
    );
    assert!(matches!(job.state, JobState::Pending | JobState::Running));
    let done = f.wait(ALICE, &job.id).await.expect("wait");
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(
        done.outcome.as_ref().map(|o| o.result.value()),
        Some(json!(42))
    );
    assert!(done.started_ms.is_some() && done.finished_ms.is_some());
    assert_eq!(f.job(ALICE, &job.id).await, Ok(done.clone()));
    assert_eq!(f.jobs(ALICE).await, vec![done]);

    // Another owner: not found, whatever the request; its list is its own.
    let nf = Err(Error::NotFound(job.id.clone()));
    assert_eq!(f.job(BOB, &job.id).await, nf);
    assert_eq!(f.wait(BOB, &job.id).await, nf);
    assert_eq!(f.cancel(BOB, &job.id).await, nf);
    assert!(f.jobs(BOB).await.is_empty());

    // A failing script is a failed job with its outcome.
    let failing = f.submit(ALICE, program("throw new Error('no');")).await;
    let failed = f.wait(ALICE, &failing.id).await.expect("wait");
    assert_eq!(failed.state, JobState::Failed);

    // Ids are random.
    let mut ids = HashSet::new();
    for _ in 0..5 {
        ids.insert(f.submit(ALICE, program("return 1")).await.id);
    }
    assert_eq!(ids.len(), 5);
    f.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_interrupts_a_running_loop_and_drops_a_pending_one() {
    // One account may hold every worker here (a single-tenant setting), so both loops run.
    let (f, mut puts) = common::start_with_beacon(|spec| {
        spec.set(&computation::ACCOUNT_WORKER_SHARE, 100);
    })
    .await;
    let long = LimitOverrides {
        time_ms: Some(20_000),
        ..Default::default()
    };
    let looping = |code: &str| Program {
        limits: long,
        ..program(code)
    };
    // Both workers busy with loops that swallow everything they can; each says it started with a
    // put, which only a running script can make.
    let a = f
        .submit(
            ALICE,
            looping("kv.put('a', '1'); while (true) { try { for(;;){} } catch (e) {} }"),
        )
        .await;
    let b = f
        .submit(ALICE, looping("kv.put('b', '1'); for (;;) {}"))
        .await;
    let pending = f.submit(ALICE, looping("return 'never'")).await;
    puts.wait_for(|n| *n >= 2)
        .await
        .expect("both loops started");
    assert_eq!(f.pool().await.busy, 2);

    let cancelled = f.cancel(ALICE, &pending.id).await.expect("cancel");
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(cancelled.started_ms.is_none());

    // Cancelled, not timed out at 20 s: the cancel interrupted the loops.
    for id in [&a.id, &b.id] {
        let info = f.cancel(ALICE, id).await.expect("cancel");
        assert_eq!(info.state, JobState::Cancelled, "{info:?}");
        assert_eq!(
            info.outcome.as_ref().map(|o| &o.ending),
            Some(&Ending::Cancelled { abandoned: false })
        );
    }
    // The workers are free again and serve the next run.
    assert_eq!(
        completed(&f.run(ALICE, "return 'next'").await),
        json!("next")
    );
    let pool = f.pool().await;
    assert_eq!((pool.size, pool.live, pool.busy), (2, 2, 0), "{pool:?}");
    assert_eq!(pool.abandoned_running, 0);
    // Cancelling a finished job changes nothing.
    assert_eq!(
        f.cancel(ALICE, &a.id).await.expect("cancel").state,
        JobState::Cancelled
    );
    f.rt.shutdown().await;
}

/// A synchronous run lives within its caller's deadline: its capability calls inherit it, and the
/// run stops when it passes, so a caller that gave up does not hold a worker for the run's whole
/// time limit. With one worker, the next run (whose own deadline is shorter than the first run's
/// time limit) can only be served if the first stopped with its caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_ends_with_its_callers_deadline_in_a_capability_call_or_a_loop() {
    let (f, mut puts) = common::start_with_beacon(|spec| spec.resources.cpu_cores = 1).await;
    let long = LimitOverrides {
        time_ms: Some(20_000),
        ..Default::default()
    };
    let scripts = [
        // Blocked in a storage read that is never answered.
        format!(
            "kv.put('a', '1'); kv.get('{}'); return 'unreachable';",
            common::HANG
        ),
        // A loop that swallows what it can.
        "kv.put('a', '1'); while (true) { try { for (;;) {} } catch (e) {} }".to_owned(),
    ];
    for (i, code) in scripts.iter().enumerate() {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
        let gave_up = f
            .computation
            .call_by(deadline, |reply| Request::Run {
                caller: caller(ALICE),
                program: Program {
                    limits: long,
                    ..program(code)
                },
                reply,
            })
            .await;
        // The caller hears within its deadline: its own timeout, or the run's retryable error if
        // that got there first.
        match gave_up {
            Err(runtime::CallError::DeadlineExceeded { .. }) | Ok(Err(Error::DeadlinePassed)) => {}
            other => panic!("{code}: {other:?}"),
        }
        puts.wait_for(|n| *n > i as u64)
            .await
            .expect("the script ran");
        // The one worker is free long before the first run's 20 s: the next run is served within
        // a deadline of 15 s.
        let next = f
            .computation
            .call_by(
                tokio::time::Instant::now() + std::time::Duration::from_secs(15),
                |reply| Request::Run {
                    caller: caller(ALICE),
                    program: program("return 'next'"),
                    reply,
                },
            )
            .await
            .expect("the worker was freed when the caller's deadline passed")
            .expect("run");
        assert_eq!(completed(&next), json!("next"));
    }
    f.rt.shutdown().await;
}

/// A run going when its incarnation stops did not finish by anyone's choice: its caller gets the
/// retryable `computation.interrupted`, not a `cancelled` outcome that reads as final.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_cut_short_by_a_restart_is_a_retryable_error() {
    let (f, mut puts) = common::start_with_beacon(|_| {}).await;
    let computation = f.computation.clone();
    let run = tokio::spawn(async move {
        computation
            .call(|reply| Request::Run {
                caller: caller(ALICE),
                program: Program {
                    limits: LimitOverrides {
                        time_ms: Some(20_000),
                        ..Default::default()
                    },
                    ..program("kv.put('a', '1'); for (;;) {}")
                },
                reply,
            })
            .await
    });
    puts.wait_for(|n| *n >= 1).await.expect("the script ran");
    f.rt.client()
        .restart(&computation::NAME)
        .await
        .expect("restart");
    let answer = run.await.expect("join").expect("call");
    let error = answer.expect_err("an interrupted run is an error");
    assert_eq!(error, Error::Interrupted);
    assert_eq!(
        runtime::Classify::kind(&error),
        runtime::ErrorKind::Unavailable {
            retry_after: std::time::Duration::from_secs(1)
        }
    );
    // The next incarnation serves.
    assert_eq!(completed(&f.run(ALICE, "return 1").await), json!(1));
    f.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_are_kept_up_to_the_bound_per_owner() {
    let f = start(|spec| {
        spec.set(&computation::MAX_FINISHED_JOBS, 3);
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let job = f.submit(ALICE, program(&format!("return {i};"))).await;
        f.wait(ALICE, &job.id).await.expect("wait");
        ids.push(job.id);
    }
    let bob = f.submit(BOB, program("return 'b';")).await;
    f.wait(BOB, &bob.id).await.expect("wait");
    let kept: Vec<String> = f.jobs(ALICE).await.into_iter().map(|j| j.id).collect();
    assert_eq!(kept, ids[2..].to_vec());
    assert_eq!(
        f.job(ALICE, &ids[0]).await,
        Err(Error::NotFound(ids[0].clone()))
    );
    // Another owner's jobs do not count against Alice's bound.
    assert_eq!(f.jobs(BOB).await.len(), 1);
    f.rt.shutdown().await;
}

/// Attack (#14): three jobs returning large arrays used to take the process from 26 MB to 840 MB,
/// each result kept as a tree of JSON values. A result is kept as its JSON text, and what an
/// account's finished jobs keep is bounded: a flood of large results drops the flooder's own
/// oldest, never another account's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_keep_their_results_within_the_byte_bounds() {
    const MIB: u64 = 1 << 20;
    let f = start(|spec| {
        spec.set(&computation::MAX_KEPT_BYTES_PER_ACCOUNT, 2 * MIB);
        spec.set(&computation::MAX_KEPT_BYTES, 3 * MIB);
    })
    .await;
    // About 800 KB of JSON each: `[1,1,1,...]`.
    let large = "return new Array(400000).fill(1);";
    let bob = f.submit(BOB, program(large)).await;
    let bob = f.wait(BOB, &bob.id).await.expect("wait");
    assert_eq!(bob.state, JobState::Completed, "{:?}", bob.error);
    let text = &bob.outcome.as_ref().expect("outcome").result;
    assert_eq!(text.len(), 800_001, "kept as the script's JSON text");
    let mut ids = Vec::new();
    for _ in 0..6 {
        let job = f.submit(ALICE, program(large)).await;
        let done = f.wait(ALICE, &job.id).await.expect("wait");
        assert_eq!(done.state, JobState::Completed);
        ids.push(job.id);
    }
    // Two of Alice's fit in her 2 MiB; with Bob's 800 KB the total (3 MiB) holds them too.
    let kept: Vec<String> = f.jobs(ALICE).await.into_iter().map(|j| j.id).collect();
    assert_eq!(kept, ids[4..].to_vec());
    assert_eq!(
        f.job(ALICE, &ids[0]).await,
        Err(Error::NotFound(ids[0].clone()))
    );
    let bob_kept = f.job(BOB, &bob.id).await.expect("bob's job is kept");
    assert_eq!(bob_kept.outcome.expect("outcome").result.len(), 800_001);
    f.rt.shutdown().await;
}

/// Attack (#14): six looping jobs of one account used to hold both workers and the head of the
/// queue, so another account's `return 1` waited a minute and failed. An account holds at most its
/// share of the workers (one of two by default) and accounts take turns in the queue: Bob is
/// served while Mallory's loops run, well before the first of them could end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_account_is_served_while_the_first_floods_the_pool() {
    let (f, mut puts) = common::start_with_beacon(|_| {}).await;
    let looping = Program {
        limits: LimitOverrides {
            time_ms: Some(25_000),
            ..Default::default()
        },
        ..program("kv.put('loop', '1'); for (;;) {}")
    };
    let mut flood = Vec::new();
    for _ in 0..6 {
        flood.push(f.submit("mallory", looping.clone()).await);
    }
    puts.wait_for(|n| *n >= 1).await.expect("a loop started");
    // Before any of the loops could end (25 s), Bob's run has its answer.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    let bob = f
        .computation
        .call_by(deadline, |reply| Request::Run {
            caller: caller(BOB),
            program: program("return 1"),
            reply,
        })
        .await
        .expect("answered before the deadline")
        .expect("run");
    assert_eq!(completed(&bob), json!(1));
    // Mallory holds one worker; the other is free again, and her five other runs wait.
    let pool = f.pool().await;
    assert_eq!((pool.busy, pool.idle, pool.queued), (1, 1, 5), "{pool:?}");
    let running: Vec<_> = f
        .jobs("mallory")
        .await
        .into_iter()
        .filter(|j| j.state == JobState::Running)
        .collect();
    assert_eq!(running.len(), 1, "{running:?}");
    f.rt.shutdown().await;
}

/// Attack (#14): a script's capability calls were free, so one request could make thousands of
/// storage and signing calls past the account's rate limit. Each call on the account's data takes
/// a token from the account's bucket, as a request does: past the burst the call throws (a
/// RangeError naming the limit), and the account's own next request finds the bucket empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_calls_count_against_the_accounts_rate_limit() {
    use runtime::rate::{Allowance, Limiter, Rate};
    let f = start(|_| {}).await;
    let limiter = std::sync::Arc::new(Limiter::new(16));
    // A slow refill: the burst is all the run can use.
    let rate = Rate {
        per_second: 0.001,
        burst: 3.0,
    };
    let alice = Caller {
        allowance: Some(Allowance::new(limiter.clone(), ALICE, rate)),
        ..caller(ALICE)
    };
    let script = "const seen = []; \
        for (let i = 0; i < 6; i++) { \
            try { kv.get('k'); seen.push('ok'); } catch (e) { seen.push(e.name + ': ' + e.message); } \
        } \
        return seen;";
    let outcome = f.run_as(alice, program(script)).await.expect("run");
    let seen = completed(&outcome);
    let seen: Vec<&str> = seen
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(seen[..3], ["ok", "ok", "ok"], "{seen:?}");
    for refused in &seen[3..] {
        assert!(
            refused.starts_with("RangeError: kv.get: the account is over its rate limit")
                && refused.contains("rate_per_second"),
            "{refused}"
        );
    }
    // The same bucket the account's requests use: empty now.
    assert!(
        limiter
            .admit(ALICE, rate, std::time::Instant::now())
            .is_err()
    );
    // Another account's bucket is its own.
    let bob = Caller {
        allowance: Some(Allowance::new(limiter.clone(), BOB, rate)),
        ..caller(BOB)
    };
    let outcome = f
        .run_as(bob, program("kv.get('k'); return 'served';"))
        .await
        .expect("run");
    assert_eq!(completed(&outcome), json!("served"));
    f.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_is_sized_by_cpu_cores() {
    let f = start(|spec| spec.resources.cpu_cores = 3).await;
    let pool = f.pool().await;
    assert_eq!((pool.size, pool.live, pool.idle), (3, 3, 3), "{pool:?}");
    f.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_can_do_no_more_than_its_callers_token() {
    let f = start(|_| {}).await;
    let reader = Caller {
        grants: computation::Grants {
            kv_get: true,
            kv_put: false,
            kv_delete: false,
            kv_list: false,
            sign: false,
            verify: false,
        },
        ..caller(ALICE)
    };
    let attempt = |call: &str| {
        format!("try {{ {call}; return 'allowed'; }} catch (e) {{ return String(e.message); }}")
    };
    for (call, scope) in [
        ("kv.put('k', 'v')", "storage:put"),
        ("kv.delete('k')", "storage:delete"),
        ("kv.list('')", "storage:list"),
        ("crypto.sign('m', 'key_x')", "crypto:sign"),
        ("crypto.verify('m', 'c2ln', 'key_x')", "crypto:verify"),
    ] {
        let outcome = f
            .run_as(reader.clone(), program(&attempt(call)))
            .await
            .expect("run");
        let message = completed(&outcome).as_str().unwrap_or_default().to_owned();
        assert!(message.contains(scope), "{call}: {message}");
    }
    let outcome = f
        .run_as(
            reader,
            program("return [kv.get('k'), crypto.sha256('a').length, crypto.randomBytes(2)];"),
        )
        .await
        .expect("run");
    assert_eq!(completed(&outcome)[0], serde_json::Value::Null);
    assert_eq!(completed(&outcome)[1], json!(64));
    f.rt.shutdown().await;
}

/// A run without capabilities (an oracle extraction script) reaches nothing of its owner's: every
/// way of reading `kv` or `crypto` (directly, by a computed name, under `try`, after an `await`,
/// from `toJSON` while the result is serialized, after trying to delete it) ends the run as
/// `capability_refused`, never with the value behind it. `console` is there, and deterministic
/// mode fixes the clock and seeds `Math.random` as for any run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_without_capabilities_reaches_nothing_of_its_owner() {
    let f = start(|_| {}).await;
    let put = f
        .run(ALICE, "kv.put('secret', 'alice-only'); return 1")
        .await;
    assert_eq!(completed(&put), json!(1));
    let bare = Caller {
        grants: computation::Grants::NONE,
        capabilities: computation::Capabilities::None,
        ..caller(ALICE)
    };
    for (code, capability) in [
        ("return kv.get('secret')", "kv"),
        (
            "try { return kv.get('secret') } catch (e) { return 'caught' }",
            "kv",
        ),
        (
            "try { globalThis['k' + 'v'].get('secret') } catch (e) {} return 1",
            "kv",
        ),
        (
            "try { return crypto.sha256('a') } catch (e) { return 'caught' }",
            "crypto",
        ),
        ("try { crypto.sign('m') } catch (e) {} return 2", "crypto"),
        (
            "await Promise.resolve(); try { kv.list('') } catch (e) {} return 3",
            "kv",
        ),
        (
            "return { toJSON() { try { kv.get('secret') } catch (e) {} return 4 } }",
            "kv",
        ),
        ("delete globalThis.kv; return typeof kv", "kv"),
    ] {
        let outcome = f.run_as(bare.clone(), program(code)).await.expect("run");
        assert_eq!(
            outcome.ending,
            Ending::CapabilityRefused {
                capability: capability.into()
            },
            "{code}: {outcome:#?}"
        );
        assert_eq!(outcome.result.value(), serde_json::Value::Null, "{code}");
        assert_eq!(outcome.ending.code(), "capability_refused");
    }
    let outcome = f
        .run_as(
            bare,
            Program {
                deterministic: true,
                ..program("console.log('seen'); return [Date.now(), Math.random() < 1, typeof JSON.parse]")
            },
        )
        .await
        .expect("run");
    assert_eq!(
        completed(&outcome),
        json!([computation::DETERMINISTIC_NOW_MS, true, "function"])
    );
    assert_eq!(outcome.console.len(), 1);
    f.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_cannot_take_the_whole_pool() {
    let f = start(|spec| {
        spec.set(&computation::MAX_ACTIVE_PER_ACCOUNT, 1);
    })
    .await;
    let looping = Program {
        limits: LimitOverrides {
            time_ms: Some(20_000),
            ..Default::default()
        },
        ..program("for (;;) {}")
    };
    let job = f.submit(ALICE, looping).await;
    let refused = f
        .run_as(caller(ALICE), program("return 1"))
        .await
        .expect_err("alice is at her share");
    assert_eq!(refused, Error::TooManyActive { active: 1 });
    assert!(refused.to_string().contains("max_active_per_account"));
    // Bob is not held up by alice.
    assert_eq!(completed(&f.run("bob", "return 2").await), json!(2));
    let info = f.cancel(ALICE, &job.id).await.expect("cancel");
    assert_eq!(info.state, JobState::Cancelled);
    assert_eq!(completed(&f.run(ALICE, "return 3").await), json!(3));
    f.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_stops_every_run_of_the_owner_and_forgets_its_jobs() {
    let (f, mut puts) = common::start_with_beacon(|_| {}).await;
    let looping = Program {
        limits: LimitOverrides {
            time_ms: Some(20_000),
            ..Default::default()
        },
        ..program("for (;;) { kv.put('still', 'here'); }")
    };
    let running = f.submit(ALICE, looping.clone()).await;
    let queued = f.submit(ALICE, looping).await;
    let finished = f.submit("bob", program("return 1")).await;
    // Its first put: the loop is running.
    puts.wait_for(|n| *n >= 1).await.expect("the loop started");
    f.computation
        .call(|reply| Request::Purge {
            owner: ALICE.into(),
            reply,
        })
        .await
        .expect("purged");
    // Bob's job is untouched (and, once finished, not counted as busy below).
    let bob = f.wait("bob", &finished.id).await.expect("bob's job");
    assert_eq!(bob.state, JobState::Completed);
    // Answered only once nothing of alice's runs any more.
    let pool = f.pool().await;
    assert_eq!((pool.busy, pool.queued), (0, 0), "{pool:?}");
    // Stopped by the cancel itself (capability calls check it), not given up on by the watchdog.
    assert_eq!(pool.abandoned_running, 0, "{pool:?}");
    for id in [&running.id, &queued.id] {
        assert!(matches!(f.job(ALICE, id).await, Err(Error::NotFound(_))));
    }
    assert!(f.jobs(ALICE).await.is_empty());
    f.rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_change_live_and_ceilings_only_at_start() {
    let f = start(|_| {}).await;
    let mut spec = computation::Computation::default_spec();
    spec.recovery.strategy = runtime::Strategy::Manual;
    let operator = || runtime::journal::Cause::Operator {
        command: "test".into(),
    };

    // A ceiling is refused, and nothing changes.
    let mut raised = spec.clone();
    raised.set(
        &computation::MAX_TIME_MS,
        std::time::Duration::from_secs(10),
    );
    let refused =
        f.rt.client()
            .reconfigure(vec![raised], Default::default(), operator())
            .await
            .expect_err("a ceiling is read at start only");
    assert!(refused.to_string().contains("max_time_ms"), "{refused}");
    assert!(
        refused.to_string().contains("read at start only"),
        "{refused}"
    );

    // A default applies to the next run, without a restart.
    let mut quicker = spec.clone();
    quicker.set(
        &computation::DEFAULT_TIME_MS,
        std::time::Duration::from_millis(150),
    );
    f.rt.client()
        .reconfigure(vec![quicker], Default::default(), operator())
        .await
        .expect("a default changes live");
    // The incarnation reads its live spec with the next request.
    let outcome = f.run(ALICE, "while (true) {}").await;
    assert_eq!(outcome.limits.time_ms, 150);
    assert_eq!(outcome.ending, Ending::TimedOut { abandoned: false });
    f.rt.shutdown().await;
}
