//! The dead-letter queue: a bounded record of messages that reached no handler, each with its reason.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::ServiceName;

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = DeadLetterReason)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Its deadline passed while it waited in the mailbox.
    DeadlineExpired,
    /// The service stopped or failed with the message still queued.
    ServiceStopped,
    /// The incarnation that would have taken it was declared hung, and no other replica was serving.
    ServiceHung,
    /// A subscriber's queue was full when the event was published.
    SubscriberFull,
}

/// A message that could not be delivered, and why.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Letter {
    /// Its place among dead letters, from 1.
    pub seq: u64,
    /// When it was dead-lettered.
    #[serde(
        serialize_with = "crate::event::serialize_time",
        deserialize_with = "crate::event::deserialize_time"
    )]
    #[schema(value_type = String, format = DateTime)]
    pub time: SystemTime,
    /// The sender; `None` outside any service.
    pub from: Option<ServiceName>,
    /// The service or subscriber it was for.
    pub to: ServiceName,
    /// The Rust type of the message.
    #[schema(value_type = String)]
    pub message: Cow<'static, str>,
    /// Why it was not delivered.
    pub reason: Reason,
}

/// Bounded: the oldest letters are dropped first; `total` keeps counting.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    inner: Arc<Mutex<Log>>,
}

#[derive(Debug)]
struct Log {
    letters: VecDeque<Letter>,
    capacity: usize,
    total: u64,
}

impl DeadLetters {
    /// A log that keeps the last `capacity` letters.
    pub fn new(capacity: usize) -> Self {
        DeadLetters {
            inner: Arc::new(Mutex::new(Log {
                letters: VecDeque::new(),
                capacity: capacity.max(1),
                total: 0,
            })),
        }
    }

    pub(crate) fn push(
        &self,
        from: Option<ServiceName>,
        to: ServiceName,
        message: &'static str,
        reason: Reason,
    ) {
        let mut log = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        log.total += 1;
        let seq = log.total;
        if log.letters.len() == log.capacity {
            log.letters.pop_front();
        }
        log.letters.push_back(Letter {
            seq,
            time: SystemTime::now(),
            from,
            to,
            message: Cow::Borrowed(message),
            reason,
        });
    }

    /// The retained letters, oldest first.
    pub fn letters(&self) -> Vec<Letter> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .letters
            .iter()
            .cloned()
            .collect()
    }

    /// Letters ever recorded, including those no longer retained.
    pub fn total(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_counts_all() {
        let dl = DeadLetters::new(2);
        let to = ServiceName::from_static("svc");
        for _ in 0..3 {
            dl.push(None, to.clone(), "T", Reason::DeadlineExpired);
        }
        assert_eq!(dl.total(), 3);
        assert_eq!(
            dl.letters().iter().map(|l| l.seq).collect::<Vec<_>>(),
            [2, 3]
        );
    }
}
