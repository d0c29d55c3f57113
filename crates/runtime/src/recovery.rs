//! Recovery as data: what happens after an incarnation fails, as pure functions of the service's
//! recovery settings, its state and its recent restarts. [`plan`] decides (strategy, scope, replicas
//! still serving, the restart-intensity verdict, a failure only an operator can lift); the
//! supervisor only carries the [`Plan`] out. [`History`] keeps the recent restarts, and
//! [`backoff_delay`] is the backoff curve.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::lifecycle::State;
use crate::spec::{Backoff, OnExhausted, Recovery, Scope, Strategy};

/// The delay before restart number `attempt` (0-based), with `unit` in `[0, 1]` choosing the jitter.
pub fn backoff_delay(backoff: &Backoff, attempt: u32, unit: f64) -> Duration {
    let base = backoff.initial.as_secs_f64() * backoff.multiplier.powi(attempt.min(64) as i32);
    let capped = base.min(backoff.max.as_secs_f64());
    let factor = 1.0 + backoff.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
    Duration::from_secs_f64((capped * factor).clamp(0.0, backoff.max.as_secs_f64()))
}

/// Recent restarts of one service, for the backoff attempt and the intensity limit.
#[derive(Debug, Default, Clone)]
pub struct History {
    restarts: VecDeque<Instant>,
    attempt: u32,
}

/// What the restart history says about one more restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Restart after this delay; `attempt` is the backoff step it used.
    Restart {
        /// The delay before the restart.
        delay: Duration,
        /// The backoff step (0-based).
        attempt: u32,
    },
    /// More than `max_restarts` within `window`: give up.
    Exhausted {
        /// Restarts within the window.
        restarts: u32,
    },
}

impl History {
    /// The verdict for a failure at `now` of an incarnation that had run for `ran`, without recording
    /// anything: a run of `reset_after` or longer starts the backoff curve over, and restarts older
    /// than the window no longer count.
    pub fn verdict(&self, recovery: &Recovery, now: Instant, ran: Duration, unit: f64) -> Verdict {
        let recent = self
            .restarts
            .iter()
            .filter(|&&t| now.duration_since(t) < recovery.window)
            .count() as u32;
        if recent >= recovery.max_restarts {
            return Verdict::Exhausted { restarts: recent };
        }
        let attempt = if ran >= recovery.backoff.reset_after {
            0
        } else {
            self.attempt
        };
        Verdict::Restart {
            delay: backoff_delay(&recovery.backoff, attempt, unit),
            attempt,
        }
    }

    /// Records a restart made at `now` after a failure of an incarnation that had run for `ran`, so
    /// the next verdict counts it and takes the next backoff step.
    pub fn record(&mut self, recovery: &Recovery, now: Instant, ran: Duration) {
        self.settle(recovery, now, ran);
        self.restarts.push_back(now);
        self.attempt = self.attempt.saturating_add(1);
    }

    /// Records a failure at `now` of an incarnation that had run for `ran`, and decides: the
    /// [`History::verdict`], with the restart recorded if it is one.
    pub fn on_failure(
        &mut self,
        recovery: &Recovery,
        now: Instant,
        ran: Duration,
        unit: f64,
    ) -> Verdict {
        let verdict = self.verdict(recovery, now, ran, unit);
        match verdict {
            Verdict::Restart { .. } => self.record(recovery, now, ran),
            Verdict::Exhausted { .. } => self.settle(recovery, now, ran),
        }
        verdict
    }

