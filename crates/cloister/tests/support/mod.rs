//! A running `cloister run` for end-to-end tests: started on a config, awaited until ready through
//! the event stream, spoken to over HTTP, stopped with SIGTERM or SIGKILL.

#![allow(dead_code, unreachable_pub)] // each test file uses its own part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

pub const TOKEN: &str = "durability-admin-token-0123456789";
pub const WAIT: Duration = Duration::from_secs(60);
pub const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A running `cloister run`, killed (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    pub http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the binary on `config` and waits until the runtime reports ready.
    pub async fn start(config: &Path) -> Server {
        // reqwest is built without a default TLS provider (see the binary's main).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        // Every entry after this one is the new process's: the previous one has exited.
        let head = journal_head(config);
        let mut child = Command::new(env!("CARGO_BIN_EXE_cloister"))
            .args(["run", "--config"])
            .arg(config)
            .env_remove("CLOISTER_DATA_DIR")
            .env_remove("CLOISTER_LISTEN")
            .env("CLOISTER_ADMIN_TOKEN", TOKEN)
            .env("CLOISTER_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn cloister run");
        let stdout = child.stdout.take().expect("stdout");
        let mut first = String::new();
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("banner");
        let addr = first
            .split("http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .expect("address in banner")
            .to_owned();
        let server = Server {
            child,
            base: format!("http://{addr}"),
            http,
        };
        server.wait_ready(head).await;
        server
    }

    /// Follows the event stream until this process's runtime is ready. The journal outlives the
    /// process, so an earlier run's entries come first: only entries after `head`, the last one
    /// on disk before this process started, are this process's, and readiness counts only after
    /// its `runtime_started`.
    pub async fn wait_ready(&self, head: u64) {
        let response = self
            .http
            .get(format!("{}/v1/events/stream?since={head}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("stream");
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        let mut this_process = false;
        let search = async {
            while let Some(chunk) = body.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
                while let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    for line in frame.lines() {
                        let Some(data) = line.strip_prefix("data:") else {
                            continue;
                        };
                        let Ok(e) = serde_json::from_str::<Value>(data.trim()) else {
                            continue;
                        };
                        assert!(
                            e["seq"].as_u64() > Some(head),
                            "an entry of an earlier process after {head}: {e}"
                        );
                        if e["event"]["kind"] == "runtime_started" {
                            this_process = true;
                        }
                        if this_process
                            && e["event"]["kind"] == "runtime_health"
                            && e["event"]["level"] == "ready"
                        {
                            return;
                        }
                    }
                }
            }
            panic!("the event stream ended before the runtime was ready");
        };
        tokio::time::timeout(WAIT, search)
            .await
            .expect("the runtime becomes ready");
    }

    pub async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.json_as(TOKEN, method, path, body).await
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

    pub async fn put(&self, key: &str, value: Vec<u8>) -> reqwest::Result<reqwest::Response> {
        self.http
            .put(format!("{}/v1/storage/{key}", self.base))
            .bearer_auth(TOKEN)
            .body(value)
            .send()
            .await
    }

    pub async fn get(&self, key: &str) -> (u16, Vec<u8>) {
        let r = self
            .http
            .get(format!("{}/v1/storage/{key}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("get");
        let status = r.status().as_u16();
        (status, r.bytes().await.expect("body").to_vec())
    }

    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait");
    }

    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
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
fn journal_head(config: &Path) -> u64 {
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

pub fn write_config(dir: &Path) -> PathBuf {
    let text = format!(
        "[runtime]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
        dir.join("data").display()
    );
    let path = dir.join("cloister.toml");
    std::fs::write(&path, text).expect("write config");
    path
}
