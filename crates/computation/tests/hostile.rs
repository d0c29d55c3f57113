//! A corpus of hostile scripts, each run through the service with small limits. Every one must end
//! with a typed ending within twice its time limit, the service must keep serving after each, and
//! nothing one run does to the injected API may be seen by the next. Afterwards the pool is back at
//! full size and the process's resident memory is back near where it started.

mod common;

use std::time::{Duration, Instant};

use common::{caller, program, start};
use computation::{Ending, Error, LimitOverrides, Program};
use serde_json::json;

const TIME_MS: u64 = 300;
const MEMORY: u64 = 16 << 20;
const CONSOLE: u64 = 4 << 10;
const OUTPUT: u64 = 64 << 10;
/// Resident memory may grow this much over the whole corpus (the allocator keeps some of what it
/// freed), plus one run's memory limit for each abandoned worker still stuck in its builtin.
const RSS_TOLERANCE_KIB: u64 = 64 << 10;

/// One hostile script: its name, its code, the endings it may come to, and the result it must
/// have if it completes.
struct Case {
    name: &'static str,
    code: &'static str,
    endings: &'static [&'static str],
    result: Option<serde_json::Value>,
}

const fn case(name: &'static str, code: &'static str, endings: &'static [&'static str]) -> Case {
    Case {
        name,
        code,
        endings,
        result: None,
    }
}

const TIMED_OUT: &[&str] = &["timed_out"];
const MEMORY_LIMIT: &[&str] = &["memory_limit"];
const STACK: &[&str] = &["stack_overflow"];
const ERROR: &[&str] = &["error"];
const COMPLETED: &[&str] = &["completed"];

