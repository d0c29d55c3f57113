//! Parsing the runtime's own tables: `[runtime]`, `[enclave]` and `[testing]` with its synthetic
//! services.

use std::path::PathBuf;
use std::time::Duration;

use super::problems::{Fields, Problems, join};
use super::{
    ClusterConfig, ClusterPolicy, DatabaseUrl, EnclaveConfig, LogFormat, MAX_JOIN_URLS,
    MAX_REQUEST_TIMEOUT, MIN_REQUEST_TIMEOUT, Platform, RuntimeConfig, StorageBackend,
    StorageConfig, SyntheticConfig, TestingConfig,
};
use crate::name::ServiceName;
use crate::spec::{Kind, Priority, Spec};

pub(super) const PRIORITIES: &[(&str, Priority)] = &[
    ("critical", Priority::Critical),
    ("high", Priority::High),
    ("medium", Priority::Medium),
    ("low", Priority::Low),
];

pub(super) fn parse_runtime(
    t: &toml::Table,
    path: &str,
    out: &mut RuntimeConfig,
    p: &mut Problems,
) {
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
    if let Some(d) = f.duration("header_read_timeout", p) {
        out.header_read_timeout = d;
    }
    if let Some(d) = f.duration("body_read_timeout", p) {
        out.body_read_timeout = d;
    }
    if let Some((d, path)) = f
        .duration("request_timeout", p)
        .map(|d| (d, f.path_of("request_timeout")))
    {
        if !(MIN_REQUEST_TIMEOUT..=MAX_REQUEST_TIMEOUT).contains(&d) {
            p.push(
                &path,
                format!(
                    "must be from {} to {} (a request's own work; long polls, script runs, oracle fetches, uploads and waited applies add what they wait for: docs/api.md, \"Deadlines\")",
                    humantime::format_duration(MIN_REQUEST_TIMEOUT),
                    humantime::format_duration(MAX_REQUEST_TIMEOUT)
                ),
            );
        } else {
            out.request_timeout = d;
        }
    }
    let count = |f: &mut Fields, key, min, p: &mut Problems| {
        f.integer(key, min, 1_000_000, p)
            .and_then(|n| u32::try_from(n).ok())
    };
    if let Some(n) = count(&mut f, "max_connections", 1, p) {
        out.max_connections = n;
    }
    if let Some(n) = count(&mut f, "max_connections_per_peer", 1, p) {
        out.max_connections_per_peer = n;
    }
    if let Some(n) = count(&mut f, "reserved_fds", 16, p) {
        out.reserved_fds = n;
    }
    if let Some(b) = f.boolean("metrics_auth", p) {
        out.metrics_auth = b;
    }
    if let Some(d) = f.duration("escalation_grace", p) {
        out.escalation_grace = d;
    }
    if let Some(format) = f.choice("log_format", &LogFormat::ALL, p) {
        out.log_format = format;
    }
    if let Some((s, path)) = f.string("admin_token_file", p) {
        if s.is_empty() {
            p.push(&path, "must not be empty");
        } else {
            out.admin_token_file = Some(PathBuf::from(s));
        }
    }
    f.finish(
        p,
        &[
            "listen",
            "data_dir",
            "shutdown_grace",
            "monitor_interval",
            "config_watch",
            "header_read_timeout",
            "body_read_timeout",
            "request_timeout",
            "max_connections",
            "max_connections_per_peer",
            "reserved_fds",
            "metrics_auth",
            "escalation_grace",
            "log_format",
            "admin_token_file",
        ],
    );
}

pub(super) fn parse_enclave(
    t: &toml::Table,
    path: &str,
    out: &mut EnclaveConfig,
    p: &mut Problems,
) {
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
    if let Some(n) = f.integer("product_id", 0, i64::from(u16::MAX), p) {
        out.product_id = n as u16;
    }
    if let Some(n) = f.integer("security_version", 0, i64::from(u16::MAX), p) {
        out.security_version = n as u16;
    }
    f.finish(
        p,
        &[
            "platform",
            "memory_mib",
            "threads",
            "product_id",
            "security_version",
        ],
    );
}

/// The backends `[storage] backend` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BackendName {
    Redb,
    Postgres,
}

