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

mod overrides;
mod parse;
mod problems;
#[cfg(test)]
mod tests;

pub use crate::anomaly::AnomalyAction;
use crate::graph::Graph;
pub use crate::spec::check_spec;
use crate::spec::{Kind, Priority};
use crate::{ServiceName, Spec};
pub use overrides::ServiceConfig;
use overrides::parse_service;
use parse::{parse_cluster, parse_enclave, parse_runtime, parse_storage, parse_testing};
use problems::{Fields, Problems, join, line_col};

/// The whole configuration, valid by construction.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Config {
    /// `[runtime]`.
    pub runtime: RuntimeConfig,
    /// `[enclave]`.
    pub enclave: EnclaveConfig,
    /// `[storage]`: where the storage service keeps its records. Read at start.
    pub storage: StorageConfig,
    /// `[cluster]`: joining a cluster of nodes on one PostgreSQL database, and who may join.
    /// Read at start.
    pub cluster: ClusterConfig,
    /// Per-service overrides, by service name. Services not named here run on their own defaults.
    pub services: BTreeMap<ServiceName, ServiceConfig>,
    /// `[testing]`.
    pub testing: TestingConfig,
}

/// `[runtime]`: the runtime's own settings.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RuntimeConfig {
    /// The address the HTTP API listens on.
    #[schema(value_type = String, example = "127.0.0.1:8420")]
    pub listen: SocketAddr,
    /// Where the journal, the sealed keys and the database live.
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
    /// How long a client may take to send a request's headers (from the first byte, or from the
    /// end of the previous request on a kept-alive connection): the connection is closed after.
    #[serde(with = "crate::serde_duration")]
    #[schema(value_type = String, example = "10s")]
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request's body: 408 `request.body_timeout` after.
    #[serde(with = "crate::serde_duration")]
    #[schema(value_type = String, example = "60s")]
    pub body_read_timeout: Duration,
    /// The longest a request's own work may take, from its headers to its answer's headers: 503
    /// `request.timeout` after. Routes that wait on purpose add what they wait for (docs/api.md,
    /// "Deadlines"). 1 s to 10 min.
    #[serde(with = "crate::serde_duration")]
    #[schema(value_type = String, example = "5s")]
    pub request_timeout: Duration,
    /// Open connections at most; one more is closed at once. Also held under the file
    /// descriptors the process may open, less `reserved_fds`.
    pub max_connections: u32,
    /// Open connections at most from one peer address; one more is closed at once.
    pub max_connections_per_peer: u32,
    /// File descriptors kept for storage, the keystore, the journal and outgoing calls: the
    /// connections may use the process's limit (`RLIMIT_NOFILE`) less these.
    pub reserved_fds: u32,
    /// Whether `GET /metrics` needs the admin token. Off by default: a Prometheus scraper then
    /// needs no credential, and the figures name services and counts, never keys, values or
    /// accounts. Turn it on where the listen address is reachable by anyone who should not see
    /// the load and failures of the services. Read at start.
    pub metrics_auth: bool,
    /// How long after an escalation (a service past its restarts under `on_exhausted =
    /// "escalate"`) the process shuts down and exits non-zero; meanwhile `/livez` answers 503
    /// with the reason. Read at start.
    #[serde(with = "crate::serde_duration")]
    #[schema(value_type = String, example = "10s")]
    pub escalation_grace: Duration,
    /// How log lines are written to standard error: `text` for people, `json` (one object per
    /// line) for log collectors. `CLOISTER_LOG_FORMAT` overrides it. Read at start.
    pub log_format: LogFormat,
    /// A file holding the admin token (a mounted secret), read at start; without it,
    /// `CLOISTER_ADMIN_TOKEN` or `DATA_DIR/admin.token`. Read at start.
    #[schema(value_type = Option<String>)]
    pub admin_token_file: Option<PathBuf>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One line of text per event, for people.
    Text,
    /// One JSON object per line: time, level, target, message, fields and the spans (the
    /// request id among them).
    Json,
}

