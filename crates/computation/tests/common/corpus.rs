//! The corpus of hostile scripts that `tests/hostile.rs` runs for their endings and
//! `benches/hostile.rs` for their timings: each with small limits, the endings it may come to and
//! the result it must have if it completes.

#![allow(dead_code, unreachable_pub)]

use computation::{Ending, LimitOverrides};
use serde_json::json;

pub const TIME_MS: u64 = 300;
pub const MEMORY: u64 = 16 << 20;
pub const CONSOLE: u64 = 4 << 10;
pub const OUTPUT: u64 = 64 << 10;

/// One hostile script: its name, its code, the endings it may come to (their codes, see
/// [`ends_as`]), and the result it must have if it completes.
pub struct Case {
    pub name: &'static str,
    pub code: &'static str,
    pub endings: &'static [&'static str],
    pub result: Option<serde_json::Value>,
}

/// Whether `ending` is the one `expected` names: an ending's code, or `abandoned` for a time-out
/// that only the watchdog could end (it gave the worker up).
pub fn ends_as(ending: &Ending, expected: &str) -> bool {
    match (expected, ending) {
        ("abandoned", Ending::TimedOut { abandoned }) => *abandoned,
        (code, ending) => code == ending.code(),
    }
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
const ABANDONED: &[&str] = &["abandoned"];

/// A script that only the watchdog can end: `join` never polls for interrupts, and over an
/// array-like of 2^53 - 1 holes with an empty separator it neither allocates nor returns for years
/// on any machine. Its worker thread spins until the process exits.
pub const STUCK_IN_A_BUILTIN: &str =
    "return Array.prototype.join.call({ length: 2 ** 53 - 1 }, '');";

pub fn corpus() -> Vec<Case> {
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
        // Builtins that loop over a huge array-like (QuickJS-ng polls for interrupts in these).
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
        // Exhaustion where the script's own code cannot see it (issue #18 item 6): after its
        // result settled, in microtasks and promise reactions, in code the serializer of the
        // result runs. Each names the one ending it must come to.
        case(
            "memory runs out in a promise chain after the result settled",
            "const grow = (keep) => Promise.resolve().then(() => grow([keep, new Array(10000).fill(0)]));
             grow(null); return 'settled';",
            MEMORY_LIMIT,
        ),
        case(
            "memory runs out in microtasks after the result settled",
            "const keep = []; const f = () => { keep.push(new Array(10000).fill(0)); queueMicrotask(f); };
             queueMicrotask(f); return 'settled';",
            MEMORY_LIMIT,
        ),
        case(
            "memory runs out in promise reactions no one awaits",
            "const keep = [];
             Promise.resolve().then(function f() { keep.push(new Array(10000).fill(0)); Promise.resolve().then(f); });
             return 'settled';",
            MEMORY_LIMIT,
        ),
        case(
            "stack runs out in a microtask after the result settled",
            "queueMicrotask(() => { const f = () => f(); f(); }); return 'settled';",
            STACK,
        ),
        Case {
            result: Some(json!("settled")),
            ..case(
                "an ordinary error in a microtask does not end the run",
                "queueMicrotask(() => { throw new Error('not a limit'); }); return 'settled';",
                COMPLETED,
            )
        },
        case(
            "memory runs out in a getter the serializer calls",
            "return { get big() { const a = []; for (;;) a.push(new Array(10000).fill(0)); } };",
            MEMORY_LIMIT,
        ),
        case(
            "memory runs out in toJSON",
            "return { toJSON() { const a = []; for (;;) a.push(new Array(10000).fill(0)); } };",
            MEMORY_LIMIT,
        ),
        case(
            "time runs out in a getter the serializer calls",
            "return { get x() { for (;;) {} } };",
            TIMED_OUT,
        ),
        case(
            "deep recursion in toJSON",
            "return { toJSON() { const f = () => f(); return f(); } };",
            STACK,
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
        // Last of all, since its thread never comes back.
        case("stuck in a builtin", STUCK_IN_A_BUILTIN, ABANDONED),
    ]
}

pub fn limits() -> LimitOverrides {
    LimitOverrides {
        time_ms: Some(TIME_MS),
        memory_bytes: Some(MEMORY),
        stack_bytes: None,
        output_bytes: Some(OUTPUT),
        console_bytes: Some(CONSOLE),
    }
}

/// A finalizer that allocates until the heap runs out, for every one of many objects dropped at
/// once; QuickJS frees them by reference count, so their callbacks are queued as jobs at once.
pub const FINALIZER_BOMB: &str = "
  const keep = [];
  const registry = new FinalizationRegistry(() => { for (;;) keep.push(new Array(10000).fill(0)); });
  for (let i = 0; i < 100; i++) registry.register({}, i);
  return 'settled';
";

/// Whether a finalization callback runs within a run: `true` if it ran before the script's
/// result settled, `false` if not.
pub const FINALIZER_PROBE: &str = "
  let ran = false;
  const registry = new FinalizationRegistry(() => { ran = true; });
  registry.register({}, 1);
  for (let i = 0; i < 10; i++) await null;
  return ran;
";

/// Checks, in a fresh run, that the injected API and the intrinsics are pristine.
pub const PROBE: &str = "
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
