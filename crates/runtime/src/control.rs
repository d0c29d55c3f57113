//! Building a runtime: [`Builder`] collects services and starts the supervisor (and the monitor);
//! [`Runtime`] is the running runtime the binary, the API and tests hold, a [`Client`] that can also
//! shut it down.

use std::collections::BTreeSet;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::budget::Demand;
use crate::bus::{Bus, Handle};
use crate::client::{Client, registration};
use crate::event::RuntimeLevel;
use crate::graph::Graph;
use crate::journal::Journal;
use crate::service::Service;
use crate::supervisor::{Command, Readiness, Registration, Supervisor};
use crate::{Error, ServiceName, Spec};

/// Collects services before the runtime starts.
pub struct Builder {
    registrations: Vec<Registration>,
    disabled: BTreeSet<ServiceName>,
    journal: Journal,
    bus: Bus,
    budget: Demand,
    monitor: Option<std::time::Duration>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self
            .registrations
            .iter()
            .map(|r| r.spec.name.clone())
            .collect();
        f.debug_struct("Builder")
            .field("services", &names)
            .field("disabled", &self.disabled)
            .finish()
    }
}

impl Builder {
    /// A builder whose runtime journals into `journal`.
    pub fn new(journal: Journal) -> Self {
        Builder {
            registrations: Vec::new(),
            disabled: BTreeSet::new(),
            bus: Bus::new(journal.clone()),
            journal,
            budget: Demand {
                memory_mib: u64::MAX,
                threads: u64::MAX,
            },
            monitor: None,
        }
    }

    /// The bus the runtime will use, for handles made before it starts.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Adds a service with its own spec.
    pub fn add<S: Service>(&mut self, service: S) -> Handle<S::Request> {
        let spec = service.spec();
        self.add_with_spec(service, spec)
    }

    /// Adds a service with a spec the caller adjusted (for example from configuration).
    pub fn add_with_spec<S: Service>(&mut self, service: S, spec: Spec) -> Handle<S::Request> {
        let (registration, handle) = registration(&self.bus, service, spec);
        self.registrations.push(registration);
        handle
    }

    /// The enclave's memory and thread budget, which scale-outs must fit in. Unlimited by default.
    pub fn budget(&mut self, budget: Demand) {
        self.budget = budget;
    }

    /// Runs the performance monitor (anomaly detection, autoscaling) every `interval`.
    pub fn monitor(&mut self, interval: std::time::Duration) {
        self.monitor = Some(interval);
    }

    /// Records that a service is switched off: registered (listed, and its handle answers that it is
    /// unavailable) but not started; depending on it is reported clearly.
    pub fn disable(&mut self, name: ServiceName) {
        self.disabled.insert(name);
    }

    /// Validates the dependency graph and starts the supervisor. Services start in the background;
    /// wait on [`Client::readiness`] or the journal.
    pub fn start(self) -> Result<Runtime, Error> {
        for r in &self.registrations {
            crate::spec::spec_problems(&r.spec)?;
        }
        let graph = Graph::build(self.registrations.iter().map(|r| &r.spec), &self.disabled)
            .map_err(Error::Graph)?;
        let (readiness_tx, readiness_rx) = watch::channel(Readiness {
            level: RuntimeLevel::NotReady,
            reasons: vec!["starting".into()],
            escalation: None,
        });
        let (commands_tx, commands_rx) = mpsc::channel(256);
        let supervisor = Supervisor::new(
            self.registrations,
            graph,
            self.journal.clone(),
            self.bus.clone(),
            readiness_tx,
            self.budget,
            self.disabled,
        );
        let task = tokio::spawn(supervisor.run(commands_rx));
        let (anomalies_tx, anomalies_rx) = watch::channel(Vec::new());
        let client = Client::new(
            commands_tx,
            readiness_rx,
            self.journal,
            self.bus,
            anomalies_rx,
        );
        let monitor_cancel = CancellationToken::new();
        let monitor = self.monitor.map(|interval| {
            let monitor = crate::monitor::Monitor::new(client.clone(), interval, anomalies_tx);
            tokio::spawn(monitor.run(monitor_cancel.clone()))
        });
        Ok(Runtime {
            client,
            task: Some(task),
            monitor,
            monitor_cancel,
        })
    }
}

/// A running runtime. It derefs to a [`Client`]; [`Runtime::shutdown`] stops it and waits.
#[derive(Debug)]
pub struct Runtime {
    client: Client,
    task: Option<JoinHandle<()>>,
    monitor: Option<JoinHandle<()>>,
    monitor_cancel: CancellationToken,
}

impl Runtime {
    /// A client of this runtime.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Stops every service in reverse dependency order, each within its grace period, and waits.
    pub async fn shutdown(mut self) {
        self.monitor_cancel.cancel();
        if let Some(monitor) = self.monitor.take() {
            let _ = monitor.await;
        }
        // Returns once the supervisor has stopped everything, or is gone already.
        let _ = self.client.ask(Command::Shutdown).await;
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "the supervisor task ended abnormally");
        }
    }
}

impl std::ops::Deref for Runtime {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}