impl LogFormat {
    /// Every format with its name in the file and in `CLOISTER_LOG_FORMAT`.
    pub const ALL: [(&'static str, LogFormat); 2] =
        [("text", LogFormat::Text), ("json", LogFormat::Json)];

    /// The format named `name`, if there is one.
    pub fn named(name: &str) -> Option<LogFormat> {
        LogFormat::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
    }
}

/// The bounds of `runtime.request_timeout`, the deadline of a request's own work. A route that
/// waits on purpose (a `wait_s` long poll, a script's time limit, an oracle's fetches, an upload,
/// an apply with `?wait=true`) adds what it waits for (the API's budget table).
pub const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// See [`MIN_REQUEST_TIMEOUT`].
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// Read at start only: changing it takes a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EnclaveConfig {
    /// The enclave platform.
    pub platform: Platform,
    /// The enclave's memory, in MiB, which every service's replicas must fit in.
    pub memory_mib: u32,
    /// The enclave's threads, which every service's replicas must fit in.
    pub threads: u32,
    /// The enclave's product id (SGX ISVPRODID): a Gramine manifest made from this
    /// configuration signs it in, and sealing keys are bound to it.
    pub product_id: u16,
    /// The enclave's security version (SGX ISVSVN): raise it with every release that fixes a
    /// security bug, so older builds can no longer derive its sealing keys. Signed into the
    /// Gramine manifest made from this configuration; every sealed blob names the version its
    /// key belongs to.
    pub security_version: u16,
}

impl EnclaveConfig {
    /// The budget the runtime checks its services against at start, and a Gramine manifest
    /// sizes the enclave from.
    pub fn budget(&self) -> crate::budget::Demand {
        crate::budget::Demand {
            memory_mib: u64::from(self.memory_mib),
            threads: u64::from(self.threads),
        }
    }
}

/// The enclave platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = PlatformKind)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    /// No SGX: a simulation that says so in every quote.
    Simulation,
    /// SGX through Gramine's `/dev/attestation`.
    Gramine,
}

/// `[storage]`: where the storage service keeps its records. Read at start only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StorageConfig {
    /// `backend = "redb"` (the default) or `"postgres"`, with the database's URL. Flattened: the
    /// document reads as the table is written (`{"backend": "postgres", "database_url": ...}`).
    #[serde(flatten)]
    pub backend: StorageBackend,
}

/// Where the records are: `[storage] backend`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "backend")]
pub enum StorageBackend {
    /// `DATA_DIR/storage.redb`, on this node.
    #[default]
    Redb,
    /// A PostgreSQL database; exactly one of `database_url` and `database_url_file` says which.
    Postgres {
        /// Where the URL comes from.
        database_url: DatabaseUrl,
    },
}

/// A PostgreSQL connection URL, or the file holding it (a mounted secret, read at start, one
/// trailing newline trimmed). The URL may hold a password: the parsed configuration never shows it
/// (`"(set)"`), but the configuration's text, which the admin can read back, holds it as written:
/// prefer `database_url_file` for a URL with a password.
#[derive(Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseUrl {
    /// `database_url`: the URL itself. Shown as `"(set)"`.
    #[serde(serialize_with = "hidden")]
    #[schema(value_type = String)]
    Inline(String),
    /// `database_url_file`: a file holding the URL.
    #[schema(value_type = String)]
    File(PathBuf),
}

fn hidden<S: serde::Serializer>(_: &String, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("(set)")
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Inline(_) => f.write_str("Inline(..)"),
            DatabaseUrl::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

impl DatabaseUrl {
    /// The URL: as written, or read from its file with trailing newlines trimmed.
    pub fn read(&self) -> Result<String, UrlFileError> {
        match self {
            DatabaseUrl::Inline(url) => Ok(url.clone()),
            DatabaseUrl::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| UrlFileError::Unreadable {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let url = text.trim_end_matches(['\n', '\r']);
                if url.trim().is_empty() {
                    return Err(UrlFileError::Empty { path: path.clone() });
                }
                Ok(url.to_owned())
            }
        }
    }
}

/// Why `storage.database_url_file` gives no URL; the message names the setting and the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlFileError {
    /// The file cannot be read.
    #[error("storage.database_url_file: cannot read {}: {reason}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        reason: String,
    },
    /// The file holds nothing but whitespace.
    #[error("storage.database_url_file: {} is empty", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// `[cluster]`: how this node becomes a member of a cluster (docs/cluster.md), and which
