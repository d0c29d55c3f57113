//! Point-to-point requests: a service's mailbox, the handles that send into it, and the typed reply.
//!
//! The mailbox belongs to the service, not to an incarnation: it outlives restarts, and every replica
//! of the service pulls from the same one. A request waits in it while the service restarts, up to its
//! deadline.

use std::any::type_name;
use std::fmt;
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::call::{Call, Outcome, Pending, Reply, Unanswered};
use super::dead_letter::{DeadLetters, Reason};
use super::queue::Queue;
use super::stats::{EdgeStats, Sample};
use crate::breaker::{Admission, BreakerPolicy};
use crate::{ServiceName, State};

/// Why a call did not produce a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The service's mailbox is full.
    #[error("the queue of {service} is full; retry later")]
    QueueFull {
        /// The service called.
        service: ServiceName,
    },
    /// The service is down and not on its way up.
    #[error("{service} is {state} and takes no requests")]
    Unavailable {
        /// The service called.
        service: ServiceName,
        /// Its state.
        state: State,
    },
    /// The incarnation holding the request ended without answering it.
    #[error("the incarnation of {service} handling the request ended before it answered; retry")]
    Interrupted {
        /// The service called.
        service: ServiceName,
    },
    /// No answer before the call's deadline.
    #[error("{service} did not answer before the deadline")]
    DeadlineExceeded {
        /// The service called.
        service: ServiceName,
    },
    /// The circuit breaker on the edge is open.
    #[error("the circuit to {service} is open after repeated failures; retry in {} ms", .retry_after.as_millis())]
    CircuitOpen {
        /// The service called.
        service: ServiceName,
        /// About how long it stays open still.
        retry_after: Duration,
    },
}

impl CallError {
    /// Whether the same request may succeed if sent again later. Every bus error is: the service may
    /// come back, drain its queue or finish restarting.
    pub fn is_retryable(&self) -> bool {
        match self {
            CallError::QueueFull { .. }
            | CallError::Interrupted { .. }
            | CallError::DeadlineExceeded { .. }
            | CallError::CircuitOpen { .. } => true,
            CallError::Unavailable { state, .. } => *state != State::Failed,
        }
    }

    /// When the same request may succeed: when an open circuit half-opens, else after a second
    /// (a queue drains, an incarnation restarts). Never zero.
    pub fn retry_after(&self) -> Duration {
        match self {
            CallError::CircuitOpen { retry_after, .. } => {
                (*retry_after).max(Duration::from_secs(1))
            }
            _ => Duration::from_secs(1),
        }
    }

    /// The service called.
    pub fn service(&self) -> &ServiceName {
        match self {
            CallError::QueueFull { service }
            | CallError::Unavailable { service, .. }
            | CallError::Interrupted { service }
            | CallError::DeadlineExceeded { service }
            | CallError::CircuitOpen { service, .. } => service,
        }
    }
}

/// A request type names its operations, for per-operation figures (`sign`, `put`, ...).
pub trait Operation: Send + 'static {
    /// The operation's name.
    fn operation(&self) -> &'static str;
}

impl<T: Send + 'static> Operation for Reply<T> {
    fn operation(&self) -> &'static str {
        "call"
    }
}

pub(crate) struct Envelope<R> {
    pub(crate) message: R,
    /// The call, for settling its outcome if the request is dead-lettered.
    pub(crate) tracker: Arc<dyn Pending>,
    pub(crate) deadline: Instant,
}

const OPEN: u8 = u8::MAX;

/// The mailbox of one service, shared by its handles and its incarnations.
///
/// In declaration order (`repr(C)`): the queue, then what every call reads (the gate, the bound,
/// the timeout), so that a call's way through the mailbox is two cache lines (three with its
/// operation's figures) wherever the compiler would have put the rest.
#[repr(C)]
pub(crate) struct Mailbox<R> {
    pub(crate) queue: Queue<Envelope<R>>,
    /// `OPEN`, or the state (as `State as u8`) that makes the service refuse requests.
    gate: AtomicU8,
    /// `breaker.enabled`, readable without the lock on every call.
    breaker_on: AtomicBool,
    shedding: AtomicBool,
    /// Live-tunable: configuration changes reach handles without a restart.
    capacity: AtomicUsize,
    call_timeout_us: AtomicU64,
    pub(crate) name: ServiceName,
    breaker: RwLock<BreakerPolicy>,
    pub(crate) dead_letters: DeadLetters,
    pub(crate) operations: super::stats::Operations,
}

fn state_code(state: State) -> u8 {
    state as u8
}

