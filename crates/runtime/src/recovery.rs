//! Recovery as data: the backoff curve and the restart-intensity limit, as pure functions of the
//! service's recovery settings and its recent restarts.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::spec::{Backoff, Recovery};

/// The delay before restart number `attempt` (0-based), with `unit` in `[0, 1]` choosing the jitter.
pub fn backoff_delay(backoff: &Backoff, attempt: u32, unit: f64) -> Duration {
    let base = backoff.initial.as_secs_f64() * backoff.multiplier.powi(attempt.min(64) as i32);
    let capped = base.min(backoff.max.as_secs_f64());
    let factor = 1.0 + backoff.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
    Duration::from_secs_f64((capped * factor).clamp(0.0, backoff.max.as_secs_f64()))
}

/// Recent restarts of one service, for the backoff attempt and the intensity limit.
#[derive(Debug, Default, Clone)]
pub struct History {
    restarts: VecDeque<Instant>,
    attempt: u32,
}

/// What recovery decides after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Restart after this delay; `attempt` is the backoff step it used.
    Restart { delay: Duration, attempt: u32 },
    /// More than `max_restarts` within `window`: give up.
    Exhausted { restarts: u32 },
}

impl History {
    /// Records a failure at `now` of an incarnation that had run for `ran`, and decides.
    pub fn on_failure(
        &mut self,
        recovery: &Recovery,
        now: Instant,
        ran: Duration,
        unit: f64,
    ) -> Verdict {
        if ran >= recovery.backoff.reset_after {
            self.attempt = 0;
        }
        while let Some(&t) = self.restarts.front() {
            if now.duration_since(t) >= recovery.window {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        if self.restarts.len() as u32 >= recovery.max_restarts {
            return Verdict::Exhausted {
                restarts: self.restarts.len() as u32,
            };
        }
        self.restarts.push_back(now);
        let attempt = self.attempt;
        self.attempt = self.attempt.saturating_add(1);
        Verdict::Restart {
            delay: backoff_delay(&recovery.backoff, attempt, unit),
            attempt,
        }
    }

    /// Forget everything, as after an operator's start.
    pub fn reset(&mut self) {
        self.restarts.clear();
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn backoff(jitter: f64) -> Backoff {
        Backoff {
            initial: ms(100),
            max: ms(1000),
            multiplier: 2.0,
            jitter,
            reset_after: ms(5000),
        }
    }

    #[test]
    fn exponential_curve_is_capped() {
        let b = backoff(0.0);
        let got: Vec<u128> = (0..6)
            .map(|a| backoff_delay(&b, a, 0.5).as_millis())
            .collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let b = backoff(0.2);
        assert_eq!(backoff_delay(&b, 1, 0.0), ms(160));
        assert_eq!(backoff_delay(&b, 1, 1.0), ms(240));
        assert_eq!(backoff_delay(&b, 1, 0.5), ms(200));
        // Never beyond the maximum, even with jitter.
        assert_eq!(backoff_delay(&b, 10, 1.0), ms(1000));
    }

    #[test]
    fn intensity_limit_and_reset() {
        let recovery = Recovery {
            max_restarts: 3,
            window: ms(10_000),
            backoff: backoff(0.0),
            ..Recovery::default()
        };
        let t0 = Instant::now();
        let mut h = History::default();
        let mut verdicts = Vec::new();
        for k in 0..4 {
            verdicts.push(h.on_failure(&recovery, t0 + ms(k * 100), ms(10), 0.5));
        }
        assert_eq!(
            verdicts,
            [
                Verdict::Restart {
                    delay: ms(100),
                    attempt: 0
                },
                Verdict::Restart {
                    delay: ms(200),
                    attempt: 1
                },
                Verdict::Restart {
                    delay: ms(400),
                    attempt: 2
                },
                Verdict::Exhausted { restarts: 3 },
            ]
        );
        // Once the window has passed, restarts are allowed again; a long stable run resets the curve.
        assert_eq!(
            h.on_failure(&recovery, t0 + ms(20_000), ms(6000), 0.5),
            Verdict::Restart {
                delay: ms(100),
                attempt: 0
            }
        );
    }
}