    /// Forgets restarts older than the window, and the backoff steps after a stable run.
    fn settle(&mut self, recovery: &Recovery, now: Instant, ran: Duration) {
        if ran >= recovery.backoff.reset_after {
            self.attempt = 0;
        }
        while let Some(&t) = self.restarts.front() {
            if now.duration_since(t) >= recovery.window {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
    }

    /// Forget everything, as after an operator's start.
    pub fn reset(&mut self) {
        self.restarts.clear();
        self.attempt = 0;
    }
}

/// What the supervisor knows when an incarnation has failed: everything [`plan`] decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The service's state when the incarnation exited.
    pub state: State,
    /// The service's recovery strategy.
    pub strategy: Strategy,
    /// Whether recovery takes the service's dependents down with it.
    pub scope: Scope,
    /// The incarnation failed with [`crate::ServiceError::needs_operator`]: no restart can help.
    pub needs_operator: bool,
    /// Other replicas of the service that are ready and not stopping.
    pub serving: u32,
    /// What the service's restart history says about one more restart ([`History::verdict`]).
    pub verdict: Verdict,
    /// What to do once restarts are used up ([`crate::Spec::on_exhausted`]).
    pub on_exhausted: OnExhausted,
    /// The backoff's maximum: the delay of every restart past the limit under
    /// [`OnExhausted::Retry`].
    pub ceiling: Duration,
}

/// What the supervisor does about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Nothing: the exit belongs to a run that is already being recovered or stopped.
    Ignore,
    /// Give up: every replica stops and the service is `failed` until an operator starts it.
    Fail(GiveUp),
    /// Restart the failed replica alone after `after`, while `serving` others keep draining the
    /// shared mailbox (the `failover` strategy).
    Failover {
        /// The delay before the replica restarts.
        after: Duration,
        /// The backoff step (0-based).
        attempt: u32,
        /// Replicas that keep serving.
        serving: u32,
    },
    /// Stop every replica and start the service again after `after`; in degraded mode if
    /// `degraded` (the `degrade` strategy); with `Scope::Dependents`, its dependents are stopped and
    /// start again once it is back.
    Restart {
        /// The delay before the service starts again.
        after: Duration,
        /// The backoff step (0-based).
        attempt: u32,
        /// Whether it starts again in degraded mode.
        degraded: bool,
        /// Whether its dependents are stopped and started again with it.
        scope: Scope,
    },
}

/// Why recovery gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The service said only an operator can lift this failure.
    NeedsOperator,
    /// The `manual` strategy: the service waits for an operator.
    Manual,
    /// The restart-intensity limit: `restarts` restarts within the window already
    /// ([`OnExhausted::StayFailed`]).
    Exhausted {
        /// Restarts within the window.
        restarts: u32,
    },
    /// The restart-intensity limit under [`OnExhausted::Escalate`]: the service is failed and the
    /// runtime escalates to whatever supervises its process.
    Escalated {
        /// Restarts within the window.
        restarts: u32,
    },
}

impl GiveUp {
    /// The reason the service is failed with, given what happened (`what`) and the intensity window.
    pub fn reason(self, what: &str, window: Duration) -> String {
        match self {
            // The service's own words say what the operator must do.
            GiveUp::NeedsOperator => what.to_owned(),
            GiveUp::Manual => format!("{what}; recovery is manual: start it again when ready"),
            GiveUp::Exhausted { restarts } => format!(
                "{what}; gave up after {restarts} restarts within {}",
                humantime::format_duration(window)
            ),
            GiveUp::Escalated { restarts } => format!(
                "{what}; gave up after {restarts} restarts within {} and escalated: the process \
                 exits for its supervisor to start it again",
                humantime::format_duration(window)
            ),
        }
    }
}

