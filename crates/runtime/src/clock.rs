//! Wall-clock timestamps for records (creation times, expiries). Timing logic uses
//! `tokio::time` instead, so tests can pause it; these are only what a record says about itself.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 for a clock set before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
