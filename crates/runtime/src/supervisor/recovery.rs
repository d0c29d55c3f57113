//! Recovery: the supervisor carrying out the plan [`crate::recovery::plan`] makes for a failed
//! incarnation.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::{Supervisor, Timer};
use crate::bus::DeadLetterReason;
use crate::event::{Cause, Event, ExitOutcome};
use crate::health::Health;
use crate::lifecycle::Input;
use crate::recovery::{Failure, GiveUp, Plan, plan};
use crate::spec::Scope;

impl Supervisor {
    /// Replica `slot` of service `i` failed with `outcome` after running for `ran`; `needs_operator`
    /// if it said only an operator can help.
    pub(super) fn on_failure(
        &mut self,
        i: usize,
        slot: u32,
        outcome: ExitOutcome,
        ran: Duration,
        needs_operator: bool,
    ) {
        let recovery = self.entries[i].spec.recovery;
        let cause = Cause::Recovery {
            strategy: recovery.strategy,
        };
        let now = Instant::now();
        let unit = self.rng.r#gen::<f64>();
        let e = &self.entries[i];
        let failure = Failure {
            state: e.state,
            strategy: recovery.strategy,
            scope: recovery.scope,
            needs_operator,
            serving: e
                .replicas
                .values()
                .filter(|r| r.ready && !r.stopping)
                .count() as u32,
            verdict: e.history.verdict(&recovery, now, ran, unit),
            on_exhausted: e.spec.on_exhausted(),
            ceiling: recovery.backoff.max,
        };
        let what = describe(&outcome);
        match plan(&failure) {
            Plan::Ignore => {}
            Plan::Fail(why @ GiveUp::Escalated { .. }) => {
                let reason = why.reason(&what, recovery.window);
                self.fail(i, reason.clone(), cause.clone());
                self.escalate(i, reason, cause);
            }
            Plan::Fail(why) => self.fail(i, why.reason(&what, recovery.window), cause),
            Plan::Failover {
                after,
                attempt,
                serving,
            } => {
                self.entries[i].history.record(&recovery, now, ran);
                self.entries[i].restarts += 1;
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
                    after,
                );
                self.record(
                    i,
                    Event::BackoffScheduled {
                        attempt,
                        delay_ms: after.as_millis() as u64,
                    },
                    cause,
                );
            }
            Plan::Restart {
                after,
                attempt,
                degraded,
                scope,
            } => {
                self.entries[i].history.record(&recovery, now, ran);
                self.entries[i].restarts += 1;
                self.stop_replicas(i);
                if degraded {
                    self.entries[i].degraded_mode = Some(what.clone());
                }
                self.set_state(i, Input::Backoff);
                self.entries[i].epoch += 1;
                let epoch = self.entries[i].epoch;
                self.schedule(Timer::Backoff { service: i, epoch }, after);
                self.record(
                    i,
                    Event::BackoffScheduled {
                        attempt,
                        delay_ms: after.as_millis() as u64,
                    },
                    cause.clone(),
                );
                self.set_health(i, Health::Unhealthy { reason: what }, cause);
                if scope == Scope::Dependents {
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

    pub(super) fn fail(&mut self, i: usize, reason: String, cause: Cause) {
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
}

impl Supervisor {
    /// Service `i` used up its restarts under `on_exhausted = "escalate"`: the runtime is no
    /// longer alive, for whatever supervises the process to start it again. The first reason
    /// stays.
    fn escalate(&mut self, i: usize, reason: String, cause: Cause) {
        tracing::error!(service = %self.entries[i].spec.name, %reason, "escalating: the runtime is no longer alive");
        let reason = format!("{}: {reason}", self.entries[i].spec.name);
        self.record(
            i,
            Event::Escalated {
                reason: reason.clone(),
            },
            cause,
        );
        if self.escalation.is_none() {
            self.escalation = Some(reason);
            self.readiness_dirty = true;
        }
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
