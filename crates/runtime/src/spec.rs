//! What a service declares about itself: the recipe's metadata (the seed's `ServiceInfo`).
//!
//! A [`Spec`] starts from the service's own defaults; the operator's configuration then overrides the
//! health, recovery, resource and replica settings before the service is registered.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ServiceName;

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
    pub settings: BTreeMap<String, Setting>,
    /// The service's own list settings (for example the oracle's host allowlist).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lists: BTreeMap<String, ListSetting>,
}

/// One of a service's own settings that is a list of strings: its value, how long it may be, and
/// what it means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListSetting {
    /// The value in force.
    pub value: Vec<String>,
    /// The most items it may have.
    pub max_items: usize,
    /// What it means.
    pub help: String,
    /// Read at start only: a configuration that changes it is refused (it takes a restart).
    #[serde(skip)]
    pub start_only: bool,
    /// The grammar each item must follow, checked when a configuration is parsed (so `cloister
    /// config validate` reports a bad item with its path, not only a running service).
    #[serde(skip)]
    pub grammar: Grammar,
}

/// The grammar of a list setting's items: a check that says what is wrong with an item.
#[derive(Clone, Copy, Default)]
pub struct Grammar(Option<ItemCheck>);

/// A check of one list item: what is wrong with it, if anything.
pub type ItemCheck = fn(&str) -> Result<(), crate::Veto>;

impl Grammar {
    /// Items must pass `check`.
    pub fn new(check: ItemCheck) -> Grammar {
        Grammar(Some(check))
    }

    /// What is wrong with `item`, if anything.
    pub fn check(&self, item: &str) -> Result<(), crate::Veto> {
        self.0.map_or(Ok(()), |check| check(item))
    }
}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Grammar(checked)"
        } else {
            "Grammar(any)"
        })
    }
}

/// Grammars are not compared: a spec's value is what two specs differ in.
impl PartialEq for Grammar {
    fn eq(&self, _: &Grammar) -> bool {
        true
    }
}

impl Eq for Grammar {}

