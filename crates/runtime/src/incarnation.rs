//! What the supervisor and an incarnation say to each other: the incarnation's identity, the control
//! messages that overtake its data, the reports it sends back, and the liveness probe that pings it
//! through its own control channel.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::bus::WakeAll;
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

/// The supervisor's side of an incarnation's control channel. Sending wakes the incarnation
/// through its mailbox's wake-up, so an idle incarnation waits on one thing (its mailbox) rather
/// than on two, and the last sender's drop wakes it too, to see the channel closed.
#[derive(Clone)]
pub(crate) struct ControlSender(Arc<ControlInner>);

struct ControlInner {
    tx: Option<mpsc::Sender<Control>>,
    ready: Arc<dyn WakeAll>,
    /// Set after each message and as the last sender drops: the receiver looks at the channel
    /// only when it is, so a request's way through `Context::recv` costs one atomic swap for
    /// control rather than a look into the channel.
    pending: Arc<AtomicBool>,
}

/// An incarnation's control channel of `capacity` messages; sending wakes the receivers waiting on
/// `ready` (the mailbox's queue).
pub(crate) fn control_channel(
    capacity: usize,
    ready: Arc<dyn WakeAll>,
) -> (ControlSender, ControlReceiver) {
    let (tx, rx) = mpsc::channel(capacity);
    let pending = Arc::new(AtomicBool::new(false));
    let sender = ControlSender(Arc::new(ControlInner {
        tx: Some(tx),
        ready,
        pending: pending.clone(),
    }));
    (sender, ControlReceiver { rx, pending })
}

impl ControlSender {
    pub(crate) fn try_send(&self, control: Control) -> Result<(), TrySendError<Control>> {
        // `tx` is taken only as the last sender drops.
        let Some(tx) = &self.0.tx else {
            return Err(TrySendError::Closed(control));
        };
        let result = tx.try_send(control);
        if result.is_ok() {
            // After the send: a receiver that sees the flag finds the message.
            self.0.pending.store(true, Ordering::Release);
            // Every waiting replica wakes; those the message is not for look and wait again.
            self.0.ready.wake_all();
        }
        result
    }
}

impl Drop for ControlInner {
    fn drop(&mut self) {
        drop(self.tx.take());
        self.pending.store(true, Ordering::Release);
        self.ready.wake_all();
    }
}

/// The incarnation's side of its control channel.
#[derive(Debug)]
pub(crate) struct ControlReceiver {
    rx: mpsc::Receiver<Control>,
    pending: Arc<AtomicBool>,
}

impl ControlReceiver {
    /// The next control message, `Empty` without looking into the channel when nothing was sent
    /// since it was last found empty, or `Disconnected` once every sender is gone.
    #[inline]
    pub(crate) fn try_recv(&mut self) -> Result<Control, TryRecvError> {
        // A plain load first: on a request's way through `Context::recv` nothing was sent.
        if !self.pending.load(Ordering::Relaxed) || !self.pending.swap(false, Ordering::Acquire) {
            return Err(TryRecvError::Empty);
        }
        let got = self.rx.try_recv();
        if !matches!(got, Err(TryRecvError::Empty)) {
            // More may wait behind this one (or the channel stays closed): look again next time.
            self.pending.store(true, Ordering::Relaxed);
        }
        got
    }
}

/// Pings through `control` every `interval`; returns the number of consecutive misses once it reaches
/// the threshold, or `None` when cancelled or when the incarnation's control channel is gone.
pub(crate) async fn probe(
    control: ControlSender,
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
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Closed(_)) => return None,
        };
        missed = if answered { 0 } else { missed + 1 };
        if missed >= policy.failure_threshold.max(1) {
            return Some(missed);
        }
    }
}
