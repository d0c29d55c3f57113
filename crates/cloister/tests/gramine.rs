//! `cloister gramine manifest`: the template is TOML, sized from the configuration's budget,
//! attests by DCAP with the configuration's identity, passes in only the documented variables, and
//! covers every file the binary opens at start (traced with strace). Where `gramine-manifest` is
//! installed the template is rendered too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use test_support::server::{self, Server};

const BIN: &str = env!("CARGO_BIN_EXE_cloister");
/// What the test renders `{{ arch_libdir }}` as, like Gramine on Debian and Ubuntu.
const ARCH_LIBDIR: &str = "/lib/x86_64-linux-gnu";
/// glibc's libraries, which Gramine brings itself (`{{ gramine.runtimedir() }}`).
const GLIBC: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "ld-linux-x86-64.so.2",
];

fn manifest_with(args: &[&str]) -> Output {
    server::command(BIN)
        .args(["gramine", "manifest"])
        .args(args)
        .output()
        .expect("run cloister gramine manifest")
}

fn manifest(config: &Path, extra: &[&str]) -> (String, toml::Table) {
    let out = manifest_with(&[&["--config", config.to_str().expect("utf-8")], extra].concat());
    assert!(
        out.status.success(),
        "cloister gramine manifest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let table = text
        .parse::<toml::Table>()
        .unwrap_or_else(|e| panic!("the template is not TOML: {e}\n{text}"));
    (text, table)
}

fn at<'a>(table: &'a toml::Table, path: &str) -> &'a toml::Value {
    let mut parts = path.split('.');
    let first = parts.next().expect("a key");
    let mut value = table
        .get(first)
        .unwrap_or_else(|| panic!("no {path} in the manifest"));
    for part in parts {
        value = value
            .get(part)
            .unwrap_or_else(|| panic!("no {path} in the manifest"));
    }
    value
}

fn mib(size: &str) -> u64 {
    let (n, unit) = size.split_at(size.len() - 1);
    let n: u64 = n.parse().expect("a size");
    match unit {
        "G" => n * 1024,
        "M" => n,
        _ => panic!("unexpected size {size}"),
    }
}

fn write_config(dir: &Path, enclave: &str) -> PathBuf {
    let token = dir.join("admin.token.secret");
    std::fs::write(&token, "gramine-test-admin-token-0123456789\n").expect("token");
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let config = dir.join("cloister.toml");
    std::fs::write(
        &config,
        format!(
            "[runtime]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nadmin_token_file = \"{}\"\n\n[enclave]\n{enclave}\n",
            dir.join("data").display(),
            token.display()
        ),
    )
    .expect("config");
    config
}

/// The check: `examples/demo.toml` gives valid TOML whose size and threads cover the
/// budget; changing `memory_mib` changes the size.
#[test]
fn the_manifest_is_toml_sized_from_the_budget_and_attests_by_dcap() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo.toml");
    let (_, m) = manifest(&demo, &[]);
    let size = mib(at(&m, "sgx.enclave_size").as_str().expect("a string"));
    assert!(size.is_power_of_two() && size >= 2048, "{size} MiB");
    let threads = at(&m, "sgx.max_threads").as_integer().expect("an integer");
    assert!(threads >= 32, "{threads}");
    assert_eq!(at(&m, "sgx.remote_attestation").as_str(), Some("dcap"));
    assert_eq!(at(&m, "sgx.debug").as_bool(), Some(false));
    let argv: Vec<&str> = at(&m, "loader.argv")
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        argv.windows(2).any(|w| w == ["--platform", "gramine"]),
        "the platform is passed in: {argv:?}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let small = write_config(
        dir.path(),
        "memory_mib = 1024\nthreads = 20\nproduct_id = 7\nsecurity_version = 3",
    );
    let (_, small) = manifest(&small, &["--debug"]);
    let large = write_config(dir.path(), "memory_mib = 8000\nthreads = 100");
    let (_, large) = manifest(&large, &[]);
    let size_of = |m: &toml::Table| mib(at(m, "sgx.enclave_size").as_str().expect("a string"));
    let threads_of = |m: &toml::Table| at(m, "sgx.max_threads").as_integer().expect("integer");
    assert!(size_of(&small) >= 1024 && size_of(&small).is_power_of_two());
    assert!(size_of(&large) >= 8000 && size_of(&large).is_power_of_two());
    assert!(
        size_of(&large) > size_of(&small),
        "the size follows memory_mib"
    );
    assert!(threads_of(&small) >= 20 && threads_of(&large) >= 100);
    assert!(threads_of(&large) > threads_of(&small), "threads follow");
    assert_eq!(at(&small, "sgx.isvprodid").as_integer(), Some(7));
    assert_eq!(at(&small, "sgx.isvsvn").as_integer(), Some(3));
    assert_eq!(at(&small, "sgx.debug").as_bool(), Some(true), "--debug");
    assert_eq!(at(&large, "sgx.isvprodid").as_integer(), Some(1));
}

