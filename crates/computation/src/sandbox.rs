//! One run of a script: a fresh QuickJS runtime and context with the run's limits, the capability
//! API, the script as the body of an async function, and the [`Outcome`] it came to.
//!
//! The convention: the code is the body of an `async function (args)`. What it `return`s (after
//! `await`, if it is a promise) is the result; a script without `return` has the result `null`.
//! `args` is also a global. Once the returned promise settles, the job queue is drained (as Node
//! does before it exits), so work a script left queued still runs and still counts against the
//! limits: a job that runs out of memory or stack ends the run with that limit, even after the
//! result settled, whether the job itself failed or its out-of-memory became a rejection that no
//! handler awaits. A fresh runtime per run: QuickJS does not give back memory held after an out-of-memory,
//! so a runtime is never reused.

use std::rc::Rc;
use std::time::{Duration, Instant};

use rquickjs::{
    CatchResultExt, Context, Ctx, Function, Promise, Runtime, Value, promise::PromiseState,
};

use crate::Error;
use crate::capabilities::{self, Host, Stop};
use crate::outcome::{Ending, JsonText, Outcome};
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
        move || {
            if host.stop.get().is_some() {
                return true;
            }
            let due = host.due(Instant::now());
            host.stop.set(due);
            due.is_some()
        }
    };
    runtime.set_interrupt_handler(Some(Box::new(interrupt)));
    {
        // An out-of-memory in a promise reaction becomes the rejection of a promise no one may
        // await: without this, a run that ran out of memory there would end `completed`.
        let host = host.clone();
        runtime.set_host_promise_rejection_tracker(Some(Box::new(
            move |ctx: Ctx<'_>, _promise: Value<'_>, reason: Value<'_>, handled: bool| {
                if !handled && host.stop.get().is_none() && is_out_of_memory(&ctx, &reason) {
                    host.stop.set(Some(Stop::MemoryLimit));
                }
            },
        )));
    }

    let mut peak = 0u64;
    let mut sample = |runtime: &Runtime| {
        let used = runtime.memory_usage().malloc_size;
        peak = peak.max(u64::try_from(used).unwrap_or(0));
    };
    let finish = |ending: Ending, result: JsonText, peak: u64, host: &Host| Outcome {
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
            return Ok(finish(Ending::MemoryLimit, JsonText::null(), 0, &host));
        }
    };

    // The synchronous part: install the API, compile, call.
    let started_script = context.with(|ctx| start(&ctx, run, &host));
    sample(&runtime);
    let promise = match started_script {
        Started::Ended(ending) => {
            return Ok(finish(ending, JsonText::null(), peak, &host));
        }
        Started::Running(promise) => promise,
    };

    // Drain the job queue until it is empty (the promise has settled by then, or never will).
    // Jobs run through the runtime, not `Ctx::execute_pending_job`: that one drops the exception
    // of a job that failed, and with it an out-of-memory after the result had settled.
    let mut last_sample = Instant::now();
    'drain: loop {
        for _ in 0..JOBS_PER_BATCH {
            if host.stop.get().is_some() {
                break 'drain;
            }
            match runtime.execute_pending_job() {
                Ok(true) => {}
                Ok(false) => break 'drain,
                Err(failed) => failed.0.with(|ctx| exhausted(&ctx, &host)),
            }
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
) -> (Ending, JsonText) {
    if let Some(stop) = host.stop.get() {
        return (stopped(stop, host), JsonText::null());
    }
    let promise = match promise.restore(ctx) {
        Ok(p) => p,
        Err(e) => {
            return (
                internal(format!("restoring the script's promise: {e}")),
                JsonText::null(),
            );
        }
    };
    match promise.state() {
        PromiseState::Pending => (Ending::NeverSettled, JsonText::null()),
        PromiseState::Rejected => {
            let _ = promise.result::<Value>();
            let reason = ctx.catch();
            (ending_of(ctx, host, reason, false), JsonText::null())
        }
        PromiseState::Resolved => match promise.result::<Value>() {
            // Serializing runs script code too (`toJSON`, getters): a stop it caused still counts.
            Some(Ok(value)) => match (serialize(ctx, host, run, value), host.stop.get()) {
                (_, Some(stop)) => (stopped(stop, host), JsonText::null()),
                (settled, None) => settled,
            },
            _ => {
                let caught = ctx.catch();
                (ending_of(ctx, host, caught, false), JsonText::null())
            }
        },
    }
}

