//! What the supervisor and an incarnation say to each other: the incarnation's identity, the control
//! messages that overtake its data, the reports it sends back, and the liveness probe that pings it
//! through its own control channel.

use std::sync::Arc;

use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::bus::Signal;
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

/// The supervisor's side of an incarnation's control channel. Sending signals the incarnation
/// through its mailbox ([`crate::bus::Queue::signal`]), so an idle incarnation waits on one thing
/// (its mailbox) rather than on two, and the last sender's drop signals too, for the channel closed.
#[derive(Clone)]
pub(crate) struct ControlSender(Arc<ControlInner>);

struct ControlInner {
    tx: Option<mpsc::Sender<Control>>,
    /// The mailbox, signalled after each message and as the last sender drops: the receiver looks
    /// at the channel only when the mailbox's count of signals has moved, so a request's way
    /// through `Context::recv` costs one load, on the queue's own cache line, for control.
    ready: Arc<dyn Signal>,
}

/// An incarnation's control channel of `capacity` messages; sending signals `ready` (the mailbox's
/// queue), which wakes the receivers waiting on it.
pub(crate) fn control_channel(
    capacity: usize,
    ready: Arc<dyn Signal>,
) -> (ControlSender, ControlReceiver) {
    let (tx, rx) = mpsc::channel(capacity);
    let sender = ControlSender(Arc::new(ControlInner {
        tx: Some(tx),
        ready,
    }));
    let receiver = ControlReceiver {
        rx,
        seen: 0,
        again: true,
    };
    (sender, receiver)
}

impl ControlSender {
    pub(crate) fn try_send(&self, control: Control) -> Result<(), TrySendError<Control>> {
        // `tx` is taken only as the last sender drops.
        let Some(tx) = &self.0.tx else {
            return Err(TrySendError::Closed(control));
        };
        let result = tx.try_send(control);
        if result.is_ok() {
            // After the send, so a receiver that sees the signal finds the message. Every waiting
            // replica wakes; those the message is not for look and wait again.
            self.0.ready.signal();
        }
        result
    }
}

impl Drop for ControlInner {
    fn drop(&mut self) {
        drop(self.tx.take());
        self.ready.signal();
    }
}

/// The incarnation's side of its control channel.
#[derive(Debug)]
pub(crate) struct ControlReceiver {
    rx: mpsc::Receiver<Control>,
    /// The mailbox's count of signals at the last look into the channel.
    seen: u64,
    /// The last look found something: more may wait behind it (or the channel stays closed).
    again: bool,
}

impl ControlReceiver {
    /// The next control message, `Empty` without looking into the channel when the mailbox's count
    /// of signals (`signals`, [`crate::bus::Queue::signals`]) has not moved since the channel was
    /// last found empty, or `Disconnected` once every sender is gone.
    #[inline]
    pub(crate) fn try_recv(&mut self, signals: u64) -> Result<Control, TryRecvError> {
        if signals == self.seen && !self.again {
            return Err(TryRecvError::Empty);
        }
        self.look(signals)
    }

    /// Off a request's way: a look into the channel.
    #[inline(never)]
    fn look(&mut self, signals: u64) -> Result<Control, TryRecvError> {
        self.seen = signals;
        let got = self.rx.try_recv();
        self.again = !matches!(got, Err(TryRecvError::Empty));
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

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll, Waker};

    use super::*;
    use crate::bus::Queue;

    fn look(receiver: &mut ControlReceiver, queue: &Queue<u32>) -> Result<Control, TryRecvError> {
        receiver.try_recv(queue.signals())
    }

    /// Every message sent is found at the next look, in order, each once; a replica whose channel
    /// got nothing finds nothing although the mailbox was signalled for its sibling; the last
    /// sender's drop is seen as the channel's end, at every look after it.
    #[test]
    fn each_control_message_is_found_by_its_own_receiver_at_the_next_look() {
        let queue = Arc::new(Queue::<u32>::new());
        let (to_a, mut a) = control_channel(4, queue.clone());
        let (to_b, mut b) = control_channel(4, queue.clone());
        assert!(matches!(look(&mut a, &queue), Err(TryRecvError::Empty)));
        assert!(matches!(look(&mut b, &queue), Err(TryRecvError::Empty)));

        to_a.try_send(Control::Fault(Fault::Hang)).expect("room");
        to_a.try_send(Control::Stop).expect("room");
        assert!(matches!(look(&mut b, &queue), Err(TryRecvError::Empty)));
        assert!(matches!(
            look(&mut a, &queue),
            Ok(Control::Fault(Fault::Hang))
        ));
        assert!(matches!(look(&mut a, &queue), Ok(Control::Stop)));
        assert!(matches!(look(&mut a, &queue), Err(TryRecvError::Empty)));

        to_b.try_send(Control::Stop).expect("room");
        assert!(matches!(look(&mut b, &queue), Ok(Control::Stop)));

        drop(to_a);
        assert!(matches!(
            look(&mut a, &queue),
            Err(TryRecvError::Disconnected)
        ));
        assert!(matches!(
            look(&mut a, &queue),
            Err(TryRecvError::Disconnected)
        ));
        assert!(matches!(look(&mut b, &queue), Err(TryRecvError::Empty)));
    }

    /// A receiver registered as waiting on the mailbox is woken by a control message, and finds it.
    #[test]
    fn a_control_message_wakes_a_receiver_waiting_on_the_mailbox() {
        let queue = Arc::new(Queue::<u32>::new());
        let (to_a, mut a) = control_channel(4, queue.clone());
        let me = queue.receiver();
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        struct Count(Arc<std::sync::atomic::AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let waker = Waker::from(Arc::new(Count(woken.clone())));
        assert!(matches!(look(&mut a, &queue), Err(TryRecvError::Empty)));
        assert_eq!(
            queue.poll_pop(me, &mut Context::from_waker(&waker)),
            Poll::Pending
        );
        to_a.try_send(Control::Stop).expect("room");
        assert_eq!(woken.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(matches!(look(&mut a, &queue), Ok(Control::Stop)));
    }
}
