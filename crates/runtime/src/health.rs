//! Health levels with their causes, and the liveness probe that pings an incarnation through its own
//! control channel.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::spec::HealthPolicy;

/// A service's health as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "level", rename_all = "snake_case")]
pub enum Health {
    /// Not running, or not ready yet.
    Unknown,
    Healthy,
    /// Working with reduced function.
    Degraded {
        reason: String,
    },
    /// Not working: failed, hung, or its dependencies are down.
    Unhealthy {
        reason: String,
    },
}

impl Health {
    pub fn level(&self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Degraded { .. } => "degraded",
            Health::Unhealthy { .. } => "unhealthy",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Health::Degraded { reason } | Health::Unhealthy { reason } => Some(reason),
            Health::Unknown | Health::Healthy => None,
        }
    }
}

/// Messages that overtake data in an incarnation's receive loop.
#[derive(Debug)]
pub(crate) enum Control {
    Ping(oneshot::Sender<()>),
    Stop,
    Fault(crate::journal::Fault),
}

/// Pings through `control` every `interval`; returns the number of consecutive misses once it reaches
/// the threshold, or `None` when cancelled or when the incarnation's control channel is gone.
pub(crate) async fn probe(
    control: mpsc::Sender<Control>,
    policy: HealthPolicy,
    cancel: CancellationToken,
) -> Option<u32> {
    let mut missed = 0;
    let mut next = tokio::time::Instant::now() + policy.interval;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep_until(next) => {}
        }
        next += policy.interval;
        let (tx, rx) = oneshot::channel();
        let answered = match control.try_send(Control::Ping(tx)) {
            Ok(()) => tokio::select! {
                _ = cancel.cancelled() => return None,
                r = tokio::time::timeout(policy.timeout, rx) => matches!(r, Ok(Ok(()))),
            },
            Err(mpsc::error::TrySendError::Full(_)) => false,
            Err(mpsc::error::TrySendError::Closed(_)) => return None,
        };
        missed = if answered { 0 } else { missed + 1 };
        if missed >= policy.failure_threshold.max(1) {
            return Some(missed);
        }
    }
}

/// The longest a hang can go unnoticed: the first missed ping is sent at most one interval after the
/// hang, the last one `threshold - 1` intervals later, and it times out `timeout` after that. Exact
/// under a paused clock; on a real clock add the timer wheel's millisecond rounding (about 1 ms per
/// timer, measured 2 to 3 ms in all).
pub fn worst_case_detection(policy: &HealthPolicy) -> Duration {
    policy.interval * policy.failure_threshold.max(1) + policy.timeout
}
