//! The Dockerfile and the Kubernetes manifests (`deploy/kubernetes/`) against the binary's own
//! defaults and the configuration they ship: ports, probe paths, the data directory, the token
//! file, the scrape annotations and the SGX resources, so the two cannot drift apart.

use std::path::{Path, PathBuf};

use runtime::config::{Config, DatabaseUrl, StorageBackend};
use serde_yaml::Value;

const BIN: &str = env!("CARGO_BIN_EXE_cloister");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every YAML document under `deploy/kubernetes`, with its file.
fn documents() -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    let mut dirs = vec![root().join("deploy/kubernetes")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let text = std::fs::read_to_string(&path).expect("read");
                for doc in serde_yaml::Deserializer::from_str(&text) {
                    let value = <Value as serde::Deserialize>::deserialize(doc)
                        .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
                    out.push((path.clone(), value));
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn shipped_config() -> Config {
    config_at("deploy/kubernetes/base/cloister.toml")
}

fn config_at(path: &str) -> Config {
    let text = std::fs::read_to_string(root().join(path)).expect("the shipped configuration");
    Config::parse(&text, &stack::catalog())
        .unwrap_or_else(|e| panic!("{path}: the shipped configuration is invalid: {e}"))
}

/// The strings of the sequence at `v`.
fn strings(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a sequence: {v:?}"))
        .iter()
        .map(|a| a.as_str().unwrap_or_else(|| panic!("not a string: {a:?}")))
        .collect()
}

/// The value after `flag` in `args`.
fn flag<'a>(args: &[&'a str], flag: &str) -> &'a str {
    args.windows(2)
        .find(|w| w[0] == flag)
        .map(|w| w[1])
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"))
}

/// `cloister ARGS --help`.
fn help(args: &[&str]) -> String {
    let out = std::process::Command::new(BIN)
        .args(args)
        .arg("--help")
        .output()
        .expect("cloister --help");
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every `--flag` in `args` is one that `cloister COMMAND` takes.
fn flags_exist(args: &[&str], command: &[&str]) {
    let help = help(command);
    for arg in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(&format!("{arg} ")),
            "cloister {command:?} has no {arg}"
        );
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut v = v;
    for key in path {
        v = &v[*key];
    }
    v.as_str()
        .unwrap_or_else(|| panic!("no string at {}", path.join(".")))
}

fn base_statefulset(docs: &[(PathBuf, Value)]) -> &Value {
    docs.iter()
        .find(|(p, d)| p.ends_with("base/statefulset.yaml") && d["kind"] == "StatefulSet")
        .map(|(_, d)| d)
        .expect("base/statefulset.yaml holds the StatefulSet")
}

#[test]
fn every_manifest_parses_and_names_a_kind() {
    let docs = documents();
    assert!(docs.len() >= 5, "{docs:?}");
    for (path, doc) in &docs {
        assert!(
            doc["kind"].as_str().is_some(),
            "{}: a document without a kind",
            path.display()
        );
    }
}

