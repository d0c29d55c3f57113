//! The supervisor: one task that owns every service's lifecycle state and reacts to one closed set of
//! inputs (incarnation exits, reports from incarnations and probes, timers, commands).
//!
//! Starting and stopping are reconciliation: each service has a wanted state (`want_up`), and
//! [`Supervisor::reconcile`] launches a wanted service once all its dependencies are up, and stops an
//! unwanted one once everything that depends on it is down. Start order, parallel layers, reverse
//! shutdown and "stop dependents first / start dependencies first" all follow from that one rule.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::time::DelayQueue;

use crate::budget::Demand;
use crate::bus::{Bus, DeadLetterReason, Message, MessageKind};
use crate::graph::Graph;
use crate::health::{self, Control, Health};
use crate::journal::{Cause, Entry, Event, ExitOutcome, Fault, Journal, RuntimeLevel};
use crate::lifecycle::{Input, State, transition};
use crate::recovery::{History, Verdict};
use crate::service::{Erased, Launch, Mode, ServiceError};
use crate::spec::{Scope, Strategy};
use crate::{Error, ServiceName, Spec};

/// Identifies one incarnation: which service, which replica slot, which generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct IncarnationId {
    pub(crate) service: usize,
    pub(crate) replica: u32,
    pub(crate) generation: u64,
}

/// What incarnations and probes tell the supervisor.
#[derive(Debug)]
pub(crate) enum Report {
    Ready(IncarnationId),
    Health(IncarnationId, Health),
    Hung(IncarnationId, u32),
}

/// What callers ask of the supervisor.
pub(crate) enum Command {
    Start(ServiceName, oneshot::Sender<Result<Answer, Error>>),
    Stop(ServiceName, oneshot::Sender<Result<Answer, Error>>),
    Restart(ServiceName, oneshot::Sender<Result<Answer, Error>>),
    Fault(ServiceName, Fault, oneshot::Sender<Result<Answer, Error>>),
    Register(Box<Registration>, oneshot::Sender<Result<(), Error>>),
    Snapshot(oneshot::Sender<Snapshot>),
    Scale(
        ServiceName,
        u32,
        String,
        oneshot::Sender<Result<Answer, Error>>,
    ),
    Mark(ServiceName, Mark, oneshot::Sender<Result<Answer, Error>>),
    Reconfigure(
        Box<Reconfiguration>,
        oneshot::Sender<Result<Vec<ServiceName>, Error>>,
    ),
    Shutdown(oneshot::Sender<()>),
}

/// What the monitor asks of a service when an anomaly is raised or cleared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// Mark it degraded for this reason.
    Degrade(String),
    /// Shed load: refuse requests beyond a small queue.
    Shed(bool),
    /// The anomaly is over: undo `Degrade`.
    Clear,
}

/// New specs for running services (same names), and the ones to switch off.
pub(crate) struct Reconfiguration {
    pub(crate) specs: Vec<Spec>,
    pub(crate) disabled: BTreeSet<ServiceName>,
    pub(crate) cause: Cause,
}

pub(crate) struct Registration {
    pub(crate) spec: Spec,
    pub(crate) service: Box<dyn Erased>,
}

enum Timer {
    Backoff {
        service: usize,
        epoch: u64,
    },
    ReplicaBackoff {
        service: usize,
        replica: u32,
        epoch: u64,
    },
    StartDeadline(IncarnationId),
    StopDeadline(IncarnationId),
}

/// The answer to an operator command: what the service's state is now, and whether the command
/// changed anything.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Answer {
    pub service: ServiceName,
    pub state: State,
    pub accepted: bool,
    pub message: String,
}

/// A service as readers see it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    #[serde(flatten)]
    pub spec: Arc<Spec>,
    pub state: State,
    pub health: Health,
    pub replicas_running: u32,
    pub restarts: u64,
    pub generation: u64,
    #[serde(serialize_with = "serialize_opt_time")]
    pub started_at: Option<SystemTime>,
    pub queue_depth: usize,
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
    pub readiness: Readiness,
    pub services: Vec<ServiceStatus>,
    pub layers: Vec<Vec<ServiceName>>,
    pub edges: Vec<(ServiceName, ServiceName)>,
}

impl Snapshot {
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

/// The runtime's readiness: ready, degraded (an optional service is down or a service is degraded),
/// or not ready (a core service is not up), with the reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub level: RuntimeLevel,
    pub reasons: Vec<String>,
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
    pub service: ServiceName,
    pub health: Health,
}

impl Message for HealthReport {
    const KIND: MessageKind = MessageKind::HealthCheck;
}

struct Replica {
    id: IncarnationId,
    control: mpsc::Sender<Control>,
    cancel: CancellationToken,
    abort: AbortHandle,
    ready: bool,
    launched_at: Instant,
    stopping: bool,
    exit_cause: Option<ExitOutcome>,
    /// Cancels this replica's liveness probe alone (a child of `cancel`).
    probe: CancellationToken,
    /// The pending start-deadline or stop-grace timer, removed when it no longer matters so idle
    /// services hold no timers. Cleared when it fires, so a stale key is never removed.
    deadline: Option<tokio_util::time::delay_queue::Key>,
}

/// One registered service and everything the supervisor tracks about it.
struct Managed {
    spec: Arc<Spec>,
    service: Box<dyn Erased>,
    state: State,
    health: Health,
    want_up: bool,
    /// Set when the service failed for good or waits for an operator; blocks automatic starts.
    failure: Option<String>,
    replicas: std::collections::BTreeMap<u32, Replica>,
    generation: u64,
    restarts: u64,
    history: History,
    /// Set by the `degrade` strategy: the next incarnations run in degraded mode for this reason.
    degraded_mode: Option<String>,
    epoch: u64,
    started_at: Option<SystemTime>,
    /// Why the current stop was asked for, for the journal entry that ends it.
    stop_cause: Option<Cause>,
    /// Why the next launch was asked for, when an operator command asked for it (the command, or
    /// the service it was brought up for); otherwise a launch is a startup or a recovery.
    start_cause: Option<Cause>,
    /// Replicas wanted while up: `replicas.min` at start, moved by the autoscaler.
    desired: u32,
    /// An anomaly the monitor marked the service degraded for.
    anomaly: Option<String>,
    /// The live spec channel every incarnation reads.
    spec_tx: watch::Sender<Arc<Spec>>,
    /// The last budget refusal journaled, so a repeated one is not journaled again.
    last_refusal: Option<String>,
}

