//! Reconciliation: launching wanted services once their dependencies are up, and stopping unwanted
//! ones once their dependents are down.

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Replica, Supervisor, Timer};
use crate::bus::DeadLetterReason;
use crate::event::{Cause, Event};
use crate::health::Health;
use crate::incarnation::{Control, IncarnationId};
use crate::lifecycle::{Input, State};
use crate::service::{Launch, Mode};

impl Supervisor {
    pub(super) fn deps_up(&self, i: usize) -> bool {
        self.graph
            .dependencies(i)
            .iter()
            .all(|&d| self.entries[d].state.is_up())
    }

    pub(super) fn dependents_down(&self, i: usize) -> bool {
        self.graph
            .dependents(i)
            .iter()
            .all(|&d| self.entries[d].state.is_down())
    }

    pub(super) fn reconcile(&mut self, cause: &Cause) {
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

    pub(super) fn launch(&mut self, i: usize, restart: bool) {
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

    pub(super) fn launch_replica(&mut self, i: usize, slot: u32, restart: bool) {
        let e = &mut self.entries[i];
        e.generation += 1;
        let id = IncarnationId {
            service: i,
            replica: slot,
            generation: e.generation,
        };
        // Pings wait for their answer before the next one, so this never fills in practice; a stop
        // that still finds it full is backed by the stop deadline.
        let (control_tx, control_rx) = crate::incarnation::control_channel(64, e.service.ready());
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
    pub(super) fn stop_replicas(&mut self, i: usize) {
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

    pub(super) fn begin_stop(&mut self, i: usize, cause: &Cause) {
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

    pub(super) fn finish_stop(&mut self, i: usize) {
        self.set_state(i, Input::Stopped);
        let cause = self.entries[i].stop_cause.take().unwrap_or(Cause::Service);
        self.after_stop(i, &cause);
    }

    pub(super) fn after_stop(&mut self, i: usize, cause: &Cause) {
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
}
