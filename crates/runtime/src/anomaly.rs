//! Anomaly detection as a pure module: an online baseline per signal (EWMA of the value and of its
//! absolute deviation, a robust spread) with hysteresis, and crash-loop classification.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::name::ServiceName;

/// What the runtime does when a service's signal turns anomalous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyAction {
    /// Journal it, nothing more.
    Alert,
    /// Mark the service degraded until the signal is normal again.
    Degrade,
    /// Refuse requests beyond a small queue until it is normal again.
    Shed,
    /// Ask the autoscaler for another replica.
    ScaleOut,
    /// Hold configuration rollouts (and roll back one being watched).
    HoldRollout,
}

impl AnomalyAction {
    /// Every action with its name in configuration files.
    pub const ALL: [(&'static str, AnomalyAction); 5] = [
        ("alert", AnomalyAction::Alert),
        ("degrade", AnomalyAction::Degrade),
        ("shed", AnomalyAction::Shed),
        ("scale_out", AnomalyAction::ScaleOut),
        ("hold_rollout", AnomalyAction::HoldRollout),
    ];
}

/// Anomaly detection settings of one service.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AnomalyPolicy {
    /// What to do when a signal turns anomalous.
    pub action: AnomalyAction,
    /// How each signal's baseline is learned and when it counts as anomalous.
    pub detector: DetectorPolicy,
    /// The same failure this many times within `crash_loop_window` is a crash loop.
    pub crash_loop_count: u32,
    /// The window a crash loop is counted in.
    #[serde(with = "crate::serde_duration")]
    #[schema(value_type = String, example = "5s")]
    pub crash_loop_window: Duration,
}

impl Default for AnomalyPolicy {
    fn default() -> Self {
        AnomalyPolicy {
            action: AnomalyAction::Alert,
            detector: DetectorPolicy::default(),
            crash_loop_count: 3,
            crash_loop_window: Duration::from_secs(60),
        }
    }
}

/// How a detector learns and when it flags.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DetectorPolicy {
    /// Weight of a new sample in the baseline.
    pub alpha: f64,
    /// How many spreads above the baseline count as anomalous.
    pub threshold: f64,
    /// Samples needed before anything is flagged.
    pub warmup: u32,
    /// Consecutive anomalous samples that raise the flag.
    pub trigger: u32,
    /// Consecutive normal samples that lower it.
    pub clear: u32,
    /// The spread never counts as less than this fraction of the baseline, so a very steady signal
    /// does not flag small wobbles.
    pub min_relative_spread: f64,
    /// Nor less than this, in the signal's own unit (for signals whose baseline is near zero).
    pub min_spread: f64,
}

impl Default for DetectorPolicy {
    fn default() -> Self {
        DetectorPolicy {
            alpha: 0.1,
            threshold: 4.0,
            warmup: 10,
            trigger: 3,
            clear: 5,
            min_relative_spread: 0.1,
            min_spread: 0.0,
        }
    }
}

/// Evidence of an anomaly: the value, what was expected, and by how much it differs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Evidence {
    /// The value sampled.
    pub value: f64,
    /// The value expected (the learned mean).
    pub baseline: f64,
    /// The usual deviation from the baseline.
    pub spread: f64,
    /// `(value - baseline) / spread`.
    pub score: f64,
}

/// A detector's flag going up or down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// The signal left its baseline.
    Raised(Evidence),
    /// The signal is back within its baseline.
    Cleared(Evidence),
}

/// One signal's baseline and flag.
#[derive(Debug, Clone, Default)]
pub struct Detector {
    mean: f64,
    deviation: f64,
    samples: u32,
    over: u32,
    under: u32,
    raised: bool,
}

impl Detector {
    /// Whether the flag is up.
    pub fn is_raised(&self) -> bool {
        self.raised
    }

    /// The baseline learned so far, once a sample was taken.
    pub fn baseline(&self) -> Option<f64> {
        (self.samples > 0).then_some(self.mean)
    }

    /// Takes one sample; says when the flag goes up or down.
    pub fn observe(&mut self, policy: &DetectorPolicy, value: f64) -> Option<Change> {
        if !value.is_finite() {
            return None;
        }
        if self.samples == 0 {
            self.mean = value;
            self.deviation = 0.0;
            self.samples = 1;
            return None;
        }
        let spread = self
            .deviation
            .max(self.mean.abs() * policy.min_relative_spread)
            .max(policy.min_spread)
            .max(f64::EPSILON);
        let score = (value - self.mean) / spread;
        let evidence = Evidence {
            value,
            baseline: self.mean,
            spread,
            score,
        };
        let anomalous = self.samples >= policy.warmup && score > policy.threshold;
        // While raised, learn ten times slower so a lasting shift is not absorbed at once, but a new
        // normal is eventually accepted.
        let alpha = if anomalous || self.raised {
            policy.alpha / 10.0
        } else {
            policy.alpha
        };
        self.deviation += alpha * ((value - self.mean).abs() - self.deviation);
        self.mean += alpha * (value - self.mean);
        self.samples = self.samples.saturating_add(1);
        if anomalous {
            self.over += 1;
            self.under = 0;
            if !self.raised && self.over >= policy.trigger {
                self.raised = true;
                return Some(Change::Raised(evidence));
            }
        } else {
            self.under += 1;
            self.over = 0;
            if self.raised && self.under >= policy.clear {
                self.raised = false;
                return Some(Change::Cleared(evidence));
            }
        }
        None
    }
}