#[test]
fn the_statefulset_matches_the_binary_and_its_configuration() {
    let config = shipped_config();
    let port = u64::from(config.runtime.listen.port());
    assert_eq!(
        port,
        u64::from(Config::default().runtime.listen.port()),
        "the default port"
    );
    assert!(
        config.runtime.listen.ip().is_unspecified(),
        "in a pod the API listens on every address"
    );
    let docs = documents();
    let set = base_statefulset(&docs);
    let pod = &set["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let ports = container["ports"].as_sequence().expect("ports");
    let http = ports
        .iter()
        .find(|p| p["name"] == "http")
        .expect("a port named http");
    assert_eq!(http["containerPort"].as_u64(), Some(port));

    for (probe, path) in [
        ("livenessProbe", api::probes::LIVEZ),
        ("readinessProbe", api::probes::READYZ),
        ("startupProbe", api::probes::LIVEZ),
    ] {
        assert_eq!(
            str_at(container, &[probe, "httpGet", "path"]),
            path,
            "{probe}"
        );
        assert_eq!(
            str_at(container, &[probe, "httpGet", "port"]),
            "http",
            "{probe}"
        );
    }
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(str_at(annotations, &["prometheus.io/scrape"]), "true");
    assert_eq!(
        str_at(annotations, &["prometheus.io/path"]),
        api::probes::METRICS
    );
    assert_eq!(
        str_at(annotations, &["prometheus.io/port"]),
        port.to_string()
    );
    assert!(
        !config.runtime.metrics_auth,
        "Prometheus scrapes without a token"
    );

    let mounts = container["volumeMounts"].as_sequence().expect("mounts");
    let mount = |name: &str| {
        mounts
            .iter()
            .find(|m| m["name"] == name)
            .map(|m| PathBuf::from(str_at(m, &["mountPath"])))
            .unwrap_or_else(|| panic!("no mount {name}"))
    };
    assert_eq!(mount("data"), config.runtime.data_dir);
    let claims = set["spec"]["volumeClaimTemplates"]
        .as_sequence()
        .expect("a volume claim");
    assert!(claims.iter().any(|c| c["metadata"]["name"] == "data"));
    let token = config
        .runtime
        .admin_token_file
        .as_ref()
        .expect("the token comes from a file");
    assert_eq!(token.parent(), Some(mount("admin-token").as_path()));
    assert_eq!(
        token.file_name().and_then(|n| n.to_str()),
        Some("admin.token")
    );
    let volumes = pod["spec"]["volumes"].as_sequence().expect("volumes");
    let secret = volumes
        .iter()
        .find(|v| v["name"] == "admin-token")
        .expect("the token volume");
    let mode = secret["secret"]["defaultMode"].as_u64().expect("a mode");
    assert_eq!(mode & 0o027, 0, "others cannot read the token: {mode:o}");
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let config_file = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| PathBuf::from(w[1]))
        .expect("--config");
    assert_eq!(config_file.parent(), Some(mount("config").as_path()));
    assert_eq!(
        config_file.file_name().and_then(|n| n.to_str()),
        Some("cloister.toml"),
        "the ConfigMap's key"
    );
    let user = pod["spec"]["securityContext"]["runAsUser"]
        .as_u64()
        .expect("runAsUser");
    assert_ne!(user, 0, "not root");
}

#[test]
fn the_sgx_overlay_asks_for_the_devices_and_epc_for_the_whole_enclave() {
    let docs = documents();
    let patch = docs
        .iter()
        .find(|(p, d)| p.ends_with("overlays/sgx/sgx.yaml") && d["kind"] == "StatefulSet")
        .map(|(_, d)| d)
        .expect("the sgx overlay patches the StatefulSet");
    let limits = &patch["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"];
    for resource in ["sgx.intel.com/enclave", "sgx.intel.com/provision"] {
        assert_eq!(limits[resource].as_u64(), Some(1), "{resource}");
    }
    let epc = str_at(limits, &["sgx.intel.com/epc"]);
    let epc_mib = match epc.split_at(epc.len() - 2) {
        (n, "Gi") => n.parse::<u64>().expect("a size") * 1024,
        (n, "Mi") => n.parse::<u64>().expect("a size"),
        _ => panic!("{epc}: write the EPC limit in Gi or Mi"),
    };
    // The enclave the manifest for the shipped configuration declares.
    let out = std::process::Command::new(BIN)
        .args(["gramine", "manifest", "--config"])
        .arg(root().join("deploy/kubernetes/base/cloister.toml"))
        .output()
        .expect("cloister gramine manifest");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: toml::Table = String::from_utf8_lossy(&out.stdout).parse().expect("TOML");
    let size = manifest["sgx"]["enclave_size"].as_str().expect("a size");
    let size_mib = match size.split_at(size.len() - 1) {
        (n, "G") => n.parse::<u64>().expect("a size") * 1024,
        (n, "M") => n.parse::<u64>().expect("a size"),
        _ => panic!("{size}"),
    };
    assert!(
        epc_mib >= size_mib,
        "the EPC limit ({epc}) is smaller than the enclave ({size})"
    );
    let kustomization =
        std::fs::read_to_string(root().join("deploy/kubernetes/overlays/sgx/kustomization.yaml"))
            .expect("kustomization");
    assert!(kustomization.contains("../../base"));
}

