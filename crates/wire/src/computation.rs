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
    #[schema(value_type = Option<Value>)]
    pub args: Option<Box<serde_json::value::RawValue>>,
    #[serde(default, deserialize_with = "crate::json::object")]
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
    /// At least 1, at most `[services.computation] max_time_ms` (the document served says it).
    #[serde(default, deserialize_with = "crate::integer::option")]
    #[schema(minimum = 1)]
    pub time_ms: Option<u64>,
    /// At least 1, at most `max_memory_bytes`.
    #[serde(default, deserialize_with = "crate::integer::option")]
    #[schema(minimum = 1)]
    pub memory_bytes: Option<u64>,
    /// At least 1, at most `max_stack_bytes`.
    #[serde(default, deserialize_with = "crate::integer::option")]
    #[schema(minimum = 1)]
    pub stack_bytes: Option<u64>,
    /// At least 1, at most `max_output_bytes`.
    #[serde(default, deserialize_with = "crate::integer::option")]
    #[schema(minimum = 1)]
    pub output_bytes: Option<u64>,
    /// At most `max_console_bytes`; 0 allows no console output.
    #[serde(default, deserialize_with = "crate::integer::option")]
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
    /// Kept as the JSON text the script's `JSON.stringify` made, within the output limit.
    #[schema(value_type = Value)]
    pub result: crate::JsonText,
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
    /// The run was made without capabilities (an oracle extraction script) and the script read
    /// `capability` (`kv` or `crypto`); it was stopped there.
    CapabilityRefused { capability: String },
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
            Ending::CapabilityRefused { .. } => "capability_refused",
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

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    Running,
    Completed,
    /// The script threw, did not parse, returned something without a JSON form or a promise that
    /// never settled; or the run could not start (see `error`).
    Failed,
    TimedOut,
    Cancelled,
    MemoryLimit,
    StackOverflow,
    OutputTooLarge,
    ConsoleLimit,
}

impl JobState {
    /// Whether the job is over (every state but pending and running).
    pub fn is_finished(self) -> bool {
        !matches!(self, JobState::Pending | JobState::Running)
    }

    /// The state a job ends in when its run ended so.
    pub fn of(ending: &Ending) -> JobState {
        match ending {
            Ending::Completed => JobState::Completed,
            Ending::Error { .. }
            | Ending::SyntaxError { .. }
            | Ending::NotSerializable { .. }
            | Ending::NeverSettled
            | Ending::CapabilityRefused { .. } => JobState::Failed,
            Ending::TimedOut { .. } => JobState::TimedOut,
            Ending::Cancelled { .. } => JobState::Cancelled,
            Ending::MemoryLimit => JobState::MemoryLimit,
            Ending::StackOverflow => JobState::StackOverflow,
            Ending::OutputTooLarge { .. } => JobState::OutputTooLarge,
            Ending::ConsoleLimit { .. } => JobState::ConsoleLimit,
        }
    }
}

/// A job as its owner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobInfo {
    /// Random and unguessable: `job_` and 32 hex digits.
    pub id: String,
    pub state: JobState,
    pub created_ms: u64,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    /// Once finished (unless the run could not start at all).
    pub outcome: Option<Outcome>,
    /// Why the run could not start, for a job that failed without an outcome.
    pub error: Option<String>,
}

impl runtime::jobs::Info for JobInfo {
    fn is_finished(&self) -> bool {
        self.state.is_finished()
    }

    /// The result's JSON text, the console's lines and the error: what the job keeps beyond its
    /// fixed fields.
    fn retained_bytes(&self) -> usize {
        let outcome = self.outcome.as_ref().map_or(0, |o| {
            o.result.len()
                + o.console
                    .iter()
                    .map(|line| line.text.len() + LINE_OVERHEAD)
                    .sum::<usize>()
        });
        outcome + self.error.as_ref().map_or(0, String::len)
    }
}

/// What a console line takes beyond its text (the `String` and the level).
const LINE_OVERHEAD: usize = 32;

/// `GET /v1/computation/jobs`: the caller's jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobInfo>,
}

/// The pool's figures, `GET /v1/computation/pool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PoolStats {
    /// The configured number of workers (`resources.cpu_cores`).
    pub size: usize,
    /// Workers that take work now (idle + busy); equals `size` unless a replacement failed to start.
    pub live: usize,
    pub idle: usize,
    pub busy: usize,
    /// Runs waiting for a worker.
    pub queued: usize,
    pub queue_capacity: usize,
    /// Abandoned workers whose stuck call has not returned yet; they take no work.
    pub abandoned_running: usize,
    /// Workers started to replace abandoned ones, since the pool started.
    pub replaced_total: u64,
    /// Runs finished by a worker (not counting those the watchdog answered for).
    pub completed_total: u64,
}
