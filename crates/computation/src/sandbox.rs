//! One run of a script: a fresh QuickJS runtime and context with the run's limits, the capability
//! API, the script as the body of an async function, and the [`Outcome`] it came to.
//!
//! The convention: the code is the body of an `async function (args)`. What it `return`s (after
//! `await`, if it is a promise) is the result; a script without `return` has the result `null`.
//! `args` is also a global. Once the returned promise settles, the job queue is drained (as Node
//! does before it exits), so work a script left queued still runs and still counts against the
//! limits. A fresh runtime per run: QuickJS does not give back memory held after an out-of-memory,
//! so a runtime is never reused.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rquickjs::{
    CatchResultExt, Context, Ctx, Function, Promise, Runtime, Value, promise::PromiseState,
};

use crate::Error;
use crate::capabilities::{self, Host, Stop};
use crate::outcome::{Ending, Outcome};
use crate::run::Run;

/// The source line of the script's first line inside QuickJS's `AsyncFunction` wrapper.
const LINE_OFFSET: u32 = 2;
/// How often, at most, the heap is measured while promise jobs run.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// Promise jobs run between two checks of the clock for sampling.
const JOBS_PER_BATCH: usize = 64;

/// A runtime and context made by an idle worker ahead of its next run, so that a run does not wait
/// for them. Still one per run: [`execute`] consumes it.
pub(crate) struct Fresh {
    runtime: Runtime,
    context: Context,
}

impl Fresh {
    pub(crate) fn new() -> Result<Fresh, Error> {
        let runtime = Runtime::new()
            .map_err(|e| Error::Internal(format!("creating a QuickJS runtime: {e}")))?;
        let context = Context::full(&runtime)
            .map_err(|e| Error::Internal(format!("creating a QuickJS context: {e}")))?;
        Ok(Fresh { runtime, context })
    }
}

/// Runs `run` on this thread to its end, in `fresh` if the worker prepared one.
pub(crate) fn execute(run: &Run, fresh: Option<Fresh>) -> Result<Outcome, Error> {
    let started = Instant::now();
    let deadline = started + run.limits.time();
    let (runtime, context) = match fresh {
        Some(Fresh { runtime, context }) => (runtime, Some(context)),
        None => (
            Runtime::new()
                .map_err(|e| Error::Internal(format!("creating a QuickJS runtime: {e}")))?,
            None,
        ),
    };
    runtime.set_memory_limit(usize::try_from(run.limits.memory_bytes).unwrap_or(usize::MAX));
    runtime.set_max_stack_size(usize::try_from(run.limits.stack_bytes).unwrap_or(usize::MAX));
    let seed = run
        .deterministic
        .then(|| capabilities::seed(&run.code, &run.args_json));
    let host = Rc::new(Host::new(run, deadline, seed));
    let interrupt = {
        let host = host.clone();
        let cancel = run.cancel.clone();
        move || {
            if host.stop.get().is_some() {
                return true;
            }
            if cancel.load(Ordering::Relaxed) {
                host.stop.set(Some(Stop::Cancelled));
                return true;
            }
            if Instant::now() >= deadline {
                host.stop.set(Some(Stop::TimedOut));
                return true;
            }
            false
        }
    };
    runtime.set_interrupt_handler(Some(Box::new(interrupt)));

    let mut peak = 0u64;
    let mut sample = |runtime: &Runtime| {
        let used = runtime.memory_usage().malloc_size;
        peak = peak.max(u64::try_from(used).unwrap_or(0));
    };
    let finish = |ending: Ending, result: serde_json::Value, peak: u64, host: &Host| Outcome {
        ending,
        result,
        console: std::mem::take(&mut host.console.borrow_mut().lines),
        duration_ms: started.elapsed().as_millis() as u64,
        memory_peak_bytes: peak,
        limits: run.limits,
        deterministic: run.deterministic,
    };

    let context = match context.map_or_else(|| Context::full(&runtime), Ok) {
        Ok(context) => context,
        // The context alone did not fit in the memory limit.
        Err(_) => {
            return Ok(finish(
                Ending::MemoryLimit,
                serde_json::Value::Null,
                0,
                &host,
            ));
        }
    };

    // The synchronous part: install the API, compile, call.
    let started_script = context.with(|ctx| start(&ctx, run, &host));
    sample(&runtime);
    let promise = match started_script {
        Started::Ended(ending) => {
            return Ok(finish(ending, serde_json::Value::Null, peak, &host));
        }
        Started::Running(promise) => promise,
    };

    // Drain the job queue until it is empty (the promise has settled by then, or never will).
    let mut last_sample = Instant::now();
    loop {
        let more = context.with(|ctx| {
            for _ in 0..JOBS_PER_BATCH {
                if host.stop.get().is_some() {
                    return false;
                }
                if !ctx.execute_pending_job() {
                    return false;
                }
            }
            true
        });
        if !more {
            break;
        }
        if last_sample.elapsed() >= SAMPLE_EVERY {
            sample(&runtime);
            last_sample = Instant::now();
        }
    }

    let (ending, result) = context.with(|ctx| settle(&ctx, &host, run, promise));
    sample(&runtime);
    Ok(finish(ending, result, peak, &host))
}

