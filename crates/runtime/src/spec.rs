//! What a service declares about itself: the recipe's metadata (the seed's `ServiceInfo`).
//!
//! A [`Spec`] starts from the service's own defaults; the operator's configuration then overrides the
//! health, recovery, resource and replica settings before the service is registered.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ServiceName;
use crate::setting::{List, Setting, Value};

/// Everything the runtime knows about a service before it runs.
#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    /// The service's name, unique in the runtime.
    pub name: ServiceName,
    /// What it does, in one line.
    pub description: String,
    /// Core, optional or extension.
    pub kind: Kind,
    /// The services it calls; they start before it and stop after it.
    pub dependencies: Vec<ServiceName>,
    /// Start order within its start layer.
    pub priority: Priority,
    /// What one replica needs.
    pub resources: Resources,
    /// How its liveness is probed.
    pub health: HealthPolicy,
    /// What happens when an incarnation fails.
    pub recovery: Recovery,
    /// How many replicas may run.
    pub replicas: Replicas,
    /// What it offers, for discovery by capability.
    pub capabilities: Vec<Capability>,
    /// Circuit breaking on every edge into this service.
    pub breaker: crate::breaker::BreakerPolicy,
    /// Anomaly detection on its signals, and what to do about an anomaly.
    pub anomaly: crate::anomaly::AnomalyPolicy,
    /// When to add or remove replicas.
    pub autoscale: crate::autoscale::AutoscalePolicy,
    /// Requests that may wait in the mailbox; a call beyond it fails at once with a retryable error.
    pub queue_capacity: usize,
    /// Default deadline of a call through the service's handle.
    #[serde(with = "crate::serde_duration")]
    pub call_timeout: Duration,
    /// How long a stopping incarnation may take before it is aborted.
    #[serde(with = "crate::serde_duration")]
    pub shutdown_grace: Duration,
    /// The service's own settings, declared with their bounds; `[services.NAME]` may set them.
    pub settings: BTreeMap<String, crate::setting::Entry>,
    /// The service's own list settings (for example the oracle's host allowlist).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lists: BTreeMap<String, crate::setting::ListEntry>,
}

impl Spec {
    /// A spec with the runtime's defaults: no dependencies, medium priority, one replica, restart recovery.
    pub fn new(name: ServiceName, kind: Kind) -> Self {
        Spec {
            name,
            description: String::new(),
            kind,
            dependencies: Vec::new(),
            priority: Priority::Medium,
            resources: Resources::default(),
            health: HealthPolicy::default(),
            recovery: Recovery::default(),
            replicas: Replicas::default(),
            capabilities: Vec::new(),
            breaker: crate::breaker::BreakerPolicy::default(),
            anomaly: crate::anomaly::AnomalyPolicy::default(),
            autoscale: crate::autoscale::AutoscalePolicy::default(),
            queue_capacity: 1024,
            call_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            settings: BTreeMap::new(),
            lists: BTreeMap::new(),
        }
    }

