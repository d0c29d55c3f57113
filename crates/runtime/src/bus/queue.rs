//! A service's queue: any number of senders (the handles) and of receivers (the replicas of the
//! service), with the items and the receivers waiting for them under one lock.
//!
//! One lock for both is what makes it cheap: a receiver that finds the queue empty registers its
//! waker in the same critical section, so nothing pushed in between can be missed and no second look
//! is needed; a push hands its item over and takes the waker to wake in one critical section too.
//! (Its predecessor, a lock-free queue beside tokio's `Notify`, took three locks and a dozen atomic
//! operations per request; `docs/performance.md` has the figures.) Nothing is allocated per item or
//! per wait once the two deques have grown to the service's load.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Identifies one receiver of a queue (one replica's incarnation), for its place among the waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Receiver(u64);

/// In declaration order (`repr(C)`): the counters a request's way reads, then the lock and the items,
/// so that a receiver's look (the signals, the lock, the items) is one cache line.
#[repr(C)]
pub(crate) struct Queue<T> {
    /// The items queued, kept beside the lock for readers that only need the number (the bound is
    /// checked on every send).
    len: AtomicUsize,
    /// How many control signals were sent to the receivers ([`Queue::signal`]): a receiver looks
    /// into its control channel only when this has moved since its last look.
    signals: AtomicU64,
    receivers: AtomicU64,
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    items: VecDeque<T>,
    /// Receivers waiting for an item, oldest first. At most one entry per receiver.
    waiting: VecDeque<(Receiver, Waker)>,
}

/// Above this many slots, an emptied queue gives back its memory (a burst should not pin it).
const KEEP: usize = 256;

impl<T> Queue<T> {
    pub(crate) fn new() -> Self {
        Queue {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                waiting: VecDeque::new(),
            }),
            len: AtomicUsize::new(0),
            signals: AtomicU64::new(0),
            receivers: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // Nothing under the lock panics (no user code runs there); a poisoned lock's data is whole.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new receiver's identity.
    pub(crate) fn receiver(&self) -> Receiver {
        Receiver(self.receivers.fetch_add(1, Ordering::Relaxed))
    }

    /// Queues `item` and wakes the receiver that has waited longest, if any waits.
    pub(crate) fn push(&self, item: T) {
        let waker = {
            let mut inner = self.lock();
            inner.items.push_back(item);
            self.len.store(inner.items.len(), Ordering::Relaxed);
            inner.waiting.pop_front()
        };
        if let Some((_, waker)) = waker {
            waker.wake();
        }
    }

    /// The next item, if one is queued.
    pub(crate) fn try_pop(&self) -> Option<T> {
        let mut inner = self.lock();
        let item = inner.items.pop_front();
        self.popped(&mut inner);
        item
    }

    /// The next item, or `Pending` with `receiver` registered to be woken by the next push (or by
    /// [`Queue::signal`]). A receiver that stops waiting before it took an item calls
    /// [`Queue::leave`].
    pub(crate) fn poll_pop(&self, receiver: Receiver, cx: &mut Context<'_>) -> Poll<T> {
        let mut inner = self.lock();
        if let Some(item) = inner.items.pop_front() {
            self.popped(&mut inner);
            return Poll::Ready(item);
        }
        match inner.waiting.iter_mut().find(|(r, _)| *r == receiver) {
            Some((_, waker)) => waker.clone_from(cx.waker()),
            None => inner.waiting.push_back((receiver, cx.waker().clone())),
        }
        Poll::Pending
    }

    /// `receiver` stops waiting without having taken an item: its place among the waiting goes, and
    /// if a push had already chosen it (it is no longer among them) while items remain, the wake-up
    /// passes to the next receiver waiting, so no item is left with a receiver asleep.
    pub(crate) fn leave(&self, receiver: Receiver) {
        let waker = {
            let mut inner = self.lock();
            match inner.waiting.iter().position(|(r, _)| *r == receiver) {
                Some(at) => {
                    inner.waiting.remove(at);
                    None
                }
                None if !inner.items.is_empty() => inner.waiting.pop_front(),
                None => None,
            }
        };
        if let Some((_, waker)) = waker {
            waker.wake();
        }
    }

    /// How many items are queued.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    fn popped(&self, inner: &mut Inner<T>) {
        self.len.store(inner.items.len(), Ordering::Relaxed);
        if inner.items.is_empty() && inner.items.capacity() > KEEP {
            inner.items.shrink_to(KEEP / 4);
        }
    }
}

impl<T> Queue<T> {
    /// Tells the receivers that a control message was sent (or a control channel closed): the
    /// count of signals moves, then every receiver waiting wakes (the message may be for any one of
    /// them), so each looks into its control channel once more.
    pub(crate) fn signal(&self) {
        // After the message was sent: a receiver that sees the count move finds the message.
        self.signals.fetch_add(1, Ordering::Release);
        self.wake_receivers();
    }

    /// The count of signals sent so far, to compare with the one seen at the last look.
    #[inline]
    pub(crate) fn signals(&self) -> u64 {
        self.signals.load(Ordering::Acquire)
    }

