//! One call in flight: where its answer, its deadline and its caller meet.
//!
//! A call is one allocation shared by the caller (waiting on it), the [`Reply`] inside the request,
//! the envelope in the mailbox (which settles the call's outcome if the request is dead-lettered)
//! and the bus's [`super::deadlines::Deadlines`] (which ends the wait when the deadline comes). It
//! replaces a tokio `oneshot`, a separate outcome tracker and a timer per call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use serde::Serialize;
use tokio::time::Instant;

use super::stats::EdgeStats;
use crate::ServiceName;

/// How a message ended. Exactly one per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Its reply was sent.
    Handled,
    /// It was answered with an error: refused at the door, or its reply dropped unanswered.
    Error,
    /// It was dead-lettered with a reason.
    DeadLettered,
}

/// What the bus needs of a call in flight without knowing its answer's type.
pub(crate) trait Pending: Send + Sync {
    /// Settles the call's outcome once, whoever gets there first: the reply, the dead-letter queue,
    /// or the drop of an unanswered reply. `false` if it was already settled.
    fn settle(&self, outcome: Outcome) -> bool;
    /// Who made the call.
    fn caller(&self) -> Option<ServiceName>;
    /// The call's deadline has come: a caller still waiting stops waiting, with a timeout. The
    /// request itself is not settled: it is still handled, or dead-lettered, and counted then.
    fn expire(&self);
    /// Whether [`Pending::expire`] would do nothing now or later: the caller has its answer, or
    /// why there is none, or stopped waiting. The deadlines let go of such a call.
    fn is_over(&self) -> bool;
    /// Whether the caller was told the deadline came (by the deadlines' task, or by its own wait
    /// polled at the deadline). A receiver that takes such a request dead-letters it, without a
    /// clock read of its own.
    fn is_expired(&self) -> bool;
}

/// [`Call::phase`]: the caller still waits.
const WAITING: u8 = 0;
/// [`Call::phase`]: the caller has its answer or why there is none, or stopped waiting.
const OVER: u8 = 1;
/// [`Call::phase`]: the caller was told that the deadline came. Only ever raised to, never left.
const EXPIRED: u8 = 2;

/// The shared state of one call.
pub(crate) struct Call<T> {
    state: Mutex<State<T>>,
    settled: AtomicBool,
    /// [`WAITING`] until the state leaves `Waiting`, then [`OVER`] or [`EXPIRED`] (set under the
    /// lock as it does): for the deadlines' sweeps and the receiver's expiry check, which take no
    /// call's lock.
    phase: AtomicU8,
    edge: Arc<EdgeStats>,
}

enum State<T> {
    /// Nobody has answered yet; the caller's waker once it has waited.
    Waiting(Option<Waker>),
    Answered(T),
    /// The reply was dropped unanswered.
    Dropped,
    /// The deadline came first.
    Expired,
    /// The caller has taken the outcome, or stopped waiting.
    Done,
}

impl<T: Send + 'static> Call<T> {
    /// A call on `edge` until `deadline`: what the caller waits on, and the reply that goes into
    /// the request.
    pub(crate) fn open(edge: Arc<EdgeStats>, deadline: Instant) -> (Wait<T>, Reply<T>) {
        let call = Arc::new(Call {
            state: Mutex::new(State::Waiting(None)),
            settled: AtomicBool::new(false),
            phase: AtomicU8::new(WAITING),
            edge,
        });
        (
            Wait {
                call: call.clone(),
                deadline,
                finished: false,
            },
            Reply { call: Some(call) },
        )
    }
}

