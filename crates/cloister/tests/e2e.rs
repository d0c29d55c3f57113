//! End to end: the real `cloister` binary on loopback, driven as a user would drive it.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const TOKEN: &str = "e2e-admin-token-0123456789";

const BIN: &str = env!("CARGO_BIN_EXE_cloister");

fn cloister() -> Command {
    // The tests say everything explicitly; nothing from the caller's environment leaks in.
    test_support::server::command(BIN)
}

/// A running `cloister run` (the shared harness, not awaited until ready: these tests watch the
/// start themselves), killed when dropped.
struct Server(test_support::server::Server);

impl std::ops::Deref for Server {
    type Target = test_support::server::Server;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Server {
    fn start(config: &Path) -> Server {
        Server(test_support::server::Server::launch(BIN, config, TOKEN))
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn terminate(self) -> std::process::ExitStatus {
        self.0.terminate()
    }

    fn client(&self, args: &[&str]) -> std::process::Output {
        cloister()
            .args(args)
            .env("CLOISTER_URL", &self.0.base)
            .env("CLOISTER_ADMIN_TOKEN", TOKEN)
            .output()
            .expect("client")
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.0.json(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Option<&str>) -> (u16, Value) {
        let mut r = self
            .0
            .http
            .post(format!("{}{path}", self.0.base))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let r = r.send().await.expect("post");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Follows the event stream from `since` until an event matches, and returns it.
    async fn wait_event(&self, since: u64, pred: impl FnMut(&Value) -> bool) -> Value {
        self.0.wait_event(since, pred).await
    }
}

fn is(service: &str, kind: &str) -> impl FnMut(&Value) -> bool {
    let (service, kind) = (service.to_owned(), kind.to_owned());
    move |e| e["service"] == service.as_str() && e["event"]["kind"] == kind.as_str()
}

fn write_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let data = dir.join("data");
    let text = format!(
        r#"
[runtime]
listen = "127.0.0.1:0"
data_dir = "{}"
# A new version is watched this long: whatever fails while it runs rolls it back, however slow the
# machine. A version that stays good holds the controller's queue as long.
config_watch = "1h"

[testing]
fault_injection = true

[testing.services.vault]
kind = "core"
priority = "critical"
capabilities = ["keys"]

[testing.services.ledger]
kind = "core"
depends_on = ["vault"]

[testing.services.feed]
kind = "optional"
depends_on = ["ledger"]

[services.vault.recovery]
backoff_initial = "50ms"

[services.ledger.health]
interval = "200ms"
timeout = "50ms"
failure_threshold = 2

[services.ledger.recovery]
strategy = "manual"
{extra}
"#,
        data.display()
    );
    let path = dir.join("cloister.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_services_recovers_a_panic_and_a_hang_and_readyz_follows_health() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&write_config(dir.path(), ""));
    let ready = server
        .wait_event(0, |e| {
            e["event"]["kind"] == "runtime_health" && e["event"]["level"] == "ready"
        })
        .await;
    let since = ready["seq"].as_u64().expect("seq");

    let (status, body) = server.get("/v1/services").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "crypto",
            "storage",
            "account",
            "computation",
            "oracle",
            "ai",
            "feed",
            "ledger",
            "vault"
        ]
    );
    let status_out = server.client(&["status"]);
    assert!(status_out.status.success());
    let table = String::from_utf8_lossy(&status_out.stdout);
    assert!(
        table.contains("vault") && table.contains("running") && table.contains("runtime: ready"),
        "{table}"
    );

    // A panic in vault: restarted by the restart strategy, visible as events.
    let (status, _) = server
        .post("/v1/services/vault/faults", Some(r#"{"kind":"panic"}"#))
        .await;
    assert_eq!(status, 202);
    let exited = server.wait_event(since, is("vault", "exited")).await;
    assert_eq!(exited["event"]["outcome"]["outcome"], "panic");
    let up = server.wait_event(since, is("vault", "up")).await;
    assert_eq!(up["generation"], 2);
    let (_, vault) = server.get("/v1/services/vault").await;
    assert_eq!(
        (vault["state"].as_str(), vault["restart_count"].as_u64()),
        (Some("running"), Some(1))
    );
    // The same restart, read back by cursor from /v1/events.
    let (_, page) = server.get(&format!("/v1/events?since={since}")).await;
    let restarted = page["events"].as_array().expect("events").iter().any(|e| {
        e["service"] == "vault" && e["event"]["kind"] == "starting" && e["event"]["restart"] == true
    });
    assert!(restarted, "{page}");

    // A hang in ledger (manual recovery): found by its probe, failed, and the runtime is not ready.
    let (status, _) = server
        .post("/v1/services/ledger/faults", Some(r#"{"kind":"hang"}"#))
        .await;
    assert_eq!(status, 202);
    let exited = server.wait_event(since, is("ledger", "exited")).await;
    assert_eq!(exited["event"]["outcome"]["outcome"], "hung");
    assert_eq!(exited["cause"]["by"], "probe");
    server.wait_event(since, is("ledger", "failed")).await;
    let readyz = reqwest::get(format!("{}/readyz", server.base))
        .await
        .expect("readyz");
    assert_eq!(readyz.status().as_u16(), 503);
    let reasons = readyz.json::<Value>().await.expect("json")["reasons"].to_string();
    assert!(reasons.contains("ledger (core) is failed"), "{reasons}");

    // The operator starts it again through the CLI; readiness follows. Only a `ready` journaled
    // after this point counts: the vault's recovery above journaled one already.
    let before_start = server.get("/v1/events?since=0&limit=1").await.1["last_seq"]
        .as_u64()
        .expect("seq");
    let out = server.client(&["start", "ledger"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.wait_event(before_start, is("ledger", "up")).await;
    server
        .wait_event(before_start, |e| {
            e["event"]["kind"] == "runtime_health" && e["event"]["level"] == "ready"
        })
        .await;
    let readyz = reqwest::get(format!("{}/readyz", server.base))
        .await
        .expect("readyz");
    assert_eq!(readyz.status().as_u16(), 200);

    // Attestation: identity and a quote binding our nonce, checked by the CLI, loudly a simulation.
    let out = server.client(&["attest", "--nonce", "c0ffee"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("platform:          simulation"), "{stdout}");
    assert!(
        stdout.contains("signature valid, binds this nonce") && stdout.contains("SIMULATION:"),
        "{stdout}"
    );
    // Hardware required: the simulation's quote is refused, exit 1, saying why.
    let out = server.client(&["attest", "--require-hardware"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("NOT verified: the quote comes from the simulation platform"),
        "{stdout}"
    );

    // Metrics carry the restart.
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l == "cloister_service_restarts_total{service=\"vault\"} 1"),
        "{metrics}"
    );

    // Bad requests get clear errors.
    let (status, body) = server.post("/v1/services/nope/restart", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("service.not_found"))
    );
    let anonymous = reqwest::get(format!("{}/v1/services", server.base))
        .await
        .expect("get");
    assert_eq!(anonymous.status().as_u16(), 401);
    let out = server.client(&["restart", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service named"));

    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

/// A service switched off in the configuration is listed but never started, and its endpoints
/// answer 503 `service.unavailable`: here the oracle, the one service that reaches the network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_switched_off_in_the_configuration_never_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&write_config(
        dir.path(),
        "[services.oracle]\nenabled = false\n",
    ));
    server
        .wait_event(0, |e| {
            e["event"]["kind"] == "runtime_health" && e["event"]["level"] == "ready"
        })
        .await;
    let (status, oracle) = server.get("/v1/services/oracle").await;
    assert_eq!(
        (status, oracle["state"].as_str()),
        (200, Some("registered")),
        "{oracle}"
    );
    let (status, body) = server.get("/v1/oracle/key").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("service.unavailable")),
        "{body}"
    );
    let (_, page) = server.get("/v1/events?since=0&limit=10000").await;
    let started = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .any(|e| e["service"] == "oracle" && e["event"]["kind"] == "starting");
    assert!(!started, "the oracle was started: {page}");
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_survives_a_restart_of_the_process_and_reports_tampering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let server = Server::start(&config);
    server
        .wait_event(0, |e| {
            e["event"]["kind"] == "runtime_health" && e["event"]["level"] == "ready"
        })
        .await;
    assert!(server.terminate().success());

    let server = Server::start(&config);
    server
        .wait_event(0, |e| {
            e["event"]["kind"] == "runtime_started" && e["seq"].as_u64() > Some(1)
        })
        .await;
    let (status, body) = server.get("/v1/events?since=0&limit=10000").await;
    assert_eq!(status, 200);
    let events = body["events"].as_array().expect("events");
    let starts = events
        .iter()
        .filter(|e| e["event"]["kind"] == "runtime_started")
        .count();
    assert_eq!(starts, 2);
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "sequence numbers continue across restarts"
    );
    assert!(server.terminate().success());

    // Modify a past entry: the next start reports it in the journal.
    let path = dir.path().join("data/journal.log");
    let text = std::fs::read_to_string(&path).expect("journal");
    std::fs::write(
        &path,
        text.replacen("\"generation\":1", "\"generation\":9", 1),
    )
    .expect("tamper");
    let server = Server::start(&config);
    let report = server
        .wait_event(0, |e| e["event"]["kind"] == "journal_integrity")
        .await;
    assert!(
        report["event"]["problem"]
            .as_str()
            .unwrap_or("")
            .contains("fails its integrity check"),
        "{report}"
    );
    assert!(server.terminate().success());
}

#[test]
fn an_invalid_config_lists_every_problem_and_starts_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "[runtime]\nlisten = \"here\"\ncolour = 1\n[testing.services.a]\ndepends_on = [\"b\"]\n[services.ghost]\n",
    )
    .expect("write");
    // Every `run` here has a data directory of its own: nothing is written where the test runs.
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8 path");
    for args in [
        vec!["run", "--data-dir", data, "--config"],
        vec!["config", "validate"],
    ] {
        let out = cloister().args(&args).arg(&config).output().expect("run");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for problem in [
            "runtime.listen: \"here\" is not an address",
            "runtime.colour: unknown key",
            "services.ghost: no such service",
        ] {
            assert!(
                stderr.contains(problem),
                "{problem} missing from:\n{stderr}"
            );
        }
    }
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[testing.services.a]\n[services.a.health]\ninterval = \"1s\"\ntimeout = \"100ms\"\n",
    )
    .expect("write");
    let out = cloister()
        .args(["config", "validate"])
        .arg(&good)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains(
        "valid; 7 service(s) enabled: crypto, storage, account, computation, oracle, ai, a"
    ));
    let out = cloister()
        .args(["config", "validate"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let out = cloister().args(["frobnicate"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));

    // The Gramine platform outside an enclave: a clear refusal to start.
    let gramine = dir.path().join("gramine.toml");
    std::fs::write(&gramine, "[enclave]\nplatform = \"gramine\"\n").expect("write");
    let out = cloister()
        .args(["run", "--data-dir", data, "--config"])
        .arg(&gramine)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not inside a Gramine enclave") && stderr.contains("/dev/attestation"),
        "{stderr}"
    );
    assert!(
        !Path::new(data).join("admin.token").exists(),
        "no admin token is written where no enclave runs"
    );

    // Services whose minimum does not fit the enclave budget: nothing starts, the numbers are named.
    let tight = dir.path().join("tight.toml");
    std::fs::write(
        &tight,
        "[enclave]\nthreads = 3\n[testing.services.a]\n[testing.services.b]\n[services.b.replicas]\nmin = 2\nmax = 2\n",
    )
    .expect("write");
    let out = cloister()
        .args(["run", "--data-dir", data, "--config"])
        .arg(&tight)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("enclave.threads: the enabled services need at least")
            && stderr.contains("(b 2, ")
            && stderr.contains("budget is 3"),
        "{stderr}"
    );
}