    /// Sets the one-line description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = text.into();
        self
    }

    /// Adds a dependency.
    pub fn depends_on(mut self, dependency: ServiceName) -> Self {
        self.dependencies.push(dependency);
        self
    }

    /// Sets the start priority.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the resources one replica needs.
    pub fn resources(mut self, resources: Resources) -> Self {
        self.resources = resources;
        self
    }

    /// Sets the health policy.
    pub fn health(mut self, health: HealthPolicy) -> Self {
        self.health = health;
        self
    }

    /// Sets the recovery policy.
    pub fn recovery(mut self, recovery: Recovery) -> Self {
        self.recovery = recovery;
        self
    }

    /// Sets the replica range.
    pub fn replicas(mut self, replicas: Replicas) -> Self {
        self.replicas = replicas;
        self
    }

    /// Adds a capability.
    pub fn capability(mut self, capability: &str) -> Self {
        self.capabilities.push(Capability(capability.to_owned()));
        self
    }

    /// Sets how many requests may wait in the mailbox.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// Sets the default deadline of a call.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Sets how long a stopping incarnation may take.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Declares one of the service's own settings ([`Setting`]): its default, bounds and help, and
    /// whether it applies live or at start only.
    pub fn setting<T: Value>(mut self, setting: &Setting<T>) -> Self {
        self.settings
            .insert(setting.name().to_owned(), setting.entry());
        self
    }

    /// Declares one of the service's own list settings ([`List`]).
    pub fn list(mut self, list: &List) -> Self {
        self.lists.insert(list.name().to_owned(), list.entry());
        self
    }

    /// The value in force of a setting; its default if the service never declared it.
    pub fn get<T: Value>(&self, setting: &Setting<T>) -> T {
        self.settings
            .get(setting.name())
            .map_or(setting.default_value(), |entry| T::from_raw(entry.value))
    }

    /// Gives a declared setting a new value, as a configuration would (tests and benches use it; a
    /// configuration's values come through its parser, which checks them against the bounds).
    pub fn set<T: Value>(&mut self, setting: &Setting<T>, value: T) {
        match self.settings.get_mut(setting.name()) {
            Some(entry) => entry.value = value.to_raw(),
            None => debug_assert!(false, "{}: set an undeclared setting", setting.name()),
        }
    }

    /// Gives a declared list setting new items, as [`Spec::set`] does for a setting.
    pub fn set_items(&mut self, list: &List, items: &[&str]) {
        match self.lists.get_mut(list.name()) {
            Some(entry) => entry.value = items.iter().map(|s| (*s).to_owned()).collect(),
            None => debug_assert!(false, "{}: set an undeclared list", list.name()),
        }
    }

    /// The items in force of a list setting; its default if the service never declared it.
    pub fn items(&self, list: &List) -> Vec<String> {
        self.lists
            .get(list.name())
            .map_or_else(|| list.default_value(), |entry| entry.value.clone())
    }

    /// The start-only settings and lists whose values differ between `self` and `new`.
    pub fn start_only_changes(&self, new: &Spec) -> Vec<&str> {
        let settings = self.settings.iter().filter(|(name, old)| {
            old.start_only
                && new
                    .settings
                    .get(*name)
                    .is_some_and(|n| n.value != old.value)
        });
        let lists = self.lists.iter().filter(|(name, old)| {
            old.start_only && new.lists.get(*name).is_some_and(|n| n.value != old.value)
        });
        settings
            .map(|(name, _)| name.as_str())
            .chain(lists.map(|(name, _)| name.as_str()))
            .collect()
    }

    /// A failed critical service makes the whole runtime not ready; any other only degrades it.
    pub fn is_critical(&self) -> bool {
        self.kind == Kind::Core
    }

    /// What happens once recovery has used up its restarts: the configured policy, else
    /// `escalate` for a core service (the runtime cannot serve without it) and `retry` for the
    /// others.
    pub fn on_exhausted(&self) -> OnExhausted {
        self.recovery.on_exhausted.unwrap_or(match self.kind {
            Kind::Core => OnExhausted::Escalate,
            Kind::Optional | Kind::Extension => OnExhausted::Retry,
        })
    }
}

/// The spec's consistency problems as an error, for specs that did not come through a config file.
pub(crate) fn spec_problems(spec: &Spec) -> Result<(), crate::Error> {
    let problems = check_spec(spec);
    if problems.is_empty() {
        return Ok(());
    }
    let text = problems
        .iter()
        .map(|(k, m)| format!("{k}: {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    Err(crate::Error::InvalidSpec {
        service: spec.name.clone(),
        problems: text,
    })
}

/// Consistency rules for a spec, as (key path under the service, message): how its settings fit
/// together, and each list item against its list's grammar.
pub fn check_spec(spec: &Spec) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, list) in &spec.lists {
        for (i, item) in list.value.iter().enumerate() {
            if let Err(veto) = list.grammar.check(item) {
                out.push((format!("{name}[{i}]"), veto.to_string()));
            }
        }
    }
    let mut out = Problems(out);
    let h = &spec.health;
    if h.timeout >= h.interval {
        out.add(
            "health.timeout",
            format!(
                "must be shorter than interval ({})",
                humantime::format_duration(h.interval)
            ),
        );
    }
    let r = &spec.replicas;
    if r.min > r.max {
        out.add(
            "replicas.min",
            format!("must not exceed replicas.max ({})", r.max),
        );
    }
    if spec.recovery.strategy == Strategy::Failover && r.min < 2 {
        out.add(
            "recovery.strategy",
            "failover needs replicas.min of 2 or more to have a replica to fail over to",
        );
    }
    let b = &spec.recovery.backoff;
    if b.initial > b.max {
        out.add(
            "recovery.backoff_initial",
            format!(
                "must not exceed backoff_max ({})",
                humantime::format_duration(b.max)
            ),
        );
    }
    // The monitor asks the autoscaler for the replica; without autoscaling, or with no room above
    // the minimum, the action could never do anything, and saying so beats a silent no-op.
    if spec.anomaly.action == crate::anomaly::AnomalyAction::ScaleOut
        && (!spec.autoscale.enabled || r.max <= r.min)
    {
        out.add(
            "anomaly.action",
            format!(
                "scale_out needs autoscale.enabled = true and replicas.max above replicas.min \
                 (now enabled = {}, min {}, max {})",
                spec.autoscale.enabled, r.min, r.max
            ),
        );
    }
    let m = &spec.resources;
    if m.min_memory_mib > m.max_memory_mib {
        out.add(
            "resources.min_memory_mib",
            format!("must not exceed max_memory_mib ({})", m.max_memory_mib),
        );
    }
    out.0
}

