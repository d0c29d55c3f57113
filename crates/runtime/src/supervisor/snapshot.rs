//! The read side: a snapshot of every service as readers see it, and what the supervisor broadcasts.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use super::{Readiness, Supervisor};
use crate::bus::{Message, MessageKind};
use crate::event::Entry;
use crate::health::Health;
use crate::lifecycle::State;
use crate::{ServiceName, Spec};

/// A service as readers see it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    /// Its spec in force.
    #[serde(flatten)]
    pub spec: Arc<Spec>,
    /// Its lifecycle state.
    pub state: State,
    /// Its health.
    pub health: Health,
    /// Replicas ready and not stopping.
    pub replicas_running: u32,
    /// Restarts by recovery since the runtime started.
    pub restarts: u64,
    /// Incarnations launched so far, across replicas.
    pub generation: u64,
    /// When it last came up; `None` while it is not up.
    #[serde(serialize_with = "serialize_opt_time")]
    pub started_at: Option<SystemTime>,
    /// Requests waiting in its mailbox.
    pub queue_depth: usize,
    /// Its start layer.
    pub layer: usize,
    /// Calls into the service per operation, from every caller.
    pub operations: Vec<crate::bus::OperationSnapshot>,
}

fn serialize_opt_time<S: serde::Serializer>(
    t: &Option<SystemTime>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
        None => s.serialize_none(),
    }
}

/// The whole runtime as readers see it, at one instant.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The runtime's readiness.
    pub readiness: Readiness,
    /// Every registered service.
    pub services: Vec<ServiceStatus>,
    /// The services by start layer.
    pub layers: Vec<Vec<ServiceName>>,
    /// Every dependency, as (service, dependency).
    pub edges: Vec<(ServiceName, ServiceName)>,
}

impl Snapshot {
    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceStatus> {
        self.services.iter().find(|s| s.spec.name.as_str() == name)
    }

    /// Running services that offer `capability` (the seed's discovery by capability).
    pub fn offering(&self, capability: &str) -> Vec<ServiceName> {
        self.services
            .iter()
            .filter(|s| s.state.is_up() && s.spec.capabilities.iter().any(|c| c.0 == capability))
            .map(|s| s.spec.name.clone())
            .collect()
    }
}

/// Broadcast on the bus (as [`MessageKind::ServiceEvent`]) for every journal entry about a service, so
/// dependents learn of restarts, degradation and failures.
#[derive(Debug, Clone)]
pub struct ServiceEvent(pub Arc<Entry>);

impl Message for ServiceEvent {
    const KIND: MessageKind = MessageKind::ServiceEvent;
}

/// Broadcast on the bus (as [`MessageKind::HealthCheck`]) when a service's health changes.
#[derive(Debug, Clone)]
pub struct HealthReport {
    /// The service.
    pub service: ServiceName,
    /// Its health now.
    pub health: Health,
}

impl Message for HealthReport {
    const KIND: MessageKind = MessageKind::HealthCheck;
}

impl Supervisor {
    pub(super) fn snapshot(&self) -> Snapshot {
        let services = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| ServiceStatus {
                spec: e.spec.clone(),
                state: e.state,
                health: e.health.clone(),
                replicas_running: e
                    .replicas
                    .values()
                    .filter(|r| r.ready && !r.stopping)
                    .count() as u32,
                restarts: e.restarts,
                generation: e.generation,
                started_at: e.started_at,
                queue_depth: e.service.mailbox().depth(),
                operations: e.service.mailbox().operations(),
                layer: self.graph.layer(i),
            })
            .collect();
        Snapshot {
            readiness: self.readiness_tx.borrow().clone(),
            services,
            layers: self.graph.layers(),
            edges: self.graph.edges(),
        }
    }
}
