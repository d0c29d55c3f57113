//! The binary as a newcomer meets it on the command line: what it writes when its output is not a
//! terminal, and what the client commands say they did.

const BIN: &str = env!("CARGO_BIN_EXE_cloister");

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Starts `cloister run` on a data directory whose journal ends in a torn entry, so the binary
/// logs a warning before it prints its banner; stops it once the banner is out and answers
/// everything it wrote to stderr (a pipe, not a terminal).
fn log_of_a_start(dir: &Path, no_color: Option<&str>) -> String {
    let data = dir.join("data");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&data)
        .expect("data dir");
    std::fs::write(data.join("journal.log"), b"{\"seq\":1,\"torn").expect("torn journal");
    let config = dir.join("cloister.toml");
    std::fs::write(
        &config,
        format!(
            "[runtime]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            data.display()
        ),
    )
    .expect("config");
    let mut command = Command::new(env!("CARGO_BIN_EXE_cloister"));
    command
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("CLOISTER_DATA_DIR")
        .env_remove("CLOISTER_LISTEN")
        .env_remove("NO_COLOR")
        .env("CLOISTER_ADMIN_TOKEN", "cli-test-admin-token-0123456789ab")
        .env("CLOISTER_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(v) = no_color {
        command.env("NO_COLOR", v);
    }
    let mut child = command.spawn().expect("spawn cloister run");
    let mut banner = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut banner)
        .expect("banner");
    assert!(banner.contains("listening on"), "{banner:?}");
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    let mut log = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut log)
        .expect("stderr is text");
    log
}

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    for no_color in [None, Some("1")] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = log_of_a_start(dir.path(), no_color);
        assert!(log.contains("torn"), "the warning is logged: {log:?}");
        assert!(
            !log.contains('\u{1b}'),
            "an ANSI escape in the log (NO_COLOR={no_color:?}): {log:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_names_the_dependents_it_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("cloister.toml");
    std::fs::write(
        &config,
        format!(
            "[runtime]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n\
             [testing.services.vault]\nkind = \"core\"\n\n\
             [testing.services.ledger]\nkind = \"core\"\ndepends_on = [\"vault\"]\n\n\
             [testing.services.feed]\nkind = \"optional\"\ndepends_on = [\"ledger\"]\n",
            dir.path().join("data").display()
        ),
    )
    .expect("config");
    let server = test_support::server::Server::start(BIN, &config).await;
    let stop = |name: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_cloister"))
            .args([
                "stop",
                name,
                "--url",
                &server.base,
                "--token",
                test_support::server::TOKEN,
            ])
            .output()
            .expect("cloister stop");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).expect("stdout is text")
    };
    let said = stop("ledger");
    assert!(
        said.starts_with("ledger: stopping after 1 dependent: feed (state"),
        "{said:?}"
    );
    // A service nothing depends on stops alone, and says only that.
    let said = stop("vault");
    assert!(said.starts_with("vault: stopping (state"), "{said:?}");
    drop(server);
}