fn state_from_code(code: u8) -> State {
    const ALL: [State; 8] = [
        State::Registered,
        State::Starting,
        State::Running,
        State::Degraded,
        State::Backoff,
        State::Stopping,
        State::Stopped,
        State::Failed,
    ];
    ALL.into_iter()
        .find(|s| *s as u8 == code)
        .unwrap_or(State::Stopped)
}

impl<R: Send + 'static> Mailbox<R> {
    pub(crate) fn new(spec: &crate::Spec, dead_letters: DeadLetters) -> Self {
        // Unbounded underneath (it allocates lazily, so an idle service costs little); the bound is
        // enforced on send.
        let mailbox = Mailbox {
            name: spec.name.clone(),
            queue: Queue::new(),
            capacity: AtomicUsize::new(1),
            call_timeout_us: AtomicU64::new(0),
            breaker: RwLock::new(spec.breaker),
            breaker_on: AtomicBool::new(spec.breaker.enabled),
            shedding: AtomicBool::new(false),
            gate: AtomicU8::new(state_code(State::Registered)),
            dead_letters,
            operations: super::stats::Operations::default(),
        };
        mailbox.tune(spec);
        mailbox
    }

    fn tune(&self, spec: &crate::Spec) {
        self.capacity
            .store(spec.queue_capacity.max(1), Ordering::Relaxed);
        let us = spec.call_timeout.as_micros().min(u128::from(u64::MAX)) as u64;
        self.call_timeout_us.store(us, Ordering::Relaxed);
        *self.breaker.write().unwrap_or_else(|p| p.into_inner()) = spec.breaker;
        self.breaker_on
            .store(spec.breaker.enabled, Ordering::Relaxed);
    }

    /// The queue bound, cut to an eighth while shedding load.
    fn effective_capacity(&self) -> usize {
        let capacity = self.capacity.load(Ordering::Relaxed);
        if self.shedding.load(Ordering::Relaxed) {
            (capacity / 8).max(1)
        } else {
            capacity
        }
    }

    fn breaker_policy(&self) -> BreakerPolicy {
        *self.breaker.read().unwrap_or_else(|p| p.into_inner())
    }

    /// `envelope`, or `None` once it is dead-lettered because its deadline passed while it was
    /// queued: what a receiver does with every request it takes.
    ///
    /// A caller still waiting is told of its deadline by the deadlines' task (or by its own wait),
    /// which marks the call expired; that mark is what is looked at here, so taking a request reads
    /// no clock (a clock read was one of three per call, about 5 % of a call's time). The price: a
    /// request taken between its deadline and that mark, a timer tick at most, is still handled,
    /// and its answer dropped. A request whose caller stopped waiting before has no mark coming,
    /// so its deadline is compared with the clock.
    pub(crate) fn unexpired(&self, envelope: Envelope<R>) -> Option<Envelope<R>> {
        let tracker = &envelope.tracker;
        if tracker.is_expired() || (tracker.is_over() && envelope.deadline <= Instant::now()) {
            self.dead_letter(envelope, Reason::DeadlineExpired);
            return None;
        }
        Some(envelope)
    }

    pub(crate) fn dead_letter(&self, envelope: Envelope<R>, reason: Reason) {
        if envelope.tracker.settle(Outcome::DeadLettered) {
            self.dead_letters.push(
                envelope.tracker.caller(),
                self.name.clone(),
                type_name::<R>(),
                reason,
            );
        }
    }
}

/// What a control sender needs of the mailbox its incarnation waits on: to signal that a message
/// was sent, and to wake every replica waiting, so that the one the message is for looks at its
/// control channel.
pub(crate) trait Signal: Send + Sync {
    fn signal(&self);
}

/// A control sender signals through the mailbox's queue (the control channel holds the mailbox,
/// which its incarnations share anyway): see [`Queue::signal`](super::Queue::signal).
impl<R: Send + 'static> Signal for Mailbox<R> {
    fn signal(&self) {
        self.queue.signal();
    }
}

impl<T: Send> Signal for Queue<T> {
    fn signal(&self) {
        Queue::signal(self);
    }
}

/// What the supervisor needs from a mailbox without knowing its request type.
pub(crate) trait MailboxControl: Send + Sync {
    fn set_state(&self, state: State);
    /// While shedding, requests beyond a small queue are refused at once.
    fn set_shedding(&self, on: bool);
    /// Figures per operation, over every caller.
    fn operations(&self) -> Vec<super::stats::OperationSnapshot>;
    /// Applies the queue capacity, call timeout and breaker policy of `spec`.
    fn configure(&self, spec: &crate::Spec);
    fn depth(&self) -> usize;
    /// Dead-letters everything queued.
    fn drain(&self, reason: Reason) -> usize;
}

