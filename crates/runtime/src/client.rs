//! Talking to a running runtime: [`Client`] sends the supervisor commands and reads its snapshots,
//! readiness, journal and bus. The API, the monitor, the configuration controller and services hold one.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::anomaly::ActiveAnomaly;
use crate::bus::{Bus, Handle};
use crate::event::{Cause, Fault};
use crate::journal::Journal;
use crate::service::{Erased, Service, Wrapped};
use crate::supervisor::{
    Answer, Command, Mark, Readiness, Reconfiguration, Registration, Snapshot,
};
use crate::{Error, ServiceName, Spec};

/// A cloneable client of a running runtime, for the API and for services.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    commands: mpsc::Sender<Command>,
    readiness: watch::Receiver<Readiness>,
    journal: Journal,
    bus: Bus,
    anomalies: watch::Receiver<Vec<ActiveAnomaly>>,
}

impl Client {
    pub(crate) fn new(
        commands: mpsc::Sender<Command>,
        readiness: watch::Receiver<Readiness>,
        journal: Journal,
        bus: Bus,
        anomalies: watch::Receiver<Vec<ActiveAnomaly>>,
    ) -> Self {
        Client {
            inner: Arc::new(Inner {
                commands,
                readiness,
                journal,
                bus,
                anomalies,
            }),
        }
    }

    /// The event journal.
    pub fn journal(&self) -> &Journal {
        &self.inner.journal
    }

    /// The message bus.
    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    /// The runtime's readiness, as it changes.
    pub fn readiness(&self) -> watch::Receiver<Readiness> {
        self.inner.readiness.clone()
    }

    /// Anomalies raised now, as the monitor sees them (empty without a monitor).
    pub fn anomalies(&self) -> watch::Receiver<Vec<ActiveAnomaly>> {
        self.inner.anomalies.clone()
    }

    pub(crate) async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(make(tx))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)
    }

    /// Starts a service and whatever it depends on (an operator's `start`).
    pub async fn start(&self, name: &ServiceName) -> Result<Answer, Error> {
        self.ask(|tx| Command::Start(name.clone(), tx)).await?
    }

    /// Stops a service after everything that depends on it (an operator's `stop`).
    pub async fn stop(&self, name: &ServiceName) -> Result<Answer, Error> {
        self.ask(|tx| Command::Stop(name.clone(), tx)).await?
    }

    /// Restarts a service; its dependents keep running while its requests wait.
    pub async fn restart(&self, name: &ServiceName) -> Result<Answer, Error> {
        self.ask(|tx| Command::Restart(name.clone(), tx)).await?
    }

    /// Injects a fault into one ready replica. Gating this behind configuration is the caller's job.
    pub async fn inject_fault(&self, name: &ServiceName, fault: Fault) -> Result<Answer, Error> {
        self.ask(|tx| Command::Fault(name.clone(), fault, tx))
            .await?
    }

    /// Every service as the supervisor sees it now.
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
        cause: Cause,
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

pub(crate) fn registration<S: Service>(
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