/// The problems [`check_spec`] collects.
struct Problems(Vec<(String, String)>);

impl Problems {
    fn add(&mut self, key: &str, message: impl Into<String>) {
        self.0.push((key.to_owned(), message.into()));
    }
}

/// The names of the settings that differ between `old` and `new`, for the journal.
pub fn diff(old: &Spec, new: &Spec) -> Vec<String> {
    let (Ok(a), Ok(b)) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        return vec!["spec".into()];
    };
    let mut out = Vec::new();
    diff_values("", &a, &b, &mut out);
    out
}

fn diff_values(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    match (a.as_object(), b.as_object()) {
        (Some(x), Some(y)) => {
            for (k, va) in x {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match y.get(k) {
                    Some(vb) => diff_values(&p, va, vb, out),
                    None => out.push(p),
                }
            }
        }
        _ if a != b => out.push(format!("{path}: {a} -> {b}")),
        _ => {}
    }
}

/// The seed's `ServiceType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ServiceKind)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Must run for the runtime to be ready.
    Core,
    /// Can be disabled; its failure degrades the runtime.
    Optional,
    /// Added by the user, possibly while the runtime runs.
    Extension,
}

/// The seed's `StartupPriority`: within one start layer, higher priority starts first.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Starts first.
    Critical,
    /// Starts after critical ones.
    High,
    /// The default.
    Medium,
    /// Starts last.
    Low,
}

/// The seed's `ResourceRequirements`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Resources {
    /// Memory one replica needs at least, in MiB.
    pub min_memory_mib: u32,
    /// Memory one replica may use at most, in MiB; counted against the enclave budget.
    pub max_memory_mib: u32,
    /// CPU cores one replica uses (threads counted against the enclave budget).
    pub cpu_cores: u16,
    /// Only services that declare it may be given a network client.
    pub network_access: bool,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            min_memory_mib: 8,
            max_memory_mib: 64,
            cpu_cores: 1,
            network_access: false,
        }
    }
}

/// The seed's `HealthCheckConfig`: liveness pings through the incarnation's own mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthPolicy {
    /// Time between two pings.
    #[serde(with = "crate::serde_duration")]
    #[schema(value_type = String, example = "5s")]
    pub interval: Duration,
    /// Must be shorter than `interval`.
    #[serde(with = "crate::serde_duration")]
    #[schema(value_type = String, example = "5s")]
    pub timeout: Duration,
    /// Consecutive unanswered pings after which the incarnation is declared hung.
    pub failure_threshold: u32,
    /// How long an incarnation may take to become ready.
    #[serde(with = "crate::serde_duration")]
    #[schema(value_type = String, example = "5s")]
    pub start_timeout: Duration,
}

/// The defaults find a hang within 3.6 s (`health::worst_case_detection`), well inside a request's
/// deadline, and only after a loop has not answered for over 2.6 s, which no in-loop work (a group
/// commit's sync, a keystore write) should come near. The timeout is not a round fraction of the
/// interval, so a loop busy with half-second requests back to back still answers in time. A ping is
/// one message through the control channel.
impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(600),
            failure_threshold: 3,
            start_timeout: Duration::from_secs(30),
        }
    }
}

/// The seed's `RecoveryStrategy`, with its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Recovery {
    /// What is restarted, and how.
    pub strategy: Strategy,
    /// Whether dependents are restarted too.
    pub scope: Scope,
    /// The delay before each restart.
    pub backoff: Backoff,
    /// At most `max_restarts` within `window`; one more and the service is failed.
    pub max_restarts: u32,
    /// The window the restart-intensity limit counts in.
    #[serde(with = "crate::serde_duration")]
    #[schema(value_type = String, example = "5s")]
    pub window: Duration,
    /// What happens past the limit; absent, the kind's default ([`Spec::on_exhausted`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_exhausted: Option<OnExhausted>,
}

/// What recovery does once a service has used up its restarts (`max_restarts` within `window`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnExhausted {
    /// The service is failed, `/livez` answers 503 with the reason, and after
    /// `[runtime] escalation_grace` the process exits non-zero, so that its own supervisor
    /// (systemd, Kubernetes) starts the enclave afresh. The default for core services.
    Escalate,
    /// Keep restarting, each time after the backoff's maximum (as Kubernetes' CrashLoopBackOff
    /// does). The default for optional services.
    Retry,
    /// The service stays failed until an operator starts it.
    StayFailed,
}

