//! The per-account rate limit: a token bucket that refills at `rate` requests per second up to
//! `burst`, and says how long to wait when it is empty.

use std::time::{Duration, Instant};

/// The limit in force (from `[services.account]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

/// One account's bucket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(crate) fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.burst,
            last: now,
        }
    }

    /// Takes one token, or says how long until one is there.
    pub(crate) fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - self.tokens) / rate.per_second,
            ))
        }
    }

    /// Whether the bucket has refilled completely (an idle account: its bucket can be forgotten).
    pub(crate) fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * rate.per_second >= rate.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_second: 10.0,
        burst: 3.0,
    };

    /// Takes at the given offsets (ms) and returns which succeeded, or the wait in ms.
    fn check(offsets_ms: &[u64], expected: &[Result<(), u64>]) {
        let start = Instant::now();
        let mut bucket = Bucket::full(RATE, start);
        let got: Vec<Result<(), u64>> = offsets_ms
            .iter()
            .map(|ms| {
                bucket
                    .take(RATE, start + Duration::from_millis(*ms))
                    .map_err(|wait| wait.as_millis() as u64)
            })
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn burst_then_refill() {
        // Three at once (the burst), the fourth waits 100 ms (one token at 10/s).
        check(&[0, 0, 0, 0], &[Ok(()), Ok(()), Ok(()), Err(100)]);
        // 50 ms later half a token has come back: wait 50 ms more.
        check(&[0, 0, 0, 50], &[Ok(()), Ok(()), Ok(()), Err(50)]);
        // 100 ms later one token is back.
        check(
            &[0, 0, 0, 100, 100],
            &[Ok(()), Ok(()), Ok(()), Ok(()), Err(100)],
        );
        // A long idle never refills past the burst.
        check(
            &[0, 10_000, 10_000, 10_000, 10_000],
            &[Ok(()), Ok(()), Ok(()), Ok(()), Err(100)],
        );
    }

    #[test]
    fn refused_takes_cost_nothing() {
        // Hammering an empty bucket does not push the next success further away.
        check(
            &[0, 0, 0, 10, 20, 30, 40, 100],
            &[
                Ok(()),
                Ok(()),
                Ok(()),
                Err(90),
                Err(80),
                Err(70),
                Err(60),
                Ok(()),
            ],
        );
    }

    #[test]
    fn fullness() {
        let start = Instant::now();
        let mut bucket = Bucket::full(RATE, start);
        assert!(bucket.is_full(RATE, start));
        bucket.take(RATE, start).expect("a token");
        assert!(!bucket.is_full(RATE, start));
        assert!(bucket.is_full(RATE, start + Duration::from_millis(100)));
    }
}