#[test]
fn a_token_file_others_can_read_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    let token = data.join("admin.token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let config = dir.path().join("cloister.toml");
    std::fs::write(&config, "[runtime]\nlisten = \"127.0.0.1:0\"\n").expect("config");
    let run = || {
        cloister()
            .args(["run", "--data-dir"])
            .arg(&data)
            .arg("--config")
            .arg(&config)
            .env_remove("CLOISTER_ADMIN_TOKEN")
            .output()
            .expect("run")
    };
    let out = run();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("chmod 600 {}", token.display())) && stderr.contains("mode 644"),
        "{stderr}"
    );
    // Owned by someone else (only root can hand a file to another user).
    if rustix::process::geteuid().is_root() {
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::chown(&token, Some(65534), None).expect("chown");
        let out = run();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("belongs to user 65534"), "{stderr}");
    }
}

#[test]
fn no_admin_token_or_data_directory_is_tracked_in_git() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let Ok(out) = Command::new("git")
        .args(["ls-files", "--", "*admin.token", "*cloister-data*"])
        .current_dir(&root)
        .output()
    else {
        return; // not a git checkout (a source tarball): nothing can be tracked
    };
    let tracked = String::from_utf8_lossy(&out.stdout);
    assert!(tracked.trim().is_empty(), "tracked: {tracked}");
    let ignored = Command::new("git")
        .args([
            "check-ignore",
            "-q",
            "crates/cloister/cloister-data/admin.token",
        ])
        .current_dir(&root)
        .status()
        .expect("git check-ignore");
    assert!(
        ignored.success(),
        "cloister-data/ is ignored in every directory"
    );
}

