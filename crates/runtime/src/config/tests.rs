//! The configuration's tests: parsing, every problem with its path, overrides.

use super::*;
use crate::spec::Strategy;

const MAX_VALUE_BYTES: crate::setting::Setting<u32> =
    crate::setting::Setting::new("max_value_bytes", 1024, 1, 4096, "largest value");

fn catalog() -> Vec<Spec> {
    let crypto = ServiceName::from_static("crypto");
    vec![
        Spec::new(crypto.clone(), Kind::Core),
        Spec::new(ServiceName::from_static("storage"), Kind::Core)
            .depends_on(crypto.clone())
            .setting(&MAX_VALUE_BYTES),
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

/// `[cluster]`: members to join and the admission policy, only over PostgreSQL; each mistake
/// reported with its path.
#[test]
fn the_cluster_table_names_members_and_a_policy_over_postgres_only() {
    const PG: &str = "[storage]\nbackend = \"postgres\"\ndatabase_url = \"postgres://a/b\"\n";
    let parse = |text: &str| {
        Config::parse(&format!("{PG}{text}"), &catalog())
            .expect("valid")
            .cluster
    };
    assert_eq!(Config::default().cluster, ClusterConfig::default());
    assert_eq!(
        parse("[cluster]\njoin = [\"http://10.0.0.1:8420\", \"https://m.example/\"]\n"),
        ClusterConfig {
            join: vec!["http://10.0.0.1:8420".into(), "https://m.example/".into()],
            advertise: None,
            policy: ClusterPolicy::Measurement,
            pccs: None,
            tcb_allow: Vec::new(),
        }
    );
    let hardware = parse(
        "[cluster]\npccs = \"https://pccs.internal:8081/sgx/certification/v4\"\ntcb_allow = [\"SWHardeningNeeded\"]\n",
    );
    assert_eq!(
        (hardware.pccs.as_deref(), hardware.tcb_allow),
        (
            Some("https://pccs.internal:8081/sgx/certification/v4"),
            vec!["SWHardeningNeeded".to_owned()]
        )
    );
    assert_eq!(
        parse("[cluster]\npccs = \"http://localhost:8081\"\n").pccs,
        Some("http://localhost:8081".into())
    );
    assert_eq!(
        parse("[cluster]\nadvertise = \"http://cloister-1.cloister:8420\"\n").advertise,
        Some("http://cloister-1.cloister:8420".into())
    );
    assert_eq!(
        parse("[cluster]\npolicy = \"signer\"\nmin_security_version = 3\n").policy,
        ClusterPolicy::Signer {
            min_security_version: Some(3)
        }
    );
    assert_eq!(
        parse("[cluster]\npolicy = \"signer\"\n").policy,
        ClusterPolicy::Signer {
            min_security_version: None
        }
    );
    check(
        "[cluster]\npolicy = \"signer\"\n",
        &[
            "cluster: a cluster keeps its records in PostgreSQL: set [storage] backend = \"postgres\"",
        ],
    );
    let check_pg = |text: &str, expected: &[&str]| check(&format!("{PG}{text}"), expected);
    check_pg(
        "[cluster]\nmin_security_version = 2\n",
        &["cluster.min_security_version: only with policy = \"signer\""],
    );
    check_pg(
        "[cluster]\npccs = \"http://pccs.internal:8081\"\ntcb_allow = [\"Revoked\", \"UpToDate\"]\n",
        &[
            "cluster.pccs: \"http://pccs.internal:8081\": a PCCS off this machine is asked over https://",
            "cluster.tcb_allow[0]: \"Revoked\" is not a TCB status that can be allowed: one of SWHardeningNeeded, ConfigurationNeeded, ConfigurationAndSWHardeningNeeded, OutOfDate, OutOfDateConfigurationNeeded (UpToDate is always accepted, Revoked never)",
            "cluster.tcb_allow[1]: \"UpToDate\" is not a TCB status that can be allowed: one of SWHardeningNeeded, ConfigurationNeeded, ConfigurationAndSWHardeningNeeded, OutOfDate, OutOfDateConfigurationNeeded (UpToDate is always accepted, Revoked never)",
        ],
    );
    check_pg(
        "[cluster]\npolicy = \"anyone\"\n",
        &["cluster.policy: \"anyone\" is not one of: measurement, signer"],
    );
    check_pg(
        "[cluster]\njoin = [\"10.0.0.1:8420\", \"http://h:1/v1\"]\n",
        &[
            "cluster.join[0]: \"10.0.0.1:8420\" is not an http:// or https:// URL",
            "cluster.join[1]: \"http://h:1/v1\" must be a member's API address only, like \"http://10.0.0.1:8420\"",
        ],
    );
    let long = format!("http://{}:8420", "h".repeat(MAX_ADDRESS_LEN));
    check_pg(
        "[cluster]\nadvertise = \"0.0.0.0:8420\"\n",
        &["cluster.advertise: \"0.0.0.0:8420\" is not an http:// or https:// URL"],
    );
    check_pg(
        &format!("[cluster]\nadvertise = \"{long}\"\n"),
        &[format!(
            "cluster.advertise: an address to advertise has at most {MAX_ADDRESS_LEN} characters (this one has {})",
            long.len()
        )
        .as_str()],
    );
    check_pg(
        "[cluster]\nadvertise = \"http://h:1/v1\"\n",
        &[
            "cluster.advertise: \"http://h:1/v1\" must be a member's API address only, like \"http://10.0.0.1:8420\"",
        ],
    );
    check_pg(
        "[cluster]\nadvertise = 8420\n",
        &["cluster.advertise: expected a string, found integer"],
    );
}

/// The members a node asks for admission: `join` in order, less its own advertised address (a
/// trailing slash and the case of scheme and host aside), so one list serves every node.
#[test]
fn a_node_does_not_ask_itself_for_admission() {
    let check = |join: &[&str], advertise: Option<&str>, expected: &[&str]| {
        let config = ClusterConfig {
            join: join.iter().map(|s| s.to_string()).collect(),
            advertise: advertise.map(str::to_owned),
            ..ClusterConfig::default()
        };
        assert_eq!(
            config.members_to_ask(),
            expected,
            "{join:?} from {advertise:?}"
        );
    };
    let (zero, one) = (
        "http://cloister-0.cloister:8420",
        "http://cloister-1.cloister:8420",
    );
    check(&[zero], Some(zero), &[]);
    check(&[zero], Some(one), &[zero]);
    check(&[zero], None, &[zero]);
    check(&[zero, one], Some(one), &[zero]);
    check(&[one, zero], Some(zero), &[one]);
    check(&["HTTP://Cloister-0.cloister:8420/"], Some(zero), &[]);
    check(&[zero], Some("https://cloister-0.cloister:8420"), &[zero]);
    check(&[zero], Some("http://cloister-0.cloister:8421"), &[zero]);
    check(&[], Some(zero), &[]);
}

/// `[storage]`: redb by default; PostgreSQL with exactly one of the URL and the URL's file; each
/// mistake reported with its path. The URL is never shown.
#[test]
fn the_storage_backend_is_redb_or_postgres_with_one_url() {
    let parse = |text: &str| {
        Config::parse(text, &catalog())
            .expect("valid")
            .storage
            .backend
    };
    assert_eq!(
        parse("[storage]\nbackend = \"redb\"\n"),
        StorageBackend::Redb
    );
    let inline =
        parse("[storage]\nbackend = \"postgres\"\ndatabase_url = \"postgres://u:pw@db/c\"\n");
    assert_eq!(
        inline,
        StorageBackend::Postgres {
            database_url: DatabaseUrl::Inline("postgres://u:pw@db/c".into())
        }
    );
    let as_json = serde_json::to_value(StorageConfig {
        backend: inline.clone(),
    })
    .expect("json");
    assert_eq!(
        as_json,
        serde_json::json!({"backend": "postgres", "database_url": {"inline": "(set)"}})
    );
    let shown = format!("{inline:?} {as_json}");
    assert!(!shown.contains("pw"), "{shown}");
    assert_eq!(
        parse("[storage]\nbackend = \"postgres\"\ndatabase_url_file = \"/run/secrets/db\"\n"),
        StorageBackend::Postgres {
            database_url: DatabaseUrl::File("/run/secrets/db".into())
        }
    );
    check(
        "[storage]\nbackend = \"postgres\"\n",
        &["storage: backend = \"postgres\" needs database_url or database_url_file"],
    );
    check(
        "[storage]\nbackend = \"postgres\"\ndatabase_url = \"postgres://a/b\"\ndatabase_url_file = \"/f\"\n",
        &["storage: give database_url or database_url_file, not both"],
    );
    check(
        "[storage]\ndatabase_url = \"postgres://a/b\"\n",
        &["storage.database_url: only with backend = \"postgres\""],
    );
    check(
        "[storage]\nbackend = \"postgres\"\ndatabase_url = \"mysql://a/b\"\n",
        &[
            "storage.database_url: expected a PostgreSQL URL like \"postgres://user@host:5432/dbname\" (or the key=value form)",
        ],
    );
    check(
        "[storage]\nbackend = \"postgres\"\ndatabase_url_file = \" \"\n",
        &["storage.database_url_file: must not be empty"],
    );
    check(
        "[storage]\nbackend = \"sqlite\"\nurl = \"x\"\n",
        &[
            "storage.backend: \"sqlite\" is not one of: redb, postgres",
            "storage.url: unknown key (expected one of: backend, database_url, database_url_file)",
        ],
    );
}

#[test]
fn a_database_url_file_is_read_with_its_trailing_newline_trimmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("url");
    std::fs::write(&path, "postgres://u@h/db\n").expect("write");
    assert_eq!(
        DatabaseUrl::File(path.clone()).read(),
        Ok("postgres://u@h/db".to_owned())
    );
    std::fs::write(&path, "\n").expect("write");
    let empty = DatabaseUrl::File(path.clone())
        .read()
        .expect_err("empty")
        .to_string();
    assert!(
        empty.contains("storage.database_url_file") && empty.contains("is empty"),
        "{empty}"
    );
    let missing = DatabaseUrl::File(dir.path().join("nope"))
        .read()
        .expect_err("missing")
        .to_string();
    assert!(missing.contains("cannot read"), "{missing}");
}

/// The HTTP server's limits: read, and each out of its bounds reported with its path.
#[test]
fn the_servers_limits_are_read_within_their_bounds() {
    assert_eq!(
        Config::default().runtime.request_timeout,
        std::time::Duration::from_secs(5),
        "an API's deadline: a few seconds"
    );
    check(
        "[runtime]\nrequest_timeout = \"11m\"\n",
        &[
            "runtime.request_timeout: must be from 1s to 10m (a request's own work; long polls, script runs, oracle fetches, uploads and waited applies add what they wait for: docs/api.md, \"Deadlines\")",
        ],
    );
    let c = Config::parse(
        "[runtime]\nheader_read_timeout = \"2s\"\nbody_read_timeout = \"3s\"\nrequest_timeout = \"40s\"\nmax_connections = 8\nmax_connections_per_peer = 2\nreserved_fds = 64\n",
        &catalog(),
    )
    .expect("valid");
    let r = &c.runtime;
    assert_eq!(
        (
            r.header_read_timeout,
            r.body_read_timeout,
            r.request_timeout,
            r.max_connections,
            r.max_connections_per_peer,
            r.reserved_fds
        ),
        (
            std::time::Duration::from_secs(2),
            std::time::Duration::from_secs(3),
            std::time::Duration::from_secs(40),
            8,
            2,
            64
        )
    );
    check(
        "[runtime]\nheader_read_timeout = \"0s\"\nrequest_timeout = \"900ms\"\nmax_connections = 0\nmax_connections_per_peer = 0\nreserved_fds = 15\n",
        &[
            "runtime.header_read_timeout: must be longer than zero",
            "runtime.request_timeout: must be from 1s to 10m (a request's own work; long polls, script runs, oracle fetches, uploads and waited applies add what they wait for: docs/api.md, \"Deadlines\")",
            "runtime.max_connections: 0 is out of range (1 to 1000000)",
            "runtime.max_connections_per_peer: 0 is out of range (1 to 1000000)",
            "runtime.reserved_fds: 15 is out of range (16 to 1000000)",
        ],
    );
}

/// `metrics_auth` is off unless set, and is a boolean.
#[test]
fn metrics_auth_is_off_by_default_and_a_boolean() {
    assert!(!Config::default().runtime.metrics_auth);
    let c = Config::parse("[runtime]\nmetrics_auth = true\n", &catalog()).expect("valid");
    assert!(c.runtime.metrics_auth);
    check(
        "[runtime]\nmetrics_auth = \"yes\"\n",
        &["runtime.metrics_auth: expected true or false, found string"],
    );
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
            "runtime.colour: unknown key (expected one of: listen, data_dir, shutdown_grace, monitor_interval, config_watch, header_read_timeout, body_read_timeout, request_timeout, max_connections, max_connections_per_peer, reserved_fds, metrics_auth, escalation_grace, log_format, admin_token_file)",
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
            "runtime.colour: unknown key (expected one of: listen, data_dir, shutdown_grace, monitor_interval, config_watch, header_read_timeout, body_read_timeout, request_timeout, max_connections, max_connections_per_peer, reserved_fds, metrics_auth, escalation_grace, log_format, admin_token_file)",
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
    let config =
        Config::parse("[services.storage]\nmax_value_bytes = 2048\n", &catalog()).expect("valid");
    let (specs, _) = config.resolve(&catalog());
    let storage = specs
        .iter()
        .find(|s| s.name.as_str() == "storage")
        .expect("storage");
    assert_eq!(storage.get(&MAX_VALUE_BYTES), 2048);
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
        "storage",
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
        "backend",
        "database_url",
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
