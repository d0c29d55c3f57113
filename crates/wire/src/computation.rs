//! The computation service's request and answers (`/v1/computation/run`): a script with its
//! arguments and limits, and what its run produced.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A script and how to run it, as the API receives it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Program {
    /// The body of an async function: `return` the result (see the computation section of
    /// docs/api.md).
    pub code: String,
    /// Available to the script as `args`: kept as the JSON text it came as (no tree is built from
    /// it outside the sandbox); absent is `null`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub args: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Fixes `Date`, `performance.now()`, `Math.random` and `crypto.randomBytes` to values derived
    /// from the code and args, so the same program gives the same result.
    #[serde(default)]
    pub deterministic: bool,
}

impl Program {
    /// `code` without arguments, with the default limits, not deterministic.
    pub fn new(code: impl Into<String>) -> Program {
        Program {
            code: code.into(),
            args: None,
            limits: LimitOverrides::default(),
            deterministic: false,
        }
    }

    /// The same program with `args` (anything that serializes to JSON) as the script's `args`.
    pub fn with_args(mut self, args: &impl Serialize) -> Result<Program, serde_json::Error> {
        self.args = Some(serde_json::value::to_raw_value(args)?);
        Ok(self)
    }
}

/// What a request may ask to change, each at most up to its ceiling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    pub time_ms: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub stack_bytes: Option<u64>,
    pub output_bytes: Option<u64>,
    pub console_bytes: Option<u64>,
}

/// The limits that applied to a run. `time_ms` counts from when a worker starts the run (a wait in
/// the queue is not counted) and includes the script's capability calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = RunLimits)]
pub struct Limits {
    pub time_ms: u64,
    pub memory_bytes: u64,
    pub stack_bytes: u64,
    pub output_bytes: u64,
    pub console_bytes: u64,
    pub code_bytes: u64,
    pub args_bytes: u64,
}

impl Limits {
    /// The wall-time limit.
    pub fn time(&self) -> Duration {
        Duration::from_millis(self.time_ms)
    }
}

/// What one run produced. A script that throws, times out or runs out of memory still has an
/// outcome; only requests that never ran are answered with an error (`computation.*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsoleLine {
    pub level: Level,
    /// The arguments, each a string as is or else as JSON (or `String(value)` if not JSON), joined
    /// by spaces.
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ConsoleLevel)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Log,
    Info,
    Warn,
    Error,
    Debug,
}
