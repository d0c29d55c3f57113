//! The runtime's own per-service overrides (`[services.NAME]`): what they are, how they are parsed,
//! and how they are applied to a service's spec, next to each other.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::AnomalyAction;
use super::parse::PRIORITIES;
use super::problems::{Fields, Problems};
use crate::spec::{OnExhausted, Priority, Scope, Spec, Strategy};

/// Overrides for one service; `None` keeps the service's own default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ServiceConfig {
    /// `enabled`.
    pub enabled: Option<bool>,
    /// `priority`.
    pub priority: Option<Priority>,
    /// `replicas.min`.
    pub replicas_min: Option<u32>,
    /// `replicas.max`.
    pub replicas_max: Option<u32>,
    /// `queue_capacity`.
    pub queue_capacity: Option<usize>,
    /// `call_timeout`.
    #[serde(skip)]
    pub call_timeout: Option<Duration>,
    /// `shutdown_grace`.
    #[serde(skip)]
    pub shutdown_grace: Option<Duration>,
    /// `health.interval`.
    #[serde(skip)]
    pub health_interval: Option<Duration>,
    /// `health.timeout`.
    #[serde(skip)]
    pub health_timeout: Option<Duration>,
    /// `health.failure_threshold`.
    pub health_failure_threshold: Option<u32>,
    /// `health.start_timeout`.
    #[serde(skip)]
    pub health_start_timeout: Option<Duration>,
    /// `recovery.strategy`.
    pub strategy: Option<Strategy>,
    /// `recovery.scope`.
    pub scope: Option<Scope>,
    /// `recovery.backoff_initial`.
    #[serde(skip)]
    pub backoff_initial: Option<Duration>,
    /// `recovery.backoff_max`.
    #[serde(skip)]
    pub backoff_max: Option<Duration>,
    /// `recovery.backoff_multiplier`.
    pub backoff_multiplier: Option<f64>,
    /// `recovery.jitter`.
    pub backoff_jitter: Option<f64>,
    /// `recovery.reset_after`.
    #[serde(skip)]
    pub backoff_reset_after: Option<Duration>,
    /// `recovery.max_restarts`.
    pub max_restarts: Option<u32>,
    /// `recovery.on_exhausted`.
    pub on_exhausted: Option<OnExhausted>,
    /// `recovery.window`.
    #[serde(skip)]
    pub restart_window: Option<Duration>,
    /// `resources.min_memory_mib`.
    pub min_memory_mib: Option<u32>,
    /// `resources.max_memory_mib`.
    pub max_memory_mib: Option<u32>,
    /// `resources.cpu_cores`.
    pub cpu_cores: Option<u16>,
    /// `breaker.enabled`.
    pub breaker_enabled: Option<bool>,
    /// `breaker.consecutive_failures`.
    pub breaker_consecutive_failures: Option<u32>,
    /// `breaker.failure_rate`.
    pub breaker_failure_rate: Option<f64>,
    /// `breaker.min_calls`.
    pub breaker_min_calls: Option<u32>,
    /// `breaker.window`.
    #[serde(skip)]
    pub breaker_window: Option<Duration>,
    /// `breaker.open_for`.
    #[serde(skip)]
    pub breaker_open_for: Option<Duration>,
    /// `anomaly.action`.
    pub anomaly_action: Option<AnomalyAction>,
    /// `anomaly.threshold`.
    pub anomaly_threshold: Option<f64>,
    /// `anomaly.alpha`.
    pub anomaly_alpha: Option<f64>,
    /// `anomaly.warmup`.
    pub anomaly_warmup: Option<u32>,
    /// `anomaly.trigger`.
    pub anomaly_trigger: Option<u32>,
    /// `anomaly.clear`.
    pub anomaly_clear: Option<u32>,
    /// `anomaly.crash_loop_count`.
    pub crash_loop_count: Option<u32>,
    /// `anomaly.crash_loop_window`.
    #[serde(skip)]
    pub crash_loop_window: Option<Duration>,
    /// `autoscale.enabled`.
    pub autoscale_enabled: Option<bool>,
    /// `autoscale.queue_per_replica`.
    pub autoscale_queue_per_replica: Option<u32>,
    /// `autoscale.latency_objective`.
    #[serde(skip)]
    pub autoscale_latency_objective: Option<Duration>,
    /// `autoscale.scale_in_after`.
    #[serde(skip)]
    pub autoscale_scale_in_after: Option<Duration>,
    /// `autoscale.cooldown`.
    #[serde(skip)]
    pub autoscale_cooldown: Option<Duration>,
    /// The service's own settings (declared in its spec).
    pub settings: BTreeMap<String, i64>,
    /// The service's own list settings (declared in its spec).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lists: BTreeMap<String, Vec<String>>,
}