impl<T> Call<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing that runs under this lock can panic; a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn settle_once(&self, outcome: Outcome) -> bool {
        if self.settled.swap(true, Ordering::AcqRel) {
            return false;
        }
        let counter = match outcome {
            Outcome::Handled => &self.edge.handled.0,
            Outcome::Error => &self.edge.errors,
            Outcome::DeadLettered => &self.edge.dead_lettered,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Moves a waiting call to `to` and wakes its caller; a call no longer waiting is left as it is
    /// (and `to` dropped).
    fn end(&self, to: State<T>) {
        let mut state = self.lock();
        if let State::Waiting(waker) = &mut *state {
            let waker = waker.take();
            let phase = if matches!(to, State::Expired) {
                EXPIRED
            } else {
                OVER
            };
            *state = to;
            self.phase.store(phase, Ordering::Release);
            drop(state);
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

impl<T: Send + 'static> Pending for Call<T> {
    fn settle(&self, outcome: Outcome) -> bool {
        self.settle_once(outcome)
    }

    fn caller(&self) -> Option<ServiceName> {
        self.edge.caller.clone()
    }

    fn expire(&self) {
        self.end(State::Expired);
    }

    fn is_over(&self) -> bool {
        self.phase.load(Ordering::Acquire) != WAITING
    }

    fn is_expired(&self) -> bool {
        self.phase.load(Ordering::Acquire) == EXPIRED
    }
}

/// How a wait ended without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unanswered {
    /// The reply was dropped unanswered (the incarnation holding it ended).
    Interrupted,
    /// The deadline came first.
    Expired,
}

/// The caller's side of a call: resolves to the answer, or to why there is none.
pub(crate) struct Wait<T> {
    call: Arc<Call<T>>,
    deadline: Instant,
    /// The outcome was taken: dropping needs to tell nobody.
    finished: bool,
}

impl<T: Send + 'static> Wait<T> {
    /// The call, for the mailbox's envelope and the deadlines.
    pub(crate) fn pending(&self) -> Arc<dyn Pending> {
        self.call.clone()
    }
}

impl<T> Future for Wait<T> {
    type Output = Result<T, Unanswered>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.call.lock();
        let outcome = match std::mem::replace(&mut *state, State::Done) {
            // Polled again with no answer: if that is because the deadline has come, the wait ends
            // now rather than when the deadlines' task gets to it. So work that waits under the
            // same deadline (the HTTP API's `timeout_at` around a handler, which polls the handler
            // first) sees the call's own timeout, naming the service, at the same instant.
            State::Waiting(Some(_)) if Instant::now() >= self.deadline => {
                self.call.phase.store(EXPIRED, Ordering::Release);
                Err(Unanswered::Expired)
            }
            State::Waiting(mut waker) => {
                match &mut waker {
                    Some(w) => w.clone_from(cx.waker()),
                    None => waker = Some(cx.waker().clone()),
                }
                *state = State::Waiting(waker);
                return Poll::Pending;
            }
            State::Answered(value) => Ok(value),
            State::Dropped | State::Done => Err(Unanswered::Interrupted),
            State::Expired => Err(Unanswered::Expired),
        };
        drop(state);
        self.finished = true;
        Poll::Ready(outcome)
    }
}

impl<T> Drop for Wait<T> {
    fn drop(&mut self) {
        if !self.finished {
            // The caller stopped waiting (its task was cancelled): the reply is no longer wanted.
            *self.call.lock() = State::Done;
            // A call that expired stays expired: its request is still dead-lettered if it is
            // taken.
            self.call.phase.fetch_max(OVER, Ordering::AcqRel);
        }
    }
}

/// The sending half of a typed reply, carried inside a request.
///
/// Dropping it unanswered (for example because the incarnation holding it panicked) gives the caller
/// [`crate::CallError::Interrupted`].
pub struct Reply<T> {
    call: Option<Arc<Call<T>>>,
}

impl<T> Reply<T> {
    /// Answers the request.
    pub fn send(mut self, value: T) {
        if let Some(call) = self.call.take() {
            call.settle_once(Outcome::Handled);
            // The caller may have given up at its deadline; the request was still handled.
            call.end(State::Answered(value));
        }
    }

    /// Whether the caller is still waiting for the answer.
    pub fn is_wanted(&self) -> bool {
        self.call
            .as_ref()
            .is_some_and(|call| matches!(*call.lock(), State::Waiting(_)))
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.settle_once(Outcome::Error);
            call.end(State::Dropped);
        }
    }
}

