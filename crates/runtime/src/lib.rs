//! Cloister's orchestrator core: the [`Service`] seam, the dependency [`Graph`], the supervisor with
//! its lifecycle, health and recovery, the message [`Bus`], the event [`Journal`] and typed
//! configuration. It knows no concrete service, no HTTP and no SGX.
//!
//! Its modules, from the bottom up (a module uses only modules above it in this list):
//!
//! - [`ServiceName`], [`lifecycle`], [`failure`], [`clock`], [`id`], [`rate`]: service names,
//!   lifecycle states and their one transition function, error kinds, timestamps, ids, rate limits.
//! - [`anomaly`], [`autoscale`], the circuit breaker (re-exported from [`bus`]): pure decisions.
//! - [`setting`]: a service's own settings, each a typed constant; [`spec`]: what a service
//!   declares about itself, and the consistency rules of a spec.
//! - [`health`], [`recovery`], [`graph`], [`budget`]: health levels; the recovery decision
//!   ([`recovery::plan`]), backoff and restart intensity; the dependency graph; the enclave budget.
//! - [`event`], [`config`]: what the journal records; `cloister.toml` parsed once into [`config::Config`].
//! - [`journal`], and the incarnation's control messages, reports and liveness probe.
//! - [`bus`]: mailboxes, handles, publish/subscribe, per-edge statistics, dead letters; [`jobs`],
//!   the job table a service that runs jobs owns.
//! - the [`Service`] trait and the [`Context`] an incarnation reads.
//! - the supervisor: the one task that owns every service's lifecycle state.
//! - the [`Client`] of a running runtime; [`monitor`] and [`reconfig`], the tasks that act through it;
//!   the [`Builder`] that starts it all, and the [`Runtime`] it returns.

#![warn(missing_docs)]

pub mod anomaly;
pub mod autoscale;
mod breaker;
pub mod budget;
pub mod bus;
mod client;
pub mod clock;
pub mod config;
mod control;
pub mod deadline;
pub mod event;
pub mod failure;
pub mod graph;
pub mod health;
pub mod id;
mod incarnation;
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
pub mod setting;
pub mod spec;
mod supervisor;

pub use bus::{Bus, CallError, Handle, Reply};
pub use client::Client;
pub use control::{Builder, Runtime};
pub use event::RuntimeLevel;
pub use failure::{Classify, ErrorKind};
pub use graph::{Graph, GraphError};
pub use health::Health;
pub use journal::Journal;
pub use lifecycle::State;
pub use name::{InvalidName, ServiceName};
pub use service::{Context, Mode, Service, ServiceError};
pub use setting::{Setting, Veto};
pub use spec::{Capability, Kind, OnExhausted, Priority, Spec, Strategy};
pub use supervisor::{
    Answer, HealthReport, Mark, Readiness, ServiceEvent, ServiceStatus, Snapshot,
};

/// Errors of the runtime's own operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No service has this name.
    #[error("no service named {0:?}")]
    UnknownService(String),
    /// The services do not form a graph (duplicates, unknown or disabled dependencies, cycles).
    #[error("invalid service graph: {}", join(.0))]
    Graph(Vec<GraphError>),
    /// The command needs a ready replica and the service has none.
    #[error("{service} has no ready replica (it is {state})")]
    NotRunning {
        /// The service.
        service: ServiceName,
        /// Its state.
        state: State,
    },
    /// The runtime is shutting down and takes no more commands.
    #[error("the runtime is shutting down")]
    ShuttingDown,
    /// A reconfiguration was refused; nothing changed.
    #[error("cannot reconfigure: {0}")]
    Reconfigure(String),
    /// A spec breaks the consistency rules ([`spec::check_spec`]).
    #[error("the spec of {service} is inconsistent: {problems}")]
    InvalidSpec {
        /// The service.
        service: ServiceName,
        /// Every rule it breaks.
        problems: String,
    },
}

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::UnknownService(_) => ErrorKind::NotFound,
            Error::NotRunning { .. } => ErrorKind::Conflict,
            Error::Graph(_) | Error::InvalidSpec { .. } | Error::Reconfigure(_) => {
                ErrorKind::Unprocessable
            }
            Error::ShuttingDown => ErrorKind::Unavailable {
                retry_after: std::time::Duration::from_secs(5),
            },
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Error::UnknownService(_) => "service.not_found",
            Error::NotRunning { .. } => "service.not_running",
            Error::Graph(_) => "service.invalid_graph",
            Error::InvalidSpec { .. } => "service.invalid_spec",
            Error::Reconfigure(_) => "config.rejected",
            Error::ShuttingDown => "runtime.shutting_down",
        }
    }
}

fn join(problems: &[GraphError]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}
