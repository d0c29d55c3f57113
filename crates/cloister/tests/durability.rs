//! Keys and values through the real binary across process restarts, and acknowledged writes across
//! `kill -9`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use serde_json::{Value, json};

const TOKEN: &str = "durability-admin-token-0123456789";
const WAIT: Duration = Duration::from_secs(60);
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A running `cloister run`, killed (SIGKILL) when dropped.
struct Server {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the binary on `config` and waits until the runtime reports ready.
    async fn start(config: &Path) -> Server {
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
            http: reqwest::Client::new(),
        };
        server.wait_ready().await;
        server
    }

    /// Follows the event stream until the runtime's readiness is `ready`.
    async fn wait_ready(&self) {
        let response = self
            .http
            .get(format!("{}/v1/events/stream?since=0", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("stream");
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        let search = async {
            while let Some(chunk) = body.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
                while let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    for line in frame.lines() {
                        if let Some(data) = line.strip_prefix("data:")
                            && let Ok(e) = serde_json::from_str::<Value>(data.trim())
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

    async fn json(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.expect("request");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> reqwest::Result<reqwest::Response> {
        self.http
            .put(format!("{}/v1/storage/{key}", self.base))
            .bearer_auth(TOKEN)
            .body(value)
            .send()
            .await
    }

    async fn get(&self, key: &str) -> (u16, Vec<u8>) {
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

    fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait");
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("sh")
            .args(["-c", &format!("kill -TERM {pid}")])
            .status()
            .expect("kill");
        assert!(status.success());
        self.child.wait().expect("wait")
    }
}

fn write_config(dir: &Path) -> PathBuf {
    let text = format!(
        "[runtime]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
        dir.join("data").display()
    );
    let path = dir.join("cloister.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_signs_verifiably_and_values_survive_a_restart_of_the_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let server = Server::start(&config).await;

    let (status, key) = server
        .json(
            reqwest::Method::POST,
            "/v1/crypto/keys",
            Some(json!({"algorithm": "p256"})),
        )
        .await;
    assert_eq!(status, 201, "{key}");
    let id = key["id"].as_str().expect("id").to_owned();
    let public_key = key["versions"][0]["public_key"]
        .as_str()
        .expect("public key")
        .to_owned();
    let message = b"pay 10 to bob";
    let (status, signed) = server
        .json(
            reqwest::Method::POST,
            &format!("/v1/crypto/keys/{id}/sign"),
            Some(json!({"message": B64.encode(message)})),
        )
        .await;
    assert_eq!(status, 200, "{signed}");
    let signature = B64
        .decode(signed["signature"].as_str().expect("signature"))
        .expect("base64");

    let document: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let response = server
        .put("contracts/2026/a.bin", document.clone())
        .await
        .expect("put");
    assert_eq!(response.status().as_u16(), 200);
    assert!(server.terminate().success());

    // A new process: the key still signs (same public key) and the value reads back.
    let server = Server::start(&config).await;
    let (status, described) = server
        .json(reqwest::Method::GET, &format!("/v1/crypto/keys/{id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(described["versions"][0]["public_key"], public_key.as_str());
    assert_eq!(server.get("contracts/2026/a.bin").await, (200, document));
    let (status, verified) = server
        .json(
            reqwest::Method::POST,
            &format!("/v1/crypto/keys/{id}/verify"),
            Some(json!({"message": B64.encode(message), "signature": B64.encode(&signature)})),
        )
        .await;
    assert_eq!((status, &verified["valid"]), (200, &json!(true)));
    assert!(server.terminate().success());

    // An independent implementation agrees the signature is valid.
    let entries = json!([{
        "algorithm": "p256",
        "public_key": public_key,
        "message": hex::encode(message),
        "signature": hex::encode(&signature),
        "der": false,
    }]);
    let file = dir.path().join("signatures.json");
    std::fs::write(&file, entries.to_string()).expect("write");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crypto/tests/verify_signatures.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(&file)
        .output()
        .expect("python3 with `cryptography` (.ci/run installs it)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn value_of(round: usize, i: usize) -> Vec<u8> {
    format!("round {round} write {i} ")
        .repeat(1 + i % 5)
        .into_bytes()
}

enum Outcome {
    Acknowledged(String, Vec<u8>),
    /// Sent, but no answer came (the process died): either written in full or not at all.
    InDoubt(String, Vec<u8>),
}

/// Writes keys as fast as the server acknowledges them and kills the process with SIGKILL after a
/// varying number of acknowledgements, with the writer still sending; after each restart every
/// acknowledged write is there with its exact value, and a write in doubt is there in full or absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_every_time() {
    const ROUNDS: usize = 25;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path());
    let mut acknowledged: Vec<(String, Vec<u8>)> = Vec::new();
    let mut in_doubt: Vec<(String, Vec<u8>)> = Vec::new();
    let mut doubtful_seen = 0;
    for round in 0..ROUNDS {
        let server = Server::start(&config).await;
        for (key, value) in &acknowledged {
            assert_eq!(
                server.get(key).await,
                (200, value.clone()),
                "round {round}: acknowledged {key}"
            );
        }
        for (key, value) in in_doubt.drain(..) {
            let (status, body) = server.get(&key).await;
            assert!(
                status == 404 || (status == 200 && body == value),
                "round {round}: in-doubt {key} came back as {status} {:?}",
                String::from_utf8_lossy(&body)
            );
            doubtful_seen += usize::from(status == 200);
        }

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let writer = {
            let (http, base) = (server.http.clone(), server.base.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("r{round}/k{i}");
                    let value = value_of(round, i);
                    let sent = http
                        .put(format!("{base}/v1/storage/{key}"))
                        .bearer_auth(TOKEN)
                        .body(value.clone())
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().is_success() => {
                            let _ = tx.send(Outcome::Acknowledged(key, value));
                        }
                        Ok(r) => panic!("put {key}: {}", r.status()),
                        Err(_) => {
                            let _ = tx.send(Outcome::InDoubt(key, value));
                            return;
                        }
                    }
                }
            })
        };
        let kill_after = 3 + (round * 7) % 17;
        let mut acked_this_round = 0;
        while acked_this_round < kill_after {
            match rx.recv().await.expect("the writer goes on until the kill") {
                Outcome::Acknowledged(k, v) => {
                    acknowledged.push((k, v));
                    acked_this_round += 1;
                }
                Outcome::InDoubt(k, _) => panic!("round {round}: {k} failed before the kill"),
            }
        }
        server.kill_9();
        writer.await.expect("writer");
        while let Some(outcome) = rx.recv().await {
            match outcome {
                Outcome::Acknowledged(k, v) => acknowledged.push((k, v)),
                Outcome::InDoubt(k, v) => in_doubt.push((k, v)),
            }
        }
    }
    let server = Server::start(&config).await;
    for (key, value) in &acknowledged {
        assert_eq!(server.get(key).await, (200, value.clone()), "{key}");
    }
    eprintln!(
        "{ROUNDS} kills: {} acknowledged writes all intact; {doubtful_seen} in-flight writes landed",
        acknowledged.len()
    );
    assert!(server.terminate().success());
}