enum Started {
    Ended(Ending),
    Running(rquickjs::Persistent<Promise<'static>>),
}

fn start<'js>(ctx: &Ctx<'js>, run: &Run, host: &Rc<Host>) -> Started {
    if capabilities::install(ctx, host).is_err() {
        let caught = ctx.catch();
        return Started::Ended(ending_of(ctx, host, caught, false));
    }
    let args = match ctx.json_parse(run.args_json.as_str()) {
        Ok(args) => args,
        Err(_) => {
            let caught = ctx.catch();
            return Started::Ended(ending_of(ctx, host, caught, false));
        }
    };
    if ctx.globals().set("args", args.clone()).is_err() {
        let caught = ctx.catch();
        return Started::Ended(ending_of(ctx, host, caught, false));
    }
    // `AsyncFunction(params, body)` parses the body on its own: no wrapper to break out of.
    let compiled: rquickjs::Result<Function> = ctx
        .eval::<Function, _>("(async function () {}).constructor")
        .and_then(|constructor| constructor.call(("args", run.code.as_str())));
    let function = match compiled.catch(ctx) {
        Ok(function) => function,
        Err(rquickjs::CaughtError::Exception(e)) => {
            let ending = ending_of(ctx, host, e.into_value(), true);
            return Started::Ended(within_code(ending, &run.code));
        }
        Err(rquickjs::CaughtError::Value(v)) => {
            let ending = ending_of(ctx, host, v, true);
            return Started::Ended(within_code(ending, &run.code));
        }
        Err(rquickjs::CaughtError::Error(e)) => {
            return Started::Ended(Ending::Error {
                name: "InternalError".into(),
                message: e.to_string(),
                line: None,
                column: None,
                stack: None,
            });
        }
    };
    let called: rquickjs::Result<Value> = function.call((
        rquickjs::function::This(Value::new_undefined(ctx.clone())),
        args,
    ));
    match called {
        Ok(value) => match value.into_promise() {
            Some(promise) => Started::Running(rquickjs::Persistent::save(ctx, promise)),
            None => Started::Ended(Ending::Error {
                name: "InternalError".into(),
                message: "the script's function did not return a promise".into(),
                line: None,
                column: None,
                stack: None,
            }),
        },
        Err(_) => {
            let caught = ctx.catch();
            Started::Ended(ending_of(ctx, host, caught, false))
        }
    }
}

/// The ending and result once the job queue is empty.
fn settle<'js>(
    ctx: &Ctx<'js>,
    host: &Host,
    run: &Run,
    promise: rquickjs::Persistent<Promise<'static>>,
) -> (Ending, serde_json::Value) {
    if let Some(stop) = host.stop.get() {
        return (stopped(stop, host), serde_json::Value::Null);
    }
    let promise = match promise.restore(ctx) {
        Ok(p) => p,
        Err(e) => {
            return (
                internal(format!("restoring the script's promise: {e}")),
                serde_json::Value::Null,
            );
        }
    };
    match promise.state() {
        PromiseState::Pending => (Ending::NeverSettled, serde_json::Value::Null),
        PromiseState::Rejected => {
            let _ = promise.result::<Value>();
            let reason = ctx.catch();
            (ending_of(ctx, host, reason, false), serde_json::Value::Null)
        }
        PromiseState::Resolved => match promise.result::<Value>() {
            Some(Ok(value)) => serialize(ctx, host, run, value),
            _ => {
                let caught = ctx.catch();
                (ending_of(ctx, host, caught, false), serde_json::Value::Null)
            }
        },
    }
}

/// The result as JSON, within the output limit.
fn serialize<'js>(
    ctx: &Ctx<'js>,
    host: &Host,
    run: &Run,
    value: Value<'js>,
) -> (Ending, serde_json::Value) {
    let null = serde_json::Value::Null;
    if value.is_undefined() {
        return (Ending::Completed, null);
    }
    if value.is_function() || value.is_symbol() {
        return (
            Ending::NotSerializable {
                message: format!("a {} has no JSON form", value.type_name()),
            },
            null,
        );
    }
    let json = match ctx.json_stringify(value) {
        Ok(Some(s)) => match s.to_string() {
            Ok(s) => s,
            Err(e) => return (internal(format!("reading the result: {e}")), null),
        },
        Ok(None) => return (Ending::Completed, null),
        Err(_) => {
            let caught = ctx.catch();
            if let Some(stop) = host.stop.get() {
                return (stopped(stop, host), null);
            }
            return match ending_of(ctx, host, caught, false) {
                Ending::Error { name, message, .. } => (
                    Ending::NotSerializable {
                        message: format!("{name}: {message}"),
                    },
                    null,
                ),
                other => (other, null),
            };
        }
    };
    let size = json.len() as u64;
    if size > run.limits.output_bytes {
        return (
            Ending::OutputTooLarge {
                size,
                limit: run.limits.output_bytes,
            },
            null,
        );
    }
    match serde_json::from_str(&json) {
        Ok(value) => (Ending::Completed, value),
        Err(e) => (
            Ending::NotSerializable {
                message: format!("the result's JSON does not parse back: {e}"),
            },
            null,
        ),
    }
}

