//! Token-bucket rate limits: a bucket refills at `per_second` up to `burst`, and says how long to
//! wait when it is empty; a [`Limiter`] keeps one per key (an account, a host). The account gate and
//! the oracle use it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A limit: `per_second` refill, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// The most tokens the bucket holds.
    pub burst: f64,
}

/// One key's bucket.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn full(rate: Rate, now: Instant) -> Bucket {
        Bucket {
            tokens: rate.burst,
            last: now,
        }
    }

    /// Takes one token, or says how long until one is there.
    pub fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
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
    pub fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * rate.per_second >= rate.burst
    }
}

/// A bucket per key (an account, a host), created full on first use. Once more than `kept` keys
/// are held, idle ones (refilled completely) are forgotten, so the map does not grow with every key
/// ever seen.
#[derive(Debug)]
pub struct Limiter {
    buckets: Mutex<HashMap<String, Bucket>>,
    kept: usize,
}

impl Limiter {
    /// A limiter that starts forgetting full buckets once it keeps `kept` keys.
    pub fn new(kept: usize) -> Limiter {
        Limiter {
            buckets: Mutex::new(HashMap::new()),
            kept,
        }
    }

    /// Takes one token from `key`'s bucket, or says how long until one is there.
    pub fn admit(&self, key: &str, rate: Rate, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = buckets.get_mut(key) {
            return bucket.take(rate, now);
        }
        if buckets.len() >= self.kept {
            buckets.retain(|_, b| !b.is_full(rate, now));
        }
        let mut bucket = Bucket::full(rate, now);
        let taken = bucket.take(rate, now);
        buckets.insert(key.to_owned(), bucket);
        taken
    }

    /// How many keys have a bucket now.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no key has a bucket.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One key's share of a [`Limiter`], handed to work done on its behalf away from the request that
/// started it (a script's capability calls count against the account that runs it). Cheap to clone.
#[derive(Clone)]
pub struct Allowance {
    limiter: std::sync::Arc<Limiter>,
    key: String,
    rate: Rate,
}

impl Allowance {
    /// `key`'s bucket in `limiter`, at `rate`.
    pub fn new(limiter: std::sync::Arc<Limiter>, key: &str, rate: Rate) -> Allowance {
        Allowance {
            limiter,
            key: key.to_owned(),
            rate,
        }
    }

    /// Takes one token, or says how long until one is there.
    pub fn admit(&self) -> Result<(), Duration> {
        self.limiter.admit(&self.key, self.rate, Instant::now())
    }
}

impl std::fmt::Debug for Allowance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allowance")
            .field("key", &self.key)
            .field("rate", &self.rate)
            .finish()
    }
}

/// The same key of the same limiter.
impl PartialEq for Allowance {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.limiter, &other.limiter) && self.key == other.key
    }
}

impl Eq for Allowance {}

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

    #[test]
    fn a_limiter_keeps_a_bucket_per_key_and_forgets_idle_ones() {
        let limiter = Limiter::new(2);
        let start = Instant::now();
        for _ in 0..3 {
            limiter.admit("a", RATE, start).expect("a's burst");
        }
        assert_eq!(
            limiter.admit("a", RATE, start),
            Err(Duration::from_millis(100))
        );
        limiter
            .admit("b", RATE, start)
            .expect("b has its own bucket");
        // Later, with two keys held, a third key forgets the idle (full again) ones.
        let later = start + Duration::from_secs(1);
        limiter.admit("c", RATE, later).expect("c");
        assert_eq!(limiter.len(), 1);
    }
}
