//! What a run produced: how it ended, its result, its console output and what it cost. The types
//! live in `wire`, where the API serializes them and the SDK reads them.

pub use wire::JsonText;
pub use wire::computation::{ConsoleLine, Ending, Level, Outcome};

use crate::limits::Limits;

/// The outcome of a run that never ran its script (refused, timed out in the queue, abandoned).
pub(crate) fn without_run(ending: Ending, limits: Limits, deterministic: bool) -> Outcome {
    Outcome {
        ending,
        result: JsonText::null(),
        console: Vec::new(),
        duration_ms: 0,
        memory_peak_bytes: 0,
        limits,
        deterministic,
    }
}