fn corpus() -> Vec<Case> {
    vec![
        // Infinite loops.
        case("loop while", "while (true) {}", TIMED_OUT),
        case("loop for", "for (;;) {}", TIMED_OUT),
        case(
            "loop swallowing the interrupt",
            "while (true) { try { while (true) {} } catch (e) {} }",
            TIMED_OUT,
        ),
        case(
            "loop in finally",
            "while (true) { try { for (;;) {} } finally { while (true) {} } }",
            TIMED_OUT,
        ),
        case(
            "loop in an awaited promise job",
            "await Promise.resolve().then(() => { while (true) {} });",
            TIMED_OUT,
        ),
        case(
            "loop in a job left behind",
            "Promise.resolve().then(() => { for (;;) {} }); return 1;",
            TIMED_OUT,
        ),
        case(
            "async function awaiting forever",
            "async function f() { while (true) { await null; } } await f();",
            TIMED_OUT,
        ),
        case(
            "microtask flood",
            "const f = () => queueMicrotask(f); f(); await new Promise(() => {});",
            TIMED_OUT,
        ),
        case(
            "infinite generator",
            "function* g() { while (true) yield 1; } for (const x of g()) {}",
            TIMED_OUT,
        ),
        case(
            "sort comparator that loops",
            "[3, 2, 1].sort(() => { for (;;) {} });",
            TIMED_OUT,
        ),
        // Recursion.
        case("deep recursion", "function f() { return f(); } f();", STACK),
        case(
            "recursion through a getter",
            "const o = { get x() { return this.x; } }; return o.x;",
            STACK,
        ),
        case(
            "recursion that catches its overflow and recurses again",
            "function f() { try { return f(); } catch (e) { return f(); } } f();",
            &["stack_overflow", "timed_out"],
        ),
        case(
            "async recursion",
            "const f = async () => f(); await f();",
            STACK,
        ),
        // Memory bombs.
        case(
            "array growth",
            "const a = []; while (true) a.push(new Array(100000).fill(1));",
            MEMORY_LIMIT,
        ),
        case(
            "string doubling",
            "let s = 'x'; while (true) s = s + s;",
            // QuickJS concatenates by ropes; the string's length bound may come first.
            &["memory_limit", "error"],
        ),
        case(
            "string doubling, flattened",
            "let s = 'xy'; while (true) { s = s + s; s.indexOf('z'); }",
            &["memory_limit", "error"],
        ),
        case("huge repeat", "return 'x'.repeat(2 ** 29).length;", &["memory_limit", "error"]),
        case(
            "typed arrays",
            "const a = []; while (true) a.push(new Uint8Array(1 << 20));",
            MEMORY_LIMIT,
        ),
        case(
            "one huge typed array",
            "return new Float64Array(1e9).length;",
            &["memory_limit", "error"],
        ),
        case(
            "map of objects",
            "const m = new Map(); for (let i = 0; ; i++) m.set('k' + i, { i });",
            MEMORY_LIMIT,
        ),
        case(
            "object with endless properties",
            "const o = {}; for (let i = 0; ; i++) o['p' + i] = i;",
            MEMORY_LIMIT,
        ),
        // Builtins that may not poll for interrupts: the watchdog's.
        case(
            "indexOf over a huge array-like",
            "return Array.prototype.indexOf.call({ length: 2 ** 32 - 1 }, 1);",
            TIMED_OUT,
        ),
        case(
            "lastIndexOf over a huge array-like",
            "return Array.prototype.lastIndexOf.call({ length: 2 ** 53 - 1 }, 1);",
            TIMED_OUT,
        ),
        case(
            "includes over a huge array-like",
            "return Array.prototype.includes.call({ length: 2 ** 53 - 1 }, 1);",
            TIMED_OUT,
        ),
        case(
            "catastrophic regex",
            "return /(a+)+$/.test('a'.repeat(40) + '!');",
            TIMED_OUT,
        ),
        // Huge JSON.
        case(
            "parse of deep nesting",
            "return JSON.parse('['.repeat(1e6) + ']'.repeat(1e6));",
            &["stack_overflow", "error"],
        ),
        case(
            "result of deep nesting",
            "let o = []; for (let i = 0; i < 1e6; i++) o = [o]; return o;",
            &["stack_overflow", "not_serializable", "memory_limit"],
        ),
        case("BigInt result", "return 10n;", &["not_serializable"]),
        // Reaching for the host.
        case("require", "return require('fs');", ERROR),
        case("dynamic import", "return await import('os');", ERROR),
        case("static import", "import * as os from 'os';", &["syntax_error"]),
        case("process.exit", "process.exit(1);", ERROR),
        case("Atomics.wait", "Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);", ERROR),
        Case {
            result: Some(json!(["undefined", "undefined", "undefined", "undefined"])),
            ..case(
                "std and os globals",
                "return [typeof globalThis.std, typeof globalThis.os, typeof scriptArgs, typeof print];",
                COMPLETED,
            )
        },
        Case {
            result: Some(json!([])),
            ..case(
                "global object through the Function constructor",
                "const g = this?.constructor?.constructor('return this')() ?? Function('return this')();
                 return Object.getOwnPropertyNames(g).filter(n =>
                   ['std', 'os', 'require', 'process', 'Deno', 'Bun', 'scriptArgs', 'print', 'bjson'].includes(n));",
                COMPLETED,
            )
        },
        Case {
            result: Some(json!(["undefined", "undefined"])),
            ..case(
                "std through Function and eval",
                "return [Function('return typeof std')(), eval('typeof os')];",
                COMPLETED,
            )
        },
        // Prototype pollution and tampering with the injected API (the probe after each checks
        // that none of it reaches the next run).
        case(
            "pollute Object.prototype and Array.prototype",
            "Object.prototype.polluted = 1; Array.prototype.push = null; return 1;",
            COMPLETED,
        ),
        case(
            "overwrite kv.get",
            "'use strict'; kv.get = () => 'evil';",
            ERROR,
        ),
        case(
            "overwrite crypto.sign and redefine crypto",
            "crypto.sign = () => 'x'; Object.defineProperty(globalThis, 'crypto', { value: {} });",
            ERROR,
        ),
        case(
            "overwrite console.log and delete console",
            "console.log = null; delete globalThis.console; console.log('still here'); return 1;",
            COMPLETED,
        ),
        Case {
            result: Some(json!({"a": 1})),
            ..case(
                "tamper with Function.prototype and JSON",
                "Function.prototype.call = () => { throw 1; }; Function.prototype.apply = null;
                 JSON.stringify = () => { while (true) {} }; return { a: 1 };",
                COMPLETED,
            )
        },
        case(
            "toJSON that throws",
            "Object.prototype.toJSON = function () { throw new Error('boom'); }; return {};",
            &["not_serializable"],
        ),
        case(
            "toJSON that loops",
            "Object.prototype.toJSON = function () { while (true) {} }; return {};",
            TIMED_OUT,
        ),
        case(
            "then getter that loops",
            "Object.defineProperty(Object.prototype, 'then', { get() { while (true) {} } }); return {};",
            TIMED_OUT,
        ),
        case(
            "error message getter that loops",
            "const e = new Error('x'); Object.defineProperty(e, 'message', { get() { for (;;) {} } }); throw e;",
            TIMED_OUT,
        ),
        case(
            "prepareStackTrace that loops",
            "Error.prepareStackTrace = () => { for (;;) {} }; null.x;",
            TIMED_OUT,
        ),
        case(
            "proxy result whose traps loop",
            "return new Proxy({}, { ownKeys() { for (;;) {} } });",
            TIMED_OUT,
        ),
        case(
            "finalizer that loops",
            "new FinalizationRegistry(() => { for (;;) {} }).register({}, 1); return 1;",
            &["completed", "timed_out"],
        ),
        // Console and output.
        case(
            "console flood",
            "while (true) console.log('flood flood flood');",
            &["console_limit"],
        ),
        case(
            "console flood swallowing its errors",
            "while (true) { try { console.log('x'.repeat(100)); } catch (e) {} }",
            &["console_limit"],
        ),
        case(
            "one huge console line",
            "console.error('x'.repeat(1e6));",
            &["console_limit"],
        ),
        case(
            "output too large",
            "return 'x'.repeat(100000);",
            &["output_too_large"],
        ),
        // Last, since the watchdog leaves their threads running for seconds after it answered:
        // builtins that do not poll for interrupts, and a loop whose every step is a full GC.
        case("join of a billion holes", "return new Array(1e9).join();", &["memory_limit", "timed_out"]),
        case(
            "join of holes without a separator",
            "return new Array(1.5e8).join('');",
            TIMED_OUT,
        ),
        case(
            "stringify of a huge shared structure",
            "let o = [1]; for (let i = 0; i < 40; i++) o = [o, o]; return JSON.stringify(o).length;",
            &["memory_limit", "timed_out", "error"],
        ),
        case(
            "memory bomb that swallows its out-of-memory errors",
            "const a = []; while (true) { try { a.push(new Array(100000).fill(1)); } catch (e) {} }",
            &["timed_out", "memory_limit"],
        ),
    ]
}