/// enclaves it admits. Read at start only: the policy decides who receives the cluster key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ClusterConfig {
    /// Members to ask for admission, in order, when this node holds no cluster key yet
    /// (`cloister run --join URL` adds to them). Each is `http://` or `https://` and the node's
    /// API address.
    pub join: Vec<String>,
    /// This node's API address as other members and operators reach it (`http://HOST:PORT` or
    /// `https://...`): registered in the database and sent with a join request. `None`: the
    /// address the API listens on, which is unroutable for `0.0.0.0` (`cloister run
    /// --advertise URL` replaces it).
    pub advertise: Option<String>,
    /// Which enclaves this node admits, and accepts as a member answering its own join.
    pub policy: ClusterPolicy,
    /// The PCCS (or Intel's PCS) this node fetches Intel's collateral from, to verify an SGX
    /// hardware quote of a joiner or of a member answering its join (`https://HOST[:PORT]`,
    /// optionally with `/sgx/certification/v4`). `None`: hardware quotes are refused with
    /// `cluster.hardware_unsupported`.
    pub pccs: Option<String>,
    /// TCB statuses a hardware quote may have besides `UpToDate` (names as Intel's TCB info
    /// gives them, one of [`TCB_STATUSES`]; `Revoked` is never accepted).
    pub tcb_allow: Vec<String>,
}

/// The TCB statuses `[cluster] tcb_allow` may name: Intel's, but `UpToDate` (always accepted)
/// and `Revoked` (never).
pub const TCB_STATUSES: [&str; 5] = [
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
];

/// Checks `[cluster] pccs`: an `https://` URL (or `http://` to a PCCS on loopback), with no
/// query, user or fragment; a path is allowed (`/sgx/certification/v4`).
pub fn check_pccs_url(url: &str) -> Result<(), BadJoinUrl> {
    let (rest, https) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => (rest, true),
        (None, Some(rest)) => (rest, false),
        (None, None) => {
            return Err(BadJoinUrl(format!("{url:?} is not an https:// URL")));
        }
    };
    let host = rest.split('/').next().unwrap_or_default();
    let host_name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    if host.is_empty() || rest.contains(['?', '#', ' ', '@']) {
        return Err(BadJoinUrl(format!(
            "{url:?} must be a PCCS address, like \"https://pccs.internal:8081\""
        )));
    }
    if !https && !matches!(host_name, "localhost" | "127.0.0.1" | "[::1]") {
        return Err(BadJoinUrl(format!(
            "{url:?}: a PCCS off this machine is asked over https://"
        )));
    }
    Ok(())
}

impl ClusterConfig {
    /// The members to ask for admission: `join` in order, without this node's own `advertise`
    /// address (a trailing slash and the case of the scheme and host aside), so that every
    /// node of a cluster can be given the same list.
    pub fn members_to_ask(&self) -> Vec<String> {
        let own = self.advertise.as_deref().map(address_key);
        self.join
            .iter()
            .filter(|url| own.as_deref() != Some(address_key(url).as_str()))
            .cloned()
            .collect()
    }
}

/// An API address as [`ClusterConfig::members_to_ask`] compares it.
fn address_key(url: &str) -> String {
    url.strip_suffix('/').unwrap_or(url).to_ascii_lowercase()
}

/// The most members `[cluster] join` may list.
pub const MAX_JOIN_URLS: usize = 16;

/// The longest API address a node may advertise: a member refuses a join request carrying a
/// longer one.
pub const MAX_ADDRESS_LEN: usize = 256;

