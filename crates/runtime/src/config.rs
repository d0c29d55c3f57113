//! Typed configuration: `cloister.toml` parsed once into [`Config`], with every problem reported with
//! its path (`services.storage.health.timeout: must be shorter than interval (10s)`).
//!
//! The file is walked by hand rather than through `serde` so that one pass reports *every* problem,
//! not just the first, and so that unknown keys are errors everywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use crate::anomaly::AnomalyAction;
use crate::graph::Graph;
pub use crate::spec::check_spec;
use crate::spec::{Kind, Priority, Scope, Strategy};
use crate::{ServiceName, Spec};

/// The whole configuration, valid by construction.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Config {
    pub runtime: RuntimeConfig,
    pub enclave: EnclaveConfig,
    /// Per-service overrides, by service name. Services not named here run on their own defaults.
    pub services: BTreeMap<ServiceName, ServiceConfig>,
    pub testing: TestingConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RuntimeConfig {
    #[schema(value_type = String, example = "127.0.0.1:8420")]
    pub listen: SocketAddr,
    #[schema(value_type = String)]
    pub data_dir: PathBuf,
    /// The longest a whole shutdown may take before the process exits anyway.
    #[serde(with = "crate::serde_duration")]
    #[schema(value_type = String, example = "5s")]
    pub shutdown_grace: Duration,
    /// How often the monitor samples every service (anomaly detection, autoscaling).
    #[serde(with = "crate::serde_duration")]
    #[schema(value_type = String, example = "5s")]
    pub monitor_interval: Duration,
    /// How long a newly applied configuration is watched before it counts as good.
    #[serde(with = "crate::serde_duration")]
    #[schema(value_type = String, example = "5s")]
    pub config_watch: Duration,
}

/// Read at start only: changing it takes a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EnclaveConfig {
    pub platform: Platform,
    pub memory_mib: u32,
    pub threads: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = PlatformKind)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Simulation,
    Gramine,
}

/// Overrides for one service; `None` keeps the service's own default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ServiceConfig {
    pub enabled: Option<bool>,
    pub priority: Option<Priority>,
    pub replicas_min: Option<u32>,
    pub replicas_max: Option<u32>,
    pub queue_capacity: Option<usize>,
    #[serde(skip)]
    pub call_timeout: Option<Duration>,
    #[serde(skip)]
    pub shutdown_grace: Option<Duration>,
    #[serde(skip)]
    pub health_interval: Option<Duration>,
    #[serde(skip)]
    pub health_timeout: Option<Duration>,
    pub health_failure_threshold: Option<u32>,
    #[serde(skip)]
    pub health_start_timeout: Option<Duration>,
    pub strategy: Option<Strategy>,
    pub scope: Option<Scope>,
    #[serde(skip)]
    pub backoff_initial: Option<Duration>,
    #[serde(skip)]
    pub backoff_max: Option<Duration>,
    pub backoff_multiplier: Option<f64>,
    pub backoff_jitter: Option<f64>,
    #[serde(skip)]
    pub backoff_reset_after: Option<Duration>,
    pub max_restarts: Option<u32>,
    #[serde(skip)]
    pub restart_window: Option<Duration>,
    pub min_memory_mib: Option<u32>,
    pub max_memory_mib: Option<u32>,
    pub cpu_cores: Option<u16>,
    pub breaker_enabled: Option<bool>,
    pub breaker_consecutive_failures: Option<u32>,
    pub breaker_failure_rate: Option<f64>,
    pub breaker_min_calls: Option<u32>,
    #[serde(skip)]
    pub breaker_window: Option<Duration>,
    #[serde(skip)]
    pub breaker_open_for: Option<Duration>,
    pub anomaly_action: Option<AnomalyAction>,
    pub anomaly_threshold: Option<f64>,
    pub anomaly_alpha: Option<f64>,
    pub anomaly_warmup: Option<u32>,
    pub anomaly_trigger: Option<u32>,
    pub anomaly_clear: Option<u32>,
    pub crash_loop_count: Option<u32>,
    #[serde(skip)]
    pub crash_loop_window: Option<Duration>,
    pub autoscale_enabled: Option<bool>,
    pub autoscale_queue_per_replica: Option<u32>,
    #[serde(skip)]
    pub autoscale_latency_objective: Option<Duration>,
    #[serde(skip)]
    pub autoscale_scale_in_after: Option<Duration>,
    #[serde(skip)]
    pub autoscale_cooldown: Option<Duration>,
    /// The service's own settings (declared in its spec).
    pub settings: BTreeMap<String, i64>,
    /// The service's own list settings (declared in its spec).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lists: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TestingConfig {
    /// Enables `POST /v1/services/{name}/faults`.
    pub fault_injection: bool,
    /// Synthetic services for demos, chaos drills and end-to-end tests.
    pub services: BTreeMap<ServiceName, SyntheticConfig>,
}