impl OnExhausted {
    /// The name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            OnExhausted::Escalate => "escalate",
            OnExhausted::Retry => "retry",
            OnExhausted::StayFailed => "stay_failed",
        }
    }
}

impl Default for Recovery {
    fn default() -> Self {
        Recovery {
            strategy: Strategy::Restart,
            scope: Scope::Service,
            backoff: Backoff::default(),
            max_restarts: 5,
            window: Duration::from_secs(60),
            on_exhausted: None,
        }
    }
}

/// How a failed service is recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Restart every replica of the service after a backoff.
    Restart,
    /// Restart only the failed replica; the healthy ones keep serving. Needs two or more replicas.
    Failover,
    /// Restart in degraded mode; dependents are told.
    Degrade,
    /// Leave the service failed until an operator starts it.
    Manual,
}

impl Strategy {
    /// The name used in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Restart => "restart",
            Strategy::Failover => "failover",
            Strategy::Degrade => "degrade",
            Strategy::Manual => "manual",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a recovery restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = RecoveryScope)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The failed service alone; dependents keep running and their calls wait in its mailbox.
    Service,
    /// The failed service and, after it is ready again, everything that depends on it.
    Dependents,
}

/// Exponential backoff with jitter, reset after a stable run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Backoff {
    /// The first delay.
    #[serde(with = "crate::serde_duration")]
    #[schema(value_type = String, example = "5s")]
    pub initial: Duration,
    /// The longest delay.
    #[serde(with = "crate::serde_duration")]
    #[schema(value_type = String, example = "5s")]
    pub max: Duration,
    /// Each delay is the one before times this, up to `max`.
    pub multiplier: f64,
    /// Fraction in `[0, 1)`: each delay is scaled by a random factor in `[1 - jitter, 1 + jitter]`.
    pub jitter: f64,
    /// An incarnation that ran this long without failing resets the backoff.
    #[serde(with = "crate::serde_duration")]
    #[schema(value_type = String, example = "5s")]
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            // The ceiling bounds how long a service stays down after a burst of faults ends (a
            // restart inside the process costs about 50 µs, so restarting every 5 s in a crash loop
            // costs nothing worth saving; a longer ceiling is only a longer outage).
            max: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.2,
            reset_after: Duration::from_secs(60),
        }
    }
}

/// How many replicas of a service run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = ReplicaPolicy)]
pub struct Replicas {
    /// Replicas at start, and the fewest the autoscaler keeps.
    pub min: u32,
    /// The most replicas the autoscaler may run.
    pub max: u32,
}

impl Default for Replicas {
    fn default() -> Self {
        Replicas { min: 1, max: 1 }
    }
}

/// Something a service offers, for discovery by capability (for example `crypto.sign`).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct Capability(pub String);

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use crate::setting::{List, Setting};

    const CEILING: Setting<u32> = Setting::new("ceiling", 10, 1, 100, "start only").at_start();
    const LIVE: Setting<u32> = Setting::new("default", 5, 1, 100, "live");
    const HOSTS: List = List::new("hosts", &["a"], 4, "start only").at_start();

    #[test]
    fn start_only_changes_name_the_start_only_settings_that_differ() {
        let name = crate::ServiceName::new("svc").expect("name");
        let old = super::Spec::new(name, super::Kind::Core)
            .setting(&CEILING)
            .setting(&LIVE)
            .list(&HOSTS);
        let mut new = old.clone();
        assert!(old.start_only_changes(&new).is_empty());
        new.settings.get_mut("default").expect("declared").value = 6;
        assert!(
            old.start_only_changes(&new).is_empty(),
            "a live setting may change"
        );
        assert_eq!(new.get(&LIVE), 6, "read through its constant");
        new.settings.get_mut("ceiling").expect("declared").value = 20;
        new.lists.get_mut("hosts").expect("declared").value = vec!["b".into()];
        assert_eq!(old.start_only_changes(&new), vec!["ceiling", "hosts"]);
    }

    #[test]
    fn an_undeclared_setting_reads_as_its_default() {
        const OTHER: Setting<u32> = Setting::new("other", 7, 1, 100, "never declared");
        let spec = super::Spec::new(
            crate::ServiceName::new("svc").expect("name"),
            super::Kind::Core,
        );
        assert_eq!(spec.get(&OTHER), 7);
        assert_eq!(spec.items(&HOSTS), ["a"]);
    }
}