/// A storage rollback refusal is said where the operator looks first: once in the `cloister run`
/// log, with the exact command that accepts it; storage goes to `failed` without restarts;
/// `cloister status` stays readable (no line over 120 columns) and `cloister status storage`
/// shows the whole reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_rollback_refusal_is_said_once_with_the_command_to_accept_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_support::server::write_config(dir.path());
    let db = dir.path().join("data").join("storage.redb");

    let server = test_support::server::Server::start(BIN, &config).await;
    assert_eq!(
        server
            .put("k", b"old".to_vec())
            .await
            .expect("put")
            .status(),
        200
    );
    assert!(server.terminate().success());
    let old_copy = std::fs::read(&db).expect("storage.redb");
    let server = test_support::server::Server::start(BIN, &config).await;
    // The newer state, and as many commits again as the freshness counter carries (within its
    // reach, the commits the older copy lacks would be applied from it at start).
    for i in 0..=enclave::LOG_SLOTS {
        let value = format!("new {i}").into_bytes();
        assert_eq!(server.put("k", value).await.expect("put").status(), 200);
    }
    assert!(server.terminate().success());
    // The host swaps the older copy back in.
    std::fs::write(&db, &old_copy).expect("swap");

    let mut child = Command::new(env!("CARGO_BIN_EXE_cloister"))
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("CLOISTER_DATA_DIR")
        .env_remove("CLOISTER_LISTEN")
        .env("CLOISTER_ADMIN_TOKEN", test_support::server::TOKEN)
        .env("CLOISTER_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cloister run");
    let mut stderr = child.stderr.take().expect("stderr");
    let server = test_support::server::Server::attach(child, test_support::server::TOKEN);
    let base = server.base.clone();
    let failed = server
        .wait_event(0, |e| {
            e["service"] == "storage" && e["event"]["kind"] == "failed"
        })
        .await;

    let cli = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_cloister"))
            .args(args)
            .args(["--url", &base, "--token", test_support::server::TOKEN])
            .output()
            .expect("cloister");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).expect("stdout is text")
    };
    let one = cli(&["status", "storage"]);
    assert!(one.contains("state:    failed"), "{one}");
    assert!(one.contains("restarts: 0"), "{one}");
    let reason = failed["event"]["reason"].as_str().expect("reason");
    assert!(one.contains(reason), "the whole reason {reason:?} in {one}");
    let seq: String = reason
        .split("--accept-storage-rollback ")
        .nth(1)
        .expect("the command to accept, in the reason")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let command = format!("cloister run --accept-storage-rollback {seq}");
    let table = cli(&["status"]);
    for line in table.lines() {
        assert!(
            line.chars().count() <= 120,
            "a line over 120 columns: {line:?}"
        );
    }
    assert!(table.contains("failed"), "{table}");
    let wide = cli(&["status", "--wide"]);
    assert!(wide.contains(&command), "{wide}");

    server.kill_9();
    let mut log = String::new();
    stderr.read_to_string(&mut log).expect("stderr is text");
    assert_eq!(log.matches(&command).count(), 1, "said once: {log}");
}

/// `config apply` says that what it applied lasts until a restart, and it does: after a restart
/// the history starts again at one `startup` version, from the file given to `--config`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_version_is_said_to_last_until_restart_and_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = test_support::server::write_config(dir.path());
    let server = test_support::server::Server::start(BIN, &config).await;
    let cli = |base: &str, args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_cloister"))
            .args(args)
            .args(["--url", base, "--token", test_support::server::TOKEN])
            .output()
            .expect("cloister");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).expect("stdout is text")
    };
    let original = std::fs::read_to_string(&config).expect("config");
    let changed = dir.path().join("changed.toml");
    std::fs::write(
        &changed,
        format!("{original}\n[services.computation.breaker]\nconsecutive_failures = 7\n"),
    )
    .expect("changed config");
    let said = cli(
        &server.base,
        &["config", "apply", changed.to_str().expect("utf-8")],
    );
    assert!(said.starts_with("applied as version 2"), "{said}");
    assert!(said.contains("lasts until the runtime restarts"), "{said}");
    assert!(said.contains("cloister run --config"), "{said}");
    let (_, history) = server
        .json(reqwest::Method::GET, "/v1/config/history", None)
        .await;
    assert_eq!(
        history["versions"].as_array().map(Vec::len),
        Some(2),
        "{history}"
    );
    assert!(server.terminate().success());

    let server = test_support::server::Server::start(BIN, &config).await;
    let (_, history) = server
        .json(reqwest::Method::GET, "/v1/config/history", None)
        .await;
    let versions = history["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 1, "only the startup version: {history}");
    assert_eq!(versions[0]["source"], "startup", "{history}");
    drop(server);
}

/// Values with a grammar are checked when the file is parsed: `cloister config validate` refuses
/// a host pattern the oracle could never use, with its path, before anything runs.
#[test]
fn config_validate_refuses_bad_host_patterns_with_their_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cloister.toml");
    std::fs::write(
        &file,
        "[services.oracle]\nallowed_hosts = [\"api.example.com\", \"bad pattern!\", \"*.*\"]\n\
         plain_http_hosts = [\"127.0.0.1:80x\"]\n",
    )
    .expect("config");
    let output = Command::new(env!("CARGO_BIN_EXE_cloister"))
        .args(["config", "validate"])
        .arg(&file)
        .output()
        .expect("cloister config validate");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(1), "{said}");
    for path in [
        "services.oracle.allowed_hosts[1]",
        "services.oracle.allowed_hosts[2]",
        "services.oracle.plain_http_hosts[0]",
    ] {
        assert!(said.contains(path), "{path} in: {said}");
    }
    assert!(
        !said.contains("allowed_hosts[0]"),
        "a good pattern passes: {said}"
    );
}