/// Recognizes a crash loop: the same failure `count` times within `window`.
#[derive(Debug, Clone)]
pub struct CrashLoop {
    /// How many times the same failure makes a crash loop.
    pub count: u32,
    /// The window they are counted in.
    pub window: Duration,
    recent: VecDeque<(Instant, String)>,
}

impl CrashLoop {
    /// A recognizer for `count` (at least 2) repeats within `window`.
    pub fn new(count: u32, window: Duration) -> Self {
        CrashLoop {
            count: count.max(2),
            window,
            recent: VecDeque::new(),
        }
    }

    /// Records a failure of `kind` (for example `panic`, `hung`); returns true while the latest
    /// `count` failures within the window are all of that kind.
    pub fn record(&mut self, now: Instant, kind: &str) -> bool {
        self.recent.push_back((now, kind.to_owned()));
        self.expire(now);
        while self.recent.len() > self.count as usize {
            self.recent.pop_front();
        }
        self.recent.len() == self.count as usize && self.recent.iter().all(|(_, k)| k == kind)
    }

    /// Whether the service is in a crash loop at `now`.
    pub fn active(&mut self, now: Instant) -> bool {
        self.expire(now);
        self.recent.len() == self.count as usize
            && self
                .recent
                .iter()
                .all(|(_, k)| Some(k) == self.recent.back().map(|(_, k)| k))
    }

    fn expire(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > self.window)
        {
            self.recent.pop_front();
        }
    }
}

/// An anomaly that is raised now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ActiveAnomaly {
    /// The service whose signal it is.
    pub service: ServiceName,
    /// The signal (`latency_p90_ms`, `error_rate`, `queue_depth`).
    #[schema(value_type = String)]
    pub signal: std::borrow::Cow<'static, str>,
    /// What the runtime did about it.
    pub action: AnomalyAction,
    /// The value against its baseline.
    pub evidence: Evidence,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// Feeds `samples` and returns the index of each change, as ("raised" | "cleared", index).
    fn changes(policy: &DetectorPolicy, samples: &[f64]) -> Vec<(&'static str, usize)> {
        let mut d = Detector::default();
        samples
            .iter()
            .enumerate()
            .filter_map(|(i, &x)| match d.observe(policy, x)? {
                Change::Raised(_) => Some(("raised", i)),
                Change::Cleared(_) => Some(("cleared", i)),
            })
            .collect()
    }

    fn noisy(rng: &mut StdRng, n: usize, level: f64, noise: f64) -> Vec<f64> {
        (0..n)
            .map(|_| level * (1.0 + rng.gen_range(-noise..=noise)))
            .collect()
    }

    #[test]
    fn a_3x_latency_step_is_flagged_within_the_trigger_count() {
        let policy = DetectorPolicy::default();
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut samples = noisy(&mut rng, 200, 10.0, 0.1);
            samples.extend(noisy(&mut rng, 50, 30.0, 0.1));
            let got = changes(&policy, &samples);
            assert_eq!(
                got.first(),
                Some(&("raised", 200 + policy.trigger as usize - 1)),
                "seed {seed}: {got:?}"
            );
        }
    }

    #[test]
    fn ten_percent_noise_under_steady_load_is_not_flagged() {
        let policy = DetectorPolicy::default();
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let samples = noisy(&mut rng, 5000, 10.0, 0.1);
            assert_eq!(changes(&policy, &samples), [], "seed {seed}");
        }
    }

    #[test]
    fn hysteresis_clears_after_the_clear_count_of_normal_samples() {
        let policy = DetectorPolicy {
            trigger: 2,
            clear: 4,
            ..DetectorPolicy::default()
        };
        let mut samples = vec![10.0; 20];
        samples.extend([40.0, 40.0, 40.0]);
        samples.extend([10.0; 10]);
        assert_eq!(
            changes(&policy, &samples),
            [("raised", 21), ("cleared", 26)]
        );
        // A single spike raises nothing.
        let mut samples = vec![10.0; 20];
        samples.extend([40.0, 10.0, 40.0, 10.0]);
        assert_eq!(changes(&policy, &samples), []);
    }

    #[test]
    fn nothing_is_flagged_during_warmup() {
        let policy = DetectorPolicy::default();
        let samples = [1.0, 1.0, 50.0, 50.0, 50.0, 50.0];
        assert_eq!(changes(&policy, &samples), []);
    }

    #[test]
    fn crash_loops_are_the_same_failure_n_times_within_the_window() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        for (failures, expected) in [
            (&[(0, "panic"), (1, "panic"), (2, "panic")][..], true),
            (&[(0, "panic"), (1, "hung"), (2, "panic")][..], false),
            (&[(0, "panic"), (1, "panic"), (100, "panic")][..], false),
            (
                &[(0, "hung"), (1, "panic"), (2, "panic"), (3, "panic")][..],
                true,
            ),
        ] {
            let mut c = CrashLoop::new(3, s(60));
            let mut last = false;
            for (at, kind) in failures {
                last = c.record(t0 + s(*at), kind);
            }
            assert_eq!(last, expected, "{failures:?}");
        }
        let mut c = CrashLoop::new(2, s(10));
        c.record(t0, "error");
        c.record(t0 + s(1), "error");
        assert!(c.active(t0 + s(5)));
        assert!(
            !c.active(t0 + s(20)),
            "a loop ends when its failures leave the window"
        );
    }
}
