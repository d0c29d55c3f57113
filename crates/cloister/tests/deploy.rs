//! The Dockerfile and the Kubernetes manifests (`deploy/kubernetes/`) against the binary's own
//! defaults and the configuration they ship: ports, probe paths, the data directory, the token
//! file, the scrape annotations and the SGX resources, so the two cannot drift apart.

use std::path::{Path, PathBuf};

use runtime::config::Config;
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
    let text = std::fs::read_to_string(root().join("deploy/kubernetes/base/cloister.toml"))
        .expect("the shipped configuration");
    Config::parse(&text, &stack::catalog())
        .unwrap_or_else(|e| panic!("the shipped configuration is invalid: {e}"))
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