/// Why the runtime is not fully ready, per service.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Concern {
    None,
    Degraded,
    Down,
}

pub(crate) struct Supervisor {
    entries: Vec<Managed>,
    graph: Graph,
    journal: Journal,
    bus: Bus,
    tasks: JoinSet<Result<(), ServiceError>>,
    task_ids: HashMap<tokio::task::Id, IncarnationId>,
    probes: TaskTracker,
    timers: DelayQueue<Timer>,
    reports_tx: mpsc::UnboundedSender<Report>,
    reports_rx: mpsc::UnboundedReceiver<Report>,
    readiness_tx: watch::Sender<Readiness>,
    concerns: Vec<Concern>,
    /// Services with a concern, in index order, so readiness costs O(1) per event, not O(services).
    concerned: BTreeSet<usize>,
    down_count: usize,
    degraded_count: usize,
    readiness_dirty: bool,
    /// Services not in a down state, and incarnations alive: shutdown ends when both are zero.
    not_down: usize,
    live_replicas: usize,
    /// Timers due now (zero delays), run after the current input without a trip through the queue.
    immediate: std::collections::VecDeque<Timer>,
    dirty: BTreeSet<usize>,
    shutdown: Option<Vec<oneshot::Sender<()>>>,
    rng: StdRng,
    root: CancellationToken,
    /// The enclave's memory and thread budget; scale-outs must fit in it.
    budget: Demand,
    /// Registered but switched off (`[services.NAME] enabled = false`): not started at start.
    disabled: BTreeSet<ServiceName>,
}

