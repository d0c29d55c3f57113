//! The real `cloister run` on loopback: started on a configuration file, awaited until ready
//! through its event stream, spoken to over HTTP, stopped with SIGTERM or SIGKILL.
//!
//! The binary's path is a parameter: its tests pass `env!("CARGO_BIN_EXE_cloister")`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

/// The admin token [`Server::start`] gives the binary.
pub const TOKEN: &str = "durability-admin-token-0123456789";
/// How long a test waits for the binary to become ready, or for an awaited event.
pub const WAIT: Duration = Duration::from_secs(60);

/// A running `cloister run`, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// `http://ADDRESS`, from the banner.
    pub base: String,
    pub http: reqwest::Client,
    /// The admin token the binary was started with.
    pub token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary at `bin`, with nothing from the caller's environment that would change what it
/// talks to or where it keeps its files.
pub fn command(bin: impl AsRef<Path>) -> Command {
    let mut command = Command::new(bin.as_ref());
    for var in [
        "CLOISTER_URL",
        "CLOISTER_DATA_DIR",
        "CLOISTER_LISTEN",
        "CLOISTER_CONFIG",
        "CLOISTER_ADMIN_TOKEN",
        "CLOISTER_ADVERTISE",
    ] {
        command.env_remove(var);
    }
    command
}

impl Server {
    /// Starts `bin run --config CONFIG` with the admin token [`TOKEN`] and waits until the runtime
    /// reports ready.
    pub async fn start(bin: impl AsRef<Path>, config: &Path) -> Server {
        // Every entry after this one is the new process's: the previous one has exited.
        let head = journal_head(config);
        let server = Server::launch(bin.as_ref(), config, TOKEN);
        server.wait_ready(head).await;
        server
    }

    /// As [`Server::start`], with more arguments for `run` (`--join URL`).
    pub async fn start_with(bin: impl AsRef<Path>, config: &Path, args: &[&str]) -> Server {
        let head = journal_head(config);
        let server = Server::launch_with(bin.as_ref(), config, TOKEN, args);
        server.wait_ready(head).await;
        server
    }

    /// Starts `bin run --config CONFIG` with the admin token `token`, and answers once it has
    /// printed its banner (listening; its services may still be starting).
    pub fn launch(bin: impl AsRef<Path>, config: &Path, token: &str) -> Server {
        Server::launch_with(bin, config, token, &[])
    }

    /// As [`Server::launch`], with more arguments for `run`.
    pub fn launch_with(bin: impl AsRef<Path>, config: &Path, token: &str, args: &[&str]) -> Server {
        let child = command(bin.as_ref())
            .args(["run", "--config"])
            .arg(config)
            .args(args)
            .env("CLOISTER_ADMIN_TOKEN", token)
            .env("CLOISTER_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn cloister run");
        Server::attach(child, token)
    }

    /// A `cloister run` already spawned with its stdout piped: reads the banner's first line for
    /// the address. `token` is the admin token it runs with.
    pub fn attach(mut child: Child, token: &str) -> Server {
        // reqwest is built without a default TLS provider (see the binary's main).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let stdout = child.stdout.take().expect("stdout");
        let mut first = String::new();
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("banner");
        let addr = first
            .split("http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in the banner: {first:?}"))
            .to_owned();
        Server {
            child,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            token: token.to_owned(),
        }
    }

    /// Follows the event stream until this process's runtime is ready. The journal outlives the
    /// process, so an earlier run's entries come first: only entries after `head`, the last one
    /// on disk before this process started, are this process's, and readiness counts only after
    /// its `runtime_started`.
    pub async fn wait_ready(&self, head: u64) {
        let mut this_process = false;
        self.wait_event(head, |e| {
            assert!(
                e["seq"].as_u64() > Some(head),
                "an entry of an earlier process after {head}: {e}"
            );
            if e["event"]["kind"] == "runtime_started" {
                this_process = true;
            }
            this_process && e["event"]["kind"] == "runtime_health" && e["event"]["level"] == "ready"
        })
        .await;
    }

    /// Follows `/v1/events/stream` from `since` until an entry matches `pred`, and answers it.
    /// Entries whose data is not JSON are skipped.
    pub async fn wait_event(&self, since: u64, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let response = self
            .http
            .get(format!("{}/v1/events/stream?since={since}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("stream");
        assert_eq!(response.status().as_u16(), 200, "the event stream");
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        let search = async {
            while let Some(chunk) = body.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
                while let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    for data in frame.lines().filter_map(|l| l.strip_prefix("data:")) {
                        if let Ok(e) = serde_json::from_str::<Value>(data.trim())
                            && pred(&e)
                        {
                            return e;
                        }
                    }
                }
            }
            panic!("the event stream ended first");
        };
        tokio::time::timeout(WAIT, search)
            .await
            .expect("the awaited entry comes")
    }

    /// A JSON request with the admin token; answers the status and the body (null when not JSON).
    pub async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.json_as(&self.token, method, path, body).await
    }

    /// A JSON request with any token.
    pub async fn json_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.expect("request");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Stores `value` at `key` as the admin.
    pub async fn put(&self, key: &str, value: Vec<u8>) -> reqwest::Result<reqwest::Response> {
        self.http
            .put(format!("{}/v1/storage/{key}", self.base))
            .bearer_auth(&self.token)
            .body(value)
            .send()
            .await
    }

    /// Reads `key` as the admin: the status and the bytes.
    pub async fn get(&self, key: &str) -> (u16, Vec<u8>) {
        let r = self
            .http
            .get(format!("{}/v1/storage/{key}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("get");
        let status = r.status().as_u16();
        (status, r.bytes().await.expect("body").to_vec())
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait");
    }

    /// Waits for the process to exit by itself.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait")
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        // The shell's builtin, so the test needs no procps.
        let status = Command::new("sh")
            .args(["-c", &format!("kill -TERM {pid}")])
            .status()
            .expect("kill");
        assert!(status.success());
        self.child.wait().expect("wait")
    }
}

/// The sequence number of the last complete entry of the journal that `config`'s data directory
/// holds (0 when there is none). A line cut short by a crash does not count: the next process cuts it
/// off and reuses its number.
pub fn journal_head(config: &Path) -> u64 {
    let text = std::fs::read_to_string(config).expect("config");
    let table: toml::Table = text.parse().expect("config is TOML");
    let data_dir = table
        .get("runtime")
        .and_then(|r| r.get("data_dir"))
        .and_then(|d| d.as_str())
        .expect("the test configuration names runtime.data_dir");
    let journal = match std::fs::read(Path::new(data_dir).join("journal.log")) {
        Ok(journal) => journal,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
        Err(e) => panic!("reading the journal: {e}"),
    };
    // Lossy: a crash may have cut the last line inside a character.
    String::from_utf8_lossy(&journal)
        .split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .filter_map(|line| serde_json::from_str::<Value>(line).ok()?["seq"].as_u64())
        .next_back()
        .unwrap_or(0)
}

/// Writes `DIR/cloister.toml`: listening on a free loopback port, data in `DIR/data`.
pub fn write_config(dir: &Path) -> PathBuf {
    let text = format!(
        "[runtime]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
        dir.join("data").display()
    );
    let path = dir.join("cloister.toml");
    std::fs::write(&path, text).expect("write config");
    path
}
