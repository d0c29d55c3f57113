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
        let spawned = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
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
        server.wait_ready(&spawned).await;
        server
    }

    /// Follows the event stream until this process's runtime is ready. The journal outlives the
    /// process, so an earlier run's entries come first: readiness counts only after a
    /// `runtime_started` stamped at or after `spawned` (RFC 3339 with microseconds, as the journal
    /// writes times, so the strings compare in time order).
    pub async fn wait_ready(&self, spawned: &str) {
        let response = self
            .http
            .get(format!("{}/v1/events/stream?since=0", self.base))
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
                        if e["event"]["kind"] == "runtime_started"
                            && e["time"].as_str().is_some_and(|t| t >= spawned)
                        {
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

pub fn write_config(dir: &Path) -> PathBuf {
    let text = format!(
        "[runtime]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
        dir.join("data").display()
    );
    let path = dir.join("cloister.toml");
    std::fs::write(&path, text).expect("write config");
    path
}
