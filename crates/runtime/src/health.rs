//! Health levels with their causes, and how long the liveness probe takes to find a hang.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::spec::HealthPolicy;

/// A service's health as the runtime sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "level", rename_all = "snake_case")]
pub enum Health {
    /// Not running, or not ready yet.
    Unknown,
    /// Working.
    Healthy,
    /// Working with reduced function.
    Degraded {
        /// What is reduced, and why.
        reason: String,
    },
    /// Not working: failed, hung, or its dependencies are down.
    Unhealthy {
        /// Why.
        reason: String,
    },
}

impl Health {
    /// The level's name (`unknown`, `healthy`, `degraded`, `unhealthy`).
    pub fn level(&self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Degraded { .. } => "degraded",
            Health::Unhealthy { .. } => "unhealthy",
        }
    }

    /// The reason, for the degraded and unhealthy levels.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Health::Degraded { reason } | Health::Unhealthy { reason } => Some(reason),
            Health::Unknown | Health::Healthy => None,
        }
    }
}

/// The longest a hang can go unnoticed: the first missed ping is sent at most one interval after the
/// hang, the last one `threshold - 1` intervals later, and it times out `timeout` after that. Exact
/// under a paused clock; on a real clock add the timer wheel's millisecond rounding (about 1 ms per
/// timer, measured 2 to 3 ms in all).
pub fn worst_case_detection(policy: &HealthPolicy) -> Duration {
    policy.interval * policy.failure_threshold.max(1) + policy.timeout
}
