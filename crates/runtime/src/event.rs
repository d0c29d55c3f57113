//! What the journal records, and what the rest of the runtime says about what happened: the
//! [`Entry`], the [`Event`] and its [`Cause`], and the small types they carry. Below the journal, the
//! bus and the supervisor alike, so each of them can name an event without depending on another.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::anomaly::{AnomalyAction, Evidence};
use crate::breaker::BreakerState;
use crate::health::Health;
use crate::name::ServiceName;
use crate::spec::Strategy;

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entry {
    pub seq: u64,
    #[serde(
        serialize_with = "serialize_time",
        deserialize_with = "deserialize_time"
    )]
    #[schema(value_type = String, format = DateTime)]
    pub time: SystemTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    pub event: Event,
    pub cause: Cause,
    pub prev: String,
    pub hash: String,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    RuntimeStarted {
        version: String,
        services: usize,
    },
    RuntimeStopping,
    RuntimeStopped,
    /// The runtime's own readiness changed (a critical service failed, an optional one degraded it...).
    RuntimeHealth {
        level: RuntimeLevel,
        reasons: Vec<String>,
    },
    /// The journal file was found damaged when opened.
    JournalIntegrity {
        problem: String,
    },
    Registered,
    Starting {
        replica: u32,
        restart: bool,
        degraded_mode: bool,
    },
    Ready {
        replica: u32,
    },
    /// Every launched replica is ready: the service is up.
    Up {
        replicas: u32,
    },
    HealthChanged {
        health: Health,
    },
    Exited {
        replica: u32,
        outcome: ExitOutcome,
    },
    BackoffScheduled {
        attempt: u32,
        delay_ms: u64,
    },
    /// A replica failed while others keep serving from the shared mailbox.
    Failover {
        replica: u32,
        serving: u32,
    },
    Stopping,
    Stopped {
        dead_lettered: usize,
    },
    Failed {
        reason: String,
    },
    FaultInjected {
        replica: u32,
        fault: Fault,
    },
    /// The replica count changed.
    Scaled {
        from: u32,
        to: u32,
        reason: String,
    },
    /// A scale-out that must not happen (budget, maximum, crash loop).
    ScaleRefused {
        reason: String,
    },
    /// A signal left its learned baseline; `action` is what the runtime did about it.
    Anomaly {
        signal: String,
        evidence: Evidence,
        action: AnomalyAction,
    },
    AnomalyCleared {
        signal: String,
        evidence: Evidence,
    },
    /// The same failure repeated: recovery will not help by itself.
    CrashLoop {
        failure: String,
        count: u32,
    },
    /// A new configuration version is running (the watch window starts).
    ConfigApplied {
        version: u64,
        hash: String,
        changed: Vec<String>,
    },
    ConfigRejected {
        problems: Vec<String>,
    },
    /// The watch window of `version` closed without trouble.
    ConfigConfirmed {
        version: u64,
    },
    ConfigRolledBack {
        from: u64,
        to: u64,
        reason: String,
    },
    /// The circuit breaker on the `caller` -> this service edge opened or closed.
    Circuit {
        caller: Option<ServiceName>,
        state: BreakerState,
        consecutive_failures: u32,
    },
    /// A service took a new spec: live, or by a restart.
    Reconfigured {
        live: bool,
        changes: Vec<String>,
    },
    /// A change a service made to what it keeps (an account created, a token revoked): `action` names
    /// it (`account.created`), `subject` is what it changed, `detail` the rest. Never secrets.
    Audit {
        action: String,
        subject: String,
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        detail: std::collections::BTreeMap<String, String>,
    },
}

/// How an incarnation ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ExitOutcome {
    /// Returned after being asked to stop.
    Stopped,
    /// Returned without being asked to: a failure.
    Returned,
    Error {
        message: String,
    },
    Panic {
        message: String,
    },
    /// Its pings went unanswered `missed` times in a row; it was aborted.
    Hung {
        missed: u32,
    },
    /// It did not become ready within its start timeout; it was aborted.
    StartTimeout,
    /// It did not stop within its grace period; it was aborted.
    Aborted,
}

impl ExitOutcome {
    pub fn is_failure(&self) -> bool {
        !matches!(self, ExitOutcome::Stopped)
    }
}

/// Faults an operator can inject when `[testing] fault_injection` is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The incarnation panics.
    Panic,
    /// The incarnation stops answering anything, pings included.
    Hang,
    /// The incarnation returns an error.
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeLevel {
    Ready,
    Degraded,
    NotReady,
}

/// Why it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Cause {
    Startup,
    Shutdown,
    Operator {
        command: String,
    },
    /// Recovery after a failure, under this strategy.
    Recovery {
        strategy: Strategy,
    },
    /// Follows from what happened to another service.
    Dependency {
        service: ServiceName,
    },
    /// The service reported it.
    Service,
    /// A liveness probe.
    Probe,
    Registration,
    Journal,
    Autoscaler,
    /// The performance monitor's anomaly detection.
    Monitor,
    /// A configuration change, identified by its version.
    Config {
        version: u64,
    },
}

pub(crate) fn serialize_time<S: serde::Serializer>(
    t: &SystemTime,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_micros(*t))
}

fn deserialize_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom)
}
