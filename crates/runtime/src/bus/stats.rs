//! Lock-free counters and a fixed-bucket latency histogram for bus edges.

use std::sync::atomic::{
    AtomicBool, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ServiceName;

/// Upper bounds of the latency buckets, in microseconds; a last bucket catches everything above.
pub const BUCKETS_US: [u64; 22] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// A latency histogram with the buckets of [`BUCKETS_US`].
///
/// In declaration order (`repr(C)`), the sum first: a record of a latency in the first bucket (most
/// bus calls) writes the sum and `counts[0]`, 8 bytes apart, so one cache line, not two at either
/// end of 192 bytes.
#[derive(Debug, Default)]
#[repr(C)]
pub(crate) struct Histogram {
    sum_ns: AtomicU64,
    counts: [AtomicU64; BUCKETS_US.len() + 1],
}

/// A point-in-time copy of a latency histogram.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistogramSnapshot {
    /// Count per bucket, not cumulative; the last entry is the overflow bucket.
    pub counts: Vec<u64>,
    /// The sum of every latency recorded, in nanoseconds.
    pub sum_ns: u64,
}

/// One call's latency, converted once for every histogram that records it (a call's edge and its
/// operation): its nanoseconds and its bucket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    ns: u64,
    bucket: usize,
}

impl Sample {
    #[inline]
    pub(crate) fn new(d: Duration) -> Self {
        // In u64 (a `u128` from `as_nanos` costs more than the rest of a record); saturating, as
        // 584 years is past every bucket anyway.
        let ns = d
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(d.subsec_nanos()));
        let us = ns / 1_000;
        // Most bus calls fall in the first bucket: no search for them.
        let bucket = if us <= BUCKETS_US[0] {
            0
        } else {
            BUCKETS_US.partition_point(|&b| b < us)
        };
        Self { ns, bucket }
    }
}

impl Histogram {
    #[cfg(test)]
    fn record(&self, d: Duration) {
        self.add(Sample::new(d));
    }

    #[inline]
    pub(crate) fn add(&self, sample: Sample) {
        self.counts[sample.bucket].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(sample.ns, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            sum_ns: self.sum_ns.load(Relaxed),
        }
    }
}

impl HistogramSnapshot {
    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), or `None` without samples.
    /// Samples in the overflow bucket report the largest finite bound.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let bound = BUCKETS_US
                    .get(i)
                    .copied()
                    .unwrap_or(BUCKETS_US[BUCKETS_US.len() - 1]);
                return Some(Duration::from_micros(bound));
            }
        }
        None
    }

    /// What was recorded since `earlier`, an older snapshot of the same histogram.
    pub fn minus(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self
                .counts
                .iter()
                .enumerate()
                .map(|(i, c)| c.saturating_sub(earlier.counts.get(i).copied().unwrap_or(0)))
                .collect(),
            sum_ns: self.sum_ns.saturating_sub(earlier.sum_ns),
        }
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_ns += other.sum_ns;
    }
}

/// Traffic on one caller -> callee edge of the bus. `caller` is `None` for calls from outside any
/// service (the HTTP API, tests).
///
/// In declaration order (`repr(C)`), from the start of a 128-byte-aligned block: what every call
/// reads and writes on the caller's side (`breaker_clean`, `calls`, the latency's sum and first
/// bucket) lies in the first 64 bytes, one cache line.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct EdgeStats {
    /// Closed with no failure on record: successes need not be written down, and admission needs no
    /// lock. Keeps the common path free of the breaker's mutex.
    breaker_clean: AtomicBool,
    pub(crate) calls: AtomicU64,
    pub(crate) latency: Histogram,
    pub(crate) errors: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) caller: Option<ServiceName>,
    pub(crate) callee: ServiceName,
    breaker: std::sync::Mutex<crate::breaker::Breaker>,
    /// Written by the service's side, everything else by the caller's: kept on its own cache line
    /// so the two cores do not take the line from each other on every call.
    pub(crate) handled: Padded<AtomicU64>,
}