pub(super) fn parse_storage(
    t: &toml::Table,
    path: &str,
    out: &mut StorageConfig,
    p: &mut Problems,
) {
    let mut f = Fields::new(t, path);
    let backend = f.choice(
        "backend",
        &[
            ("redb", BackendName::Redb),
            ("postgres", BackendName::Postgres),
        ],
        p,
    );
    let url_path = f.path_of("database_url");
    let file_path = f.path_of("database_url_file");
    let mut nonempty = |f: &mut Fields, key: &str| match f.string(key, p) {
        Some((s, path)) if s.trim().is_empty() => {
            p.push(&path, "must not be empty");
            None
        }
        Some((s, _)) => Some(s),
        None => None,
    };
    let url = nonempty(&mut f, "database_url");
    let file = nonempty(&mut f, "database_url_file");
    f.finish(p, &["backend", "database_url", "database_url_file"]);
    match backend.unwrap_or(BackendName::Redb) {
        BackendName::Redb => {
            for (given, path) in [(url.is_some(), &url_path), (file.is_some(), &file_path)] {
                if given {
                    p.push(path, "only with backend = \"postgres\"");
                }
            }
        }
        BackendName::Postgres => {
            let database_url = match (url, file) {
                (Some(url), None) => {
                    if !(url.starts_with("postgres://")
                        || url.starts_with("postgresql://")
                        || url.contains('='))
                    {
                        p.push(
                            &url_path,
                            "expected a PostgreSQL URL like \"postgres://user@host:5432/dbname\" \
                             (or the key=value form)",
                        );
                        return;
                    }
                    DatabaseUrl::Inline(url)
                }
                (None, Some(file)) => DatabaseUrl::File(PathBuf::from(file)),
                (Some(_), Some(_)) => {
                    p.push(path, "give database_url or database_url_file, not both");
                    return;
                }
                // One was given but is unusable: that is reported already.
                (None, None)
                    if t.contains_key("database_url") || t.contains_key("database_url_file") =>
                {
                    return;
                }
                (None, None) => {
                    p.push(
                        path,
                        "backend = \"postgres\" needs database_url or database_url_file",
                    );
                    return;
                }
            };
            out.backend = StorageBackend::Postgres { database_url };
        }
    }
}

pub(super) fn parse_cluster(
    t: &toml::Table,
    path: &str,
    out: &mut ClusterConfig,
    p: &mut Problems,
) {
    #[derive(Clone, Copy)]
    enum Kind {
        Measurement,
        Signer,
    }
    let mut f = Fields::new(t, path);
    let join_path = f.path_of("join");
    if let Some(urls) = f.strings("join", MAX_JOIN_URLS, p) {
        for (i, url) in urls.iter().enumerate() {
            if let Err(why) = super::check_join_url(url) {
                p.push(&format!("{join_path}[{i}]"), why.to_string());
            }
        }
        out.join = urls;
    }
    if let Some((url, path)) = f.string("advertise", p) {
        match super::check_advertise(&url) {
            Ok(()) => out.advertise = Some(url),
            Err(why) => p.push(&path, why.to_string()),
        }
    }
    let kind = f.choice(
        "policy",
        &[("measurement", Kind::Measurement), ("signer", Kind::Signer)],
        p,
    );
    let min_path = f.path_of("min_security_version");
    let min = f
        .integer("min_security_version", 0, i64::from(u16::MAX), p)
        .map(|n| n as u16);
    if let Some((url, path)) = f.string("pccs", p) {
        match super::check_pccs_url(&url) {
            Ok(()) => out.pccs = Some(url),
            Err(why) => p.push(&path, why.to_string()),
        }
    }
    let allow_path = f.path_of("tcb_allow");
    if let Some(statuses) = f.strings("tcb_allow", super::TCB_STATUSES.len(), p) {
        for (i, status) in statuses.iter().enumerate() {
            if !super::TCB_STATUSES.contains(&status.as_str()) {
                p.push(
                    &format!("{allow_path}[{i}]"),
                    format!(
                        "{status:?} is not a TCB status that can be allowed: one of {} (UpToDate \
                         is always accepted, Revoked never)",
                        super::TCB_STATUSES.join(", ")
                    ),
                );
            }
        }
        out.tcb_allow = statuses;
    }
    f.finish(
        p,
        &[
            "join",
            "advertise",
            "policy",
            "min_security_version",
            "pccs",
            "tcb_allow",
        ],
    );
    match kind.unwrap_or(Kind::Measurement) {
        Kind::Measurement => {
            if min.is_some() {
                p.push(&min_path, "only with policy = \"signer\"");
            }
            out.policy = ClusterPolicy::Measurement;
        }
        Kind::Signer => {
            out.policy = ClusterPolicy::Signer {
                min_security_version: min,
            }
        }
    }
}

pub(super) fn parse_testing(
    t: &toml::Table,
    path: &str,
    out: &mut TestingConfig,
    p: &mut Problems,
) {
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