/// The admin token's variable is refused with a pointer at the token file; a variable Cloister
/// does not read is refused; the log's variables are passed through.
#[test]
fn only_the_documented_log_variables_are_passed_in() {
    let refused = manifest_with(&["--env", "CLOISTER_ADMIN_TOKEN"]);
    assert_eq!(refused.status.code(), Some(1));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("CLOISTER_ADMIN_TOKEN") && message.contains("admin_token_file"),
        "{message}"
    );
    let unknown = manifest_with(&["--env", "LD_PRELOAD"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not a variable Cloister reads"));
    let measured = manifest_with(&["--env", "CLOISTER_CONFIG"]);
    assert_eq!(measured.status.code(), Some(1));

    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let (text, m) = manifest(&config, &["--env", "CLOISTER_LOG_FORMAT"]);
    let env = at(&m, "loader.env").as_table().expect("a table");
    let passed: Vec<&String> = env
        .iter()
        .filter(|(_, v)| v.get("passthrough").and_then(|p| p.as_bool()) == Some(true))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(passed, ["CLOISTER_LOG_FORMAT"], "{text}");
    assert!(!text.contains("insecure__"), "no insecure option: {text}");
}

/// An `sgx.trusted_files` or `sgx.allowed_files` entry as a rule over host paths, with the
/// template's variables as this test renders them.
fn rules(m: &toml::Table, key: &str) -> Vec<String> {
    at(m, key)
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| {
            v.as_str()
                .expect("a string")
                .strip_prefix("file:")
                .expect("a file: URI")
                .replace("{{ arch_libdir }}", ARCH_LIBDIR)
        })
        .collect()
}

fn covered_by(rules: &[String], path: &Path) -> bool {
    let path = path.to_string_lossy();
    rules.iter().any(|r| {
        if r.ends_with('/') {
            path.starts_with(r.as_str())
        } else {
            path == r.as_str()
        }
    })
}

/// Every file opened successfully by `pid`'s process tree in an strace log, with relative paths
/// made absolute against `cwd`.
fn opened(log: &str, cwd: &Path) -> BTreeSet<PathBuf> {
    let mut files = BTreeSet::new();
    for line in log.lines() {
        if !(line.contains("open(") || line.contains("openat(")) {
            continue;
        }
        let Some(result) = line.rsplit(" = ").next() else {
            continue;
        };
        if result.trim_start().starts_with('-') {
            continue;
        }
        let Some(path) = line.split('"').nth(1) else {
            continue;
        };
        files.insert(cwd.join(path));
    }
    files
}

/// The process strace traces, killed (SIGKILL) when dropped unless forgotten once it has exited.
/// Killing strace does not kill its tracee, and a SIGTERM that the tracee has not yet taken when
/// its tracer dies is lost: without this, a failed or hurried test leaves a running
/// `cloister run` behind.
struct Tracee(String);

impl Tracee {
    fn signal(&self, name: &str) {
        // The shell's builtin, so the test needs no procps.
        let status = Command::new("sh")
            .args(["-c", &format!("kill -{name} {}", self.0)])
            .status()
            .expect("sh");
        assert!(status.success(), "kill -{name} {}", self.0);
    }
}

impl Drop for Tracee {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .args(["-c", &format!("kill -KILL {} 2>/dev/null", self.0)])
            .status();
    }
}

