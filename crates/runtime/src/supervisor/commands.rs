//! The supervisor's commands: what operators, the monitor and the configuration controller ask of
//! it, and how each one is answered.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::oneshot;

use super::readiness::Concern;
use super::{Managed, Snapshot, Supervisor, Timer};
use crate::budget::Demand;
use crate::event::{Cause, Event, Fault};
use crate::graph::Graph;
use crate::health::Health;
use crate::incarnation::{self, Control, IncarnationId, Report};
use crate::lifecycle::{Input, State};
use crate::service::Erased;
use crate::{Error, ServiceName, Spec};

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

/// The answer to an operator command: what the service's state is now, and whether the command
/// changed anything.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Answer {
    /// The service.
    pub service: ServiceName,
    /// Its state now.
    pub state: State,
    /// Whether the command changed anything.
    pub accepted: bool,
    /// What happens next, or why nothing does.
    pub message: String,
}

impl Supervisor {
    pub(super) fn lookup(&self, name: &ServiceName) -> Result<usize, Error> {
        self.graph
            .index_of(name.as_str())
            .ok_or_else(|| Error::UnknownService(name.to_string()))
    }

    pub(super) fn answer(&self, i: usize, accepted: bool, message: impl Into<String>) -> Answer {
        Answer {
            service: self.entries[i].spec.name.clone(),
            state: self.entries[i].state,
            accepted,
            message: message.into(),
        }
    }

    /// Starts `i` and whatever it depends on; `command` is the operator's, for the journal.
    pub(super) fn cmd_start(&mut self, i: usize, command: &str) -> Answer {
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

    pub(super) fn cmd_stop(&mut self, i: usize) -> Answer {
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

    pub(super) fn cmd_restart(&mut self, i: usize) -> Answer {
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

    pub(super) fn cmd_fault(&mut self, i: usize, fault: Fault) -> Result<Answer, Error> {
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
    pub(super) fn usage(&self) -> Demand {
        self.entries
            .iter()
            .filter(|e| !e.state.is_down())
            .fold(crate::budget::RUNTIME_RESERVE, |d, e| {
                d.plus(Demand::of(&e.spec, e.desired))
            })
    }

    pub(super) fn cmd_scale(&mut self, i: usize, to: u32, reason: String, cause: Cause) -> Answer {
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

    pub(super) fn cmd_mark(&mut self, i: usize, mark: Mark) -> Answer {
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

    pub(super) fn cmd_reconfigure(
        &mut self,
        r: Reconfiguration,
    ) -> Result<Vec<ServiceName>, Error> {
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
            .flat_map(|(i, spec)| {
                // A spec that breaks the consistency rules (a list item against its grammar
                // among them) and start-only settings are refused here, for every service alike,
                // before the service is asked for its own veto.
                if let Err(problems) = crate::spec::spec_problems(spec) {
                    return vec![problems.to_string()];
                }
                let old = &self.entries[*i].spec;
                let start_only: Vec<String> = old
                    .start_only_changes(spec)
                    .into_iter()
                    .map(|setting| {
                        format!(
                            "{name}: services.{name}.{setting} is read at start only; restart cloister to change it",
                            name = spec.name
                        )
                    })
                    .collect();
                if !start_only.is_empty() {
                    return start_only;
                }
                self.entries[*i]
                    .service
                    .validate(spec)
                    .err()
                    .map(|m| format!("{}: {m}", spec.name))
                    .into_iter()
                    .collect()
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
    pub(super) fn restart_probes(&mut self, i: usize) {
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

    pub(super) fn spawn_probe(&mut self, id: IncarnationId) {
        let policy = self.entries[id.service].spec.health;
        let reports = self.reports_tx.clone();
        let Some(replica) = self.replica_mut(id) else {
            return;
        };
        replica.probe.cancel();
        replica.probe = replica.cancel.child_token();
        let (control, cancel) = (replica.control.clone(), replica.probe.clone());
        self.probes.spawn(async move {
            if let Some(missed) = incarnation::probe(control, policy, cancel).await {
                let _ = reports.send(Report::Hung(id, missed));
            }
        });
    }

    pub(super) fn cmd_register(&mut self, registration: Registration) -> Result<(), Error> {
        if self.shutdown.is_some() {
            return Err(Error::ShuttingDown);
        }
        crate::spec::spec_problems(&registration.spec)?;
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

    pub(super) fn begin_shutdown(&mut self, reply: Option<oneshot::Sender<()>>) {
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
}