/// A synthetic service: it answers echo requests after `work`, and has whatever dependencies,
/// priority and kind the file gives it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SyntheticConfig {
    pub kind: Kind,
    pub depends_on: Vec<ServiceName>,
    pub priority: Priority,
    pub capabilities: Vec<String>,
    #[serde(with = "crate::serde_duration")]
    #[schema(value_type = String, example = "5s")]
    pub work: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            runtime: RuntimeConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8420)),
                data_dir: PathBuf::from("cloister-data"),
                shutdown_grace: Duration::from_secs(30),
                monitor_interval: Duration::from_secs(1),
                config_watch: Duration::from_secs(10),
            },
            enclave: EnclaveConfig {
                platform: Platform::Simulation,
                memory_mib: 2048,
                threads: 32,
            },
            services: BTreeMap::new(),
            testing: TestingConfig::default(),
        }
    }
}

/// One problem in a configuration, with the path of the offending key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("invalid configuration: {}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
pub struct Invalid {
    pub problems: Vec<Problem>,
}

/// The problems found so far, and how many of them are unknown keys or services: those leave every
/// value that was read intact, so the whole-file checks still run and report alongside them.
struct Problems(Vec<Problem>, usize);

impl Problems {
    fn push(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// A key (or service) nobody reads: reported, but no value was dropped because of it.
    fn push_unknown(&mut self, path: &str, message: impl Into<String>) {
        self.push(path, message);
        self.1 += 1;
    }

    /// Whether every value in the file was read, so whole-file checks see the file as written.
    fn values_read(&self) -> bool {
        self.0.len() == self.1
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A table being read: remembers which keys were used so the rest can be reported as unknown.
struct Fields<'a> {
    table: &'a toml::Table,
    path: String,
    used: BTreeSet<&'a str>,
}

impl<'a> Fields<'a> {
    fn new(table: &'a toml::Table, path: &str) -> Self {
        Fields {
            table,
            path: path.to_owned(),
            used: BTreeSet::new(),
        }
    }

    fn get(&mut self, key: &str) -> Option<(&'a toml::Value, String)> {
        let (k, v) = self.table.get_key_value(key)?;
        self.used.insert(k.as_str());
        Some((v, join(&self.path, key)))
    }

    fn finish(self, problems: &mut Problems, known: &[&str]) {
        for key in self.table.keys() {
            if !self.used.contains(key.as_str()) {
                problems.push_unknown(
                    &join(&self.path, key),
                    format!("unknown key (expected one of: {})", known.join(", ")),
                );
            }
        }
    }

    fn string(&mut self, key: &str, p: &mut Problems) -> Option<(String, String)> {
        let (v, path) = self.get(key)?;
        match v.as_str() {
            Some(s) => Some((s.to_owned(), path)),
            None => {
                p.push(&path, format!("expected a string, found {}", v.type_str()));
                None
            }
        }
    }

    fn boolean(&mut self, key: &str, p: &mut Problems) -> Option<bool> {
        let (v, path) = self.get(key)?;
        v.as_bool().or_else(|| {
            p.push(
                &path,
                format!("expected true or false, found {}", v.type_str()),
            );
            None
        })
    }

    fn integer(&mut self, key: &str, min: i64, max: i64, p: &mut Problems) -> Option<i64> {
        let (v, path) = self.get(key)?;
        match v.as_integer() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                p.push(&path, format!("{n} is out of range ({min} to {max})"));
                None
            }
            None => {
                p.push(
                    &path,
                    format!("expected an integer, found {}", v.type_str()),
                );
                None
            }
        }
    }