impl Supervisor {
    pub(crate) fn new(
        registrations: Vec<Registration>,
        graph: Graph,
        journal: Journal,
        bus: Bus,
        readiness_tx: watch::Sender<Readiness>,
        budget: Demand,
        disabled: BTreeSet<ServiceName>,
    ) -> Self {
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let entries: Vec<Managed> = registrations.into_iter().map(Managed::new).collect();
        let n = entries.len();
        Supervisor {
            entries,
            graph,
            journal,
            bus,
            tasks: JoinSet::new(),
            task_ids: HashMap::new(),
            probes: TaskTracker::new(),
            timers: DelayQueue::new(),
            reports_tx,
            reports_rx,
            readiness_tx,
            concerns: vec![Concern::None; n],
            concerned: BTreeSet::new(),
            down_count: 0,
            degraded_count: 0,
            readiness_dirty: true,
            not_down: 0,
            live_replicas: 0,
            immediate: std::collections::VecDeque::new(),
            dirty: BTreeSet::new(),
            shutdown: None,
            rng: StdRng::from_entropy(),
            root: CancellationToken::new(),
            budget,
            disabled,
        }
    }

    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        self.journal.append(
            None,
            None,
            Event::RuntimeStarted {
                version: env!("CARGO_PKG_VERSION").into(),
                services: self.entries.len(),
            },
            Cause::Startup,
        );
        for i in 0..self.entries.len() {
            self.record(i, Event::Registered, Cause::Startup);
            self.entries[i].want_up = !self.disabled.contains(&self.entries[i].spec.name);
            self.refresh_concern(i);
            self.dirty.insert(i);
        }
        self.publish_readiness();
        self.reconcile(&Cause::Startup);
        let mut commands_closed = false;
        loop {
            if self.shutdown.is_some() && self.not_down == 0 && self.live_replicas == 0 {
                break;
            }
            tokio::select! {
                biased;
                Some(exit) = self.tasks.join_next_with_id() => self.on_exit(exit),
                Some(report) = self.reports_rx.recv() => self.on_report(report),
                Some(timer) = std::future::poll_fn(|cx| self.timers.poll_expired(cx)) => self.on_timer(timer.into_inner()),
                command = commands.recv(), if !commands_closed => match command {
                    Some(command) => self.on_command(command),
                    None => {
                        // Every client is gone: shut down, and stop polling the closed channel.
                        commands_closed = true;
                        self.begin_shutdown(None);
                    }
                },
            }
            while let Some(timer) = self.immediate.pop_front() {
                self.on_timer(timer);
            }
            self.publish_readiness();
        }
        self.root.cancel();
        self.probes.close();
        self.probes.wait().await;
        self.journal
            .append(None, None, Event::RuntimeStopped, Cause::Shutdown);
        if let Err(e) = self.journal.sync() {
            tracing::error!(error = %e, "could not sync the journal at shutdown");
        }
        for waiter in self.shutdown.take().unwrap_or_default() {
            let _ = waiter.send(());
        }
        // Later commands get "shutting down" from their dropped reply senders.
        commands.close();
    }

    // --- inputs -------------------------------------------------------------------------------------

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Start(name, reply) => {
                let _ = reply.send(self.lookup(&name).map(|i| self.cmd_start(i, "start")));
            }
            Command::Stop(name, reply) => {
                let _ = reply.send(self.lookup(&name).map(|i| self.cmd_stop(i)));
            }
            Command::Restart(name, reply) => {
                let _ = reply.send(self.lookup(&name).map(|i| self.cmd_restart(i)));
            }
            Command::Fault(name, fault, reply) => {
                let _ = reply.send(self.lookup(&name).and_then(|i| self.cmd_fault(i, fault)));
            }
            Command::Register(registration, reply) => {
                let _ = reply.send(self.cmd_register(*registration));
            }
            Command::Scale(name, to, reason, reply) => {
                let _ = reply.send(
                    self.lookup(&name)
                        .map(|i| self.cmd_scale(i, to, reason, Cause::Autoscaler)),
                );
            }
            Command::Mark(name, mark, reply) => {
                let _ = reply.send(self.lookup(&name).map(|i| self.cmd_mark(i, mark)));
            }
            Command::Reconfigure(reconfiguration, reply) => {
                let _ = reply.send(self.cmd_reconfigure(*reconfiguration));
            }
            Command::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Command::Shutdown(reply) => self.begin_shutdown(Some(reply)),
        }
    }

    fn on_report(&mut self, report: Report) {
        match report {
            Report::Ready(id) => self.on_ready(id),
            Report::Health(id, health) => self.on_health(id, health),
            Report::Hung(id, missed) => {
                if let Some(replica) = self.replica_mut(id) {
                    replica.exit_cause = Some(ExitOutcome::Hung { missed });
                    replica.abort.abort();
                }
            }
        }
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Backoff { service: i, epoch } => {
                let e = &self.entries[i];
                if e.epoch != epoch || e.state != State::Backoff {
                    return;
                }
                if !self.entries[i].want_up {
                    // Being stopped: it stays in backoff (no incarnation) until everything that
                    // depends on it is down, so the reverse order holds; reconcile stops it then.
                    self.dirty.insert(i);
                    self.reconcile(&Cause::Shutdown);
                    return;
                }
                // Replicas of the failed run still stopping keep their grace period to finish what
                // they hold; the relaunch waits for them.
                if self.deps_up(i) && self.entries[i].replicas.is_empty() {
                    self.launch(i, true);
                } else {
                    // Wait as stopped; reconcile launches it once its dependencies are up and the
                    // last incarnation of the failed run has exited.
                    let cause = Cause::Recovery {
                        strategy: self.entries[i].spec.recovery.strategy,
                    };
                    self.set_state(i, Input::Stop);
                    // The same bookkeeping as any stop: journal, drain if unwanted, and look again at
                    // its dependencies (a shutdown may be waiting for this one).
                    self.after_stop(i, &cause);
                }
            }
            Timer::ReplicaBackoff {
                service: i,
                replica,
                epoch,
            } => {
                let e = &self.entries[i];
                if e.epoch == epoch
                    && e.state.is_up()
                    && e.want_up
                    && replica < e.desired
                    && !e.replicas.contains_key(&replica)
                {
                    self.launch_replica(i, replica, true);
                }
            }
            Timer::StartDeadline(id) => {
                if let Some(r) = self.replica_mut(id) {
                    r.deadline = None;
                    if !r.ready && !r.stopping {
                        r.exit_cause = Some(ExitOutcome::StartTimeout);
                        r.abort.abort();
                    }
                }
            }
            Timer::StopDeadline(id) => {
                if let Some(r) = self.replica_mut(id) {
                    r.deadline = None;
                    r.exit_cause = Some(ExitOutcome::Aborted);
                    r.abort.abort();
                }
            }
        }
    }

    fn on_ready(&mut self, id: IncarnationId) {
        let Some(replica) = self.replica_mut(id) else {
            return;
        };
        if replica.ready || replica.stopping {
            return;
        }
        replica.ready = true;
        if let Some(key) = replica.deadline.take() {
            self.timers.try_remove(&key);
        }
        self.spawn_probe(id);
        self.record_gen(
            id.service,
            id.generation,
            Event::Ready {
                replica: id.replica,
            },
            Cause::Service,
        );
        let e = &self.entries[id.service];
        if e.state == State::Starting && e.replicas.values().all(|r| r.ready || r.stopping) {
            let degraded = e.degraded_mode.clone();
            let replicas = e.replicas.len() as u32;
            self.set_state(
                id.service,
                Input::AllReady {
                    degraded: degraded.is_some(),
                },
            );
            self.entries[id.service].started_at = Some(SystemTime::now());
            self.record(id.service, Event::Up { replicas }, Cause::Service);
            let health = match degraded {
                Some(reason) => Health::Degraded { reason },
                None => Health::Healthy,
            };
            self.set_health(id.service, health, Cause::Service);
            self.dirty
                .extend(self.graph.dependents(id.service).iter().copied());
            self.reconcile(&Cause::Dependency {
                service: self.entries[id.service].spec.name.clone(),
            });
        }
    }

    fn on_health(&mut self, id: IncarnationId, health: Health) {
        if self.replica_mut(id).is_none() {
            return;
        }
        let i = id.service;
        match &health {
            Health::Degraded { .. } if self.entries[i].state == State::Running => {
                self.set_state(i, Input::Degrade);
            }
            Health::Healthy if self.entries[i].state == State::Degraded => {
                self.entries[i].degraded_mode = None;
                self.set_state(i, Input::Recover);
            }
            _ => {}
        }
        if self.entries[i].state.is_up() {
            self.set_health(i, health, Cause::Service);
        }
    }

    fn on_exit(&mut self, exit: Result<(tokio::task::Id, Result<(), ServiceError>), JoinError>) {
        let (task, result) = match exit {
            Ok((task, result)) => (task, Ok(result)),
            Err(e) => (e.id(), Err(e)),
        };
        let Some(id) = self.task_ids.remove(&task) else {
            return;
        };
        let i = id.service;
        // The slot may already hold a newer incarnation; only the one that exited leaves it.
        if self.replica_mut(id).is_none() {
            return;
        }
        let Some(replica) = self.entries[i].replicas.remove(&id.replica) else {
            return;
        };
        self.live_replicas -= 1;
        replica.cancel.cancel();
        if let Some(key) = &replica.deadline {
            self.timers.try_remove(key);
        }
        let for_operator = matches!(&result, Ok(Err(e)) if e.is_for_operator());
        let outcome = replica
            .exit_cause
            .clone()
            .unwrap_or_else(|| classify(result, replica.stopping));
        let ran = replica.launched_at.elapsed();
        let cause = match outcome {
            ExitOutcome::Hung { .. } | ExitOutcome::StartTimeout => Cause::Probe,
            _ => self.entries[i]
                .stop_cause
                .clone()
                .filter(|_| replica.stopping)
                .unwrap_or(Cause::Service),
        };
        self.record_gen(
            i,
            id.generation,
            Event::Exited {
                replica: id.replica,
                outcome: outcome.clone(),
            },
            cause,
        );
        if replica.stopping {
            if self.entries[i].replicas.is_empty() {
                if self.entries[i].state == State::Stopping {
                    self.finish_stop(i);
                } else if self.entries[i].state.is_down() {
                    // The last straggler of a failed run is gone: a relaunch may proceed.
                    self.dirty.insert(i);
                    self.reconcile(&Cause::Service);
                }
            }
            // Scaled in and back out while this replica was stopping: its slot is wanted again.
            let e = &self.entries[i];
            if e.state.is_up()
                && e.want_up
                && id.replica < e.desired
                && !e.replicas.contains_key(&id.replica)
            {
                self.launch_replica(i, id.replica, false);
            }
            return;
        }
        self.on_failure(i, id.replica, outcome, ran, for_operator);
    }

    // --- recovery -----------------------------------------------------------------------------------

    fn on_failure(
        &mut self,
        i: usize,
        slot: u32,
        outcome: ExitOutcome,
        ran: Duration,
        for_operator: bool,
    ) {
        let recovery = self.entries[i].spec.recovery;
        let cause = Cause::Recovery {
            strategy: recovery.strategy,
        };
        let what = describe(&outcome);
        if !self.entries[i].state.is_up() && self.entries[i].state != State::Starting {
            // A straggler from a run that is already being recovered or stopped.
            return;
        }
        if for_operator {
            // No restart can change this (`ServiceError::needs_operator`): fail at once, with the
            // service's own words on what the operator must do.
            self.fail(i, what, cause);
            return;
        }
        if recovery.strategy == Strategy::Manual {
            self.fail(
                i,
                format!("{what}; recovery is manual: start it again when ready"),
                cause,
            );
            return;
        }
        let unit = self.rng.r#gen::<f64>();
        match self.entries[i]
            .history
            .on_failure(&recovery, Instant::now(), ran, unit)
        {
            Verdict::Exhausted { restarts } => {
                let reason = format!(
                    "{what}; gave up after {restarts} restarts within {}",
                    humantime::format_duration(recovery.window)
                );
                self.fail(i, reason, cause);
            }
            Verdict::Restart { delay, attempt } => {
                self.entries[i].restarts += 1;
                let serving = self.entries[i]
                    .replicas
                    .values()
                    .filter(|r| r.ready && !r.stopping)
                    .count() as u32;
                if recovery.strategy == Strategy::Failover
                    && serving > 0
                    && self.entries[i].state.is_up()
                {
                    self.record(
                        i,
                        Event::Failover {
                            replica: slot,
                            serving,
                        },
                        cause.clone(),
                    );
                    let epoch = self.entries[i].epoch;
                    self.schedule(
                        Timer::ReplicaBackoff {
                            service: i,
                            replica: slot,
                            epoch,
                        },
                        delay,
                    );
                    self.record(
                        i,
                        Event::BackoffScheduled {
                            attempt,
                            delay_ms: delay.as_millis() as u64,
                        },
                        cause,
                    );
                    return;
                }
                self.stop_replicas(i);
                if recovery.strategy == Strategy::Degrade {
                    self.entries[i].degraded_mode = Some(what.clone());
                }
                self.set_state(i, Input::Backoff);
                self.entries[i].epoch += 1;
                let epoch = self.entries[i].epoch;
                self.schedule(Timer::Backoff { service: i, epoch }, delay);
                self.record(
                    i,
                    Event::BackoffScheduled {
                        attempt,
                        delay_ms: delay.as_millis() as u64,
                    },
                    cause.clone(),
                );
                self.set_health(i, Health::Unhealthy { reason: what }, cause);
                if recovery.scope == Scope::Dependents {
                    let name = self.entries[i].spec.name.clone();
                    let dependents: Vec<usize> = self
                        .graph
                        .with_dependents(i)
                        .into_iter()
                        .filter(|&d| d != i)
                        .collect();
                    for d in dependents {
                        // Still wanted: reconcile starts them again once this service is back up.
                        self.begin_stop(
                            d,
                            &Cause::Dependency {
                                service: name.clone(),
                            },
                        );
                    }
                }
            }
        }
    }

    fn fail(&mut self, i: usize, reason: String, cause: Cause) {
        self.stop_replicas(i);
        self.entries[i].failure = Some(reason.clone());
        self.set_state(i, Input::Fail);
        self.record(
            i,
            Event::Failed {
                reason: reason.clone(),
            },
            cause.clone(),
        );
        self.set_health(i, Health::Unhealthy { reason }, cause);
        let dropped = self.entries[i]
            .service
            .mailbox()
            .drain(DeadLetterReason::ServiceStopped);
        if dropped > 0 {
            tracing::warn!(service = %self.entries[i].spec.name, dropped, "failed with requests queued; dead-lettered");
        }
        self.dirty
            .extend(self.graph.dependencies(i).iter().copied());
    }

    // --- commands -----------------------------------------------------------------------------------

    fn lookup(&self, name: &ServiceName) -> Result<usize, Error> {
        self.graph
            .index_of(name.as_str())
            .ok_or_else(|| Error::UnknownService(name.to_string()))
    }

    fn answer(&self, i: usize, accepted: bool, message: impl Into<String>) -> Answer {
        Answer {
            service: self.entries[i].spec.name.clone(),
            state: self.entries[i].state,
            accepted,
            message: message.into(),
        }
    }

    /// Starts `i` and whatever it depends on; `command` is the operator's, for the journal.
    fn cmd_start(&mut self, i: usize, command: &str) -> Answer {
        if self.shutdown.is_some() {
            return self.answer(i, false, "the runtime is shutting down");
        }
        let state = self.entries[i].state;
        if !state.is_down() {
            return self.answer(i, false, format!("already {state}"));
        }
        let cause = Cause::Operator {
            command: command.into(),
        };
        let name = self.entries[i].spec.name.clone();
        for d in self.graph.with_dependencies(i) {
            let e = &mut self.entries[d];
            // Only what this command brings up; a service already on its way up (waiting out a
            // recovery for its dependencies) keeps its own cause.
            if d == i || (e.state.is_down() && (!e.want_up || e.failure.is_some())) {
                e.start_cause = Some(if d == i {
                    cause.clone()
                } else {
                    Cause::Dependency {
                        service: name.clone(),
                    }
                });
            }
            e.want_up = true;
            if e.failure.take().is_some() {
                e.history.reset();
                e.degraded_mode = None;
            }
            self.refresh_concern(d);
            self.dirty.insert(d);
        }
        self.reconcile(&cause);
        let message = if self.entries[i].state == State::Starting {
            "starting".to_owned()
        } else {
            "waiting for its dependencies".to_owned()
        };
        self.answer(i, true, message)
    }

    fn cmd_stop(&mut self, i: usize) -> Answer {
        let state = self.entries[i].state;
        if state.is_down() {
            self.entries[i].want_up = false;
            self.refresh_concern(i);
            return self.answer(i, false, format!("already {state}"));
        }
        let cause = Cause::Operator {
            command: "stop".into(),
        };
        let set = self.graph.with_dependents(i);
        // The dependents this stop takes down with it (not those stopped before), named in the
        // answer.
        let dependents: Vec<String> = set
            .iter()
            .filter(|&&d| d != i && self.entries[d].want_up)
            .map(|&d| self.entries[d].spec.name.to_string())
            .collect();
        for d in set {
            self.entries[d].want_up = false;
            self.entries[d].start_cause = None;
            self.refresh_concern(d);
            self.dirty.insert(d);
        }
        self.reconcile(&cause);
        let message = if dependents.is_empty() {
            "stopping".to_owned()
        } else {
            format!(
                "stopping after {} dependent{}: {}",
                dependents.len(),
                if dependents.len() == 1 { "" } else { "s" },
                dependents.join(", ")
            )
        };
        self.answer(i, true, message)
    }

    fn cmd_restart(&mut self, i: usize) -> Answer {
        let state = self.entries[i].state;
        match state {
            State::Backoff | State::Starting | State::Stopping => self.answer(
                i,
                false,
                format!("already {state}; a new incarnation is on its way"),
            ),
            State::Registered | State::Stopped | State::Failed => self.cmd_start(i, "restart"),
            State::Running | State::Degraded => {
                // Still wanted, so reconcile starts it again once its incarnations have stopped.
                let cause = Cause::Operator {
                    command: "restart".into(),
                };
                self.entries[i].degraded_mode = None;
                self.entries[i].start_cause = Some(cause.clone());
                self.begin_stop(i, &cause);
                self.answer(i, true, "restarting")
            }
        }
    }

    fn cmd_fault(&mut self, i: usize, fault: Fault) -> Result<Answer, Error> {
        let target = self.entries[i]
            .replicas
            .values()
            .find(|r| r.ready && !r.stopping)
            .map(|r| (r.id, r.control.clone()));
        let Some((id, control)) = target else {
            return Err(Error::NotRunning {
                service: self.entries[i].spec.name.clone(),
                state: self.entries[i].state,
            });
        };
        if control.try_send(Control::Fault(fault)).is_err() {
            return Err(Error::NotRunning {
                service: self.entries[i].spec.name.clone(),
                state: self.entries[i].state,
            });
        }
        self.record_gen(
            i,
            id.generation,
            Event::FaultInjected {
                replica: id.replica,
                fault,
            },
            Cause::Operator {
                command: "fault".into(),
            },
        );
        Ok(self.answer(
            i,
            true,
            format!("{fault:?} injected into replica {}", id.replica).to_lowercase(),
        ))
    }

    /// Memory and threads taken by every service's wanted replicas.
    fn usage(&self) -> Demand {
        self.entries
            .iter()
            .filter(|e| !e.state.is_down())
            .fold(crate::budget::RUNTIME_RESERVE, |d, e| {
                d.plus(Demand::of(&e.spec, e.desired))
            })
    }

    fn cmd_scale(&mut self, i: usize, to: u32, reason: String, cause: Cause) -> Answer {
        let e = &self.entries[i];
        let (from, min, max) = (e.desired, e.spec.replicas.min, e.spec.replicas.max);
        if !e.state.is_up() {
            return self.answer(i, false, format!("not scaled: the service is {}", e.state));
        }
        if to == from {
            return self.answer(i, false, format!("already at {to} replicas"));
        }
        if to < min.max(1) || to > max {
            return self.answer(i, false, format!("{to} replicas is outside {min}..={max}"));
        }
        let mut to = to;
        let mut reason = reason;
        if to > from {
            let usage = self.usage();
            let fits = |n: u32| usage.plus(Demand::of(&e.spec, n - from)).fits(self.budget);
            let affordable = (from + 1..=to).rev().find(|&n| fits(n));
            let need = usage.plus(Demand::of(&e.spec, to - from));
            let shortfall = format!(
                "{to} replicas would need {} MiB and {} threads of the enclave's {} MiB and {} threads",
                need.memory_mib, need.threads, self.budget.memory_mib, self.budget.threads
            );
            match affordable {
                Some(n) if n < to => {
                    reason =
                        format!("{reason}; limited to {n} by the enclave budget ({shortfall})");
                    to = n;
                }
                Some(_) => {}
                None => {
                    let refusal = format!("{reason}; but {shortfall}");
                    // Said once while it stays the same, not at every attempt.
                    if self.entries[i].last_refusal.as_deref() != Some(refusal.as_str()) {
                        self.entries[i].last_refusal = Some(refusal.clone());
                        self.record(
                            i,
                            Event::ScaleRefused {
                                reason: refusal.clone(),
                            },
                            cause,
                        );
                    }
                    return self.answer(i, false, refusal);
                }
            }
        }
        self.entries[i].last_refusal = None;
        self.entries[i].desired = to;
        self.record(
            i,
            Event::Scaled {
                from,
                to,
                reason: reason.clone(),
            },
            cause,
        );
        if to > from {
            for slot in from..to {
                if !self.entries[i].replicas.contains_key(&slot) {
                    self.launch_replica(i, slot, false);
                }
            }
        } else {
            let grace = self.entries[i].spec.shutdown_grace;
            let mut deadlines = Vec::new();
            for (slot, r) in self.entries[i].replicas.iter_mut() {
                if *slot >= to && !r.stopping {
                    r.stopping = true;
                    let _ = r.control.try_send(Control::Stop);
                    r.cancel.cancel();
                    deadlines.push((r.id, r.deadline.take()));
                }
            }
            for (id, old) in deadlines {
                if let Some(key) = old {
                    self.timers.try_remove(&key);
                }
                let key = self.timers.insert(Timer::StopDeadline(id), grace);
                if let Some(r) = self.replica_mut(id) {
                    r.deadline = Some(key);
                }
            }
        }
        self.answer(i, true, format!("scaling from {from} to {to}: {reason}"))
    }

    fn cmd_mark(&mut self, i: usize, mark: Mark) -> Answer {
        let cause = Cause::Monitor;
        match mark {
            Mark::Degrade(reason) => {
                self.entries[i].anomaly = Some(reason.clone());
                if self.entries[i].state == State::Running {
                    self.set_state(i, Input::Degrade);
                    self.set_health(i, Health::Degraded { reason }, cause);
                    return self.answer(i, true, "marked degraded");
                }
                self.answer(
                    i,
                    false,
                    format!("not marked: the service is {}", self.entries[i].state),
                )
            }
            Mark::Clear => {
                let had = self.entries[i].anomaly.take().is_some();
                if had
                    && self.entries[i].state == State::Degraded
                    && self.entries[i].degraded_mode.is_none()
                {
                    self.set_state(i, Input::Recover);
                    self.set_health(i, Health::Healthy, cause);
                    return self.answer(i, true, "no longer degraded");
                }
                self.answer(i, false, "nothing to clear")
            }
            Mark::Shed(on) => {
                self.entries[i].service.mailbox().set_shedding(on);
                self.answer(
                    i,
                    true,
                    if on {
                        "shedding load"
                    } else {
                        "no longer shedding"
                    },
                )
            }
        }
    }

    fn cmd_reconfigure(&mut self, r: Reconfiguration) -> Result<Vec<ServiceName>, Error> {
        // Check everything before changing anything, so a refused reconfiguration changes nothing.
        let mut updates = Vec::new();
        for spec in r.specs {
            let i = self.lookup(&spec.name)?;
            if spec.dependencies != self.entries[i].spec.dependencies {
                return Err(Error::Reconfigure(format!(
                    "the dependencies of {} cannot change while it runs",
                    spec.name
                )));
            }
            updates.push((i, spec));
        }

        let refusals: Vec<String> = updates
            .iter()
            .filter(|(i, spec)| !crate::spec::diff(&self.entries[*i].spec, spec).is_empty())
            .filter_map(|(i, spec)| {
                self.entries[*i]
                    .service
                    .validate(spec)
                    .err()
                    .map(|m| format!("{}: {m}", spec.name))
            })
            .collect();
        if !refusals.is_empty() {
            return Err(Error::Reconfigure(refusals.join("; ")));
        }
        let mut order: Vec<usize> = (0..self.entries.len()).collect();
        order.sort_by_key(|&i| self.graph.layer(i));
        // Along the dependency order: a dependency takes its new spec before its dependents.
        updates.sort_by_key(|(i, _)| self.graph.layer(*i));
        let mut changed = Vec::new();
        for (i, spec) in updates {
            let old = self.entries[i].spec.clone();
            let changes = crate::spec::diff(&old, &spec);
            if changes.is_empty() {
                continue;
            }
            let health_changed = old.health != spec.health;
            let live = self.entries[i].service.takes_live(&old, &spec);
            self.entries[i].service.mailbox().configure(&spec);
            let spec = Arc::new(spec);
            self.entries[i].spec_tx.send_replace(spec.clone());
            self.entries[i].spec = spec;
            if health_changed {
                self.restart_probes(i);
            }
            let (min, max) = (
                self.entries[i].spec.replicas.min,
                self.entries[i].spec.replicas.max,
            );
            let desired = self.entries[i].desired;
            if self.entries[i].state.is_up() && !(min..=max).contains(&desired) {
                let to = desired.clamp(min.max(1), max.max(1));
                self.cmd_scale(
                    i,
                    to,
                    "the configured replica range changed".into(),
                    r.cause.clone(),
                );
            }
            self.record(i, Event::Reconfigured { live, changes }, r.cause.clone());
            if !live && (self.entries[i].state.is_up() || self.entries[i].state == State::Starting)
            {
                // Still wanted: reconcile starts it again, on the new spec, once it has stopped.
                self.begin_stop(i, &r.cause);
            }
            changed.push(self.entries[i].spec.name.clone());
        }
        // Switching services off and on follows the same ordering rules as operator commands.
        for &i in &order {
            let name = self.entries[i].spec.name.clone();
            let off = r.disabled.contains(&name);
            if off && self.entries[i].want_up {
                self.entries[i].want_up = false;
                self.refresh_concern(i);
                self.dirty.insert(i);
                changed.push(name);
            } else if !off && !self.entries[i].want_up && self.shutdown.is_none() {
                self.entries[i].want_up = true;
                self.refresh_concern(i);
                self.dirty.insert(i);
                changed.push(name);
            }
        }
        self.reconcile(&r.cause);
        Ok(changed)
    }

    /// Replaces the liveness probes of `i`'s ready replicas, so a new health policy takes effect.
    fn restart_probes(&mut self, i: usize) {
        let ready: Vec<IncarnationId> = self.entries[i]
            .replicas
            .values()
            .filter(|r| r.ready && !r.stopping)
            .map(|r| r.id)
            .collect();
        for id in ready {
            self.spawn_probe(id);
        }
    }

    fn spawn_probe(&mut self, id: IncarnationId) {
        let policy = self.entries[id.service].spec.health;
        let reports = self.reports_tx.clone();
        let Some(replica) = self.replica_mut(id) else {
            return;
        };
        replica.probe.cancel();
        replica.probe = replica.cancel.child_token();
        let (control, cancel) = (replica.control.clone(), replica.probe.clone());
        self.probes.spawn(async move {
            if let Some(missed) = health::probe(control, policy, cancel).await {
                let _ = reports.send(Report::Hung(id, missed));
            }
        });
    }

    fn cmd_register(&mut self, registration: Registration) -> Result<(), Error> {
        if self.shutdown.is_some() {
            return Err(Error::ShuttingDown);
        }
        crate::config::spec_problems(&registration.spec)?;
        let specs: Vec<&Spec> = self
            .entries
            .iter()
            .map(|e| &*e.spec)
            .chain(std::iter::once(&registration.spec))
            .collect();
        let graph = Graph::build(specs, &BTreeSet::new()).map_err(Error::Graph)?;
        self.graph = graph;
        self.entries.push(Managed::new(registration));
        self.concerns.push(Concern::None);
        let i = self.entries.len() - 1;
        self.record(i, Event::Registered, Cause::Registration);
        self.entries[i].want_up = true;
        self.refresh_concern(i);
        self.dirty.insert(i);
        self.reconcile(&Cause::Registration);
        Ok(())
    }

    fn begin_shutdown(&mut self, reply: Option<oneshot::Sender<()>>) {
        let first = self.shutdown.is_none();
        self.shutdown.get_or_insert_with(Vec::new).extend(reply);
        if first {
            self.journal
                .append(None, None, Event::RuntimeStopping, Cause::Shutdown);
            for i in 0..self.entries.len() {
                self.entries[i].want_up = false;
                self.dirty.insert(i);
            }
            self.reconcile(&Cause::Shutdown);
        }
    }

    // --- reconciliation -----------------------------------------------------------------------------

    fn deps_up(&self, i: usize) -> bool {
        self.graph
            .dependencies(i)
            .iter()
            .all(|&d| self.entries[d].state.is_up())
    }

    fn dependents_down(&self, i: usize) -> bool {
        self.graph
            .dependents(i)
            .iter()
            .all(|&d| self.entries[d].state.is_down())
    }

    fn reconcile(&mut self, cause: &Cause) {
        loop {
            let mut launches = Vec::new();
            while let Some(i) = self.dirty.pop_first() {
                let e = &self.entries[i];
                if e.want_up {
                    if e.state.is_down()
                        && e.failure.is_none()
                        && e.replicas.is_empty()
                        && self.deps_up(i)
                    {
                        launches.push(i);
                    }
                } else if !e.state.is_down()
                    && e.state != State::Stopping
                    && self.dependents_down(i)
                {
                    self.begin_stop(i, cause);
                }
            }
            if launches.is_empty() {
                return;
            }
            // One layer's worth at a time, higher priority first.
            launches.sort_by(|&a, &b| {
                let (sa, sb) = (&self.entries[a].spec, &self.entries[b].spec);
                sa.priority
                    .cmp(&sb.priority)
                    .then_with(|| sa.name.cmp(&sb.name))
            });
            for i in launches {
                self.launch(i, self.entries[i].generation > 0);
            }
            if self.dirty.is_empty() {
                return;
            }
        }
    }

    fn launch(&mut self, i: usize, restart: bool) {
        if !self.set_state(i, Input::Launch) {
            self.entries[i].start_cause = None;
            return;
        }
        let spec = &self.entries[i].spec;
        let replicas = self.entries[i]
            .desired
            .clamp(spec.replicas.min.max(1), spec.replicas.max.max(1));
        self.entries[i].desired = replicas;
        for slot in 0..replicas {
            self.launch_replica(i, slot, restart);
        }
        self.entries[i].start_cause = None;
    }

    fn launch_replica(&mut self, i: usize, slot: u32, restart: bool) {
        let e = &mut self.entries[i];
        e.generation += 1;
        let id = IncarnationId {
            service: i,
            replica: slot,
            generation: e.generation,
        };
        // Pings wait for their answer before the next one, so this never fills in practice; a stop
        // that still finds it full is backed by the stop deadline.
        let (control_tx, control_rx) = mpsc::channel(64);
        let cancel = self.root.child_token();
        let mode = match &e.degraded_mode {
            Some(reason) => Mode::Degraded {
                reason: reason.clone(),
            },
            None => Mode::Normal,
        };
        let degraded_mode = e.degraded_mode.is_some();
        let incarnation = e.service.launch(Launch {
            id,
            control: control_rx,
            reports: self.reports_tx.clone(),
            stop: cancel.clone(),
            mode,
            bus: self.bus.clone(),
            spec: e.spec_tx.subscribe(),
        });
        let abort = self.tasks.spawn(incarnation);
        self.task_ids.insert(abort.id(), id);
        let deadline = self
            .timers
            .insert(Timer::StartDeadline(id), e.spec.health.start_timeout);
        self.live_replicas += 1;
        e.replicas.insert(
            slot,
            Replica {
                id,
                control: control_tx,
                cancel,
                abort,
                ready: false,
                launched_at: Instant::now(),
                stopping: false,
                exit_cause: None,
                probe: CancellationToken::new(),
                deadline: Some(deadline),
            },
        );
        let cause = match &e.start_cause {
            Some(cause) => cause.clone(),
            None if restart => Cause::Recovery {
                strategy: e.spec.recovery.strategy,
            },
            None => Cause::Startup,
        };
        self.record_gen(
            i,
            id.generation,
            Event::Starting {
                replica: slot,
                restart,
                degraded_mode,
            },
            cause,
        );
    }

    /// Asks every replica to stop within its grace period.
    fn stop_replicas(&mut self, i: usize) {
        let grace = self.entries[i].spec.shutdown_grace;
        for r in self.entries[i].replicas.values_mut() {
            if !r.stopping {
                r.stopping = true;
                let _ = r.control.try_send(Control::Stop);
                r.cancel.cancel();
                if let Some(key) = r.deadline.take() {
                    self.timers.try_remove(&key);
                }
                r.deadline = Some(self.timers.insert(Timer::StopDeadline(r.id), grace));
            }
        }
    }

    fn begin_stop(&mut self, i: usize, cause: &Cause) {
        match self.entries[i].state {
            State::Backoff => {
                self.entries[i].epoch += 1;
                for r in self.entries[i].replicas.values() {
                    r.abort.abort();
                }
                self.set_state(i, Input::Stop);
                self.after_stop(i, cause);
            }
            State::Starting | State::Running | State::Degraded => {
                self.set_state(i, Input::Stop);
                self.entries[i].stop_cause = Some(cause.clone());
                self.record(i, Event::Stopping, cause.clone());
                self.stop_replicas(i);
                if self.entries[i].replicas.is_empty() {
                    self.finish_stop(i);
                }
            }
            State::Registered | State::Stopping | State::Stopped | State::Failed => {}
        }
    }

    fn finish_stop(&mut self, i: usize) {
        self.set_state(i, Input::Stopped);
        let cause = self.entries[i].stop_cause.take().unwrap_or(Cause::Service);
        self.after_stop(i, &cause);
    }

    fn after_stop(&mut self, i: usize, cause: &Cause) {
        let e = &mut self.entries[i];
        e.started_at = None;
        let dead_lettered = if e.want_up {
            0
        } else {
            e.service.mailbox().drain(DeadLetterReason::ServiceStopped)
        };
        self.record(i, Event::Stopped { dead_lettered }, cause.clone());
        self.set_health(i, Health::Unknown, cause.clone());
        self.dirty.insert(i);
        self.dirty
            .extend(self.graph.dependencies(i).iter().copied());
        self.reconcile(cause);
    }

    // --- state bookkeeping --------------------------------------------------------------------------

    /// Applies a lifecycle transition; the one place a service's state changes.
    fn set_state(&mut self, i: usize, input: Input) -> bool {
        let e = &mut self.entries[i];
        let Some(next) = transition(e.state, input) else {
            tracing::error!(service = %e.spec.name, state = %e.state, ?input, "invalid lifecycle transition ignored");
            return false;
        };
        if e.state.is_down() != next.is_down() {
            if next.is_down() {
                self.not_down -= 1;
            } else {
                self.not_down += 1;
            }
        }
        e.state = next;
        let accepting =
            next.accepts_requests() || (e.want_up && e.failure.is_none() && next == State::Stopped);
        e.service
            .mailbox()
            .set_state(if accepting { State::Starting } else { next });
        self.refresh_concern(i);
        true
    }

    fn set_health(&mut self, i: usize, health: Health, cause: Cause) {
        if self.entries[i].health == health {
            return;
        }
        self.entries[i].health = health.clone();
        self.record(
            i,
            Event::HealthChanged {
                health: health.clone(),
            },
            cause,
        );
        self.bus.publish(
            None,
            HealthReport {
                service: self.entries[i].spec.name.clone(),
                health,
            },
        );
        self.refresh_concern(i);
    }

    fn refresh_concern(&mut self, i: usize) {
        let e = &self.entries[i];
        let wanted = e.want_up || e.spec.is_critical();
        let concern = match e.state {
            State::Running => Concern::None,
            State::Degraded => Concern::Degraded,
            _ if !wanted && self.shutdown.is_none() => Concern::None,
            _ if e.spec.is_critical() => Concern::Down,
            _ => Concern::Degraded,
        };
        let old = std::mem::replace(&mut self.concerns[i], concern);
        match old {
            Concern::None => {}
            Concern::Degraded => self.degraded_count -= 1,
            Concern::Down => self.down_count -= 1,
        }
        match concern {
            Concern::None => {
                self.concerned.remove(&i);
            }
            Concern::Degraded => {
                self.degraded_count += 1;
                self.concerned.insert(i);
            }
            Concern::Down => {
                self.down_count += 1;
                self.concerned.insert(i);
            }
        }
        // Reasons quote health and failure text, which change without a change of concern.
        self.readiness_dirty = true;
    }

    /// Runs `timer` after `delay`; a zero delay runs it right after the current input.
    fn schedule(&mut self, timer: Timer, delay: Duration) {
        if delay.is_zero() {
            self.immediate.push_back(timer);
        } else {
            self.timers.insert(timer, delay);
        }
    }

    fn publish_readiness(&mut self) {
        if !std::mem::take(&mut self.readiness_dirty) {
            return;
        }
        let level = if self.down_count > 0 {
            RuntimeLevel::NotReady
        } else if self.degraded_count > 0 {
            RuntimeLevel::Degraded
        } else {
            RuntimeLevel::Ready
        };
        let mut reasons = Vec::new();
        for &i in self.concerned.iter().take(16) {
            let e = &self.entries[i];
            {
                let why = e
                    .failure
                    .clone()
                    .or_else(|| e.health.reason().map(str::to_owned));
                reasons.push(match why {
                    Some(why) => format!(
                        "{} ({}) is {}: {why}",
                        e.spec.name,
                        kind_word(&e.spec),
                        e.state
                    ),
                    None => format!("{} ({}) is {}", e.spec.name, kind_word(&e.spec), e.state),
                });
            }
        }
        let readiness = Readiness { level, reasons };
        let changed = self.readiness_tx.borrow().level != readiness.level;
        if changed {
            self.journal.append(
                None,
                None,
                Event::RuntimeHealth {
                    level: readiness.level,
                    reasons: readiness.reasons.clone(),
                },
                Cause::Service,
            );
        }
        self.readiness_tx.send_if_modified(|r| {
            if *r != readiness {
                *r = readiness;
                true
            } else {
                false
            }
        });
    }

    fn replica_mut(&mut self, id: IncarnationId) -> Option<&mut Replica> {
        self.entries
            .get_mut(id.service)?
            .replicas
            .get_mut(&id.replica)
            .filter(|r| r.id.generation == id.generation)
    }

    fn record(&self, i: usize, event: Event, cause: Cause) {
        let generation = self.entries[i].generation;
        self.record_gen(i, generation, event, cause);
    }

    fn record_gen(&self, i: usize, generation: u64, event: Event, cause: Cause) {
        let entry = self.journal.append(
            Some(&self.entries[i].spec.name),
            Some(generation),
            event,
            cause,
        );
        self.bus.publish(None, ServiceEvent(entry));
    }

    fn snapshot(&self) -> Snapshot {
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

impl Managed {
    fn new(r: Registration) -> Self {
        let desired = r.spec.replicas.min.max(1);
        let spec = Arc::new(r.spec);
        Managed {
            spec_tx: watch::Sender::new(spec.clone()),
            last_refusal: None,
            spec,
            service: r.service,
            state: State::Registered,
            health: Health::Unknown,
            want_up: false,
            failure: None,
            replicas: Default::default(),
            generation: 0,
            restarts: 0,
            history: History::default(),
            degraded_mode: None,
            epoch: 0,
            started_at: None,
            stop_cause: None,
            start_cause: None,
            desired,
            anomaly: None,
        }
    }
}

fn kind_word(spec: &Spec) -> &'static str {
    match spec.kind {
        crate::Kind::Core => "core",
        crate::Kind::Optional => "optional",
        crate::Kind::Extension => "extension",
    }
}

fn classify(result: Result<Result<(), ServiceError>, JoinError>, stopping: bool) -> ExitOutcome {
    match result {
        Ok(Ok(())) if stopping => ExitOutcome::Stopped,
        Ok(Ok(())) => ExitOutcome::Returned,
        Ok(Err(e)) => ExitOutcome::Error {
            message: e.to_string(),
        },
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            ExitOutcome::Panic { message }
        }
        Err(_) => ExitOutcome::Aborted,
    }
}

fn describe(outcome: &ExitOutcome) -> String {
    match outcome {
        ExitOutcome::Stopped => "stopped".into(),
        ExitOutcome::Returned => "returned without being asked to stop".into(),
        ExitOutcome::Error { message } => format!("failed: {message}"),
        ExitOutcome::Panic { message } => format!("panicked: {message}"),
        ExitOutcome::Hung { missed } => format!("hung: {missed} liveness pings unanswered"),
        ExitOutcome::StartTimeout => "did not become ready within its start timeout".into(),
        ExitOutcome::Aborted => "aborted".into(),
    }
}