pub(super) fn parse_service(
    t: &toml::Table,
    path: &str,
    declared: Option<&Spec>,
    p: &mut Problems,
) -> ServiceConfig {
    let mut o = ServiceConfig::default();
    let mut f = Fields::new(t, path);
    o.enabled = f.boolean("enabled", p);
    o.priority = f.choice("priority", PRIORITIES, p);
    o.queue_capacity = f
        .integer("queue_capacity", 1, 1 << 20, p)
        .map(|n| n as usize);
    o.call_timeout = f.duration("call_timeout", p);
    o.shutdown_grace = f.duration("shutdown_grace", p);
    if let Some((t, path)) = f.table("replicas", p) {
        let mut r = Fields::new(t, &path);
        o.replicas_min = r.integer("min", 1, 256, p).map(|n| n as u32);
        o.replicas_max = r.integer("max", 1, 256, p).map(|n| n as u32);
        r.finish(p, &["min", "max"]);
    }
    if let Some((t, path)) = f.table("health", p) {
        let mut h = Fields::new(t, &path);
        o.health_interval = h.duration("interval", p);
        o.health_timeout = h.duration("timeout", p);
        o.health_failure_threshold = h.integer("failure_threshold", 1, 100, p).map(|n| n as u32);
        o.health_start_timeout = h.duration("start_timeout", p);
        h.finish(
            p,
            &["interval", "timeout", "failure_threshold", "start_timeout"],
        );
    }
    if let Some((t, path)) = f.table("recovery", p) {
        let mut r = Fields::new(t, &path);
        o.strategy = r.choice(
            "strategy",
            &[
                ("restart", Strategy::Restart),
                ("failover", Strategy::Failover),
                ("degrade", Strategy::Degrade),
                ("manual", Strategy::Manual),
            ],
            p,
        );
        o.scope = r.choice(
            "scope",
            &[
                ("service", Scope::Service),
                ("dependents", Scope::Dependents),
            ],
            p,
        );
        o.backoff_initial = r.duration("backoff_initial", p);
        o.backoff_max = r.duration("backoff_max", p);
        o.backoff_multiplier = r.float("backoff_multiplier", 1.0, 100.0, p);
        o.backoff_jitter = r.float("jitter", 0.0, 0.99, p);
        o.backoff_reset_after = r.duration("reset_after", p);
        o.max_restarts = r.integer("max_restarts", 1, 10_000, p).map(|n| n as u32);
        o.restart_window = r.duration("window", p);
        o.on_exhausted = r.choice(
            "on_exhausted",
            &[
                ("escalate", OnExhausted::Escalate),
                ("retry", OnExhausted::Retry),
                ("stay_failed", OnExhausted::StayFailed),
            ],
            p,
        );
        r.finish(
            p,
            &[
                "strategy",
                "scope",
                "backoff_initial",
                "backoff_max",
                "backoff_multiplier",
                "jitter",
                "reset_after",
                "max_restarts",
                "window",
                "on_exhausted",
            ],
        );
    }
    if let Some((t, path)) = f.table("breaker", p) {
        let mut b = Fields::new(t, &path);
        o.breaker_enabled = b.boolean("enabled", p);
        o.breaker_consecutive_failures = b
            .integer("consecutive_failures", 1, 10_000, p)
            .map(|n| n as u32);
        o.breaker_failure_rate = b.float("failure_rate", 0.01, 1.0, p);
        o.breaker_min_calls = b.integer("min_calls", 1, 10_000, p).map(|n| n as u32);
        o.breaker_window = b.duration("window", p);
        o.breaker_open_for = b.duration("open_for", p);
        b.finish(
            p,
            &[
                "enabled",
                "consecutive_failures",
                "failure_rate",
                "min_calls",
                "window",
                "open_for",
            ],
        );
    }
    if let Some((t, path)) = f.table("anomaly", p) {
        let mut a = Fields::new(t, &path);
        o.anomaly_action = a.choice("action", &AnomalyAction::ALL, p);
        o.anomaly_threshold = a.float("threshold", 1.0, 100.0, p);
        o.anomaly_alpha = a.float("alpha", 0.001, 1.0, p);
        o.anomaly_warmup = a.integer("warmup", 1, 10_000, p).map(|n| n as u32);
        o.anomaly_trigger = a.integer("trigger", 1, 1000, p).map(|n| n as u32);
        o.anomaly_clear = a.integer("clear", 1, 1000, p).map(|n| n as u32);
        o.crash_loop_count = a.integer("crash_loop_count", 2, 1000, p).map(|n| n as u32);
        o.crash_loop_window = a.duration("crash_loop_window", p);
        a.finish(
            p,
            &[
                "action",
                "threshold",
                "alpha",
                "warmup",
                "trigger",
                "clear",
                "crash_loop_count",
                "crash_loop_window",
            ],
        );
    }
    if let Some((t, path)) = f.table("autoscale", p) {
        let mut a = Fields::new(t, &path);
        o.autoscale_enabled = a.boolean("enabled", p);
        o.autoscale_queue_per_replica = a
            .integer("queue_per_replica", 1, 1 << 20, p)
            .map(|n| n as u32);
        o.autoscale_latency_objective = a.duration("latency_objective", p);
        o.autoscale_scale_in_after = a.duration("scale_in_after", p);
        o.autoscale_cooldown = a.duration("cooldown", p);
        a.finish(
            p,
            &[
                "enabled",
                "queue_per_replica",
                "latency_objective",
                "scale_in_after",
                "cooldown",
            ],
        );
    }
    if let Some((t, path)) = f.table("resources", p) {
        let mut r = Fields::new(t, &path);
        o.min_memory_mib = r.integer("min_memory_mib", 1, 1 << 20, p).map(|n| n as u32);
        o.max_memory_mib = r.integer("max_memory_mib", 1, 1 << 20, p).map(|n| n as u32);
        o.cpu_cores = r.integer("cpu_cores", 1, 1024, p).map(|n| n as u16);
        if let Some((_, npath)) = r.get("network_access") {
            p.push(
                &npath,
                "is fixed by the service itself and cannot be configured",
            );
        }
        r.finish(p, &["min_memory_mib", "max_memory_mib", "cpu_cores"]);
    }
    let mut known = vec![
        "enabled",
        "priority",
        "queue_capacity",
        "call_timeout",
        "shutdown_grace",
        "replicas",
        "health",
        "recovery",
        "breaker",
        "anomaly",
        "autoscale",
        "resources",
    ];
    for (name, s) in declared.into_iter().flat_map(|spec| &spec.settings) {
        known.push(name);
        if let Some(v) = f.integer(name, s.min, s.max, p) {
            o.settings.insert(name.clone(), v);
        }
    }
    for (name, s) in declared.into_iter().flat_map(|spec| &spec.lists) {
        known.push(name);
        // Each item's grammar is checked with the spec it ends up in (`check_spec`), with its path.
        if let Some(v) = f.strings(name, s.max_items, p) {
            o.lists.insert(name.clone(), v);
        }
    }
    f.finish(p, &known);
    o
}