fn limits() -> LimitOverrides {
    LimitOverrides {
        time_ms: Some(TIME_MS),
        memory_bytes: Some(MEMORY),
        stack_bytes: None,
        output_bytes: Some(OUTPUT),
        console_bytes: Some(CONSOLE),
    }
}

/// Checks, in a fresh run, that the injected API and the intrinsics are pristine.
const PROBE: &str = "
  const native = (f) => typeof f === 'function' && /\\[native code\\]/.test(Function.prototype.toString.call(f));
  return [
    Object.prototype.polluted === undefined,
    Object.prototype.toJSON === undefined,
    Object.prototype.then === undefined,
    typeof Array.prototype.push === 'function',
    typeof Function.prototype.call === 'function',
    native(kv.get), native(kv.put), native(crypto.sign), native(console.log),
    Object.isFrozen(kv) && Object.isFrozen(crypto) && Object.isFrozen(console),
    JSON.stringify({ a: [1] }) === '{\"a\":[1]}',
    Error.prepareStackTrace === undefined,
  ].every(Boolean);
";

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_scripts_end_in_time_with_a_typed_ending() {
    let f = start(|_| {}).await;
    let me = caller("mallory");
    // Warm up, then take the baseline.
    for _ in 0..3 {
        assert_eq!(f.run("mallory", PROBE).await.result, json!(true));
    }
    let baseline = rss_kib();
    let corpus = corpus();
    assert!(corpus.len() >= 40, "{} cases", corpus.len());
    let mut failures = Vec::new();
    let mut abandoned = 0;
    for case in &corpus {
        let started = Instant::now();
        let outcome = f
            .run_as(
                me.clone(),
                Program {
                    limits: limits(),
                    ..program(case.code)
                },
            )
            .await;
        let elapsed = started.elapsed();
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{}: refused: {e}", case.name));
                continue;
            }
        };
        let code = outcome.ending.code();
        if !case.endings.contains(&code) {
            failures.push(format!(
                "{}: ended {:?}, expected one of {:?}",
                case.name, outcome.ending, case.endings
            ));
        }
        if elapsed > Duration::from_millis(2 * TIME_MS) {
            failures.push(format!(
                "{}: took {elapsed:?}, more than twice its limit of {TIME_MS} ms ({:?})",
                case.name, outcome.ending
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
        eprintln!(
            "{:<55} {:<18} {:>5} ms  peak {:>9} B",
            case.name,
            code,
            elapsed.as_millis(),
            outcome.memory_peak_bytes
        );
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
        matches!(big_args, Err(Error::TooLarge { setting, .. }) if setting == computation::MAX_ARGS_BYTES),
        "{big_args:?}"
    );
    let big_code = f
        .run_as(me.clone(), program(&" ".repeat((1 << 20) + 1)))
        .await;
    assert!(
        matches!(big_code, Err(Error::TooLarge { setting, .. }) if setting == computation::MAX_CODE_BYTES),
        "{big_code:?}"
    );

    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The pool is at full size: abandoned workers were replaced (they may still be finishing).
    let pool = f.pool().await;
    eprintln!("{pool:?}");
    assert_eq!(pool.live, pool.size, "{pool:?}");
    assert_eq!(pool.size, 2);
    assert!(pool.replaced_total >= abandoned, "{pool:?}");
    assert_eq!(
        completed_value(&f.run("mallory", "return 1 + 1").await),
        json!(2)
    );

    let rss = rss_kib();
    eprintln!("VmRSS: baseline {baseline} KiB, after {rss} KiB");
    let stuck = pool.abandoned_running as u64 * (MEMORY >> 10);
    assert!(
        rss <= baseline + RSS_TOLERANCE_KIB + stuck,
        "resident memory grew from {baseline} KiB to {rss} KiB ({} workers still stuck)",
        pool.abandoned_running
    );
    f.rt.shutdown().await;
}

fn completed_value(outcome: &computation::Outcome) -> serde_json::Value {
    assert_eq!(outcome.ending, Ending::Completed, "{outcome:?}");
    outcome.result.clone()
}
