//! The API document as strict as the server, checked by an independent schema-based fuzzer:
//! schemathesis (PyPI) reads `/v1/openapi.json` from the real binary, sends requests the document
//! allows and requests it refuses, and checks every answer with all of its checks (no server
//! error; every status, header and body as documented; what the document allows is accepted and
//! what it refuses is refused). It runs once with the admin token and once with an account's
//! token, with a fixed seed, and must find nothing.
//!
//! Left out: the operator actions that stop services or change the configuration (restart, stop,
//! start, `PUT /v1/config`, rollback), which would change the runtime under the rest of the run;
//! their own tests are in `crates/api/tests/http/orchestration.rs` and `config.rs`. And
//! `POST /v1/cluster/init`, which on this single node (redb storage) answers its documented 501
//! `cluster.unsupported`, a 5xx the fuzzer counts as a server error, and which on PostgreSQL makes
//! the cluster once; it is tested in `tests/cluster.rs`.
//!
//! Two statuses are read as the API defines them rather than as schemathesis assumes: 422 answers a
//! request the document allows but that cannot be processed as it stands (a key of another kind, a
//! file that is not a model, a dataset whose rows do not fit together, a JSONPath that does not
//! parse), so it does not count as refusing a valid request; 413 refuses a body over a limit, so
//! it counts as refusing an invalid one. docs/api.md says both.

use std::path::Path;
use std::process::Command;

use reqwest::Method;
use serde_json::json;
use test_support::server::{Server, write_config};

const BIN: &str = env!("CARGO_BIN_EXE_cloister");

/// The operations left out (see the module's documentation), by operation id.
const LEFT_OUT: &[&str] = &[
    "orchestration_restart",
    "orchestration_stop",
    "orchestration_start",
    "config_apply",
    "config_rollback",
    "cluster_init",
];

/// Test cases per operation and phase, and the seed: a run takes about a minute here.
const MAX_EXAMPLES: &str = "10";
const SEED: &str = "20261206";

/// The checks' statuses where the API's reading differs from schemathesis's defaults (its
/// defaults, plus 422 for a valid request and 413 for an invalid one). An event stream does not
/// end: it is read for its first events, or until the request's timeout.
const SETTINGS: &str = r#"
max-stream-events = 3

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
"#;

fn installed() {
    let found = Command::new("python3")
        .args(["-c", "import schemathesis"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "schemathesis is not installed for python3: scripts/test installs it \
         (python3 -m pip install schemathesis)"
    );
}

/// One run against `server` with `token`; answers whether it found nothing, and its report.
fn schemathesis(server: &Server, token: &str, dir: &Path) -> (bool, String) {
    let settings = dir.join("schemathesis.toml");
    std::fs::write(&settings, SETTINGS).expect("write the settings");
    let mut command = Command::new("python3");
    command
        .args(["-m", "schemathesis.cli", "--config-file"])
        .arg(&settings)
        .arg("run")
        .arg(format!("{}/v1/openapi.json", server.base))
        .args(["--checks", "all"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
        .arg("--generation-deterministic")
        .args(["--request-timeout", "5"])
        // One worker: Hypothesis is not reliable across threads on Python 3.11.
        .args(["--workers", "1"])
        .arg("--no-color")
        .current_dir(dir);
    for id in LEFT_OUT {
        command.args(["--exclude-operation-id", id]);
    }
    let output = command.output().expect("python3 runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_as_the_admin_or_as_an_account() {
    installed();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let server = Server::start(BIN, &config).await;

    let (clean, report) = schemathesis(&server, &server.token, dir.path());
    assert!(
        clean,
        "schemathesis, with the admin token, found a difference between the server and its \
         document:\n{report}"
    );
    assert!(report.contains("Stateful"), "{report}");

    // The account is made after the admin's run, which may delete or disable the accounts it
    // finds.
    let (status, created) = server
        .json(
            Method::POST,
            "/v1/accounts",
            Some(json!({ "name": "schemathesis" })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"]["secret"]
        .as_str()
        .expect("the token's secret")
        .to_owned();
    let (clean, report) = schemathesis(&server, &token, dir.path());
    assert!(
        clean,
        "schemathesis, with an account's token, found a difference between the server and its \
         document:\n{report}"
    );
    server.terminate();
}