    fn float(&mut self, key: &str, min: f64, max: f64, p: &mut Problems) -> Option<f64> {
        let (v, path) = self.get(key)?;
        let n = v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
        match n {
            Some(n) if n >= min && n <= max => Some(n),
            Some(n) => {
                p.push(&path, format!("{n} is out of range ({min} to {max})"));
                None
            }
            None => {
                p.push(&path, format!("expected a number, found {}", v.type_str()));
                None
            }
        }
    }

    fn duration(&mut self, key: &str, p: &mut Problems) -> Option<Duration> {
        let (s, path) = self.string(key, p)?;
        match humantime::parse_duration(&s) {
            Ok(d) if d > Duration::ZERO || key.starts_with("backoff") => Some(d),
            Ok(_) => {
                p.push(&path, "must be longer than zero");
                None
            }
            Err(_) => {
                p.push(
                    &path,
                    format!("{s:?} is not a duration; write it like \"500ms\", \"10s\" or \"1m\""),
                );
                None
            }
        }
    }

    fn choice<T: Copy>(&mut self, key: &str, options: &[(&str, T)], p: &mut Problems) -> Option<T> {
        let (s, path) = self.string(key, p)?;
        match options.iter().find(|(name, _)| *name == s) {
            Some((_, v)) => Some(*v),
            None => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                p.push(&path, format!("{s:?} is not one of: {}", names.join(", ")));
                None
            }
        }
    }

    fn table(&mut self, key: &str, p: &mut Problems) -> Option<(&'a toml::Table, String)> {
        let (v, path) = self.get(key)?;
        match v.as_table() {
            Some(t) => Some((t, path)),
            None => {
                p.push(&path, format!("expected a table, found {}", v.type_str()));
                None
            }
        }
    }

    fn strings(&mut self, key: &str, max_items: usize, p: &mut Problems) -> Option<Vec<String>> {
        let (v, path) = self.get(key)?;
        let Some(items) = v.as_array() else {
            p.push(
                &path,
                format!("expected an array of strings, found {}", v.type_str()),
            );
            return None;
        };
        if items.len() > max_items {
            p.push(&path, format!("{} items; at most {max_items}", items.len()));
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) => out.push(s.to_owned()),
                None => {
                    p.push(
                        &format!("{path}[{i}]"),
                        format!("expected a string, found {}", item.type_str()),
                    );
                    return None;
                }
            }
        }
        Some(out)
    }

    fn names(&mut self, key: &str, p: &mut Problems) -> Option<Vec<ServiceName>> {
        let (v, path) = self.get(key)?;
        let Some(items) = v.as_array() else {
            p.push(
                &path,
                format!("expected an array of service names, found {}", v.type_str()),
            );
            return None;
        };
        let mut names = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_str().map(ServiceName::new) {
                Some(Ok(n)) => names.push(n),
                Some(Err(e)) => p.push(&format!("{path}[{i}]"), e.to_string()),
                None => p.push(
                    &format!("{path}[{i}]"),
                    format!("expected a string, found {}", item.type_str()),
                ),
            }
        }
        Some(names)
    }
}

const PRIORITIES: &[(&str, Priority)] = &[
    ("critical", Priority::Critical),
    ("high", Priority::High),
    ("medium", Priority::Medium),
    ("low", Priority::Low),
];

