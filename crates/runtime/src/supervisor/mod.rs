//! The supervisor: one task that owns every service's lifecycle state and reacts to one closed set of
//! inputs (incarnation exits, reports from incarnations and probes, timers, commands).
//!
//! Starting and stopping are reconciliation: each service has a wanted state (`want_up`), and
//! [`Supervisor::reconcile`] launches a wanted service once all its dependencies are up, and stops an
//! unwanted one once everything that depends on it is down. Start order, parallel layers, reverse
//! shutdown and "stop dependents first / start dependencies first" all follow from that one rule.
//!
//! This file holds the supervisor's state and its main loop; the rest is by concern: `commands`
//! (what operators, the monitor and the controller ask), `recovery` (what happens when an
//! incarnation fails), `reconcile` (starting and stopping), `readiness` (the runtime's own
//! readiness) and `snapshot` (what readers see).

mod commands;
mod readiness;
mod reconcile;
mod recovery;
mod snapshot;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::{SeedableRng, rngs::StdRng};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::time::DelayQueue;

use crate::budget::Demand;
use crate::bus::{Bus, DeadLetterReason};
use crate::event::{Cause, Entry, Event, ExitOutcome};
use crate::graph::Graph;
use crate::health::Health;
use crate::incarnation::{IncarnationId, Report};
use crate::journal::{Echo, Journal};
use crate::lifecycle::{Input, State, transition};
use crate::recovery::History;
use crate::service::{Erased, ServiceError};
use crate::{ServiceName, Spec};

pub use commands::{Answer, Mark};
pub(crate) use commands::{Command, Reconfiguration, Registration};
use readiness::Concern;
pub use readiness::Readiness;
pub use snapshot::{HealthReport, ServiceEvent, ServiceStatus, Snapshot};

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

struct Replica {
    id: IncarnationId,
    control: crate::incarnation::ControlSender,
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

pub(crate) struct Supervisor {
    entries: Vec<Managed>,
    graph: Graph,
    journal: Journal,
    /// Publishes each journal entry about a service on the bus once it is chained.
    echo: Echo,
    /// Wakes the task that chains the supervisor's journal entries.
    chain: Arc<tokio::sync::Notify>,
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
    /// Why the runtime escalated, once a service's recovery gave up under
    /// [`crate::OnExhausted::Escalate`]; it stays so until the process ends.
    escalation: Option<String>,
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
        let echo: Echo = {
            let bus = bus.clone();
            Arc::new(move |entry: &Arc<Entry>| {
                bus.publish(None, ServiceEvent(entry.clone()));
            })
        };
        Supervisor {
            entries,
            graph,
            journal,
            echo,
            chain: Arc::new(tokio::sync::Notify::new()),
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
            escalation: None,
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
        // Chains the journal entries the supervisor makes (see `record_gen`), as a task of its own:
        // woken with a turn's first entry, it is queued behind the tasks the turn wakes after that
        // (a replacement incarnation, a caller's answer), which the worker runs first.
        let chainer = {
            let (journal, wake, stop) =
                (self.journal.clone(), self.chain.clone(), self.root.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = wake.notified() => journal.chain(),
                        () = stop.cancelled() => return,
                    }
                }
            })
        };
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
        // Whatever it left is chained by the append below.
        let _ = chainer.await;
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
                    // With no other replica ready to take them, what waits in the mailbox would
                    // wait out the restart: answer it now (the callers get a retryable
                    // `Interrupted`), not at its deadline.
                    let e = &self.entries[id.service];
                    let serving = e
                        .replicas
                        .values()
                        .any(|r| r.id != id && r.ready && !r.stopping);
                    if !serving {
                        let dropped = e.service.mailbox().drain(DeadLetterReason::ServiceHung);
                        if dropped > 0 {
                            tracing::warn!(service = %e.spec.name, dropped, "hung with requests queued; answered as interrupted");
                        }
                    }
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
        let needs_operator = matches!(&result, Ok(Err(e)) if e.is_for_operator());
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
        self.on_failure(i, id.replica, outcome, ran, needs_operator);
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

    /// Runs `timer` after `delay`; a zero delay runs it right after the current input.
    fn schedule(&mut self, timer: Timer, delay: Duration) {
        if delay.is_zero() {
            self.immediate.push_back(timer);
        } else {
            self.timers.insert(timer, delay);
        }
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

    /// Journals an event about service `i`, chained off the supervisor's path (a restart makes a
    /// dozen entries); the entry is published on the bus as a [`ServiceEvent`] once chained.
    fn record_gen(&self, i: usize, generation: u64, event: Event, cause: Cause) {
        let name = &self.entries[i].spec.name;
        self.journal_deferred(Some(name), Some(generation), event, cause, true);
    }

    /// Journals an event, leaving its chaining to the chainer task (see `run`); with `echo`, the
    /// entry is published on the bus once chained.
    fn journal_deferred(
        &self,
        service: Option<&ServiceName>,
        generation: Option<u64>,
        event: Event,
        cause: Cause,
        echo: bool,
    ) {
        let echo = echo.then_some(&self.echo);
        if self
            .journal
            .append_deferred(service, generation, event, cause, echo)
        {
            self.chain.notify_one();
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