/// One of a service's own settings: an integer, its bounds, and what it means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    /// The value in force.
    pub value: i64,
    /// The smallest value allowed.
    pub min: i64,
    /// The largest value allowed.
    pub max: i64,
    /// What it means.
    pub help: String,
    /// Read at start only: a configuration that changes it is refused (it takes a restart).
    #[serde(skip)]
    pub start_only: bool,
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

    /// Declares one of the service's own settings with its default and bounds.
    pub fn setting(mut self, name: &str, default: i64, min: i64, max: i64, help: &str) -> Self {
        debug_assert!(
            (min..=max).contains(&default),
            "{name}: default out of bounds"
        );
        self.settings.insert(
            name.to_owned(),
            Setting {
                value: default,
                min,
                max,
                help: help.to_owned(),
                start_only: false,
            },
        );
        self
    }

    /// Declares a list-of-strings setting with its default (`[services.NAME] name = ["a", "b"]`).
    pub fn list(mut self, name: &str, default: &[&str], max_items: usize, help: &str) -> Self {
        debug_assert!(default.len() <= max_items, "{name}: default too long");
        self.lists.insert(
            name.to_owned(),
            ListSetting {
                value: default.iter().map(|s| (*s).to_owned()).collect(),
                max_items,
                help: help.to_owned(),
                start_only: false,
                grammar: Grammar::default(),
            },
        );
        self
    }

    /// Marks the declared setting or list `name` as read at start only: the supervisor refuses
    /// every new spec that changes it, for every service alike, saying it takes a restart.
    pub fn start_only(mut self, name: &str) -> Self {
        if let Some(setting) = self.settings.get_mut(name) {
            setting.start_only = true;
        } else if let Some(list) = self.lists.get_mut(name) {
            list.start_only = true;
        } else {
            debug_assert!(false, "{name}: start_only for an undeclared setting");
        }
        self
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

    /// Gives the declared list setting `name` a grammar its items must follow, checked when a
    /// configuration is parsed, each bad item reported with its path.
    pub fn list_grammar(mut self, name: &str, grammar: Grammar) -> Self {
        match self.lists.get_mut(name) {
            Some(list) => list.grammar = grammar,
            None => debug_assert!(false, "{name}: a grammar for an undeclared list"),
        }
        self
    }

    /// The current value of a declared list setting.
    ///
    /// # Panics
    /// If the service never declared `name`: that is a bug in the service, not in a configuration.
    pub fn list_value(&self, name: &str) -> &[String] {
        match self.lists.get(name) {
            Some(s) => &s.value,
            None => panic!("{}: list setting {name:?} was never declared", self.name),
        }
    }

    /// The current value of a declared setting.
    ///
    /// # Panics
    /// If the service never declared `name`: that is a bug in the service, not in a configuration.
    pub fn setting_value(&self, name: &str) -> i64 {
        match self.settings.get(name) {
            Some(s) => s.value,
            None => panic!("{}: setting {name:?} was never declared", self.name),
        }
    }

    /// A failed critical service makes the whole runtime not ready; any other only degrades it.
    pub fn is_critical(&self) -> bool {
        self.kind == Kind::Core
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

/// Consistency rules for a spec, as (key path under the service, message).
pub fn check_spec(spec: &Spec) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let h = &spec.health;
    if h.timeout >= h.interval {
        out.push((
            "health.timeout",
            format!(
                "must be shorter than interval ({})",
                humantime::format_duration(h.interval)
            ),
        ));
    }
    let r = &spec.replicas;
    if r.min > r.max {
        out.push((
            "replicas.min",
            format!("must not exceed replicas.max ({})", r.max),
        ));
    }
    if spec.recovery.strategy == Strategy::Failover && r.min < 2 {
        out.push((
            "recovery.strategy",
            "failover needs replicas.min of 2 or more to have a replica to fail over to".into(),
        ));
    }
    let b = &spec.recovery.backoff;
    if b.initial > b.max {
        out.push((
            "recovery.backoff_initial",
            format!(
                "must not exceed backoff_max ({})",
                humantime::format_duration(b.max)
            ),
        ));
    }
    // The monitor asks the autoscaler for the replica; without autoscaling, or with no room above
    // the minimum, the action could never do anything, and saying so beats a silent no-op.
    if spec.anomaly.action == crate::anomaly::AnomalyAction::ScaleOut
        && (!spec.autoscale.enabled || r.max <= r.min)
    {
        out.push((
            "anomaly.action",
            format!(
                "scale_out needs autoscale.enabled = true and replicas.max above replicas.min \
                 (now enabled = {}, min {}, max {})",
                spec.autoscale.enabled, r.min, r.max
            ),
        ));
    }
    let m = &spec.resources;
    if m.min_memory_mib > m.max_memory_mib {
        out.push((
            "resources.min_memory_mib",
            format!("must not exceed max_memory_mib ({})", m.max_memory_mib),
        ));
    }
    out
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

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
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
}

impl Default for Recovery {
    fn default() -> Self {
        Recovery {
            strategy: Strategy::Restart,
            scope: Scope::Service,
            backoff: Backoff::default(),
            max_restarts: 5,
            window: Duration::from_secs(60),
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
            max: Duration::from_secs(30),
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
    #[test]
    fn start_only_changes_name_the_start_only_settings_that_differ() {
        let name = crate::ServiceName::new("svc").expect("name");
        let old = super::Spec::new(name, super::Kind::Core)
            .setting("ceiling", 10, 1, 100, "start only")
            .setting("default", 5, 1, 100, "live")
            .list("hosts", &["a"], 4, "start only")
            .start_only("ceiling")
            .start_only("hosts");
        let mut new = old.clone();
        assert!(old.start_only_changes(&new).is_empty());
        new.settings.get_mut("default").expect("declared").value = 6;
        assert!(
            old.start_only_changes(&new).is_empty(),
            "a live setting may change"
        );
        new.settings.get_mut("ceiling").expect("declared").value = 20;
        new.lists.get_mut("hosts").expect("declared").value = vec!["b".into()];
        assert_eq!(old.start_only_changes(&new), vec!["ceiling", "hosts"]);
    }
}