fn internal(message: String) -> Ending {
    Ending::Error {
        name: "InternalError".into(),
        message,
        line: None,
        column: None,
        stack: None,
    }
}

fn stopped(stop: Stop, host: &Host) -> Ending {
    match stop {
        Stop::TimedOut => Ending::TimedOut { abandoned: false },
        Stop::Cancelled => Ending::Cancelled { abandoned: false },
        Stop::ConsoleLimit => Ending::ConsoleLimit {
            limit: host.console.borrow().limit(),
        },
    }
}

/// Classifies what the script threw (or rejected with). `compiling`: thrown while parsing.
fn ending_of<'js>(ctx: &Ctx<'js>, host: &Host, thrown: Value<'js>, compiling: bool) -> Ending {
    if let Some(stop) = host.stop.get() {
        return stopped(stop, host);
    }
    if thrown.is_null() {
        // QuickJS throws `null` when it cannot even allocate the error object for an
        // out-of-memory. A script's own `throw null` cannot be told apart from it.
        return Ending::MemoryLimit;
    }
    let Some(object) = thrown.as_object().filter(|_| thrown.is_error()) else {
        // `throw 42`, `throw "text"`, or an exception QuickJS had no memory left to build.
        let message = match thrown.get::<rquickjs::Coerced<String>>() {
            Ok(s) => s.0,
            Err(_) => {
                let _ = ctx.catch();
                format!("a thrown {}", thrown.type_name())
            }
        };
        return Ending::Error {
            name: String::new(),
            message,
            line: None,
            column: None,
            stack: None,
        };
    };
    let read = |key: &str| -> Option<String> {
        match object.get::<_, Option<rquickjs::Coerced<String>>>(key) {
            Ok(v) => v.map(|c| c.0),
            Err(_) => {
                let _ = ctx.catch();
                None
            }
        }
    };
    let name = read("name").unwrap_or_default();
    let message = read("message").unwrap_or_default();
    let stack = read("stack").filter(|s| !s.is_empty());
    // Reading them runs the script's getters, which may themselves be stopped.
    if let Some(stop) = host.stop.get() {
        return stopped(stop, host);
    }
    if name == "InternalError" && message == "out of memory" {
        return Ending::MemoryLimit;
    }
    if name == "RangeError" && message == "Maximum call stack size exceeded" {
        return Ending::StackOverflow;
    }
    let (line, column) = stack.as_deref().and_then(position).unzip();
    if compiling && name == "SyntaxError" {
        return Ending::SyntaxError {
            message,
            line,
            column,
        };
    }
    Ending::Error {
        name,
        message,
        line,
        column,
        stack,
    }
}

/// A syntax error past the end of `code` (code that ends too early: QuickJS stops on the line
/// its wrapper appends after the body) is reported at the end of the code, on its last line.
fn within_code(ending: Ending, code: &str) -> Ending {
    match ending {
        Ending::SyntaxError {
            message,
            line: Some(line),
            column,
        } => {
            let last = code.rsplit('\n').next().unwrap_or_default();
            let lines = u32::try_from(code.split('\n').count()).unwrap_or(u32::MAX);
            let (line, column) = if line > lines {
                let end = u32::try_from(last.chars().count()).unwrap_or(u32::MAX);
                (lines, Some(end.saturating_add(1)))
            } else {
                (line, column)
            };
            Ending::SyntaxError {
                message,
                line: Some(line),
                column,
            }
        }
        other => other,
    }
}

/// The first position in the script (`<input>:LINE:COLUMN`) in a QuickJS stack, in the
/// submitted code's lines.
fn position(stack: &str) -> Option<(u32, u32)> {
    const FILE: &str = "<input>:";
    let at = stack.find(FILE)? + FILE.len();
    let rest = &stack[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == ':'))
        .unwrap_or(rest.len());
    let mut parts = rest[..end].split(':');
    let line: u32 = parts.next()?.parse().ok()?;
    let column: u32 = parts.next()?.parse().ok()?;
    Some((line.checked_sub(LINE_OFFSET)?.max(1), column))
}

#[cfg(test)]
mod tests {
    use super::position;

    #[test]
    fn positions_are_read_from_the_first_script_frame() {
        assert_eq!(
            position("    at <input>:3:9\n    at AsyncFunction (native)\n"),
            Some((1, 9))
        );
        assert_eq!(position("    at anonymous (<input>:4:2)\n"), Some((2, 2)));
        assert_eq!(position("    at f (native)\n"), None);
    }
}
