//! What a run produced: how it ended, its result, its console output and what it cost.

use serde::Serialize;

use crate::limits::Limits;

/// What one run produced. A script that throws, times out or runs out of memory still has an
/// outcome; only requests that never ran are answered with an [`crate::Error`].
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = RunOutcome)]
pub struct Outcome {
    /// How the run ended.
    pub ending: Ending,
    /// The script's result (the settled value of its function body), `null` unless it completed.
    pub result: serde_json::Value,
    /// What the script wrote with `console.*`, in order, up to the console limit.
    pub console: Vec<ConsoleLine>,
    /// Wall time from the start of the run to its end (or to the watchdog's answer).
    pub duration_ms: u64,
    /// The largest QuickJS heap size seen, in bytes. **Sampled**, not tracked: QuickJS keeps no
    /// peak, and measuring walks the whole heap, so it is read after the script's synchronous part
    /// returns, at most every 10 ms while promise jobs run, and at the end. Garbage made and
    /// freed between two samples is not counted, and a run that hit the memory limit shows what
    /// was live afterwards, not the refused allocation. 0 when the watchdog abandoned the run.
    pub memory_peak_bytes: u64,
    /// The limits that applied.
    pub limits: Limits,
    /// Whether the clock and randomness were fixed for the run.
    pub deterministic: bool,
}

impl Outcome {
    pub(crate) fn without_run(ending: Ending, limits: Limits, deterministic: bool) -> Outcome {
        Outcome {
            ending,
            result: serde_json::Value::Null,
            console: Vec::new(),
            duration_ms: 0,
            memory_peak_bytes: 0,
            limits,
            deterministic,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Ending {
    /// The function body returned (or its promise resolved) with a JSON-serializable value.
    Completed,
    /// The script threw (or its promise rejected). `line` and `column` are 1-based positions in the
    /// submitted code, when QuickJS knows them.
    Error {
        name: String,
        message: String,
        line: Option<u32>,
        column: Option<u32>,
        stack: Option<String>,
    },
    /// The code does not parse.
    SyntaxError {
        message: String,
        line: Option<u32>,
        column: Option<u32>,
    },
    /// The wall-time limit passed. `abandoned`: the script was inside a builtin that does not poll
    /// for interrupts, so the watchdog answered for it, gave its thread up and started another.
    TimedOut { abandoned: bool },
    /// An allocation would have taken the heap over the memory limit. When the heap is so full
    /// that QuickJS cannot allocate even the error, it throws `null` instead; so a script that
    /// itself ends by throwing `null` is reported here too (the two cannot be told apart).
    MemoryLimit,
    /// The JavaScript stack limit was reached (runaway recursion).
    StackOverflow,
    /// The result, as JSON, is larger than the output limit.
    OutputTooLarge { size: u64, limit: u64 },
    /// The result cannot be turned into JSON (a cycle, a BigInt, a function, a symbol).
    NotSerializable { message: String },
    /// The script wrote more console output than the console limit; the run was stopped there.
    ConsoleLimit { limit: u64 },
    /// The returned promise never settled: nothing was left to run and it was still pending.
    NeverSettled,
    /// The run was cancelled (a job's `Cancel`). `abandoned` as for `TimedOut`.
    Cancelled { abandoned: bool },
}

impl Ending {
    /// The stable code of the ending, as serialized in `status`.
    pub fn code(&self) -> &'static str {
        match self {
            Ending::Completed => "completed",
            Ending::Error { .. } => "error",
            Ending::SyntaxError { .. } => "syntax_error",
            Ending::TimedOut { .. } => "timed_out",
            Ending::MemoryLimit => "memory_limit",
            Ending::StackOverflow => "stack_overflow",
            Ending::OutputTooLarge { .. } => "output_too_large",
            Ending::NotSerializable { .. } => "not_serializable",
            Ending::ConsoleLimit { .. } => "console_limit",
            Ending::NeverSettled => "never_settled",
            Ending::Cancelled { .. } => "cancelled",
        }
    }
}

/// One call of `console.log` (or `error`, `warn`, `info`, `debug`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ConsoleLine {
    pub level: Level,
    /// The arguments, each a string as is or else as JSON (or `String(value)` if not JSON), joined
    /// by spaces.
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = ConsoleLevel)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Log,
    Info,
    Warn,
    Error,
    Debug,
}
