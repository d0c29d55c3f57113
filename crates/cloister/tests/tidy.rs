//! Architecture invariants checked mechanically over the source tree.

use std::path::{Path, PathBuf};

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

fn dependencies(krate: &str) -> toml::Table {
    let text = std::fs::read_to_string(workspace().join("crates").join(krate).join("Cargo.toml"))
        .expect("manifest");
    let manifest: toml::Table = text.parse().expect("toml");
    manifest
        .get("dependencies")
        .and_then(|d| d.as_table())
        .cloned()
        .unwrap_or_default()
}

#[test]
fn runtime_knows_no_http_and_no_service() {
    let deps = dependencies("runtime");
    for forbidden in [
        "axum",
        "hyper",
        "tower",
        "tower-http",
        "reqwest",
        "api",
        "cloister",
    ] {
        assert!(
            !deps.contains_key(forbidden),
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
        if name == "api" {
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

/// The oracle is the only service that may open network connections: its crate is the only one
/// with an HTTP client (the binary has one too, for its client commands, but hosts no service code).
#[test]
fn only_the_oracle_has_an_http_client() {
    for entry in std::fs::read_dir(workspace().join("crates")).expect("crates") {
        let name = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name == "oracle" || name == "cloister" {
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
            assert!(
                !deps.contains_key(client),
                "crates/{name} must not depend on {client}: only the oracle reaches the network"
            );
        }
    }
}
