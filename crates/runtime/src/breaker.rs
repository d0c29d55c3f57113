//! Circuit breakers on caller -> callee edges: closed, open (fail fast) and half-open (one probe).
//!
//! A breaker opens on `consecutive_failures` failures in a row, or when at least `min_calls` outcomes
//! within `window` show a failure rate of `failure_rate` or more. The rate is counted over the last
//! outcomes rather than per second, so it works at low traffic too; outcomes older than `window` age out.
//! While no failure is on record, successes are not written down (that keeps the common path free of
//! locks), so the rate counts the outcomes since the first failure within the window.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BreakerPolicy {
    /// Whether calls on the edge are broken at all.
    pub enabled: bool,
    /// Failures in a row that open it.
    pub consecutive_failures: u32,
    /// The failure rate within `window` that opens it, in `(0, 1]`.
    pub failure_rate: f64,
    /// Outcomes within `window` needed before the rate counts.
    pub min_calls: u32,
    /// How long an outcome counts for the rate.
    #[serde(with = "crate::serde_duration")]
    #[schema(value_type = String, example = "5s")]
    pub window: Duration,
    /// How long it stays open before letting one probe through.
    #[serde(with = "crate::serde_duration")]
    #[schema(value_type = String, example = "5s")]
    pub open_for: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            enabled: true,
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_calls: 10,
            window: Duration::from_secs(30),
            open_for: Duration::from_secs(5),
        }
    }
}

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail fast.
    Open,
    /// One probe call goes through; its outcome closes or reopens the breaker.
    HalfOpen,
}

impl BreakerState {
    /// The state's name, as the API and metrics show it.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// What a caller may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead.
    Call,
    /// Go ahead: this call is the half-open probe.
    Probe,
    /// Fail fast.
    Reject {
        /// About how long the breaker stays open still.
        retry_after: Duration,
    },
}

/// The circuit breaker of one caller -> callee edge.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: BreakerState,
    opened_at: Option<Instant>,
    probe_in_flight: bool,
    consecutive: u32,
    recent: VecDeque<(Instant, bool)>,
    opened: u64,
}

/// A copy of a breaker's state for the API and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct BreakerSnapshot {
    /// Its state.
    pub state: BreakerState,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Times it has opened.
    pub opened: u64,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: BreakerState::Closed,
            opened_at: None,
            probe_in_flight: false,
            consecutive: 0,
            recent: VecDeque::new(),
            opened: 0,
        }
    }
}

impl Breaker {
    /// A copy of its state.
    pub fn snapshot(&self) -> BreakerSnapshot {
        BreakerSnapshot {
            state: self.state,
            consecutive_failures: self.consecutive,
            opened: self.opened,
        }
    }

    /// Its state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Closed, with no failure within the window on record.
    pub fn is_clean(&self) -> bool {
        self.state == BreakerState::Closed
            && self.consecutive == 0
            && self.recent.iter().all(|(_, ok)| *ok)
    }

    /// Decides whether a call may go out at `now`.
    pub fn admit(&mut self, policy: &BreakerPolicy, now: Instant) -> Admission {
        if !policy.enabled {
            return Admission::Call;
        }
        match self.state {
            BreakerState::Closed => Admission::Call,
            BreakerState::Open => {
                let opened_at = self.opened_at.unwrap_or(now);
                let elapsed = now.saturating_duration_since(opened_at);
                if elapsed >= policy.open_for {
                    self.state = BreakerState::HalfOpen;
                    self.probe_in_flight = true;
                    self.opened_at = Some(now);
                    Admission::Probe
                } else {
                    Admission::Reject {
                        retry_after: policy.open_for - elapsed,
                    }
                }
            }
            // A probe whose caller gave up never reports back: after another `open_for`, let a new
            // probe through rather than stay half-open for good.
            BreakerState::HalfOpen
                if self.probe_in_flight
                    && now.saturating_duration_since(self.opened_at.unwrap_or(now))
                        < policy.open_for =>
            {
                Admission::Reject {
                    retry_after: policy.open_for,
                }
            }
            BreakerState::HalfOpen => {
                self.probe_in_flight = true;
                self.opened_at = Some(now);
                Admission::Probe
            }
        }
    }

