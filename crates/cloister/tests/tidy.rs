//! Architecture invariants checked mechanically over the source tree.

use std::path::{Path, PathBuf};

#[path = "tidy/rules.rs"]
mod rules;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The folder under `crates/` of the package a manifest names `dependency` (a crate may be
/// published under a longer name than its folder: `crates/sdk` is `cloister-sdk`).
fn folder_of(dependency: &str) -> Option<String> {
    std::fs::read_dir(workspace().join("crates"))
        .expect("crates")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .find(|folder| {
            section(folder, "package")
                .get("name")
                .and_then(toml::Value::as_str)
                == Some(dependency)
        })
}

/// Our crates (by folder) in one dependency table of a crate's manifest.
fn our_dependencies(krate: &str, table: &str) -> Vec<String> {
    section(krate, table)
        .keys()
        .filter_map(|key| folder_of(key))
        .collect()
}

fn dependencies(krate: &str) -> toml::Table {
    section(krate, "dependencies")
}

/// One dependency table of a crate's manifest (empty when absent).
fn section(krate: &str, table: &str) -> toml::Table {
    let text = std::fs::read_to_string(workspace().join("crates").join(krate).join("Cargo.toml"))
        .expect("manifest");
    let manifest: toml::Table = text.parse().expect("toml");
    manifest
        .get(table)
        .and_then(|d| d.as_table())
        .cloned()
        .unwrap_or_default()
}

/// The workspace's own crates.
const CRATES: [&str; 15] = [
    "runtime",
    "enclave",
    "wire",
    "sdk",
    "crypto",
    "storage",
    "account",
    "computation",
    "oracle",
    "ai",
    "cluster",
    "stack",
    "api",
    "cloister",
    "test-support",
];

/// Which of our crates each crate may depend on, as ARCHITECTURE.md draws them ("Code map" and the
/// first invariant): `runtime` knows no service, no HTTP and no SGX; `enclave` is the platform seam
/// and needs nothing of ours; a service crate depends on `runtime`, on `enclave` where it needs the
/// platform (crypto seals, storage keeps freshness counters, the oracle quotes its key), and on the
/// services it calls; `api` on the services whose endpoints it serves, the runtime it commands and
/// the platform it attests; `stack`, which wires the six services together, on them and what they
/// are built on; the binary on `stack` for its services (it wires none itself), on `api`, and on
/// the few service types its client commands read (account scopes, oracle reports). Tests may use
/// more (dev-dependencies), and `test-support`, which only tests use, may use every crate but the
/// binary. `wire`, the types the API puts on the wire, builds on the runtime's and the platform's
/// own; the oracle's report and the computation's run types live there (their services re-export
/// them). `sdk`, the typed client, builds on `wire` and the types it re-exports, never on a service
/// or the API (it is light on purpose); the binary's client commands go through it.
const ALLOWED: [(&str, &[&str]); 15] = [
    ("runtime", &[]),
    ("enclave", &[]),
    ("wire", &["runtime", "enclave"]),
    ("sdk", &["runtime", "enclave", "wire"]),
    ("crypto", &["runtime", "enclave", "wire"]),
    ("storage", &["runtime", "enclave", "crypto"]),
    ("account", &["runtime", "crypto", "storage"]),
    ("computation", &["runtime", "crypto", "storage", "wire"]),
    (
        "oracle",
        &["runtime", "enclave", "crypto", "computation", "wire"],
    ),
    ("ai", &["runtime", "storage", "wire"]),
    (
        "cluster",
        &["runtime", "enclave", "crypto", "storage", "wire"],
    ),
    (
        "api",
        &[
            "runtime",
            "enclave",
            "crypto",
            "storage",
            "account",
            "computation",
            "oracle",
            "ai",
            "cluster",
            "wire",
        ],
    ),
    (
        "stack",
        &[
            "runtime",
            "enclave",
            "crypto",
            "storage",
            "account",
            "computation",
            "oracle",
            "ai",
        ],
    ),
    (
        "cloister",
        &[
            "runtime", "enclave", "account", "oracle", "cluster", "stack", "api", "sdk",
        ],
    ),
    (
        "test-support",
        &[
            "runtime",
            "enclave",
            "crypto",
            "storage",
            "account",
            "computation",
            "oracle",
            "ai",
            "cluster",
            "stack",
            "api",
        ],
    ),
];

/// Crates only tests use: they may start servers and clients (fakes, loopback sources, the binary
/// driven over HTTP), because nothing that ships links them.
const TEST_ONLY: [&str; 1] = ["test-support"];

/// What only tests use stays out of what ships: no crate lists a test-only crate under
/// `[dependencies]` or `[build-dependencies]`, and a test-only crate is not published.
#[test]
fn test_only_crates_are_dev_dependencies_only() {
    for krate in CRATES {
        for table in ["dependencies", "build-dependencies"] {
            for only in TEST_ONLY {
                assert!(
                    !section(krate, table).contains_key(only),
                    "crates/{krate} lists {only} under [{table}]: it is for [dev-dependencies] only"
                );
            }
        }
    }
    for only in TEST_ONLY {
        let package = section(only, "package");
        assert_eq!(
            package.get("publish").and_then(toml::Value::as_bool),
            Some(false),
            "crates/{only} says `publish = false`"
        );
    }
}

/// Every crate depends on no more of ours than the architecture allows it.
#[test]
fn each_crate_depends_only_on_the_crates_the_architecture_allows() {
    let mut found: Vec<String> = std::fs::read_dir(workspace().join("crates"))
        .expect("crates")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut known = CRATES.map(str::to_owned).to_vec();
    known.sort();
    assert_eq!(
        found, known,
        "crates/ changed: give each crate its row in ALLOWED, as ARCHITECTURE.md draws it"
    );
    let mut offending = Vec::new();
    for (krate, allowed) in ALLOWED {
        for table in ["dependencies", "build-dependencies"] {
            for dependency in our_dependencies(krate, table) {
                if CRATES.contains(&dependency.as_str()) && !allowed.contains(&dependency.as_str())
                {
                    offending.push(format!("{krate} -> {dependency} ([{table}])"));
                }
            }
        }
    }
    assert!(
        offending.is_empty(),
        "dependencies ARCHITECTURE.md does not allow: {offending:?}"
    );
}

#[test]
fn runtime_knows_no_http_and_no_service() {
    let deps = dependencies("runtime");
    let http = [
        "axum",
        "hyper",
        "hyper-util",
        "tower",
        "tower-http",
        "reqwest",
    ];
    for forbidden in http
        .iter()
        .chain(CRATES.iter().filter(|c| **c != "runtime"))
    {
        assert!(
            !deps.contains_key(*forbidden),
            "crates/runtime must not depend on {forbidden}"
        );
    }
}

#[test]
fn only_api_and_the_binary_know_http_servers() {
    for entry in std::fs::read_dir(workspace().join("crates")).expect("crates") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name == "api" || TEST_ONLY.contains(&name.as_str()) {
            continue;
        }
        let deps = dependencies(&name);
        assert!(
            !deps.contains_key("axum"),
            "crates/{name} must not depend on axum: only api knows HTTP"
        );
    }
}

