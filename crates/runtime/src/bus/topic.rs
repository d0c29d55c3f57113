//! Publish/subscribe by message type, with a bounded queue per subscriber.
//!
//! A publisher never waits: a subscriber whose queue is full loses the message to the dead-letter
//! queue, with the reason, and everyone else still gets it.

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;
use tokio::sync::mpsc;

use super::dead_letter::{DeadLetters, Reason};
use crate::ServiceName;

/// The seed's `MessageType`: the families of broadcast messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// A service's health changed.
    HealthCheck,
    /// A configuration was applied.
    ConfigurationUpdate,
    /// A resource ran short.
    ResourceAlert,
    /// A journal entry about a service.
    ServiceEvent,
    /// A request for data, broadcast.
    DataRequest,
    /// An answer to a broadcast request.
    DataResponse,
    /// Anything else.
    Custom,
}

/// A type that can be published on the bus. Subscribers subscribe to the type itself.
pub trait Message: Clone + Send + Sync + 'static {
    /// The family it belongs to.
    const KIND: MessageKind;
}

/// A subscriber's end: messages of one type, in publication order.
#[derive(Debug)]
pub struct Subscription<M> {
    rx: mpsc::Receiver<M>,
}

impl<M> Subscription<M> {
    /// The next message, waiting for it; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<M> {
        self.rx.recv().await
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<M> {
        self.rx.try_recv().ok()
    }
}

/// What happened to one published message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Subscribers it was queued for.
    pub delivered: usize,
    /// Subscribers whose queue was full.
    pub dead_lettered: usize,
}

struct Subscriber<M> {
    name: ServiceName,
    tx: mpsc::Sender<M>,
}

#[derive(Default)]
pub(crate) struct Topics {
    by_type: Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
    published: AtomicU64,
    delivered: AtomicU64,
}

impl Topics {
    pub(crate) fn subscribe<M: Message>(
        &self,
        subscriber: ServiceName,
        capacity: usize,
    ) -> Subscription<M> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let mut map = self.by_type.lock().unwrap_or_else(|p| p.into_inner());
        let list = map
            .entry(TypeId::of::<M>())
            .or_insert_with(|| Box::new(Vec::<Subscriber<M>>::new()));
        if let Some(list) = list.downcast_mut::<Vec<Subscriber<M>>>() {
            list.push(Subscriber {
                name: subscriber,
                tx,
            });
        }
        Subscription { rx }
    }

    pub(crate) fn publish<M: Message>(
        &self,
        from: Option<&ServiceName>,
        message: M,
        dead: &DeadLetters,
    ) -> Delivery {
        self.published.fetch_add(1, Relaxed);
        let mut delivery = Delivery::default();
        let mut map = self.by_type.lock().unwrap_or_else(|p| p.into_inner());
        let Some(list) = map
            .get_mut(&TypeId::of::<M>())
            .and_then(|l| l.downcast_mut::<Vec<Subscriber<M>>>())
        else {
            return delivery;
        };
        list.retain(|s| !s.tx.is_closed());
        for s in list.iter() {
            match s.tx.try_send(message.clone()) {
                Ok(()) => delivery.delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dead.push(
                        from.cloned(),
                        s.name.clone(),
                        type_name::<M>(),
                        Reason::SubscriberFull,
                    );
                    delivery.dead_lettered += 1;
                }
                // Closed between the retain and now: the subscriber is gone, nothing to deliver.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        self.delivered.fetch_add(delivery.delivered as u64, Relaxed);
        delivery
    }

    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.published.load(Relaxed), self.delivered.load(Relaxed))
    }
}

impl std::fmt::Debug for Topics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topics").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Ping(u32);
    impl Message for Ping {
        const KIND: MessageKind = MessageKind::Custom;
    }
    #[derive(Clone, Debug)]
    struct Other;
    impl Message for Other {
        const KIND: MessageKind = MessageKind::Custom;
    }

    #[tokio::test]
    async fn by_type_bounded_and_dead_lettered() {
        let topics = Topics::default();
        let dead = DeadLetters::new(16);
        let mut fast = topics.subscribe::<Ping>(ServiceName::from_static("fast"), 8);
        let _slow = topics.subscribe::<Ping>(ServiceName::from_static("slow"), 1);
        let mut other = topics.subscribe::<Other>(ServiceName::from_static("other"), 8);
        let d1 = topics.publish(None, Ping(1), &dead);
        let d2 = topics.publish(None, Ping(2), &dead);
        assert_eq!(
            d1,
            Delivery {
                delivered: 2,
                dead_lettered: 0
            }
        );
        assert_eq!(
            d2,
            Delivery {
                delivered: 1,
                dead_lettered: 1
            }
        );
        assert_eq!(fast.recv().await, Some(Ping(1)));
        assert_eq!(fast.recv().await, Some(Ping(2)));
        assert!(other.try_recv().is_none());
        let letters = dead.letters();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].to.as_str(), "slow");
        assert_eq!(letters[0].reason, Reason::SubscriberFull);
    }
}