impl ServiceConfig {
    /// Writes the overrides into `spec`.
    pub fn apply(&self, spec: &mut Spec) {
        fn set<T: Copy>(slot: &mut T, v: Option<T>) {
            if let Some(v) = v {
                *slot = v;
            }
        }
        set(&mut spec.priority, self.priority);
        set(&mut spec.replicas.min, self.replicas_min);
        set(&mut spec.replicas.max, self.replicas_max);
        if self.replicas_min.is_some_and(|m| m > spec.replicas.max) && self.replicas_max.is_none() {
            spec.replicas.max = spec.replicas.min;
        }
        set(&mut spec.queue_capacity, self.queue_capacity);
        set(&mut spec.call_timeout, self.call_timeout);
        set(&mut spec.shutdown_grace, self.shutdown_grace);
        set(&mut spec.health.interval, self.health_interval);
        set(&mut spec.health.timeout, self.health_timeout);
        set(
            &mut spec.health.failure_threshold,
            self.health_failure_threshold,
        );
        set(&mut spec.health.start_timeout, self.health_start_timeout);
        set(&mut spec.recovery.strategy, self.strategy);
        set(&mut spec.recovery.scope, self.scope);
        set(&mut spec.recovery.backoff.initial, self.backoff_initial);
        set(&mut spec.recovery.backoff.max, self.backoff_max);
        set(
            &mut spec.recovery.backoff.multiplier,
            self.backoff_multiplier,
        );
        set(&mut spec.recovery.backoff.jitter, self.backoff_jitter);
        set(
            &mut spec.recovery.backoff.reset_after,
            self.backoff_reset_after,
        );
        set(&mut spec.recovery.max_restarts, self.max_restarts);
        set(&mut spec.recovery.window, self.restart_window);
        if self.on_exhausted.is_some() {
            spec.recovery.on_exhausted = self.on_exhausted;
        }
        set(&mut spec.resources.min_memory_mib, self.min_memory_mib);
        set(&mut spec.resources.max_memory_mib, self.max_memory_mib);
        set(&mut spec.resources.cpu_cores, self.cpu_cores);
        set(&mut spec.breaker.enabled, self.breaker_enabled);
        set(
            &mut spec.breaker.consecutive_failures,
            self.breaker_consecutive_failures,
        );
        set(&mut spec.breaker.failure_rate, self.breaker_failure_rate);
        set(&mut spec.breaker.min_calls, self.breaker_min_calls);
        set(&mut spec.breaker.window, self.breaker_window);
        set(&mut spec.breaker.open_for, self.breaker_open_for);
        set(&mut spec.anomaly.action, self.anomaly_action);
        set(&mut spec.anomaly.detector.threshold, self.anomaly_threshold);
        set(&mut spec.anomaly.detector.alpha, self.anomaly_alpha);
        set(&mut spec.anomaly.detector.warmup, self.anomaly_warmup);
        set(&mut spec.anomaly.detector.trigger, self.anomaly_trigger);
        set(&mut spec.anomaly.detector.clear, self.anomaly_clear);
        set(&mut spec.anomaly.crash_loop_count, self.crash_loop_count);
        set(&mut spec.anomaly.crash_loop_window, self.crash_loop_window);
        set(&mut spec.autoscale.enabled, self.autoscale_enabled);
        set(
            &mut spec.autoscale.queue_per_replica,
            self.autoscale_queue_per_replica,
        );
        set(
            &mut spec.autoscale.latency_objective,
            self.autoscale_latency_objective,
        );
        set(
            &mut spec.autoscale.scale_in_after,
            self.autoscale_scale_in_after,
        );
        set(&mut spec.autoscale.cooldown, self.autoscale_cooldown);
        for (name, value) in &self.settings {
            if let Some(s) = spec.settings.get_mut(name) {
                s.value = *value;
            }
        }
        for (name, value) in &self.lists {
            if let Some(s) = spec.lists.get_mut(name) {
                s.value.clone_from(value);
            }
        }
    }
}
