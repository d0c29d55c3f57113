//! The binary as a newcomer meets it on the command line: what it writes when its output is not a
//! terminal, and what the client commands say they did.

mod support;

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
    let server = support::Server::start(&config).await;
    let stop = |name: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_cloister"))
            .args([
                "stop",
                name,
                "--url",
                &server.base,
                "--token",
                support::TOKEN,
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
