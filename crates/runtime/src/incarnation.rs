//! What the supervisor and an incarnation say to each other: the incarnation's identity, the control
//! messages that overtake its data, the reports it sends back, and the liveness probe that pings it
//! through its own control channel.

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::event::Fault;
use crate::health::Health;
use crate::spec::HealthPolicy;

/// Identifies one incarnation: which service, which replica slot, which generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct IncarnationId {
    pub(crate) service: usize,
    pub(crate) replica: u32,
    pub(crate) generation: u64,
}

/// What incarnations and probes tell the supervisor.
#[derive(Debug)]
pub(crate) enum Report {
    Ready(IncarnationId),
    Health(IncarnationId, Health),
    Hung(IncarnationId, u32),
}

/// Messages that overtake data in an incarnation's receive loop.
#[derive(Debug)]
pub(crate) enum Control {
    Ping(oneshot::Sender<()>),
    Stop,
    Fault(Fault),
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
