//! Service lifecycle states and the one pure function that moves between them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A service's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ServiceState)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Known to the runtime, never started.
    Registered,
    /// Incarnations launched, not all ready yet.
    Starting,
    /// Every replica is ready.
    Running,
    /// Running with reduced function (reported by the service, or restarted by the `degrade` strategy).
    Degraded,
    /// Failed; waiting out the backoff before the next incarnation.
    Backoff,
    /// Asked to stop; incarnations still running.
    Stopping,
    /// No incarnation runs.
    Stopped,
    /// Gave up (restart intensity exceeded) or waiting for an operator (`manual` recovery).
    Failed,
}

impl State {
    /// The state's name, as the API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Registered => "registered",
            State::Starting => "starting",
            State::Running => "running",
            State::Degraded => "degraded",
            State::Backoff => "backoff",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }

    /// Serving requests (possibly with reduced function).
    pub fn is_up(self) -> bool {
        matches!(self, State::Running | State::Degraded)
    }

    /// No incarnation is running and none is scheduled.
    pub fn is_down(self) -> bool {
        matches!(self, State::Registered | State::Stopped | State::Failed)
    }

    /// Requests sent now will wait in the mailbox for an incarnation.
    pub fn accepts_requests(self) -> bool {
        matches!(
            self,
            State::Starting | State::Running | State::Degraded | State::Backoff | State::Stopping
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a service, as far as its lifecycle is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Launch incarnations (startup, operator, or the end of a backoff).
    Launch,
    /// Every launched incarnation reported ready; `degraded` if it runs in degraded mode.
    AllReady {
        /// Whether it runs in degraded mode.
        degraded: bool,
    },
    /// The service reported reduced function.
    Degrade,
    /// The service reported full function again.
    Recover,
    /// An incarnation failed and recovery schedules a new one after a delay.
    Backoff,
    /// An incarnation failed and recovery gives up, or waits for an operator.
    Fail,
    /// Ask every incarnation to stop.
    Stop,
    /// The last incarnation exited after a stop.
    Stopped,
}

/// The transition taken for `input` in `state`, or `None` if it does not apply there.
pub fn transition(state: State, input: Input) -> Option<State> {
    use Input as I;
    use State as S;
    Some(match (state, input) {
        (S::Registered | S::Stopped | S::Failed | S::Backoff, I::Launch) => S::Starting,
        (S::Starting, I::AllReady { degraded: false }) => S::Running,
        (S::Starting, I::AllReady { degraded: true }) => S::Degraded,
        (S::Running, I::Degrade) => S::Degraded,
        (S::Degraded, I::Recover) => S::Running,
        (S::Starting | S::Running | S::Degraded, I::Backoff) => S::Backoff,
        (S::Starting | S::Running | S::Degraded | S::Backoff, I::Fail) => S::Failed,
        (S::Starting | S::Running | S::Degraded, I::Stop) => S::Stopping,
        (S::Backoff, I::Stop) => S::Stopped,
        (S::Stopping, I::Stopped) => S::Stopped,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Input as I;
    use State as S;

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
    const ALL_INPUTS: [Input; 9] = [
        I::Launch,
        I::AllReady { degraded: false },
        I::AllReady { degraded: true },
        I::Degrade,
        I::Recover,
        I::Backoff,
        I::Fail,
        I::Stop,
        I::Stopped,
    ];

    /// The complete table: every (state, input) pair not listed here is rejected.
    const TABLE: &[(State, Input, State)] = &[
        (S::Registered, I::Launch, S::Starting),
        (S::Stopped, I::Launch, S::Starting),
        (S::Failed, I::Launch, S::Starting),
        (S::Backoff, I::Launch, S::Starting),
        (S::Starting, I::AllReady { degraded: false }, S::Running),
        (S::Starting, I::AllReady { degraded: true }, S::Degraded),
        (S::Running, I::Degrade, S::Degraded),
        (S::Degraded, I::Recover, S::Running),
        (S::Starting, I::Backoff, S::Backoff),
        (S::Running, I::Backoff, S::Backoff),
        (S::Degraded, I::Backoff, S::Backoff),
        (S::Starting, I::Fail, S::Failed),
        (S::Running, I::Fail, S::Failed),
        (S::Degraded, I::Fail, S::Failed),
        (S::Backoff, I::Fail, S::Failed),
        (S::Starting, I::Stop, S::Stopping),
        (S::Running, I::Stop, S::Stopping),
        (S::Degraded, I::Stop, S::Stopping),
        (S::Backoff, I::Stop, S::Stopped),
        (S::Stopping, I::Stopped, S::Stopped),
    ];

    #[test]
    fn transition_table_is_complete_and_exact() {
        for state in ALL_STATES {
            for input in ALL_INPUTS {
                let want = TABLE
                    .iter()
                    .find(|(s, i, _)| *s == state && *i == input)
                    .map(|(_, _, to)| *to);
                assert_eq!(transition(state, input), want, "{state:?} + {input:?}");
            }
        }
    }

    #[test]
    fn no_transition_skips_stopping_while_incarnations_run() {
        // A running service can only reach Stopped through Stopping, so no incarnation is left behind.
        for input in ALL_INPUTS {
            for from in [S::Starting, S::Running, S::Degraded] {
                assert_ne!(transition(from, input), Some(S::Stopped));
            }
        }
    }
}