impl<T> fmt::Debug for Reply<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("wanted", &self.is_wanted())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::Ordering::Relaxed;
    use std::task::{Context, Poll, Waker};

    use super::*;

    fn edge() -> Arc<EdgeStats> {
        Arc::new(EdgeStats::new(
            None,
            ServiceName::new("svc").expect("a valid name"),
        ))
    }

    fn far() -> Instant {
        Instant::now() + std::time::Duration::from_secs(3600)
    }

    fn poll<T>(wait: &mut Wait<T>) -> Poll<Result<T, Unanswered>> {
        Pin::new(wait).poll(&mut Context::from_waker(Waker::noop()))
    }

    /// Each way a call can end reaches the caller as what it means, the outcome is counted once, a
    /// reply is wanted exactly while its caller waits, the call is over (for the deadlines, which
    /// then let it go) exactly once it has ended for the caller, and expired (for a receiver, which
    /// then dead-letters the request) exactly once the caller was told its deadline came.
    #[test]
    fn a_call_ends_once_and_its_reply_is_wanted_only_while_the_caller_waits() {
        // Answered.
        let edge = edge();
        let (mut wait, reply) = Call::<u32>::open(edge.clone(), far());
        let pending = wait.pending();
        assert!(poll(&mut wait).is_pending());
        assert!(reply.is_wanted());
        assert!(!pending.is_over());
        reply.send(7);
        assert!(
            pending.is_over(),
            "answered: its deadline has nothing left to do"
        );
        assert!(!pending.is_expired());
        assert_eq!(poll(&mut wait), Poll::Ready(Ok(7)));

        // The reply dropped unanswered: interrupted, counted as an error.
        let (mut wait, reply) = Call::<u32>::open(edge.clone(), far());
        let pending = wait.pending();
        drop(reply);
        assert!(pending.is_over());
        assert_eq!(poll(&mut wait), Poll::Ready(Err(Unanswered::Interrupted)));

        // The deadline first: a timeout for the caller; the late answer is still counted as handled,
        // and only once (a dead letter after it changes nothing).
        let (mut wait, reply) = Call::<u32>::open(edge.clone(), far());
        let pending = wait.pending();
        assert!(poll(&mut wait).is_pending());
        pending.expire();
        assert!(pending.is_over());
        assert!(pending.is_expired(), "a receiver dead-letters it");
        assert!(!reply.is_wanted(), "nobody waits for it after the deadline");
        assert_eq!(poll(&mut wait), Poll::Ready(Err(Unanswered::Expired)));
        reply.send(8);
        assert!(!pending.settle(Outcome::DeadLettered));

        // The caller stops waiting (its task is cancelled): the reply is no longer wanted, and a
        // deadline after that finds nobody.
        let (wait, reply) = Call::<u32>::open(edge.clone(), far());
        let pending = wait.pending();
        drop(wait);
        assert!(
            pending.is_over(),
            "nobody waits: its deadline has nothing left to do"
        );
        assert!(
            !pending.is_expired(),
            "stopping is not a deadline: the receiver compares its deadline with the clock"
        );
        assert!(!reply.is_wanted());
        pending.expire();
        drop(reply);

        // Expired, then the caller's wait dropped before it took the timeout: still expired, so
        // the request is still dead-lettered when it is taken.
        let (wait, reply) = Call::<u32>::open(edge.clone(), far());
        let pending = wait.pending();
        pending.expire();
        drop(wait);
        assert!(pending.is_expired());
        drop(reply);

        assert_eq!(edge.handled.load(Relaxed), 2);
        assert_eq!(edge.errors.load(Relaxed), 3);
        assert_eq!(edge.dead_lettered.load(Relaxed), 0);
    }

    /// A wait polled again at its deadline ends with a timeout by itself, without the deadlines'
    /// task: what the HTTP API's own timeout, firing at the same instant, relies on.
    #[tokio::test(start_paused = true)]
    async fn a_wait_polled_at_its_deadline_times_out_by_itself() {
        let deadline = Instant::now() + std::time::Duration::from_secs(1);
        let (mut wait, reply) = Call::<u32>::open(edge(), deadline);
        assert!(poll(&mut wait).is_pending());
        tokio::time::advance(std::time::Duration::from_millis(999)).await;
        assert!(poll(&mut wait).is_pending(), "not before its deadline");
        tokio::time::advance(std::time::Duration::from_millis(1)).await;
        let pending = wait.pending();
        assert!(!pending.is_over());
        assert_eq!(poll(&mut wait), Poll::Ready(Err(Unanswered::Expired)));
        assert!(pending.is_over());
        assert!(pending.is_expired());
        assert!(!reply.is_wanted());
    }
}