#[tokio::test]
async fn client_commands_say_what_to_do_when_nothing_runs() {
    // A port this test holds without listening on it: a connection to it is refused, and nothing
    // else can take it while the socket lives.
    let held = tokio::net::TcpSocket::new_v4().expect("socket");
    held.bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let url = format!("http://{}", held.local_addr().expect("address"));
    let out = cloister()
        .args(["status"])
        .env("CLOISTER_URL", &url)
        .env("CLOISTER_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot reach Cloister at {url}"))
            && stderr.contains("cloister run"),
        "{stderr}"
    );
    drop(held);
}

/// `text` with vault's `max_restarts` set (the configuration's own `[services.vault.recovery]`
/// table gets the line) and vault's queue capacity: two live settings, the first of which every
/// service view shows.
fn vault_settings(text: &str, max_restarts: u32, queue_capacity: u32) -> String {
    let recovery = "backoff_initial = \"50ms\"\n";
    assert!(text.contains(recovery));
    format!(
        "{}\n[services.vault]\nqueue_capacity = {queue_capacity}\n",
        text.replacen(
            recovery,
            &format!("{recovery}max_restarts = {max_restarts}\n"),
            1
        )
    )
}

/// Vault's `recovery.max_restarts` and generation, as `GET /v1/services/vault` shows them.
async fn vault(server: &Server) -> (Option<u64>, Option<u64>) {
    let (status, vault) = server.get("/v1/services/vault").await;
    assert_eq!(status, 200, "{vault}");
    (
        vault["recovery"]["max_restarts"].as_u64(),
        vault["generation"].as_u64(),
    )
}

