//! Building a runtime and talking to a running one: [`Builder`] collects services, [`Runtime`] is the
//! handle the binary, the API and tests hold.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::budget::Demand;
use crate::bus::{Bus, Handle};
use crate::graph::Graph;
use crate::journal::{Fault, Journal, RuntimeLevel};
use crate::service::{Erased, Service, Wrapped};
use crate::supervisor::{
    Answer, Command, Mark, Readiness, Reconfiguration, Registration, Snapshot, Supervisor,
};
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
    pub fn new(journal: Journal) -> Self {
        Builder {
            registrations: Vec::new(),
            disabled: BTreeSet::new(),
            bus: {
                let bus = Bus::new();
                bus.set_journal(journal.clone());
                bus
            },
            journal,
            budget: Demand {
                memory_mib: u64::MAX,
                threads: u64::MAX,
            },
            monitor: None,
        }
    }

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
    /// wait on [`Runtime::readiness`] or the journal.
    pub fn start(self) -> Result<Runtime, Error> {
        for r in &self.registrations {
            crate::config::spec_problems(&r.spec)?;
        }
        let graph = Graph::build(self.registrations.iter().map(|r| &r.spec), &self.disabled)
            .map_err(Error::Graph)?;
        let (readiness_tx, readiness_rx) = watch::channel(Readiness {
            level: RuntimeLevel::NotReady,
            reasons: vec!["starting".into()],
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
        let inner = Arc::new(Inner {
            commands: commands_tx,
            readiness: readiness_rx,
            journal: self.journal,
            bus: self.bus,
            anomalies: anomalies_rx,
        });
        let client = Client { inner };
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

fn registration<S: Service>(
    bus: &Bus,
    service: S,
    spec: Spec,
) -> (Registration, Handle<S::Request>) {
    let (mailbox, handle) = bus.mailbox::<S::Request>(&spec);
    let erased: Box<dyn Erased> = Box::new(Wrapped {
        service: Arc::new(service),
        mailbox,
    });
    (
        Registration {
            spec,
            service: erased,
        },
        handle,
    )
}

/// A running runtime. It derefs to a [`Client`]; [`Runtime::shutdown`] stops it and waits.
#[derive(Debug)]
pub struct Runtime {
    client: Client,
    task: Option<JoinHandle<()>>,
    monitor: Option<JoinHandle<()>>,
    monitor_cancel: CancellationToken,
}

#[derive(Debug)]
struct Inner {
    commands: mpsc::Sender<Command>,
    readiness: watch::Receiver<Readiness>,
    journal: Journal,
    bus: Bus,
    anomalies: watch::Receiver<Vec<crate::monitor::ActiveAnomaly>>,
}

/// A cloneable client of a running runtime, for the API and for services.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Runtime {
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Stops every service in reverse dependency order, each within its grace period, and waits.
    pub async fn shutdown(mut self) {
        self.monitor_cancel.cancel();
        if let Some(monitor) = self.monitor.take() {
            let _ = monitor.await;
        }
        let (tx, rx) = oneshot::channel();
        if self
            .client
            .inner
            .commands
            .send(Command::Shutdown(tx))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
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

impl Client {
    pub fn journal(&self) -> &Journal {
        &self.inner.journal
    }

    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    pub fn readiness(&self) -> watch::Receiver<Readiness> {
        self.inner.readiness.clone()
    }

    /// Anomalies raised now, as the monitor sees them (empty without a monitor).
    pub fn anomalies(&self) -> watch::Receiver<Vec<crate::monitor::ActiveAnomaly>> {
        self.inner.anomalies.clone()
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(make(tx))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)
    }

    pub async fn start(&self, name: &ServiceName) -> Result<Answer, Error> {
        self.ask(|tx| Command::Start(name.clone(), tx)).await?
    }

    pub async fn stop(&self, name: &ServiceName) -> Result<Answer, Error> {
        self.ask(|tx| Command::Stop(name.clone(), tx)).await?
    }

    pub async fn restart(&self, name: &ServiceName) -> Result<Answer, Error> {
        self.ask(|tx| Command::Restart(name.clone(), tx)).await?
    }

    /// Injects a fault into one ready replica. Gating this behind configuration is the caller's job.
    pub async fn inject_fault(&self, name: &ServiceName, fault: Fault) -> Result<Answer, Error> {
        self.ask(|tx| Command::Fault(name.clone(), fault, tx))
            .await?
    }

    pub async fn snapshot(&self) -> Result<Snapshot, Error> {
        self.ask(Command::Snapshot).await
    }

    /// Sets the number of replicas of a service, within its range and the enclave budget.
    pub async fn scale(
        &self,
        name: &ServiceName,
        replicas: u32,
        reason: String,
    ) -> Result<Answer, Error> {
        self.ask(|tx| Command::Scale(name.clone(), replicas, reason, tx))
            .await?
    }

    /// Marks or unmarks a service on behalf of anomaly detection.
    pub async fn mark(&self, name: &ServiceName, mark: Mark) -> Result<Answer, Error> {
        self.ask(|tx| Command::Mark(name.clone(), mark, tx)).await?
    }

    /// Gives running services new specs (same names and dependencies) and switches services off or
    /// on; returns the services that changed.
    pub async fn reconfigure(
        &self,
        specs: Vec<Spec>,
        disabled: BTreeSet<ServiceName>,
        cause: crate::journal::Cause,
    ) -> Result<Vec<ServiceName>, Error> {
        let r = Reconfiguration {
            specs,
            disabled,
            cause,
        };
        self.ask(|tx| Command::Reconfigure(Box::new(r), tx)).await?
    }

    /// Registers an extension service while the runtime runs; its dependencies must exist.
    pub async fn register<S: Service>(&self, service: S) -> Result<Handle<S::Request>, Error> {
        let spec = service.spec();
        let (registration, handle) = registration(&self.inner.bus, service, spec);
        self.ask(|tx| Command::Register(Box::new(registration), tx))
            .await??;
        Ok(handle)
    }
}
