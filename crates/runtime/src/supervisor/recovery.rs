//! Recovery: what the supervisor does when an incarnation fails.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::{Supervisor, Timer};
use crate::bus::DeadLetterReason;
use crate::health::Health;
use crate::journal::{Cause, Event, ExitOutcome};
use crate::lifecycle::{Input, State};
use crate::recovery::Verdict;
use crate::spec::{Scope, Strategy};

impl Supervisor {
    pub(super) fn on_failure(
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