/// The result as JSON, within the output limit.
fn serialize<'js>(ctx: &Ctx<'js>, host: &Host, run: &Run, value: Value<'js>) -> (Ending, JsonText) {
    if value.is_undefined() {
        return (Ending::Completed, JsonText::null());
    }
    if value.is_function() || value.is_symbol() {
        return (
            Ending::NotSerializable {
                message: format!("a {} has no JSON form", value.type_name()),
            },
            JsonText::null(),
        );
    }
    let json = match ctx.json_stringify(value) {
        Ok(Some(s)) => match s.to_string() {
            Ok(s) => s,
            Err(e) => {
                return (
                    internal(format!("reading the result: {e}")),
                    JsonText::null(),
                );
            }
        },
        Ok(None) => return (Ending::Completed, JsonText::null()),
        Err(_) => {
            let caught = ctx.catch();
            if let Some(stop) = host.stop.get() {
                return (stopped(stop, host), JsonText::null());
            }
            return match ending_of(ctx, host, caught, false) {
                Ending::Error { name, message, .. } => (
                    Ending::NotSerializable {
                        message: format!("{name}: {message}"),
                    },
                    JsonText::null(),
                ),
                other => (other, JsonText::null()),
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
            JsonText::null(),
        );
    }
    match JsonText::from_text(json) {
        Ok(value) => (Ending::Completed, value),
        Err(e) => (
            Ending::NotSerializable {
                message: format!("the result's JSON does not parse back: {e}"),
            },
            JsonText::null(),
        ),
    }
}

/// A promise job failed (a `queueMicrotask` callback threw, or a reaction could not even reject
/// its promise): its exception is taken from the context, and if it was a limit (memory, stack, or
/// a stop already set) the run stops there. An ordinary error in a job does not end the run, as in
/// a browser.
fn exhausted<'js>(ctx: &Ctx<'js>, host: &Host) {
    let thrown = ctx.catch();
    let stop = match ending_of(ctx, host, thrown, false) {
        Ending::MemoryLimit => Stop::MemoryLimit,
        Ending::StackOverflow => Stop::StackOverflow,
        _ => return,
    };
    if host.stop.get().is_none() {
        host.stop.set(Some(stop));
    }
}

/// Whether `reason` is QuickJS's out-of-memory error. Unlike a thrown `null` (see [`ending_of`]),
/// a rejection with `null` is not taken for one: `Promise.reject(null)` is ordinary script.
fn is_out_of_memory<'js>(ctx: &Ctx<'js>, reason: &Value<'js>) -> bool {
    let Some(object) = reason.as_object().filter(|_| reason.is_error()) else {
        return false;
    };
    let read = |key: &str| match object.get::<_, Option<String>>(key) {
        Ok(v) => v,
        Err(_) => {
            // A getter that threw: its exception must not stay pending inside the rejection.
            let _ = ctx.catch();
            None
        }
    };
    read("message").as_deref() == Some("out of memory")
        && read("name").as_deref() == Some("InternalError")
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
        Stop::MemoryLimit => Ending::MemoryLimit,
        Stop::StackOverflow => Ending::StackOverflow,
        Stop::ConsoleLimit => Ending::ConsoleLimit {
            limit: host.console.borrow().limit(),
        },
        Stop::Refused(capability) => Ending::CapabilityRefused {
            capability: capability.into(),
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