    /// Wakes every receiver waiting (for a control message, which only one of them may be for).
    fn wake_receivers(&self) {
        let waiting = std::mem::take(&mut self.lock().waiting);
        for (_, waker) in waiting {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::sync::Arc;

    use super::*;

    /// Polls `receiver`'s wait once, returning the item if one was there.
    fn poll_once(queue: &Queue<u32>, receiver: Receiver, waker: &Waker) -> Option<u32> {
        match queue.poll_pop(receiver, &mut Context::from_waker(waker)) {
            Poll::Ready(item) => Some(item),
            Poll::Pending => None,
        }
    }

    /// A waker that counts its wake-ups.
    fn counting() -> (Waker, Arc<AtomicUsize>) {
        struct Count(Arc<AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let n = Arc::new(AtomicUsize::new(0));
        (Waker::from(Arc::new(Count(n.clone()))), n)
    }

    /// The wake-ups counted so far by each of `counts`.
    fn woken<const N: usize>(counts: [&AtomicUsize; N]) -> [usize; N] {
        counts.map(|n| n.load(Ordering::SeqCst))
    }

    #[test]
    fn a_push_wakes_the_receiver_that_waited_longest_and_only_it() {
        let queue = Queue::new();
        let (a, b) = (queue.receiver(), queue.receiver());
        let ((wa, na), (wb, nb)) = (counting(), counting());
        assert_eq!(poll_once(&queue, a, &wa), None);
        assert_eq!(poll_once(&queue, b, &wb), None);
        // Polled again while waiting: still one place, with the newer waker.
        assert_eq!(poll_once(&queue, a, &wa), None);
        queue.push(1);
        assert_eq!(woken([&na, &nb]), [1, 0]);
        assert_eq!(queue.len(), 1);
        queue.push(2);
        assert_eq!(woken([&na, &nb]), [1, 1]);
        // Items come out in order, whoever takes them.
        assert_eq!(poll_once(&queue, b, &wb), Some(1));
        assert_eq!(queue.try_pop(), Some(2));
        assert_eq!(queue.len(), 0);
        // Nobody waits now: a push wakes nobody, and the item waits for the next look.
        queue.push(3);
        assert_eq!(woken([&na, &nb]), [1, 1]);
        assert_eq!(poll_once(&queue, a, &wa), Some(3));
    }

    #[test]
    fn a_receiver_that_leaves_after_its_wake_up_passes_it_on() {
        let queue = Queue::new();
        let (a, b) = (queue.receiver(), queue.receiver());
        let ((wa, _), (wb, nb)) = (counting(), counting());
        assert_eq!(poll_once(&queue, a, &wa), None);
        assert_eq!(poll_once(&queue, b, &wb), None);
        queue.push(7);
        // `a` was chosen, and stops waiting (its incarnation stopped, or its future was dropped in
        // a `select!`) without taking the item: `b` is woken for it.
        queue.leave(a);
        assert_eq!(nb.load(Ordering::SeqCst), 1);
        assert_eq!(poll_once(&queue, b, &wb), Some(7));
        // Leaving while still waiting only gives up the place: the next push goes to the other.
        assert_eq!(poll_once(&queue, a, &wa), None);
        assert_eq!(poll_once(&queue, b, &wb), None);
        queue.leave(a);
        queue.push(8);
        assert_eq!(nb.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_signal_wakes_every_receiver_waiting() {
        let queue = Queue::<u32>::new();
        let (a, b) = (queue.receiver(), queue.receiver());
        let ((wa, na), (wb, nb)) = (counting(), counting());
        assert_eq!(poll_once(&queue, a, &wa), None);
        assert_eq!(poll_once(&queue, b, &wb), None);
        queue.signal();
        assert_eq!(woken([&na, &nb]), [1, 1]);
        // They are no longer registered: a push now wakes nobody until one waits again.
        queue.push(1);
        assert_eq!(woken([&na, &nb]), [1, 1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_item_pushed_from_other_threads_reaches_a_waiting_receiver() {
        let queue = Arc::new(Queue::<u32>::new());
        let receivers: Vec<_> = (0..3)
            .map(|_| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    let me = queue.receiver();
                    let mut sum = 0u64;
                    loop {
                        match poll_fn(|cx| queue.poll_pop(me, cx)).await {
                            0 => return sum,
                            n => sum += u64::from(n),
                        }
                    }
                })
            })
            .collect();
        let senders: Vec<_> = (0..4)
            .map(|_| {
                let queue = queue.clone();
                std::thread::spawn(move || (1..=10_000).for_each(|n| queue.push(n)))
            })
            .collect();
        for sender in senders {
            sender.join().expect("a sender thread");
        }
        // One stop per receiver, after every item.
        (0..3).for_each(|_| queue.push(0));
        let mut total = 0;
        for receiver in receivers {
            total += receiver.await.expect("a receiver");
        }
        assert_eq!(total, 4 * (10_000 * 10_001 / 2));
    }
}