/// The watch window is an hour (see `write_config`), so a version is rolled back by whatever fails
/// while it runs, however slow the machine; and a version that stays good holds the controller's
/// queue for the rest of the test, so it comes last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_is_applied_rejected_and_rolled_back_through_the_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let server = Server::start(&config);
    server
        .wait_event(0, |e| {
            e["event"]["kind"] == "runtime_health" && e["event"]["level"] == "ready"
        })
        .await;
    let original = std::fs::read_to_string(&config).expect("config");
    assert_eq!(vault(&server).await, (Some(5), Some(1)), "the defaults");
    let since = server.get("/v1/events?since=0&limit=1").await.1["last_seq"]
        .as_u64()
        .expect("seq");

    // Rejected: every problem, nothing changed.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!("{original}\n[enclave]\nthreads = 99\n[services.vault]\nqueue_capacity = -1\n"),
    )
    .expect("write");
    let out = server.client(&["config", "apply", bad.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("services.vault.queue_capacity: -1 is out of range"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rejected; the running configuration is unchanged"),
        "{stderr}"
    );
    let bad_enclave = dir.path().join("enclave.toml");
    std::fs::write(
        &bad_enclave,
        format!("{original}\n[enclave]\nthreads = 99\n"),
    )
    .expect("write");
    let out = server.client(&["config", "apply", bad_enclave.to_str().expect("path")]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("enclave: the [enclave] table is measured at start")
    );
    assert_eq!(vault(&server).await, (Some(5), Some(1)), "nothing changed");

    // Rolled back: a service fails inside the watch window of a new version, and vault's setting
    // is back where it was.
    let risky = dir.path().join("risky.toml");
    std::fs::write(&risky, vault_settings(&original, 9, 32)).expect("write");
    let path = risky.to_str().expect("path").to_owned();
    let base = server.base.clone();
    let apply = tokio::task::spawn_blocking(move || {
        cloister()
            .args(["config", "apply", "--wait", &path])
            .env("CLOISTER_URL", &base)
            .env("CLOISTER_ADMIN_TOKEN", TOKEN)
            .output()
            .expect("apply")
    });
    let applied = server
        .wait_event(since, |e| {
            e["event"]["kind"] == "config_applied" && e["event"]["version"] == 2
        })
        .await;
    assert_eq!(
        vault(&server).await,
        (Some(9), Some(1)),
        "version 2 runs, taken live"
    );
    let (status, _) = server
        .post("/v1/services/feed/faults", Some(r#"{"kind":"panic"}"#))
        .await;
    assert_eq!(status, 202);
    let rolled = server
        .wait_event(applied["seq"].as_u64().unwrap_or(0), |e| {
            e["event"]["kind"] == "config_rolled_back"
        })
        .await;
    assert_eq!(
        (
            rolled["event"]["from"].as_u64(),
            rolled["event"]["to"].as_u64()
        ),
        (Some(2), Some(1))
    );
    let out = apply.await.expect("join");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("rolled back from version 2 to 1") && stdout.contains("feed failed"),
        "{stdout}"
    );
    assert_eq!(
        vault(&server).await,
        (Some(5), Some(1)),
        "version 1's setting again"
    );
    let (_, running) = server.get("/v1/config").await;
    assert_eq!(
        (
            running["version"].as_u64(),
            running["source"].as_str(),
            running["text"].as_str()
        ),
        (Some(3), Some("rollback"), Some(original.as_str()))
    );
    let out = server.client(&["config", "history"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("rolled_back") && table.contains("rollback"),
        "{table}"
    );

    // Applied, live: vault takes the new setting without a restart.
    let good = dir.path().join("good.toml");
    std::fs::write(&good, vault_settings(&original, 7, 64)).expect("write");
    let out = server.client(&["config", "apply", good.to_str().expect("path")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("applied as version 4"),
        "{stdout}"
    );
    assert_eq!(
        vault(&server).await,
        (Some(7), Some(1)),
        "taken live, not by a restart"
    );
    let out = server.client(&["config", "show"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("queue_capacity = 64"));
    assert!(server.terminate().success());
}

/// Saving the file that `run --config` watches applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saving_the_watched_configuration_file_applies_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let server = Server::start(&config);
    server
        .wait_event(0, |e| {
            e["event"]["kind"] == "runtime_health" && e["event"]["level"] == "ready"
        })
        .await;
    let original = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, vault_settings(&original, 6, 16)).expect("write");
    let from_file = server
        .wait_event(0, |e| {
            e["event"]["kind"] == "config_applied" && e["event"]["version"] == 2
        })
        .await;
    assert_eq!(from_file["event"]["changed"], serde_json::json!(["vault"]));
    assert_eq!(vault(&server).await, (Some(6), Some(1)));
    assert!(server.terminate().success());
}

/// Issue #18: a core service past its restarts escalates (its default `on_exhausted`): the journal
/// says so, `/livez` answers 503 with the reason so that a probe restarts the process, and after
/// `escalation_grace` (its default, 10 s) `cloister run` exits with status 3 for its supervisor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_service_past_its_restarts_escalates_and_the_process_exits_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&config).expect("config").replace(
        "backoff_initial = \"50ms\"",
        "backoff_initial = \"50ms\"\nmax_restarts = 1",
    );
    std::fs::write(&config, text).expect("write config");
    let server = Server::start(&config);
    let ready = server
        .wait_event(0, |e| {
            e["event"]["kind"] == "runtime_health" && e["event"]["level"] == "ready"
        })
        .await;
    let since = ready["seq"].as_u64().expect("seq");
    let livez = |base: String| async move {
        let r = reqwest::get(format!("{base}/livez")).await.expect("livez");
        (r.status().as_u16(), r.json::<Value>().await.expect("json"))
    };
    assert_eq!(livez(server.base.clone()).await.0, 200);

    // The first panic is within its one restart; the second is past it.
    let (status, _) = server
        .post("/v1/services/vault/faults", Some(r#"{"kind":"panic"}"#))
        .await;
    assert_eq!(status, 202);
    server.wait_event(since, is("vault", "up")).await;
    let (status, _) = server
        .post("/v1/services/vault/faults", Some(r#"{"kind":"panic"}"#))
        .await;
    assert_eq!(status, 202);
    let escalated = server.wait_event(since, is("vault", "escalated")).await;
    let reason = escalated["event"]["reason"].as_str().expect("reason");
    assert!(reason.contains("vault"), "{escalated}");

    let (status, body) = livez(server.base.clone()).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "escalated", "{body}");
    assert_eq!(body["reason"], reason, "{body}");

    let server = server.0;
    let exit = tokio::task::spawn_blocking(move || server.wait())
        .await
        .expect("wait");
    assert_eq!(exit.code(), Some(3), "{exit:?}");
}

/// docs/api.md, "Deadlines": with storage hung by fault injection, a request whose deadline
/// (`x-cloister-deadline-ms`) runs out first is answered 503 `service.timeout` naming storage,
/// retryable with `Retry-After`; the hang is journaled, storage is restarted and serves again. No
/// time is measured: the request returning with that answer is the point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_service_answers_503_naming_it_within_the_requests_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&write_config(dir.path(), ""));
    let ready = server
        .wait_event(0, |e| {
            e["event"]["kind"] == "runtime_health" && e["event"]["level"] == "ready"
        })
        .await;
    let since = ready["seq"].as_u64().expect("seq");

    let (status, _) = server
        .post("/v1/services/storage/faults", Some(r#"{"kind":"hang"}"#))
        .await;
    assert_eq!(status, 202);
    let response = server
        .http
        .get(format!("{}/v1/storage/some-key", server.base))
        .bearer_auth(TOKEN)
        .header("x-cloister-deadline-ms", "1000")
        .send()
        .await
        .expect("an answer, not a hang");
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "service.timeout", "{body}");
    assert_eq!(body["error"]["retryable"], true, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("storage")),
        "{body}"
    );

    // A bad header is refused before anything is asked.
    let response = server
        .http
        .get(format!("{}/v1/storage/some-key", server.base))
        .bearer_auth(TOKEN)
        .header("x-cloister-deadline-ms", "soon")
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "request.invalid_deadline", "{body}");

    let exited = server.wait_event(since, is("storage", "exited")).await;
    assert_eq!(exited["event"]["outcome"]["outcome"], "hung", "{exited}");
    let exited_at = exited["seq"].as_u64().expect("seq");
    server.wait_event(exited_at, is("storage", "up")).await;
    let (status, _) = server.0.get("some-key").await;
    assert_eq!(status, 404, "storage serves again");
}