/// `[cluster] policy`: which enclave identities belong to the cluster, relative to this node's
/// own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "policy")]
pub enum ClusterPolicy {
    /// `policy = "measurement"` (the default): the same MRENCLAVE as this node, so exactly this
    /// build with this measured configuration.
    #[default]
    Measurement,
    /// `policy = "signer"`: the same MRSIGNER and product id as this node, at a security version
    /// of at least `min_security_version` (default: this node's own).
    Signer {
        /// The lowest ISVSVN admitted; `None`: this node's own security version.
        min_security_version: Option<u16>,
    },
}

/// A member's URL that cannot be joined through; the message says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadJoinUrl(String);

/// Checks a member's URL from `[cluster] join` or `--join`: `http://` or `https://`, a host and
/// port, no path (the API's routes are appended to it).
pub fn check_join_url(url: &str) -> Result<(), BadJoinUrl> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| BadJoinUrl(format!("{url:?} is not an http:// or https:// URL")))?;
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.is_empty() || host.contains(['/', '?', '#', ' ', '@']) {
        return Err(BadJoinUrl(format!(
            "{url:?} must be a member's API address only, like \"http://10.0.0.1:8420\""
        )));
    }
    Ok(())
}

/// Checks this node's API address from `[cluster] advertise` or `--advertise`: a URL as
/// [`check_join_url`] takes, at most [`MAX_ADDRESS_LEN`] characters.
pub fn check_advertise(url: &str) -> Result<(), BadJoinUrl> {
    check_join_url(url)?;
    if url.len() > MAX_ADDRESS_LEN {
        return Err(BadJoinUrl(format!(
            "an address to advertise has at most {MAX_ADDRESS_LEN} characters (this one has {})",
            url.len()
        )));
    }
    Ok(())
}

/// `[testing]`: what only tests, demos and drills use.
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
    /// Core, optional or extension.
    pub kind: Kind,
    /// The services it depends on.
    pub depends_on: Vec<ServiceName>,
    /// Its start priority.
    pub priority: Priority,
    /// What it offers.
    pub capabilities: Vec<String>,
    /// How long each echo request takes.
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
                header_read_timeout: Duration::from_secs(10),
                body_read_timeout: Duration::from_secs(60),
                request_timeout: Duration::from_secs(5),
                max_connections: 4096,
                max_connections_per_peer: 512,
                reserved_fds: 256,
                metrics_auth: false,
                escalation_grace: Duration::from_secs(10),
                log_format: LogFormat::Text,
                admin_token_file: None,
            },
            enclave: EnclaveConfig {
                platform: Platform::Simulation,
                memory_mib: 2048,
                threads: 32,
                product_id: 1,
                security_version: 1,
            },
            storage: StorageConfig::default(),
            cluster: ClusterConfig::default(),
            services: BTreeMap::new(),
            testing: TestingConfig::default(),
        }
    }
}

/// One problem in a configuration, with the path of the offending key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// The offending key (`services.storage.health.timeout`); empty for the file as a whole.
    pub path: String,
    /// What is wrong with it.
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
    /// Every problem, each with its path.
    pub problems: Vec<Problem>,
}

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
        if let Some((t, path)) = root.table("storage", &mut p) {
            parse_storage(t, &path, &mut config.storage, &mut p);
        }
        if let Some((t, path)) = root.table("cluster", &mut p) {
            parse_cluster(t, &path, &mut config.cluster, &mut p);
            if config.storage.backend == StorageBackend::Redb {
                p.push(
                    &path,
                    "a cluster keeps its records in PostgreSQL: set [storage] backend = \"postgres\"",
                );
            }
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
        root.finish(
            &mut p,
            &[
                "runtime", "enclave", "storage", "cluster", "services", "testing",
            ],
        );
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

    /// The value this configuration gives `service`'s `setting`: its override, else its default.
    /// For the few readers outside the service (the API sizes a route's body limit from one).
    pub fn setting<T: crate::setting::Value>(
        &self,
        service: &ServiceName,
        setting: &crate::setting::Setting<T>,
    ) -> T {
        self.services
            .get(service)
            .and_then(|o| o.settings.get(setting.name()))
            .map_or(setting.default_value(), |raw| T::from_raw(*raw))
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
        for (path, message) in crate::budget::check(&specs, self.enclave.budget()) {
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
