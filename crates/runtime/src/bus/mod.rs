//! The message bus: typed point-to-point requests through handles, publish/subscribe by message type,
//! per-edge statistics, and the dead-letter queue.

mod call;
mod dead_letter;
mod deadlines;
mod mailbox;
mod queue;
mod stats;
mod topic;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub use crate::breaker::{Admission, Breaker, BreakerPolicy, BreakerSnapshot, BreakerState};
pub use call::{Outcome, Reply};
pub use dead_letter::{DeadLetters, Letter, Reason as DeadLetterReason};
pub use mailbox::{CallError, Handle, Operation};
pub(crate) use mailbox::{Mailbox, MailboxControl, Signal};
pub(crate) use queue::{Queue, Receiver};
pub use stats::{BUCKETS_US, EdgeSnapshot, HistogramSnapshot, OperationSnapshot};
pub use topic::{Delivery, Message, MessageKind, Subscription};

use crate::journal::Journal;
use crate::name::ServiceName;
use stats::EdgeStats;

/// The bus shared by the runtime, its services and the API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    topics: topic::Topics,
    edges: Edges,
    dead_letters: DeadLetters,
}

/// The registry of edge statistics, keyed by (caller, callee), and the switch for latency figures.
#[derive(Debug, Clone)]
pub(crate) struct Edges {
    map: Arc<Mutex<BTreeMap<EdgeKey, Arc<EdgeStats>>>>,
    /// Whether calls record latency histograms and per-operation figures (on by default).
    pub(crate) metrics: Arc<std::sync::atomic::AtomicBool>,
    /// Where circuit breakers journal opening and closing.
    pub(crate) journal: Journal,
    /// The deadlines of the calls in flight over every edge.
    pub(crate) deadlines: Arc<deadlines::Deadlines>,
}

/// (caller, callee); the caller is `None` outside any service.
type EdgeKey = (Option<ServiceName>, ServiceName);

impl Edges {
    pub(crate) fn edge(
        &self,
        caller: Option<&ServiceName>,
        callee: &ServiceName,
    ) -> Arc<EdgeStats> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((caller.cloned(), callee.clone()))
            .or_insert_with(|| Arc::new(EdgeStats::new(caller.cloned(), callee.clone())))
            .clone()
    }

    fn snapshot(&self) -> Vec<EdgeSnapshot> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.values().map(|e| e.snapshot()).collect()
    }
}

impl Bus {
    /// A bus whose circuit breakers journal their opening and closing in `journal`.
    pub fn new(journal: Journal) -> Self {
        Bus {
            inner: Arc::new(Inner {
                topics: topic::Topics::default(),
                edges: Edges {
                    map: Arc::default(),
                    metrics: Arc::new(std::sync::atomic::AtomicBool::new(true)),
                    journal,
                    deadlines: Arc::default(),
                },
                dead_letters: DeadLetters::new(1024),
            }),
        }
    }

    /// Subscribes `subscriber` to every message of type `M`, with a queue of `capacity`.
    pub fn subscribe<M: Message>(
        &self,
        subscriber: ServiceName,
        capacity: usize,
    ) -> Subscription<M> {
        self.inner.topics.subscribe(subscriber, capacity)
    }

    /// Delivers `message` to every subscriber of its type without waiting.
    pub fn publish<M: Message>(&self, from: Option<&ServiceName>, message: M) -> Delivery {
        self.inner
            .topics
            .publish(from, message, &self.inner.dead_letters)
    }

    /// The dead-letter queue.
    pub fn dead_letters(&self) -> &DeadLetters {
        &self.inner.dead_letters
    }

    /// Every caller -> callee edge seen so far.
    pub fn edges(&self) -> Vec<EdgeSnapshot> {
        self.inner.edges.snapshot()
    }

    /// Switches the recording of latency histograms and per-operation figures on or off (counters and
    /// circuit breakers keep working). For measuring what the figures cost.
    pub fn set_metrics(&self, on: bool) {
        self.inner
            .edges
            .metrics
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Messages published and deliveries made, over all types.
    pub fn broadcast_counts(&self) -> (u64, u64) {
        self.inner.topics.counts()
    }

    pub(crate) fn mailbox<R: Operation>(&self, spec: &crate::Spec) -> (Arc<Mailbox<R>>, Handle<R>) {
        let mailbox = Arc::new(Mailbox::new(spec, self.inner.dead_letters.clone()));
        let handle = Handle::new(mailbox.clone(), self.inner.edges.clone());
        (mailbox, handle)
    }
}
