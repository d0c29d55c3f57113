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
    /// Its place in the journal, from 1, without gaps.
    pub seq: u64,
    /// When it was appended (the host's clock).
    #[serde(
        serialize_with = "serialize_time",
        deserialize_with = "deserialize_time"
    )]
    #[schema(value_type = String, format = DateTime)]
    pub time: SystemTime,
    /// The service it is about; `None` for the runtime's own entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceName>,
    /// The service's generation (incarnation count) at the time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// What happened.
    pub event: Event,
    /// Why it happened.
    pub cause: Cause,
    /// The hash of the entry before (all zeros for the first).
    pub prev: String,
    /// SHA-256 over this entry's other fields, hex.
    pub hash: String,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// The runtime started its supervisor.
    RuntimeStarted {
        /// Cloister's version.
        version: String,
        /// How many services were registered.
        services: usize,
    },
    /// A shutdown began.
    RuntimeStopping,
    /// Every service is down; the runtime stopped.
    RuntimeStopped,
    /// The runtime's own readiness changed (a critical service failed, an optional one degraded it...).
    RuntimeHealth {
        /// The runtime's readiness now.
        level: RuntimeLevel,
        /// Why it is not ready, per service.
        reasons: Vec<String>,
    },
    /// The journal file was found damaged when opened.
    JournalIntegrity {
        /// What was found.
        problem: String,
    },
    /// The service was registered.
    Registered,
    /// An incarnation was launched.
    Starting {
        /// The replica slot.
        replica: u32,
        /// Whether it follows an earlier incarnation of the service.
        restart: bool,
        /// Whether it starts in degraded mode (the `degrade` strategy).
        degraded_mode: bool,
    },
    /// An incarnation said it is ready.
    Ready {
        /// The replica slot.
        replica: u32,
    },
    /// Every launched replica is ready: the service is up.
    Up {
        /// How many replicas run.
        replicas: u32,
    },
    /// The service's health changed.
    HealthChanged {
        /// Its health now.
        health: Health,
    },
    /// An incarnation ended.
    Exited {
        /// The replica slot.
        replica: u32,
        /// How it ended.
        outcome: ExitOutcome,
    },
    /// A restart is scheduled after a backoff.
    BackoffScheduled {
        /// The backoff step (0-based).
        attempt: u32,
        /// The delay before the restart, in milliseconds.
        delay_ms: u64,
    },
    /// A replica failed while others keep serving from the shared mailbox.
    Failover {
        /// The replica that failed.
        replica: u32,
        /// How many replicas keep serving.
        serving: u32,
    },
    /// The service was asked to stop.
    Stopping,
    /// The service is down.
    Stopped {
        /// Requests dropped from its mailbox because it stays down.
        dead_lettered: usize,
    },
    /// Recovery gave up, or waits for an operator.
    Failed {
        /// Why, and what to do.
        reason: String,
    },
    /// Recovery gave up under `on_exhausted = "escalate"`: the runtime is no longer alive and its
    /// process exits after `[runtime] escalation_grace`.
    Escalated {
        /// The service and why.
        reason: String,
    },
    /// An operator injected a fault.
    FaultInjected {
        /// The replica it went to.
        replica: u32,
        /// The fault.
        fault: Fault,
    },
    /// The replica count changed.
    Scaled {
        /// Replicas before.
        from: u32,
        /// Replicas after.
        to: u32,
        /// Why.
        reason: String,
    },
    /// A scale-out that must not happen (budget, maximum, crash loop).
    ScaleRefused {
        /// Why not.
        reason: String,
    },
    /// A signal left its learned baseline; `action` is what the runtime did about it.
    Anomaly {
        /// The signal (`latency_p90_ms`, `error_rate`, `queue_depth`).
        signal: String,
        /// The value against its baseline.
        evidence: Evidence,
        /// What the runtime did about it.
        action: AnomalyAction,
    },
    /// A signal is back within its baseline.
    AnomalyCleared {
        /// The signal.
        signal: String,
        /// The value against its baseline.
        evidence: Evidence,
    },
    /// The same failure repeated: recovery will not help by itself.
    CrashLoop {
        /// The failure that repeated.
        failure: String,
        /// How many times within the crash-loop window.
        count: u32,
    },
    /// A new configuration version is running (the watch window starts).
    ConfigApplied {
        /// The version number.
        version: u64,
        /// The SHA-256 of its text, hex.
        hash: String,
        /// The services it changed.
        changed: Vec<String>,
    },
    /// A configuration was refused; nothing changed.
    ConfigRejected {
        /// Every problem found.
        problems: Vec<String>,
    },
    /// The watch window of `version` closed without trouble.
    ConfigConfirmed {
        /// The version confirmed.
        version: u64,
    },
    /// A configuration made things worse and was rolled back.
    ConfigRolledBack {
        /// The version rolled back.
        from: u64,
        /// The version restored.
        to: u64,
        /// What got worse.
        reason: String,
    },
    /// The circuit breaker on the `caller` -> this service edge opened or closed.
    Circuit {
        /// The calling service; `None` outside any service (the API).
        caller: Option<ServiceName>,
        /// The breaker's state now.
        state: BreakerState,
        /// Failures in a row when it changed.
        consecutive_failures: u32,
    },
    /// A service took a new spec: live, or by a restart.
    Reconfigured {
        /// Whether running incarnations took it without a restart.
        live: bool,
        /// The changed settings, by path.
        changes: Vec<String>,
    },
    /// A change a service made to what it keeps (an account created, a token revoked): `action` names
    /// it (`account.created`), `subject` is what it changed, `detail` the rest. Never secrets.
    Audit {
        /// What was done, as `SERVICE.VERB`.
        action: String,
        /// What it was done to.
        subject: String,
        /// Anything else worth keeping.
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
    /// Returned an error.
    Error {
        /// The error.
        message: String,
    },
    /// Panicked.
    Panic {
        /// The panic's message.
        message: String,
    },
    /// Its pings went unanswered `missed` times in a row; it was aborted.
    Hung {
        /// Pings missed in a row.
        missed: u32,
    },
    /// It did not become ready within its start timeout; it was aborted.
    StartTimeout,
    /// It did not stop within its grace period; it was aborted.
    Aborted,
}

impl ExitOutcome {
    /// Whether the incarnation ended without being asked to.
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

/// The runtime's readiness level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeLevel {
    /// Every wanted service is up and healthy.
    Ready,
    /// An optional service is down, or a service is degraded.
    Degraded,
    /// A core service is not up.
    NotReady,
}

/// Why it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Cause {
    /// The runtime starting.
    Startup,
    /// The runtime shutting down.
    Shutdown,
    /// An operator's command.
    Operator {
        /// The command (`start`, `stop`, `restart`, `fault`, ...).
        command: String,
    },
    /// Recovery after a failure, under this strategy.
    Recovery {
        /// The service's recovery strategy.
        strategy: Strategy,
    },
    /// Follows from what happened to another service.
    Dependency {
        /// The other service.
        service: ServiceName,
    },
    /// The service reported it.
    Service,
    /// A liveness probe.
    Probe,
    /// A service registered while the runtime runs.
    Registration,
    /// The journal itself (found damaged at open).
    Journal,
    /// The autoscaler.
    Autoscaler,
    /// The performance monitor's anomaly detection.
    Monitor,
    /// A configuration change, identified by its version.
    Config {
        /// The configuration version.
        version: u64,
    },
}

pub(crate) fn serialize_time<S: serde::Serializer>(
    t: &SystemTime,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_micros(*t))
}

pub(crate) fn deserialize_time<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<SystemTime, D::Error> {
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom)
}