/// The cluster overlay (`overlays/cluster`): N nodes on PostgreSQL with the database's URL from
/// a Secret; each pod advertises its own name under the headless Service, and every pod is told
/// to join through pod 0, which finds its own address there and asks no one; pod 0's postStart
/// hook makes the cluster once. Each setting is checked against the base, the binary's flags and
/// the configuration's own rules, so that the pieces cannot drift apart.
#[test]
fn the_cluster_overlay_runs_nodes_on_postgres_that_join_pod_0_through_the_headless_service() {
    let base = shipped_config();
    let config = config_at("deploy/kubernetes/overlays/cluster/cloister.toml");
    assert_eq!(config.runtime, base.runtime, "the base's [runtime]");
    assert_eq!(
        config.enclave, base.enclave,
        "the base's [enclave]: the same measurement"
    );
    let url_file = match &config.storage.backend {
        StorageBackend::Postgres {
            database_url: DatabaseUrl::File(path),
        } => path.clone(),
        other => panic!("the cluster's storage is PostgreSQL, its URL in a file: {other:?}"),
    };
    assert!(
        config.cluster.join.is_empty() && config.cluster.advertise.is_none(),
        "per pod, so flags: {:?}",
        config.cluster
    );

    let kustomization = std::fs::read_to_string(
        root().join("deploy/kubernetes/overlays/cluster/kustomization.yaml"),
    )
    .expect("kustomization");
    let kustomization: Value = serde_yaml::from_str(&kustomization).expect("YAML");
    assert_eq!(strings(&kustomization["resources"]), ["../../base"]);
    let generated = &kustomization["configMapGenerator"][0];
    assert_eq!(
        (
            str_at(generated, &["name"]),
            str_at(generated, &["behavior"]),
            strings(&generated["files"]),
        ),
        ("cloister-config", "replace", vec!["cloister.toml"]),
        "the base's ConfigMap, replaced"
    );
    assert_eq!(
        str_at(&kustomization["patches"][0], &["path"]),
        "cluster.yaml"
    );

    let docs = documents();
    let set = base_statefulset(&docs);
    let base_container = &set["spec"]["template"]["spec"]["containers"][0];
    let patch = docs
        .iter()
        .find(|(p, d)| p.ends_with("overlays/cluster/cluster.yaml") && d["kind"] == "StatefulSet")
        .map(|(_, d)| d)
        .expect("the cluster overlay patches the StatefulSet");
    assert_eq!(patch["metadata"]["name"], set["metadata"]["name"]);
    assert!(
        patch["spec"]["replicas"].as_u64() >= Some(2),
        "several nodes"
    );
    assert_eq!(
        str_at(patch, &["spec", "podManagementPolicy"]),
        "OrderedReady",
        "a joiner starts after pod 0 is ready, which is after it made the cluster"
    );
    let container = &patch["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["name"], base_container["name"]);

    // The downward API gives each pod its name and namespace.
    let env = container["env"].as_sequence().expect("env");
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let var = env
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(str_at(var, &["valueFrom", "fieldRef", "fieldPath"]), field);
    }

    // The same --config as the base's, one address per pod, and pod 0's address to join.
    let args = strings(&container["args"]);
    assert_eq!(args[0], "run");
    assert_eq!(
        flag(&args, "--config"),
        flag(&strings(&base_container["args"]), "--config")
    );
    flags_exist(&args[1..], &["run"]);
    let (advertise, join) = (flag(&args, "--advertise"), flag(&args, "--join"));
    let service = str_at(set, &["spec", "serviceName"]);
    let port = config.runtime.listen.port();
    assert_eq!(
        advertise,
        format!("http://$(POD_NAME).{service}.$(POD_NAMESPACE).svc:{port}"),
        "the pod's stable name under the headless Service, on the API's port"
    );
    let set_name = str_at(set, &["metadata", "name"]);
    let pod = |i: usize, url: &str| {
        url.replace("$(POD_NAME)", &format!("{set_name}-{i}"))
            .replace("$(POD_NAMESPACE)", "default")
    };
    assert_eq!(pod(0, join), pod(0, advertise), "--join names pod 0");
    for i in 0..3 {
        let cluster = runtime::config::ClusterConfig {
            join: vec![pod(i, join)],
            advertise: Some(pod(i, advertise)),
            ..Default::default()
        };
        for url in cluster.join.iter().chain(&cluster.advertise) {
            runtime::config::check_advertise(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        let asked = cluster.members_to_ask();
        if i == 0 {
            assert!(asked.is_empty(), "pod 0 asks no one: {asked:?}");
        } else {
            assert_eq!(asked, [pod(0, join)], "pod {i} asks pod 0");
        }
    }

    // The hook: `cloister cluster init` against this pod's node, with the admin token's
    // directory, waiting for the node, and a cluster already made counted as done.
    let hook = strings(&container["lifecycle"]["postStart"]["exec"]["command"]);
    assert_eq!(
        hook[0],
        strings(&base_container["command"])[0],
        "the image's binary"
    );
    assert_eq!(&hook[1..3], ["cluster", "init"]);
    flags_exist(&hook[3..], &["cluster", "init"]);
    assert_eq!(flag(&hook, "--url"), format!("http://127.0.0.1:{port}"));
    assert!(hook.contains(&"--exists-ok"), "{hook:?}");
    humantime::parse_duration(flag(&hook, "--wait")).expect("a duration");
    let token = base
        .runtime
        .admin_token_file
        .as_ref()
        .expect("the token comes from a file");
    assert_eq!(
        Some(Path::new(flag(&hook, "--data-dir"))),
        token.parent(),
        "the CLI reads DATA_DIR/admin.token"
    );

    // The database's URL: a Secret mounted where the configuration reads it.
    let mounts = container["volumeMounts"].as_sequence().expect("mounts");
    let mount = mounts
        .iter()
        .find(|m| Some(Path::new(str_at(m, &["mountPath"]))) == url_file.parent())
        .unwrap_or_else(|| panic!("nothing mounted at the directory of {}", url_file.display()));
    let volumes = patch["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .expect("volumes");
    let volume = volumes
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the URL's volume");
    assert_eq!(
        str_at(volume, &["secret", "secretName"]),
        "cloister-database-url"
    );
    let mode = volume["secret"]["defaultMode"].as_u64().expect("a mode");
    assert_eq!(mode & 0o027, 0, "others cannot read the URL: {mode:o}");
    let key = url_file
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a file name");
    let readme = std::fs::read_to_string(
        root().join("deploy/kubernetes/overlays/cluster/kustomization.yaml"),
    )
    .expect("kustomization");
    assert!(
        readme.contains(&format!("cloister-database-url --from-literal={key}=")),
        "the kustomization says how to make the Secret with the key {key}"
    );
}

#[test]
fn the_dockerfile_matches_the_binary_and_its_configuration() {
    let config = shipped_config();
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let last_stage = text.rsplit("\nFROM ").next().expect("a stage");
    let stages = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2 && text.contains(" AS build"), "multi-stage");
    let port = config.runtime.listen.port();
    assert!(
        last_stage.contains(&format!("EXPOSE {port}")),
        "EXPOSE {port}"
    );
    assert!(
        last_stage.contains(&format!(
            "VOLUME [\"{}\"]",
            config.runtime.data_dir.display()
        )),
        "the data directory is a volume"
    );
    let healthcheck = last_stage
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .take(2)
        .collect::<String>();
    assert!(
        healthcheck.contains("\"probe\"") && healthcheck.contains(api::probes::LIVEZ),
        "{healthcheck}"
    );
    let entrypoint = last_stage
        .lines()
        .find(|l| l.starts_with("ENTRYPOINT"))
        .expect("ENTRYPOINT");
    assert!(entrypoint.contains("\"run\""), "{entrypoint}");
    let user = last_stage
        .lines()
        .find(|l| l.starts_with("USER "))
        .expect("USER");
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    assert!(
        last_stage.contains("ca-certificates.crt"),
        "the CA certificates"
    );
}

/// `cloister probe` (the image's health check) against the real binary: 0 for `/livez`, 1 for a
/// path that is not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_command_checks_a_running_runtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_support::server::write_config(dir.path());
    let server = test_support::server::Server::start(BIN, &config).await;
    let probe = |path: &str| {
        test_support::server::command(BIN)
            .args(["probe", path, "--url", &server.base])
            .output()
            .expect("cloister probe")
    };
    let ok = probe(api::probes::LIVEZ);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let missing = probe("/no-such-path");
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    drop(server);
}

/// `runtime.admin_token_file` (the mounted secret) that others can read is refused at start, and
/// one readable by its owner and group (a secret with `fsGroup`) is taken.
#[test]
fn a_token_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "deploy-test-admin-token-0123456789\n").expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let config = dir.path().join("cloister.toml");
    std::fs::write(
        &config,
        format!(
            "[runtime]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nadmin_token_file = \"{}\"\n",
            dir.path().join("data").display(),
            token.display()
        ),
    )
    .expect("config");
    let out = test_support::server::command(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("cloister run");
    assert_eq!(out.status.code(), Some(1));
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(message.contains("can be read by others"), "{message}");
    assert!(!message.contains("deploy-test-admin-token"), "{message}");
}