#[test]
fn every_module_starts_with_a_doc_line() {
    let mut files = Vec::new();
    rust_files(&workspace().join("crates"), &mut files);
    assert!(files.len() > 20);
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        let first = text
            .lines()
            .find(|l| !l.trim().is_empty() && !l.starts_with("#!"))
            .unwrap_or("");
        assert!(
            first.starts_with("//!"),
            "{} does not start with a //! line saying what it is",
            file.display()
        );
    }
}

/// The demo configuration is valid for this binary's catalog (its oracle and ai tables included).
#[test]
fn the_example_configuration_is_valid() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cloister"))
        .args(["config", "validate"])
        .arg(workspace().join("examples/demo.toml"))
        .output()
        .expect("cloister runs");
    assert!(
        out.status.success(),
        "examples/demo.toml: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The features the workspace gives `dependency` (`[workspace.dependencies]`).
fn workspace_features(dependency: &str) -> Vec<String> {
    let text = std::fs::read_to_string(workspace().join("Cargo.toml")).expect("manifest");
    let manifest: toml::Table = text.parse().expect("toml");
    manifest["workspace"]["dependencies"]
        .get(dependency)
        .and_then(|d| d.get("features"))
        .and_then(|f| f.as_array())
        .map(|f| {
            f.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The oracle is the only service that may open network connections: its crate is the only one
/// with an HTTP client (the SDK has one too, and the binary through it, for its client commands;
/// neither hosts service code, and ALLOWED keeps every service crate off the SDK). The API, the only
/// crate that serves HTTP, builds its server on hyper: with its server features only, never its client.
#[test]
fn only_the_oracle_has_an_http_client() {
    for hyper in ["hyper", "hyper-util"] {
        let features = workspace_features(hyper);
        assert!(
            features.iter().all(|f| !f.starts_with("client")),
            "{hyper} is built with a client feature: {features:?}"
        );
        let deps = dependencies("api");
        let own = deps
            .get(hyper)
            .and_then(|d| d.get("features"))
            .and_then(|f| f.as_array())
            .map(Vec::len)
            .unwrap_or(0);
        assert_eq!(own, 0, "crates/api adds features to {hyper}");
    }
    for entry in std::fs::read_dir(workspace().join("crates")).expect("crates") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if ["oracle", "sdk", "cloister"].contains(&name.as_str())
            || TEST_ONLY.contains(&name.as_str())
        {
            continue;
        }
        let deps = dependencies(&name);
        for client in [
            "reqwest",
            "hyper",
            "hyper-util",
            "ureq",
            "isahc",
            "surf",
            "attohttpc",
        ] {
            // The API's server, checked above for its features.
            if name == "api" && client.starts_with("hyper") {
                continue;
            }
            assert!(
                !deps.contains_key(client),
                "crates/{name} must not depend on {client}: only the oracle reaches the network"
            );
        }
    }
}

/// `docs/testing.md` lists each promise beside the test that guards it; a renamed or deleted test
/// must not leave the page pointing at nothing. Every `` `crate/path.rs::name` `` (and every
/// `` `::name` `` after it, in the same file) names a file that exists and a `fn name` in it.
#[test]
fn the_testing_page_names_only_tests_that_exist() {
    let page =
        std::fs::read_to_string(workspace().join("docs/testing.md")).expect("docs/testing.md");
    let mut file: Option<(String, String)> = None;
    let mut missing = Vec::new();
    let mut checked = 0;
    for span in page.split('`').skip(1).step_by(2) {
        let (path, name) = match span.split_once("::") {
            Some(("", name)) => match &file {
                Some((path, _)) => (path.clone(), name),
                None => {
                    missing.push(format!("`{span}` follows no file"));
                    continue;
                }
            },
            Some((path, name)) => (path.to_owned(), name),
            None => (span.to_owned(), ""),
        };
        if !path.ends_with(".rs") || path.contains(' ') {
            continue;
        }
        let source = match &file {
            Some((p, text)) if *p == path => text.clone(),
            _ => match std::fs::read_to_string(workspace().join("crates").join(&path)) {
                Ok(text) => text,
                Err(e) => {
                    missing.push(format!("crates/{path}: {e}"));
                    continue;
                }
            },
        };
        file = Some((path.clone(), source.clone()));
        if let Some(test) = name.rsplit("::").next().filter(|n| !n.is_empty()) {
            checked += 1;
            if !source.contains(&format!("fn {test}(")) {
                missing.push(format!("crates/{path} has no `fn {test}`"));
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} tests named: is the page read right?"
    );
    assert!(missing.is_empty(), "docs/testing.md: {missing:#?}");
}