impl<R: Send + 'static> MailboxControl for Mailbox<R> {
    fn operations(&self) -> Vec<super::stats::OperationSnapshot> {
        self.operations.snapshot()
    }

    fn set_state(&self, state: State) {
        let code = if state.accepts_requests() {
            OPEN
        } else {
            state_code(state)
        };
        self.gate.store(code, Ordering::Release);
    }

    fn configure(&self, spec: &crate::Spec) {
        self.tune(spec);
    }

    fn set_shedding(&self, on: bool) {
        self.shedding.store(on, Ordering::Relaxed);
    }

    fn depth(&self) -> usize {
        self.queue.len()
    }

    fn drain(&self, reason: Reason) -> usize {
        let mut n = 0;
        while let Some(envelope) = self.queue.try_pop() {
            self.dead_letter(envelope, reason);
            n += 1;
        }
        n
    }
}

/// A cheap, cloneable handle to a service's mailbox. It stays valid across restarts of the service.
pub struct Handle<R> {
    mailbox: Arc<Mailbox<R>>,
    edge: Arc<EdgeStats>,
    edges: super::Edges,
}

impl<R> Clone for Handle<R> {
    fn clone(&self) -> Self {
        Handle {
            mailbox: self.mailbox.clone(),
            edge: self.edge.clone(),
            edges: self.edges.clone(),
        }
    }
}

impl<R> fmt::Debug for Handle<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("service", &self.mailbox.name)
            .field("caller", &self.edge.caller)
            .finish()
    }
}

impl<R: Operation> Handle<R> {
    pub(crate) fn new(mailbox: Arc<Mailbox<R>>, edges: super::Edges) -> Self {
        let edge = edges.edge(None, &mailbox.name);
        Handle {
            mailbox,
            edge,
            edges,
        }
    }

    /// The service this handle sends to.
    pub fn service(&self) -> &ServiceName {
        &self.mailbox.name
    }

    /// The same handle, counting its traffic on the `caller -> service` edge.
    pub fn with_caller(&self, caller: &ServiceName) -> Self {
        Handle {
            mailbox: self.mailbox.clone(),
            edge: self.edges.edge(Some(caller), &self.mailbox.name),
            edges: self.edges.clone(),
        }
    }

    fn journal_breaker(&self, change: Option<crate::breaker::BreakerSnapshot>) {
        if let Some(b) = change {
            self.edges.journal.append(
                Some(&self.mailbox.name),
                None,
                crate::event::Event::Circuit {
                    caller: self.edge.caller.clone(),
                    state: b.state,
                    consecutive_failures: b.consecutive_failures,
                },
                crate::event::Cause::Service,
            );
        }
    }

    /// Whether the service takes requests now. A caller that answers from state the service lent
    /// it (a model already loaded, say) asks this first, so a stopped, failed or disabled service
    /// answers nothing through it either.
    pub fn is_open(&self) -> bool {
        self.mailbox.gate.load(Ordering::Acquire) == OPEN
    }

    /// Counts a request the caller answered itself from state the service lent it, begun at
    /// `started`, in the service's figures as an answered call of `operation`: so the edge's
    /// counters, the latency figures, the dashboard and the autoscaler see that work too.
    pub fn count_local(&self, operation: &'static str, started: Instant) {
        let edge = &self.edge;
        edge.calls.fetch_add(1, Ordering::Relaxed);
        edge.handled.fetch_add(1, Ordering::Relaxed);
        if self.edges.metrics.load(Ordering::Relaxed) {
            self.record_latency(
                operation,
                Instant::now().saturating_duration_since(started),
                true,
            );
        }
    }

    /// Adds one call's latency to its edge's and its operation's figures, converted once for both.
    #[inline]
    fn record_latency(&self, operation: &'static str, elapsed: Duration, ok: bool) {
        let latency = Sample::new(elapsed);
        self.edge.latency.add(latency);
        self.mailbox.operations.record(operation, latency, ok);
    }

    /// Requests waiting in the mailbox.
    pub fn queue_depth(&self) -> usize {
        self.mailbox.queue.len()
    }

