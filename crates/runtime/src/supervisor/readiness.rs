//! The runtime's own readiness: what each service's state means for it, kept up to date per event.

use serde::{Deserialize, Serialize};

use super::Supervisor;
use crate::Spec;
use crate::event::{Cause, Event, RuntimeLevel};
use crate::lifecycle::State;

/// The runtime's readiness: ready, degraded (an optional service is down or a service is degraded),
/// or not ready (a core service is not up), with the reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Readiness {
    /// Ready, degraded or not ready.
    pub level: RuntimeLevel,
    /// Why it is not ready, one line per service (at most 16).
    pub reasons: Vec<String>,
    /// Set once a service's recovery gave up under `on_exhausted = "escalate"`: why. The runtime
    /// is then not alive (`/livez` answers 503) and its process exits after
    /// `[runtime] escalation_grace`, for its own supervisor to start it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<String>,
}

/// Why the runtime is not fully ready, per service.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Concern {
    None,
    Degraded,
    Down,
}

impl Supervisor {
    pub(super) fn refresh_concern(&mut self, i: usize) {
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

    pub(super) fn publish_readiness(&mut self) {
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
        let readiness = Readiness {
            level,
            reasons,
            escalation: self.escalation.clone(),
        };
        let changed = self.readiness_tx.borrow().level != readiness.level;
        if changed {
            self.journal_deferred(
                None,
                None,
                Event::RuntimeHealth {
                    level: readiness.level,
                    reasons: readiness.reasons.clone(),
                },
                Cause::Service,
                false,
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
}

fn kind_word(spec: &Spec) -> &'static str {
    match spec.kind {
        crate::Kind::Core => "core",
        crate::Kind::Optional => "optional",
        crate::Kind::Extension => "extension",
    }
}