/// Starts the real binary (simulation platform: there is no SGX here) under strace with the
/// environment the manifest sets, waits until it is ready, stops it, and checks every file it
/// opened against the manifest: trusted, allowed, in the data directory, or in Gramine's own
/// pseudo-filesystems.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_opened_at_start_is_covered_by_the_manifest() {
    if Command::new("strace").arg("-V").output().is_err() {
        panic!("strace is not installed: scripts/test installs it (apt-get install strace)");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let (text, m) = manifest(&config, &[]);
    let trusted = rules(&m, "sgx.trusted_files");
    let allowed = rules(&m, "sgx.allowed_files");
    let data = std::fs::canonicalize(dir.path())
        .expect("canonical")
        .join("data");

    let log = dir.path().join("strace.log");
    // The traced binary's output goes to a file, never to the test's: should it outlive the
    // test, it must not hold the test command's output open.
    let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr log");
    let mut command = Command::new("strace");
    command
        .args(["-f", "-qq", "-e", "trace=open,openat", "-o"])
        .arg(&log)
        .arg(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .env("CLOISTER_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(stderr);
    for var in [
        "CLOISTER_DATA_DIR",
        "CLOISTER_LISTEN",
        "CLOISTER_CONFIG",
        "CLOISTER_ADMIN_TOKEN",
    ] {
        command.env_remove(var);
    }
    // The fixed values the manifest gives the enclave's environment.
    for (name, value) in at(&m, "loader.env").as_table().expect("a table") {
        if let Some(value) = value.as_str()
            && name != "LD_LIBRARY_PATH"
        {
            command.env(name, value);
        }
    }
    let child = command.spawn().expect("spawn strace");
    let server = Server::attach(child, "gramine-test-admin-token-0123456789");
    server.wait_ready(0).await;
    let traced = std::fs::read_to_string(&log).expect("strace log");
    let tracee = Tracee(
        traced
            .split_whitespace()
            .next()
            .expect("the traced process's id")
            .to_owned(),
    );
    tracee.signal("TERM");
    // strace exits with its tracee's status once the tracee has exited.
    let stopped = tokio::time::timeout(
        server::WAIT,
        tokio::task::spawn_blocking(move || server.wait()),
    )
    .await;
    let status = match stopped {
        Ok(status) => status.expect("wait for strace"),
        Err(_) => panic!(
            "the traced binary did not stop within {:?} of SIGTERM",
            server::WAIT
        ),
    };
    assert!(
        status.success(),
        "the traced binary stopped with {status} after SIGTERM: {}",
        std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
    );
    std::mem::forget(tracee);
    let traced = std::fs::read_to_string(&log).expect("strace log");

    let binary = std::fs::canonicalize(BIN).expect("binary");
    let mut uncovered = Vec::new();
    for file in opened(&traced, dir.path()) {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        let ok = covered_by(&trusted, &file)
            || covered_by(&allowed, &file)
            || file.starts_with(&data)
            || file.starts_with(dir.path().join("data"))
            // Gramine's pseudo-filesystems.
            || ["/proc", "/sys", "/dev"].iter().any(|p| file.starts_with(p))
            // The dynamic loader's cache: inside, Gramine's loader finds glibc through
            // LD_LIBRARY_PATH (its runtime directory), which the manifest trusts whole.
            || file == Path::new("/etc/ld.so.cache")
            || (file.starts_with(ARCH_LIBDIR) && name.as_deref().is_some_and(|n| GLIBC.contains(&n)))
            // The simulation reads its own binary to measure it; the binary is trusted.
            || std::fs::canonicalize(&file).is_ok_and(|f| f == binary);
        if !ok {
            uncovered.push(file);
        }
    }
    assert!(
        uncovered.is_empty(),
        "opened at start but not covered by the manifest: {uncovered:#?}\n{text}"
    );
    // The traced run did open what the manifest names for it (so the trace is not empty).
    let files = opened(&traced, dir.path());
    assert!(files.contains(&config), "the configuration was read");
    assert!(
        files.iter().any(|f| f.ends_with("ca-certificates.crt")),
        "the oracle's CA bundle was read"
    );
    assert!(files.iter().any(|f| f.ends_with("admin.token.secret")));

    match Command::new("gramine-manifest").arg("--help").output() {
        Ok(_) => {
            let template = dir.path().join("cloister.manifest.template");
            std::fs::write(&template, &text).expect("template");
            let rendered = dir.path().join("cloister.manifest");
            let out = Command::new("gramine-manifest")
                .arg(format!("-Darch_libdir={ARCH_LIBDIR}"))
                .arg(&template)
                .arg(&rendered)
                .output()
                .expect("gramine-manifest");
            assert!(
                out.status.success(),
                "gramine-manifest refused the template: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let rendered = std::fs::read_to_string(&rendered).expect("rendered");
            rendered
                .parse::<toml::Table>()
                .expect("the rendered manifest is TOML");
        }
        Err(_) => eprintln!(
            "gramine-manifest is not installed: the template was not rendered; our own rules were checked"
        ),
    }
}
