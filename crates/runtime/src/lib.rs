//! Cloister's orchestrator core: the [`Service`] seam, the dependency [`Graph`], the supervisor with
//! its lifecycle, health and recovery, the message [`Bus`], the event [`Journal`] and typed
//! configuration. It knows no concrete service, no HTTP and no SGX.

pub mod anomaly;
pub mod autoscale;
pub mod budget;
pub mod bus;
pub mod clock;
pub mod config;
mod control;
pub mod failure;
pub mod graph;
pub mod health;
pub mod id;
pub mod jobs;
pub mod journal;
pub mod lifecycle;
pub mod monitor;
mod name;
pub mod rate;
pub mod reconfig;
pub mod recovery;
mod serde_duration;
mod service;
pub mod spec;
mod supervisor;

pub use bus::{Bus, CallError, Handle, Reply};
pub use control::{Builder, Client, Runtime};
pub use failure::{Classify, ErrorKind};
pub use graph::{Graph, GraphError};
pub use health::Health;
pub use journal::{Journal, RuntimeLevel};
pub use lifecycle::State;
pub use name::{InvalidName, ServiceName};
pub use service::{Context, Mode, Service, ServiceError};
pub use spec::{Capability, Kind, Priority, Setting, Spec, Strategy};
pub use supervisor::{
    Answer, HealthReport, Mark, Readiness, ServiceEvent, ServiceStatus, Snapshot,
};

/// Errors of the runtime's own operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no service named {0:?}")]
    UnknownService(String),
    #[error("invalid service graph: {}", join(.0))]
    Graph(Vec<GraphError>),
    #[error("{service} has no ready replica (it is {state})")]
    NotRunning { service: ServiceName, state: State },
    #[error("the runtime is shutting down")]
    ShuttingDown,
    #[error("cannot reconfigure: {0}")]
    Reconfigure(String),
    #[error("the spec of {service} is inconsistent: {problems}")]
    InvalidSpec {
        service: ServiceName,
        problems: String,
    },
}

fn join(problems: &[GraphError]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}