/// The recovery decision: what to do about `failure`. A pure function; its table is tested below.
pub fn plan(failure: &Failure) -> Plan {
    let f = failure;
    if !matches!(f.state, State::Starting | State::Running | State::Degraded) {
        // A straggler from a run that is already being recovered or stopped.
        return Plan::Ignore;
    }
    if f.needs_operator {
        return Plan::Fail(GiveUp::NeedsOperator);
    }
    if f.strategy == Strategy::Manual {
        return Plan::Fail(GiveUp::Manual);
    }
    let (after, attempt) = match (f.verdict, f.on_exhausted) {
        (Verdict::Restart { delay, attempt }, _) => (delay, attempt),
        (Verdict::Exhausted { restarts }, OnExhausted::StayFailed) => {
            return Plan::Fail(GiveUp::Exhausted { restarts });
        }
        (Verdict::Exhausted { restarts }, OnExhausted::Escalate) => {
            return Plan::Fail(GiveUp::Escalated { restarts });
        }
        // CrashLoopBackOff: on and on, each restart after the backoff's maximum.
        (Verdict::Exhausted { restarts }, OnExhausted::Retry) => (f.ceiling, restarts),
    };
    if f.strategy == Strategy::Failover && f.serving > 0 && f.state.is_up() {
        return Plan::Failover {
            after,
            attempt,
            serving: f.serving,
        };
    }
    Plan::Restart {
        after,
        attempt,
        degraded: f.strategy == Strategy::Degrade,
        scope: f.scope,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn backoff(jitter: f64) -> Backoff {
        Backoff {
            initial: ms(100),
            max: ms(1000),
            multiplier: 2.0,
            jitter,
            reset_after: ms(5000),
        }
    }

    #[test]
    fn exponential_curve_is_capped() {
        let b = backoff(0.0);
        let got: Vec<u128> = (0..6)
            .map(|a| backoff_delay(&b, a, 0.5).as_millis())
            .collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let b = backoff(0.2);
        assert_eq!(backoff_delay(&b, 1, 0.0), ms(160));
        assert_eq!(backoff_delay(&b, 1, 1.0), ms(240));
        assert_eq!(backoff_delay(&b, 1, 0.5), ms(200));
        // Never beyond the maximum, even with jitter.
        assert_eq!(backoff_delay(&b, 10, 1.0), ms(1000));
    }

    #[test]
    fn intensity_limit_and_reset() {
        let recovery = Recovery {
            max_restarts: 3,
            window: ms(10_000),
            backoff: backoff(0.0),
            ..Recovery::default()
        };
        let t0 = Instant::now();
        let mut h = History::default();
        let mut verdicts = Vec::new();
        for k in 0..4 {
            verdicts.push(h.on_failure(&recovery, t0 + ms(k * 100), ms(10), 0.5));
        }
        assert_eq!(
            verdicts,
            [
                Verdict::Restart {
                    delay: ms(100),
                    attempt: 0
                },
                Verdict::Restart {
                    delay: ms(200),
                    attempt: 1
                },
                Verdict::Restart {
                    delay: ms(400),
                    attempt: 2
                },
                Verdict::Exhausted { restarts: 3 },
            ]
        );
        // Once the window has passed, restarts are allowed again; a long stable run resets the curve.
        assert_eq!(
            h.on_failure(&recovery, t0 + ms(20_000), ms(6000), 0.5),
            Verdict::Restart {
                delay: ms(100),
                attempt: 0
            }
        );
    }

    mod plan_table {
        use super::super::*;
        use GiveUp as G;
        use OnExhausted as On;
        use Scope as Sc;
        use State as S;
        use Strategy as St;

        const ALL_STATES: [State; 8] = [
            S::Registered,
            S::Starting,
            S::Running,
            S::Degraded,
            S::Backoff,
            S::Stopping,
            S::Stopped,
            S::Failed,
        ];
        const ALL_STRATEGIES: [Strategy; 4] = [St::Restart, St::Failover, St::Degrade, St::Manual];
        const ALL_SCOPES: [Scope; 2] = [Sc::Service, Sc::Dependents];
        const AFTER: Duration = Duration::from_millis(300);
        const RESTART: Verdict = Verdict::Restart {
            delay: AFTER,
            attempt: 2,
        };
        const EXHAUSTED: Verdict = Verdict::Exhausted { restarts: 5 };
        const ALL_VERDICTS: [Verdict; 2] = [RESTART, EXHAUSTED];
        /// No other replica serving, or two of them.
        const ALL_SERVING: [u32; 2] = [0, 2];
        const ALL_ON_EXHAUSTED: [OnExhausted; 3] = [On::Escalate, On::Retry, On::StayFailed];
        const CEILING: Duration = Duration::from_millis(30_000);

        /// States where an exit belongs to a run that is over.
        const OVER: &[State] = &[
            S::Registered,
            S::Backoff,
            S::Stopping,
            S::Stopped,
            S::Failed,
        ];
        /// States where an exit is a failure to recover from.
        const LIVE: &[State] = &[S::Starting, S::Running, S::Degraded];
        const UP: &[State] = &[S::Running, S::Degraded];
        const ANY_STRATEGY: &[Strategy] = &ALL_STRATEGIES;
        const ANY_SCOPE: &[Scope] = &ALL_SCOPES;
        const ANY_SERVING: &[u32] = &ALL_SERVING;
        const ANY_VERDICT: &[Verdict] = &ALL_VERDICTS;
        /// The table's policies past the limit: `retry` is checked apart (it plans what a
        /// restart at the ceiling would).
        const ANY_ON: &[OnExhausted] = &[On::Escalate, On::StayFailed];
        const EITHER: &[bool] = &[false, true];

        const fn restart(degraded: bool, scope: Scope) -> Plan {
            Plan::Restart {
                after: AFTER,
                attempt: 2,
                degraded,
                scope,
            }
        }

        type Row = (
            &'static [State],
            &'static [Strategy],
            &'static [Scope],
            &'static [bool],
            &'static [u32],
            &'static [Verdict],
            &'static [OnExhausted],
            Plan,
        );

        /// The complete decision table: (states, strategies, scopes, needs an operator, others
        /// serving, verdict, policy past the limit) -> plan. Every combination of inputs matches
        /// exactly one row.
        #[rustfmt::skip]
        const TABLE: &[Row] = &[
            (OVER, ANY_STRATEGY, ANY_SCOPE, EITHER, ANY_SERVING, ANY_VERDICT, ANY_ON, Plan::Ignore),
            (LIVE, ANY_STRATEGY, ANY_SCOPE, &[true], ANY_SERVING, ANY_VERDICT, ANY_ON, Plan::Fail(G::NeedsOperator)),
            (LIVE, &[St::Manual], ANY_SCOPE, &[false], ANY_SERVING, ANY_VERDICT, ANY_ON, Plan::Fail(G::Manual)),
            (LIVE, &[St::Restart, St::Failover, St::Degrade], ANY_SCOPE, &[false], ANY_SERVING, &[EXHAUSTED],
                &[On::StayFailed], Plan::Fail(G::Exhausted { restarts: 5 })),
            (LIVE, &[St::Restart, St::Failover, St::Degrade], ANY_SCOPE, &[false], ANY_SERVING, &[EXHAUSTED],
                &[On::Escalate], Plan::Fail(G::Escalated { restarts: 5 })),
            (UP, &[St::Failover], ANY_SCOPE, &[false], &[2], &[RESTART], ANY_ON,
                Plan::Failover { after: AFTER, attempt: 2, serving: 2 }),
            // Failover with nobody else serving (or not up yet) restarts the whole service.
            (&[S::Starting], &[St::Failover], &[Sc::Service], &[false], ANY_SERVING, &[RESTART], ANY_ON, restart(false, Sc::Service)),
            (&[S::Starting], &[St::Failover], &[Sc::Dependents], &[false], ANY_SERVING, &[RESTART], ANY_ON, restart(false, Sc::Dependents)),
            (UP, &[St::Failover], &[Sc::Service], &[false], &[0], &[RESTART], ANY_ON, restart(false, Sc::Service)),
            (UP, &[St::Failover], &[Sc::Dependents], &[false], &[0], &[RESTART], ANY_ON, restart(false, Sc::Dependents)),
            (LIVE, &[St::Restart], &[Sc::Service], &[false], ANY_SERVING, &[RESTART], ANY_ON, restart(false, Sc::Service)),
            (LIVE, &[St::Restart], &[Sc::Dependents], &[false], ANY_SERVING, &[RESTART], ANY_ON, restart(false, Sc::Dependents)),
            (LIVE, &[St::Degrade], &[Sc::Service], &[false], ANY_SERVING, &[RESTART], ANY_ON, restart(true, Sc::Service)),
            (LIVE, &[St::Degrade], &[Sc::Dependents], &[false], ANY_SERVING, &[RESTART], ANY_ON, restart(true, Sc::Dependents)),
        ];

        /// Every failure the table's columns can describe.
        fn every_failure() -> impl Iterator<Item = Failure> {
            let mut all = Vec::new();
            for state in ALL_STATES {
                for strategy in ALL_STRATEGIES {
                    for scope in ALL_SCOPES {
                        for needs_operator in [false, true] {
                            for serving in ALL_SERVING {
                                for verdict in ALL_VERDICTS {
                                    for on_exhausted in ALL_ON_EXHAUSTED {
                                        all.push(Failure {
                                            state,
                                            strategy,
                                            scope,
                                            needs_operator,
                                            serving,
                                            verdict,
                                            on_exhausted,
                                            ceiling: CEILING,
                                        });
                                    }
                                }
                            }
                        }
                    }
                }
            }
            all.into_iter()
        }

        /// Under `retry`, a service past its limit is planned exactly as one restarting after the
        /// backoff's maximum; and where a restart would be planned, so it is past the limit.
        #[test]
        fn retry_past_the_limit_restarts_at_the_ceiling() {
            let mut restarts = 0;
            for f in every_failure().filter(|f| f.on_exhausted == On::Retry) {
                let Verdict::Exhausted { restarts: n } = f.verdict else {
                    // Within the limit the policy past it plays no part.
                    let stay = Failure {
                        on_exhausted: On::StayFailed,
                        ..f
                    };
                    assert_eq!(plan(&f), plan(&stay), "{f:?}");
                    continue;
                };
                let at_ceiling = Failure {
                    verdict: Verdict::Restart {
                        delay: CEILING,
                        attempt: n,
                    },
                    ..f
                };
                let planned = plan(&f);
                assert_eq!(planned, plan(&at_ceiling), "{f:?}");
                restarts += usize::from(matches!(planned, Plan::Restart { after: CEILING, .. }));
            }
            assert!(restarts > 0, "no row restarted at the ceiling");
        }

        #[test]
        fn plan_table_is_complete_and_exact() {
            let mut used = vec![false; TABLE.len()];
            for f in every_failure().filter(|f| f.on_exhausted != On::Retry) {
                let rows: Vec<usize> = TABLE
                    .iter()
                    .enumerate()
                    .filter(|(_, (st, sy, sc, op, sv, v, on, _))| {
                        st.contains(&f.state)
                            && sy.contains(&f.strategy)
                            && sc.contains(&f.scope)
                            && op.contains(&f.needs_operator)
                            && sv.contains(&f.serving)
                            && v.contains(&f.verdict)
                            && on.contains(&f.on_exhausted)
                    })
                    .map(|(k, _)| k)
                    .collect();
                assert_eq!(rows.len(), 1, "{f:?} matches rows {rows:?}");
                used[rows[0]] = true;
                assert_eq!(plan(&f), TABLE[rows[0]].7, "{f:?}");
            }
            let unused: Vec<usize> = (0..TABLE.len()).filter(|&k| !used[k]).collect();
            assert!(unused.is_empty(), "rows never matched: {unused:?}");
        }

        #[test]
        fn give_up_reasons_say_why() {
            let window = Duration::from_secs(60);
            let what = "panicked: boom";
            assert_eq!(G::NeedsOperator.reason(what, window), what);
            assert_eq!(
                G::Manual.reason(what, window),
                "panicked: boom; recovery is manual: start it again when ready"
            );
            assert_eq!(
                G::Exhausted { restarts: 3 }.reason(what, window),
                "panicked: boom; gave up after 3 restarts within 1m"
            );
        }

        #[test]
        fn a_verdict_records_nothing_until_the_restart_is_recorded() {
            let recovery = Recovery {
                max_restarts: 1,
                window: Duration::from_secs(10),
                ..Recovery::default()
            };
            let t0 = Instant::now();
            let ran = Duration::from_millis(10);
            let mut h = History::default();
            let first = h.verdict(&recovery, t0, ran, 0.5);
            assert_eq!(h.verdict(&recovery, t0, ran, 0.5), first);
            assert!(matches!(first, Verdict::Restart { attempt: 0, .. }));
            h.record(&recovery, t0, ran);
            assert_eq!(
                h.verdict(&recovery, t0, ran, 0.5),
                Verdict::Exhausted { restarts: 1 }
            );
        }
    }
}