    /// Sends the request built by `make` and waits for its reply, up to the service's call timeout or
    /// the deadline of the work making the call ([`crate::deadline::current`]), whichever is first.
    pub async fn call<T: Send + 'static>(
        &self,
        make: impl FnOnce(Reply<T>) -> R,
    ) -> Result<T, CallError> {
        let timeout = Duration::from_micros(self.mailbox.call_timeout_us.load(Ordering::Relaxed));
        let now = Instant::now();
        self.call_at(now, now + timeout, make).await
    }

    /// Sends the request built by `make` and waits for its reply until `deadline`, or until the
    /// deadline of the work making the call if that is earlier: an inherited deadline is never raised.
    /// The deadline travels in the envelope, so the service handling the request inherits it too.
    pub async fn call_by<T: Send + 'static>(
        &self,
        deadline: Instant,
        make: impl FnOnce(Reply<T>) -> R,
    ) -> Result<T, CallError> {
        self.call_at(Instant::now(), deadline, make).await
    }

    /// [`Handle::call_by`], with the clock read once by the caller: `started` is now.
    async fn call_at<T: Send + 'static>(
        &self,
        started: Instant,
        deadline: Instant,
        make: impl FnOnce(Reply<T>) -> R,
    ) -> Result<T, CallError> {
        let deadline = crate::deadline::current().map_or(deadline, |d| d.min(deadline));
        let edge = &self.edge;
        let mailbox = &*self.mailbox;
        edge.calls.fetch_add(1, Ordering::Relaxed);
        let breaker_on = mailbox.breaker_on.load(Ordering::Relaxed);
        let policy = || mailbox.breaker_policy();
        if deadline <= started {
            // Nothing left of the caller's deadline: queue no work that nobody will wait for (and
            // take no half-open probe slot).
            edge.errors.fetch_add(1, Ordering::Relaxed);
            return Err(CallError::DeadlineExceeded {
                service: mailbox.name.clone(),
            });
        }
        let admission = edge.breaker_admit(breaker_on, policy, started);
        let probe = admission == Admission::Probe;
        let refuse = |e: CallError| {
            edge.errors.fetch_add(1, Ordering::Relaxed);
            Err(e)
        };
        if let Admission::Reject { retry_after } = admission {
            return refuse(CallError::CircuitOpen {
                service: mailbox.name.clone(),
                retry_after,
            });
        }
        let gate = mailbox.gate.load(Ordering::Acquire);
        let refused = if gate != OPEN {
            Some(CallError::Unavailable {
                service: mailbox.name.clone(),
                state: state_from_code(gate),
            })
        } else if mailbox.queue.len() >= mailbox.effective_capacity() {
            Some(CallError::QueueFull {
                service: mailbox.name.clone(),
            })
        } else {
            None
        };
        if let Some(e) = refused {
            self.journal_breaker(edge.breaker_record(breaker_on, policy, started, false, probe));
            return refuse(e);
        }
        let (wait, reply) = Call::open(edge.clone(), deadline);
        let message = make(reply);
        let operation = message.operation();
        mailbox.queue.push(Envelope {
            message,
            tracker: wait.pending(),
            deadline,
        });
        // The service may have stopped between the gate check and the send, after its mailbox was
        // drained: drain again so the request is dead-lettered rather than left unread.
        let gate = mailbox.gate.load(Ordering::Acquire);
        if gate != OPEN {
            MailboxControl::drain(mailbox, Reason::ServiceStopped);
        }
        // Over once answered, or if the caller stops waiting: the deadlines then let it go.
        self.edges.deadlines.insert(deadline, wait.pending());
        let result = wait.await;
        let result = result.map_err(|e| match e {
            Unanswered::Interrupted => CallError::Interrupted {
                service: mailbox.name.clone(),
            },
            Unanswered::Expired => CallError::DeadlineExceeded {
                service: mailbox.name.clone(),
            },
        });
        // The clock is read again only for what needs it: the figures, or a breaker with something
        // to record (a failure, a probe's outcome, or a success while it is not clean).
        let ok = result.is_ok();
        let metrics = self.edges.metrics.load(Ordering::Relaxed);
        let breaker = edge.breaker_wants(breaker_on, ok, probe);
        if metrics || breaker {
            let now = Instant::now();
            if breaker {
                self.journal_breaker(edge.breaker_record(breaker_on, policy, now, ok, probe));
            }
            if metrics {
                self.record_latency(operation, now.saturating_duration_since(started), ok);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{align_of, offset_of};

    use super::*;

    /// What a call reads and writes of its mailbox (the queue and the settings after it) lies in the
    /// mailbox's first two cache lines, whatever the request type.
    #[test]
    fn a_calls_way_through_the_mailbox_is_its_first_two_cache_lines() {
        type M = Mailbox<u64>;
        assert!(align_of::<M>() >= 64);
        assert_eq!(offset_of!(M, queue), 0);
        for end in [
            offset_of!(M, gate) + 1,
            offset_of!(M, breaker_on) + 1,
            offset_of!(M, shedding) + 1,
            offset_of!(M, capacity) + 8,
            offset_of!(M, call_timeout_us) + 8,
        ] {
            assert!(end <= 128, "a setting ends at byte {end}");
        }
    }
}