    /// Records how an admitted call ended.
    pub fn record(&mut self, policy: &BreakerPolicy, now: Instant, ok: bool, probe: bool) {
        if !policy.enabled {
            return;
        }
        if probe {
            self.probe_in_flight = false;
            if ok {
                self.close();
            } else {
                self.open(now);
            }
            return;
        }
        if self.state != BreakerState::Closed {
            // A late answer to a call admitted before the breaker opened.
            return;
        }
        self.consecutive = if ok { 0 } else { self.consecutive + 1 };
        self.recent.push_back((now, ok));
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > policy.window)
        {
            self.recent.pop_front();
        }
        let keep = (policy.min_calls.max(1) as usize) * 4;
        while self.recent.len() > keep {
            self.recent.pop_front();
        }
        let failures = self.recent.iter().filter(|(_, ok)| !ok).count();
        let by_rate = self.recent.len() >= policy.min_calls.max(1) as usize
            && failures as f64 / self.recent.len() as f64 >= policy.failure_rate;
        if self.consecutive >= policy.consecutive_failures.max(1) || by_rate {
            self.open(now);
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open;
        self.opened_at = Some(now);
        self.opened += 1;
        self.recent.clear();
    }

    fn close(&mut self) {
        self.state = BreakerState::Closed;
        self.opened_at = None;
        self.consecutive = 0;
        self.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            enabled: true,
            consecutive_failures: 3,
            failure_rate: 0.5,
            min_calls: 6,
            window: Duration::from_secs(60),
            open_for: Duration::from_secs(5),
        }
    }

    /// Feeds outcomes one second apart ('.' ok, 'x' failure) and returns the state after each.
    fn run(outcomes: &str) -> String {
        let p = policy();
        let t0 = Instant::now();
        let mut b = Breaker::default();
        let mut out = String::new();
        for (i, c) in outcomes.chars().enumerate() {
            let now = t0 + Duration::from_secs(i as u64);
            match b.admit(&p, now) {
                Admission::Reject { .. } => out.push('R'),
                admission => {
                    b.record(&p, now, c == '.', admission == Admission::Probe);
                    out.push(match b.state() {
                        BreakerState::Closed => 'C',
                        BreakerState::Open => 'O',
                        BreakerState::HalfOpen => 'H',
                    });
                }
            }
        }
        out
    }

    #[test]
    fn table() {
        for (outcomes, states) in [
            // Three failures in a row open it; it rejects for five seconds, then probes.
            ("..xxx....", "CCCCORRRR"),
            ("xxx.....", "CCORRRRC"),
            // A failed probe opens it again.
            ("xxx....x.....", "CCORRRRORRRRC"),
            // Alternating failures never make three in a row, but the rate (3 of 6) opens it.
            (".x.x.x", "CCCCCO"),
            // Below min_calls the rate does not count.
            ("x.x..", "CCCCC"),
        ] {
            assert_eq!(run(outcomes), states, "outcomes {outcomes}");
        }
    }

    #[test]
    fn old_failures_age_out_of_the_window() {
        let p = BreakerPolicy {
            consecutive_failures: 100,
            ..policy()
        };
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for i in 0..3 {
            b.record(&p, t0 + Duration::from_secs(i), false, false);
        }
        // Ten minutes later, three successes and one failure: 1 of 4 within the window.
        let later = t0 + Duration::from_secs(600);
        for ok in [true, true, true, false, true, true] {
            b.record(&p, later, ok, false);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_probe_whose_caller_vanished_does_not_block_for_good() {
        let p = policy();
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for i in 0..3 {
            b.record(&p, t0 + Duration::from_millis(i), false, false);
        }
        let at = |s: u64| t0 + Duration::from_secs(s);
        // The probe is admitted, and its caller is cancelled: no record ever comes.
        assert_eq!(b.admit(&p, at(6)), Admission::Probe);
        assert!(matches!(b.admit(&p, at(7)), Admission::Reject { .. }));
        // One `open_for` later a new probe goes through, and its success closes the circuit.
        assert_eq!(b.admit(&p, at(11)), Admission::Probe);
        b.record(&p, at(11), true, true);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn disabled_never_opens() {
        let p = BreakerPolicy {
            enabled: false,
            ..policy()
        };
        let mut b = Breaker::default();
        let now = Instant::now();
        for _ in 0..20 {
            assert_eq!(b.admit(&p, now), Admission::Call);
            b.record(&p, now, false, false);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