impl Config {
    /// Parses and validates `text` against the services this binary knows (`catalog`: their default
    /// specs). Synthetic services from `[testing.services]` join the catalog.
    pub fn parse(text: &str, catalog: &[Spec]) -> Result<Config, Invalid> {
        let mut p = Problems(Vec::new(), 0);
        let table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                let e: toml::de::Error = e;
                let at = e
                    .span()
                    .map(|s| line_col(text, s.start))
                    .map(|(l, c)| format!("line {l}, column {c}: "));
                p.push("", format!("{}{}", at.unwrap_or_default(), e.message()));
                return Err(Invalid { problems: p.0 });
            }
        };
        let mut config = Config::default();
        let mut root = Fields::new(&table, "");
        if let Some((t, path)) = root.table("runtime", &mut p) {
            parse_runtime(t, &path, &mut config.runtime, &mut p);
        }
        if let Some((t, path)) = root.table("enclave", &mut p) {
            parse_enclave(t, &path, &mut config.enclave, &mut p);
        }
        if let Some((t, path)) = root.table("testing", &mut p) {
            parse_testing(t, &path, &mut config.testing, &mut p);
        }
        let mut known: BTreeSet<ServiceName> = catalog.iter().map(|s| s.name.clone()).collect();
        known.extend(config.testing.services.keys().cloned());
        if let Some((t, path)) = root.table("services", &mut p) {
            for (name, value) in t {
                let spath = join(&path, name);
                let Ok(name) = ServiceName::new(name) else {
                    p.push(&spath, "not a valid service name");
                    continue;
                };
                if !known.contains(&name) {
                    let list: Vec<&str> = known.iter().map(|n| n.as_str()).collect();
                    p.push_unknown(
                        &spath,
                        format!("no such service (known: {})", list.join(", ")),
                    );
                    continue;
                }
                let Some(t) = value.as_table() else {
                    p.push(
                        &spath,
                        format!("expected a table, found {}", value.type_str()),
                    );
                    continue;
                };
                let declared = catalog.iter().find(|s| s.name == name);
                config
                    .services
                    .insert(name, parse_service(t, &spath, declared, &mut p));
            }
        }
        root.finish(&mut p, &["runtime", "enclave", "services", "testing"]);
        // Whole-file checks only make sense once every value parsed; unknown keys do not stand in
        // their way, so a file's problems are all reported in one pass.
        if p.values_read() {
            config.check(catalog, &mut p);
        }
        if p.0.is_empty() {
            Ok(config)
        } else {
            Err(Invalid { problems: p.0 })
        }
    }

    /// Every service this configuration runs: the catalog plus synthetic services, overrides applied,
    /// disabled ones left out. Also returns the names of the disabled ones.
    pub fn resolve(&self, catalog: &[Spec]) -> (Vec<Spec>, BTreeSet<ServiceName>) {
        let mut specs = Vec::new();
        let mut disabled = BTreeSet::new();
        let all = catalog
            .iter()
            .cloned()
            .chain(self.testing.services.iter().map(|(n, s)| s.spec(n.clone())));
        for mut spec in all {
            let overrides = self.services.get(&spec.name);
            if overrides.and_then(|o| o.enabled) == Some(false) {
                disabled.insert(spec.name.clone());
                continue;
            }
            if let Some(o) = overrides {
                o.apply(&mut spec);
            }
            specs.push(spec);
        }
        (specs, disabled)
    }

    fn check(&self, catalog: &[Spec], p: &mut Problems) {
        for (name, o) in &self.services {
            if o.enabled == Some(false)
                && let Some(spec) = catalog.iter().find(|s| &s.name == name)
                && spec.kind == Kind::Core
            {
                p.push(
                    &format!("services.{name}.enabled"),
                    "a core service cannot be disabled",
                );
            }
        }
        let (specs, disabled) = self.resolve(catalog);
        for spec in &specs {
            for (key, message) in check_spec(spec) {
                p.push(&format!("services.{}.{key}", spec.name), message);
            }
        }
        let budget = crate::budget::Demand {
            memory_mib: u64::from(self.enclave.memory_mib),
            threads: u64::from(self.enclave.threads),
        };
        for (path, message) in crate::budget::check(&specs, budget) {
            p.push(&path, message);
        }
        if let Err(problems) = Graph::build(&specs, &disabled) {
            for problem in problems {
                let path = match &problem {
                    crate::GraphError::DisabledDependency { service, .. }
                    | crate::GraphError::UnknownDependency { service, .. } => {
                        format!("services.{service}")
                    }
                    crate::GraphError::Duplicate(name) => format!("testing.services.{name}"),
                    crate::GraphError::Cycle(_) => "services".into(),
                };
                p.push(&path, problem.to_string());
            }
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn parse_runtime(t: &toml::Table, path: &str, out: &mut RuntimeConfig, p: &mut Problems) {
    let mut f = Fields::new(t, path);
    if let Some((s, path)) = f.string("listen", p) {
        match s.parse() {
            Ok(addr) => out.listen = addr,
            Err(_) => p.push(
                &path,
                format!("{s:?} is not an address like \"127.0.0.1:8420\""),
            ),
        }
    }
    if let Some((s, path)) = f.string("data_dir", p) {
        if s.is_empty() {
            p.push(&path, "must not be empty");
        } else {
            out.data_dir = PathBuf::from(s);
        }
    }
    if let Some(d) = f.duration("shutdown_grace", p) {
        out.shutdown_grace = d;
    }
    if let Some(d) = f.duration("monitor_interval", p) {
        out.monitor_interval = d;
    }
    if let Some(d) = f.duration("config_watch", p) {
        out.config_watch = d;
    }
    f.finish(
        p,
        &[
            "listen",
            "data_dir",
            "shutdown_grace",
            "monitor_interval",
            "config_watch",
        ],
    );
}

fn parse_enclave(t: &toml::Table, path: &str, out: &mut EnclaveConfig, p: &mut Problems) {
    let mut f = Fields::new(t, path);
    if let Some(platform) = f.choice(
        "platform",
        &[
            ("simulation", Platform::Simulation),
            ("gramine", Platform::Gramine),
        ],
        p,
    ) {
        out.platform = platform;
    }
    if let Some(n) = f.integer("memory_mib", 16, 1 << 20, p) {
        out.memory_mib = n as u32;
    }
    if let Some(n) = f.integer("threads", 2, 4096, p) {
        out.threads = n as u32;
    }
    f.finish(p, &["platform", "memory_mib", "threads"]);
}

fn parse_testing(t: &toml::Table, path: &str, out: &mut TestingConfig, p: &mut Problems) {
    let mut f = Fields::new(t, path);
    if let Some(b) = f.boolean("fault_injection", p) {
        out.fault_injection = b;
    }
    if let Some((services, spath)) = f.table("services", p) {
        for (name, value) in services {
            let path = join(&spath, name);
            let Ok(name) = ServiceName::new(name) else {
                p.push(&path, "not a valid service name");
                continue;
            };
            let Some(t) = value.as_table() else {
                p.push(
                    &path,
                    format!("expected a table, found {}", value.type_str()),
                );
                continue;
            };
            let mut s = Fields::new(t, &path);
            let synthetic = SyntheticConfig {
                kind: s
                    .choice(
                        "kind",
                        &[
                            ("core", Kind::Core),
                            ("optional", Kind::Optional),
                            ("extension", Kind::Extension),
                        ],
                        p,
                    )
                    .unwrap_or(Kind::Extension),
                depends_on: s.names("depends_on", p).unwrap_or_default(),
                priority: s
                    .choice("priority", PRIORITIES, p)
                    .unwrap_or(Priority::Medium),
                capabilities: match s.get("capabilities") {
                    Some((v, cpath)) => match v.as_array() {
                        Some(a) => a
                            .iter()
                            .filter_map(|c| c.as_str().map(str::to_owned))
                            .collect(),
                        None => {
                            p.push(&cpath, "expected an array of strings");
                            Vec::new()
                        }
                    },
                    None => Vec::new(),
                },
                work: match s.get("work") {
                    Some((v, wpath)) => match v.as_str().map(humantime::parse_duration) {
                        Some(Ok(d)) => d,
                        _ => {
                            p.push(&wpath, "expected a duration like \"1ms\"");
                            Duration::ZERO
                        }
                    },
                    None => Duration::ZERO,
                },
            };
            s.finish(
                p,
                &["kind", "depends_on", "priority", "capabilities", "work"],
            );
            out.services.insert(name, synthetic);
        }
    }
    f.finish(p, &["fault_injection", "services"]);
}

fn parse_service(
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

impl SyntheticConfig {
    /// The spec of the synthetic service `name`, before overrides.
    pub fn spec(&self, name: ServiceName) -> Spec {
        let mut spec = Spec::new(name, self.kind)
            .description("synthetic service from [testing.services]: answers echo requests")
            .priority(self.priority);
        spec.dependencies = self.depends_on.clone();
        for c in &self.capabilities {
            spec = spec.capability(c);
        }
        spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Vec<Spec> {
        let crypto = ServiceName::from_static("crypto");
        vec![
            Spec::new(crypto.clone(), Kind::Core),
            Spec::new(ServiceName::from_static("storage"), Kind::Core)
                .depends_on(crypto.clone())
                .setting("max_value_bytes", 1024, 1, 4096, "largest value"),
            Spec::new(ServiceName::from_static("oracle"), Kind::Optional).depends_on(crypto),
        ]
    }

    fn check(text: &str, expected: &[&str]) {
        let got = match Config::parse(text, &catalog()) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
        };
        assert_eq!(got, expected, "for:\n{text}");
    }

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::parse("", &catalog()), Ok(Config::default()));
    }

    #[test]
    fn every_problem_with_its_path() {
        check(
            r#"
[runtime]
listen = "nowhere"
colour = "blue"

[enclave]
threads = 1

[services.storage.health]
interval = "1s"
timeout = "2s"

[services.crypto]
replicas = { min = 0 }
"#,
            &[
                "runtime.listen: \"nowhere\" is not an address like \"127.0.0.1:8420\"",
                "runtime.colour: unknown key (expected one of: listen, data_dir, shutdown_grace, monitor_interval, config_watch)",
                "enclave.threads: 1 is out of range (2 to 4096)",
                "services.crypto.replicas.min: 0 is out of range (1 to 256)",
            ],
        );
        check(
            "[services.storage.health]\ninterval = \"1s\"\ntimeout = \"2s\"\n",
            &["services.storage.health.timeout: must be shorter than interval (1s)"],
        );
        check(
            "[services.nope]\n",
            &["services.nope: no such service (known: crypto, oracle, storage)"],
        );
        check(
            "[services.crypto.recovery]\nstrategy = \"pray\"\n",
            &[
                "services.crypto.recovery.strategy: \"pray\" is not one of: restart, failover, degrade, manual",
            ],
        );
        check(
            "[services.crypto.health]\ninterval = \"soon\"\n",
            &[
                "services.crypto.health.interval: \"soon\" is not a duration; write it like \"500ms\", \"10s\" or \"1m\"",
            ],
        );
        check(
            "[services.crypto]\nenabled = false\n",
            &[
                "services.crypto.enabled: a core service cannot be disabled",
                "services.storage: service storage depends on crypto, which is disabled: enable crypto or disable storage",
                "services.oracle: service oracle depends on crypto, which is disabled: enable crypto or disable oracle",
            ],
        );
        check(
            "runtime = 3\n",
            &["runtime: expected a table, found integer"],
        );
        check(
            "[runtime\n",
            &["line 1, column 9: unclosed table, expected `]`"],
        );
        check(
            "[services.crypto.recovery]\nstrategy = \"failover\"\n",
            &[
                "services.crypto.recovery.strategy: failover needs replicas.min of 2 or more to have a replica to fail over to",
            ],
        );
        check(
            "[services.crypto.anomaly]\naction = \"scale_out\"\n",
            &[
                "services.crypto.anomaly.action: scale_out needs autoscale.enabled = true and replicas.max above replicas.min (now enabled = false, min 1, max 1)",
            ],
        );
        check(
            "[services.crypto.anomaly]\naction = \"scale_out\"\n[services.crypto.autoscale]\nenabled = true\n[services.crypto.replicas]\nmax = 3\n",
            &[],
        );
        check(
            "[services.crypto.resources]\nnetwork_access = true\n",
            &[
                "services.crypto.resources.network_access: is fixed by the service itself and cannot be configured",
            ],
        );
    }

    /// An unknown key does not hide the file's other problems until it is removed: the whole-file
    /// checks (health timing, replica bounds, dependencies) report alongside it, each with its path.
    #[test]
    fn every_problem_is_reported_in_one_pass() {
        check(
            r#"
[runtime]
colour = "blue"

[services.storage.health]
interval = "1s"
timeout = "2s"

[services.crypto.replicas]
min = 3
max = 2

[testing.services.feed]
depends_on = ["ledger"]
"#,
            &[
                "runtime.colour: unknown key (expected one of: listen, data_dir, shutdown_grace, monitor_interval, config_watch)",
                "services.crypto.replicas.min: must not exceed replicas.max (2)",
                "services.storage.health.timeout: must be shorter than interval (1s)",
                "services.feed: service feed depends on ledger, which is not registered",
            ],
        );
    }

    #[test]
    fn a_service_declares_its_own_settings_and_the_file_is_held_to_their_bounds() {
        check("[services.storage]\nmax_value_bytes = 2048\n", &[]);
        check(
            "[services.storage]\nmax_value_bytes = 8192\n",
            &["services.storage.max_value_bytes: 8192 is out of range (1 to 4096)"],
        );
        check(
            "[services.crypto]\nmax_value_bytes = 10\n",
            &[
                "services.crypto.max_value_bytes: unknown key (expected one of: enabled, priority, queue_capacity, call_timeout, shutdown_grace, replicas, health, recovery, breaker, anomaly, autoscale, resources)",
            ],
        );
        let config = Config::parse("[services.storage]\nmax_value_bytes = 2048\n", &catalog())
            .expect("valid");
        let (specs, _) = config.resolve(&catalog());
        let storage = specs
            .iter()
            .find(|s| s.name.as_str() == "storage")
            .expect("storage");
        assert_eq!(storage.setting_value("max_value_bytes"), 2048);
    }

    #[test]
    fn dependency_on_a_disabled_service_names_both() {
        check(
            "[testing.services.feed]\ndepends_on = [\"oracle\"]\n[services.oracle]\nenabled = false\n",
            &[
                "services.feed: service feed depends on oracle, which is disabled: enable oracle or disable feed",
            ],
        );
        check(
            "[testing.services.a]\ndepends_on = [\"b\"]\n[testing.services.b]\ndepends_on = [\"a\"]\n",
            &["services: dependency cycle: a -> b -> a"],
        );
    }

    proptest::proptest! {
        /// Untrusted text never panics the parser: it is a config or a list of problems.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = Config::parse(&text, &catalog());
        }
    }

    /// Known tables with every key and values of every type: never a panic, and every problem names
    /// the offending key's path (or below it). The one exception is a consequence named where it
    /// lands: disabling `crypto` names each service that depends on it.
    #[test]
    fn every_problem_in_a_known_table_names_its_key() {
        let sections = [
            "runtime",
            "enclave",
            "testing",
            "services.crypto",
            "services.crypto.health",
            "services.crypto.recovery",
            "services.crypto.replicas",
            "services.crypto.breaker",
            "services.crypto.anomaly",
            "services.crypto.autoscale",
            "services.crypto.resources",
        ];
        let keys = [
            "listen",
            "data_dir",
            "platform",
            "threads",
            "memory_mib",
            "interval",
            "timeout",
            "strategy",
            "min",
            "max",
            "enabled",
            "window",
            "action",
            "fault_injection",
            "bogus",
        ];
        let values = [
            "1",
            "-5",
            "0",
            "99999999999",
            "\"10s\"",
            "\"\"",
            "\"x\"",
            "true",
            "false",
            "3.5",
            "[1, 2]",
            "{ a = 1 }",
        ];
        let mut rejected = 0;
        for section in sections {
            for key in keys {
                for value in values {
                    let text = format!("[{section}]\n{key} = {value}\n");
                    let Err(invalid) = Config::parse(&text, &catalog()) else {
                        continue;
                    };
                    rejected += 1;
                    let at = format!("{section}.{key}");
                    let names_the_key = |p: &Problem| {
                        p.path == at
                            || p.path.starts_with(&format!("{at}."))
                            || p.path.starts_with(&format!("{at}["))
                    };
                    assert!(
                        invalid.problems.iter().any(names_the_key),
                        "no problem at {at}: {:?} for {text}",
                        invalid.problems
                    );
                    for p in &invalid.problems {
                        let dependent_of_disabled_crypto = at == "services.crypto.enabled"
                            && ["services.storage", "services.oracle"].contains(&p.path.as_str())
                            && p.message.contains("depends on crypto, which is disabled");
                        assert!(
                            names_the_key(p) || dependent_of_disabled_crypto,
                            "{p:?} for {text}"
                        );
                    }
                }
            }
        }
        // Most of these are wrong somewhere; the check above must have had work to do.
        assert!(rejected > 1500, "{rejected}");
    }

    #[test]
    fn overrides_apply() {
        let c = Config::parse(
            "[services.storage]\npriority = \"high\"\nreplicas = { min = 3, max = 4 }\n[services.storage.recovery]\nstrategy = \"failover\"\nmax_restarts = 9\n",
            &catalog(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (specs, _) = c.resolve(&catalog());
        let storage = specs
            .iter()
            .find(|s| s.name.as_str() == "storage")
            .unwrap_or_else(|| panic!("storage"));
        assert_eq!(storage.priority, Priority::High);
        assert_eq!((storage.replicas.min, storage.replicas.max), (3, 4));
        assert_eq!(storage.recovery.strategy, Strategy::Failover);
        assert_eq!(storage.recovery.max_restarts, 9);
    }
}
