//! The orchestration read side: services (`GET /v1/services`, `GET /v1/services/{name}`) and the
//! dependency graph (`GET /v1/graph`).

use runtime::{Capability, Health, Kind, Priority, Readiness, ServiceName, State};
use serde::{Deserialize, Serialize};

/// `GET /v1/services`: the runtime's readiness and every registered service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceList {
    /// Ready, degraded or not ready, with the reasons.
    pub readiness: Readiness,
    /// Every registered service, in registration order.
    pub services: Vec<ServiceView>,
}

/// A service as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceView {
    /// Its name.
    pub name: ServiceName,
    /// What it does.
    pub description: String,
    /// Core, optional or extension.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Its lifecycle state.
    pub state: State,
    /// Its health, with the reason when not healthy.
    pub health: Health,
    /// The services it depends on.
    pub dependencies: Vec<ServiceName>,
    /// Within one start layer, higher priority starts first.
    pub startup_priority: Priority,
    /// Start layer: every dependency is in an earlier one.
    pub layer: usize,
    /// What one replica needs.
    pub resources: runtime::spec::Resources,
    /// Its liveness probe.
    pub health_check: runtime::spec::HealthPolicy,
    /// How it is recovered after a failure.
    pub recovery: runtime::spec::Recovery,
    /// Replicas running, and the bounds.
    pub replicas: Replicas,
    /// What it offers, for discovery.
    pub capabilities: Vec<Capability>,
    /// Restarts since the process started.
    pub restart_count: u64,
    /// Incarnations so far.
    pub generation: u64,
    /// RFC 3339, when the current incarnation started.
    pub started_at: Option<String>,
    /// Seconds since the current incarnation started.
    pub uptime_seconds: Option<u64>,
    /// Requests waiting in its mailbox.
    pub queue_depth: usize,
    /// Totals since the process started, over every caller.
    pub requests: Requests,
    /// Figures per operation.
    pub operations: Vec<OperationView>,
    /// One circuit breaker per caller of this service.
    pub circuits: Vec<CircuitView>,
    /// Anomalies raised about it now.
    pub anomalies: Vec<AnomalyView>,
    /// Its autoscaling settings.
    pub autoscale: runtime::autoscale::AutoscalePolicy,
}

/// Replicas running, and the fewest and most allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Replicas {
    /// Running now.
    pub running: u32,
    /// The fewest.
    pub min: u32,
    /// The most.
    pub max: u32,
}

/// Request figures over every edge into the service.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Requests {
    /// Calls settled.
    pub total: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Calls that never reached an incarnation.
    pub dead_lettered: u64,
    /// `(errors + dead_lettered) / total`.
    pub error_rate: f64,
    /// Median latency.
    pub latency_p50_ms: Option<f64>,
    /// 90th percentile latency.
    pub latency_p90_ms: Option<f64>,
    /// 99th percentile latency.
    pub latency_p99_ms: Option<f64>,
}

/// Figures of one operation of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OperationView {
    /// The operation's name.
    pub operation: String,
    /// Calls settled.
    pub calls: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Median latency.
    pub latency_p50_ms: Option<f64>,
    /// 90th percentile latency.
    pub latency_p90_ms: Option<f64>,
    /// 99th percentile latency.
    pub latency_p99_ms: Option<f64>,
}

/// The circuit breaker between one caller and the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CircuitView {
    /// The calling service, or `external` for the API and other callers outside any service.
    pub caller: String,
    /// Closed, open or half open.
    pub state: runtime::bus::BreakerState,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Times it has opened.
    pub opened: u64,
}

/// An anomaly raised about the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AnomalyView {
    /// The signal that is off (`latency`, `error_rate`, ...).
    pub signal: String,
    /// What the monitor did about it.
    pub action: runtime::anomaly::AnomalyAction,
    /// What it saw.
    pub evidence: runtime::anomaly::Evidence,
}

/// `GET /v1/graph`: the dependency graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GraphView {
    /// Every service.
    pub nodes: Vec<GraphNode>,
    /// Every dependency.
    pub edges: Vec<GraphEdge>,
    /// Start layers in start order; a layer's services start in parallel.
    pub layers: Vec<Vec<ServiceName>>,
}

/// A service in the graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GraphNode {
    /// Its name.
    pub name: ServiceName,
    /// Core, optional or extension.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Its lifecycle state.
    pub state: State,
    /// Its health.
    pub health: Health,
    /// Within one start layer, higher priority starts first.
    pub startup_priority: Priority,
    /// Its start layer.
    pub layer: usize,
}

/// `from` depends on `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GraphEdge {
    /// The dependent.
    pub from: ServiceName,
    /// The dependency.
    pub to: ServiceName,
}

/// `GET /v1/bus`: the message bus's figures.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BusView {
    /// Traffic per caller -> callee edge (`caller` is absent for calls from outside any service).
    pub edges: Vec<runtime::bus::EdgeSnapshot>,
    pub broadcast: Broadcast,
    pub dead_letters: DeadLetterView,
}

/// Broadcast events published, and deliveries of them to subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Broadcast {
    pub published: u64,
    pub delivered: u64,
}

/// Messages that reached no handler.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetterView {
    /// Since the runtime started.
    pub total: u64,
    /// The most recent ones, oldest first.
    pub recent: Vec<runtime::bus::Letter>,
}

/// `GET /v1/anomalies`: the anomalies raised now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AnomalyList {
    pub anomalies: Vec<runtime::monitor::ActiveAnomaly>,
}

/// Figures over one sample interval of the live services stream only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Window {
    /// Calls answered in the interval.
    pub calls: u64,
    /// Of them, errors (dead letters included).
    pub errors: u64,
    /// `errors / calls` (0 without calls).
    pub error_rate: f64,
    /// The interval's median latency, when it had calls.
    pub latency_p50_ms: Option<f64>,
    /// The interval's 99th percentile latency, when it had calls.
    pub latency_p99_ms: Option<f64>,
}

/// A service in a live sample: everything `GET /v1/services` shows, and the last interval's
/// figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SampledService {
    /// The service, as `GET /v1/services` shows it.
    #[serde(flatten)]
    pub service: ServiceView,
    /// Its figures since the sample before.
    pub window: Window,
}

/// The data of one `services` event of `GET /v1/services/stream`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceSample {
    /// RFC 3339, when the sample was taken.
    pub at: String,
    /// Ready, degraded or not ready, with the reasons.
    pub readiness: Readiness,
    /// Every registered service.
    pub services: Vec<SampledService>,
}