/// A value alone on its cache line (128 bytes covers adjacent-line prefetching).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A copy of one edge's figures. Every call ends in exactly one of `handled`, `errors` and
/// `dead_lettered`; `calls` minus their sum are still in flight.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EdgeSnapshot {
    /// The calling service; `None` outside any service (the API).
    pub caller: Option<ServiceName>,
    /// The service called.
    pub callee: ServiceName,
    /// Calls sent.
    pub calls: u64,
    /// Calls answered.
    pub handled: u64,
    /// Calls answered with an error.
    pub errors: u64,
    /// Calls dead-lettered.
    pub dead_lettered: u64,
    /// Latency of the calls answered.
    pub latency: HistogramSnapshot,
    /// The edge's circuit breaker.
    pub breaker: crate::breaker::BreakerSnapshot,
}

impl EdgeStats {
    pub(crate) fn new(caller: Option<ServiceName>, callee: ServiceName) -> Self {
        EdgeStats {
            caller,
            callee,
            calls: AtomicU64::new(0),
            handled: Padded(AtomicU64::new(0)),
            errors: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            latency: Histogram::default(),
            breaker: std::sync::Mutex::default(),
            breaker_clean: AtomicBool::new(true),
        }
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, crate::breaker::Breaker> {
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `policy` is read only off the common path (a breaker with failures on record).
    pub(crate) fn breaker_admit(
        &self,
        enabled: bool,
        policy: impl Fn() -> crate::breaker::BreakerPolicy,
        now: tokio::time::Instant,
    ) -> crate::breaker::Admission {
        if !enabled || self.breaker_clean.load(Acquire) {
            return crate::breaker::Admission::Call;
        }
        self.breaker().admit(&policy(), now)
    }

    /// Whether [`EdgeStats::breaker_record`] has anything to record for a call that ended `ok`:
    /// not when the breaker is off, nor for a plain success while it is clean.
    #[inline]
    pub(crate) fn breaker_wants(&self, enabled: bool, ok: bool, probe: bool) -> bool {
        enabled && !(ok && !probe && self.breaker_clean.load(Acquire))
    }

    pub(crate) fn breaker_record(
        &self,
        enabled: bool,
        policy: impl Fn() -> crate::breaker::BreakerPolicy,
        now: tokio::time::Instant,
        ok: bool,
        probe: bool,
    ) -> Option<crate::breaker::BreakerSnapshot> {
        if !self.breaker_wants(enabled, ok, probe) {
            return None;
        }
        let mut breaker = self.breaker();
        let before = breaker.state();
        breaker.record(&policy(), now, ok, probe);
        self.breaker_clean.store(breaker.is_clean(), Release);
        // Opening and closing are worth a journal entry; the caller writes it, outside this lock.
        (breaker.state() != before).then(|| breaker.snapshot())
    }

    pub(crate) fn snapshot(&self) -> EdgeSnapshot {
        EdgeSnapshot {
            caller: self.caller.clone(),
            callee: self.callee.clone(),
            calls: self.calls.load(Relaxed),
            handled: self.handled.load(Relaxed),
            errors: self.errors.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            latency: self.latency.snapshot(),
            breaker: self.breaker().snapshot(),
        }
    }
}

/// Figures for one operation of one service, over every caller.
#[derive(Debug, Default)]
#[repr(C)]
pub(crate) struct OperationStats {
    /// Every call recorded is in it once, so its count is the calls' (one atomic add less per call).
    latency: Histogram,
    errors: AtomicU64,
}

impl OperationStats {
    #[inline]
    fn record(&self, latency: Sample, ok: bool) {
        if !ok {
            self.errors.fetch_add(1, Relaxed);
        }
        self.latency.add(latency);
    }
}

/// A copy of one operation's figures, from every caller.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OperationSnapshot {
    /// The operation's name.
    pub operation: &'static str,
    /// Calls.
    pub calls: u64,
    /// Calls answered with an error.
    pub errors: u64,
    /// Latency of the calls answered.
    pub latency: HistogramSnapshot,
}

/// Operations tracked one by one; more than this share the last slot, named `other`.
const OPERATION_SLOTS: usize = 32;

/// Per-operation figures of one service: a fixed row of slots, each claimed once by the first call of
/// an operation, so finding an operation's slot is a few loads and never a lock.
#[derive(Debug, Default)]
pub(crate) struct Operations([Slot; OPERATION_SLOTS]);

/// One operation's slot. The name (with its `OnceLock`'s state), the latency's sum and its first
/// bucket lie in the slot's first cache line, which is all that a call's record reads and writes.
#[derive(Debug, Default)]
#[repr(C, align(64))]
struct Slot {
    name: std::sync::OnceLock<&'static str>,
    stats: OperationStats,
}

impl Operations {
    #[inline]
    pub(crate) fn record(&self, operation: &'static str, latency: Sample, ok: bool) {
        let same = |name: &'static str| std::ptr::eq(name, operation) || name == operation;
        for (i, slot) in self.0.iter().enumerate() {
            let last = i == OPERATION_SLOTS - 1;
            let claimed = slot
                .name
                .get_or_init(|| if last { "other" } else { operation });
            if last || same(claimed) {
                slot.stats.record(latency, ok);
                return;
            }
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<OperationSnapshot> {
        self.0
            .iter()
            .filter_map(|slot| Some((*slot.name.get()?, &slot.stats)))
            .map(|(name, s)| {
                let latency = s.latency.snapshot();
                OperationSnapshot {
                    operation: name,
                    calls: latency.count(),
                    errors: s.errors.load(Relaxed),
                    latency,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A latency lands in the first bucket whose bound (in whole microseconds) it does not exceed;
    /// one past every bound lands in the overflow bucket, and the sum saturates rather than wraps.
    #[test]
    fn each_latency_lands_in_the_bucket_of_its_bound() {
        let bucket = |d: Duration| {
            let h = Histogram::default();
            h.record(d);
            let s = h.snapshot();
            (s.counts.iter().position(|&c| c == 1), s.sum_ns)
        };
        let us = Duration::from_micros;
        assert_eq!(bucket(Duration::ZERO), (Some(0), 0));
        assert_eq!(bucket(us(5)).0, Some(0));
        assert_eq!(bucket(Duration::from_nanos(5_999)), (Some(0), 5_999));
        assert_eq!(bucket(us(6)).0, Some(1));
        assert_eq!(bucket(us(10)).0, Some(1));
        assert_eq!(bucket(us(11)).0, Some(2));
        assert_eq!(bucket(us(60_000_000)).0, Some(BUCKETS_US.len() - 1));
        assert_eq!(bucket(us(60_000_001)).0, Some(BUCKETS_US.len()));
        assert_eq!(bucket(Duration::MAX), (Some(BUCKETS_US.len()), u64::MAX));
    }

    /// What a call's figures write lies in one cache line per record: the edge's counter, breaker
    /// flag and latency sum and first bucket; an operation slot's name and its sum and first bucket.
    #[test]
    fn a_calls_figures_lie_in_one_cache_line_each() {
        use std::mem::{align_of, offset_of};
        let first_bucket = offset_of!(Histogram, counts) + 8;
        assert!(offset_of!(Histogram, sum_ns) + 8 <= first_bucket);
        assert!(align_of::<EdgeStats>() >= 64);
        assert!(offset_of!(EdgeStats, breaker_clean) < 64);
        assert!(offset_of!(EdgeStats, calls) + 8 <= 64);
        assert!(offset_of!(EdgeStats, latency) + first_bucket <= 64);
        assert!(align_of::<Slot>() >= 64);
        assert!(offset_of!(Slot, name) + std::mem::size_of::<std::sync::OnceLock<&str>>() <= 64);
        assert!(offset_of!(Slot, stats) + offset_of!(OperationStats, latency) + first_bucket <= 64);
    }

    #[test]
    fn quantiles_come_from_bucket_bounds() {
        let h = Histogram::default();
        for _ in 0..90 {
            h.record(Duration::from_micros(40));
        }
        for _ in 0..10 {
            h.record(Duration::from_millis(3));
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 100);
        assert_eq!(s.quantile(0.5), Some(Duration::from_micros(50)));
        assert_eq!(s.quantile(0.9), Some(Duration::from_micros(50)));
        assert_eq!(s.quantile(0.99), Some(Duration::from_micros(5_000)));
        assert_eq!(Histogram::default().snapshot().quantile(0.5), None);
    }
}
