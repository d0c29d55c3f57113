//! No account can exhaust the process's memory (#14 item 6): the real binary, its resident memory
//! read from `/proc`, under a flood of oversized uploads and a flood of jobs with large results.
//!
//! Memory is compared, never time: each bound is far below what the flood took before the fix
//! (sixteen announced 64 MiB uploads were read whole, ~1 GB; every finished job kept its result as
//! a tree of JSON values, ~30 times its text), and far above what the allocator keeps on its own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use test_support::server::{Server, TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_cloister");
const MIB: u64 = 1 << 20;
/// Only a guard against a hang: no assertion depends on how long anything takes.
const HANG_GUARD: Duration = Duration::from_secs(120);

fn write_config(dir: &Path, services: &str) -> PathBuf {
    let text = format!(
        "[runtime]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{services}",
        dir.join("data").display()
    );
    let path = dir.join("cloister.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// The process's resident memory, in bytes.
fn resident(server: &Server) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", server.id())).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS")
}

/// One upload announcing `length` bytes, sent in 64 KiB chunks until the server answers or
/// closes; the status line it answered, if any.
async fn announced_upload(server: &Server, key: &str, length: u64) -> Option<String> {
    let address = server.base.strip_prefix("http://").expect("address");
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "PUT /v1/storage/{key} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {length}\r\n\r\n"
    );
    writer.write_all(head.as_bytes()).await.expect("headers");
    let chunk = vec![7u8; 64 << 10];
    let mut sent = 0u64;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            },
            written = writer.write_all(&chunk), if sent < length => match written {
                Ok(()) => sent += chunk.len() as u64,
                Err(_) => {
                    // The server stopped reading: its answer may still be there.
                    let _ = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf))
                        .await
                        .map(|r| r.map(|n| answer.extend_from_slice(&buf[..n])));
                    break;
                }
            },
        }
    }
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_announced_64_mib_uploads_are_refused_without_being_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "");
    let server = Server::start(BIN, &config).await;
    let before = resident(&server);
    let server = &server;
    let uploads = (0..16)
        .map(|i| async move { announced_upload(server, &format!("flood/{i}"), 64 * MIB).await });
    let answers = tokio::time::timeout(HANG_GUARD, futures::future::join_all(uploads))
        .await
        .expect("every upload is answered or cut off");
    for answer in answers.iter().flatten() {
        assert!(answer.contains("413"), "{answers:?}");
    }
    assert!(
        answers.iter().any(Option::is_some),
        "at least one upload read its 413: {answers:?}"
    );
    let grown = resident(server).saturating_sub(before);
    assert!(
        grown < 64 * MIB,
        "the process grew by {} MiB under the upload flood",
        grown / MIB
    );
    // Nothing was stored, and a value within the limit still is.
    assert_eq!(server.get("flood/0").await.0, 404);
    let response = server.put("small", b"fits".to_vec()).await.expect("put");
    assert_eq!(response.status().as_u16(), 200);
}

/// Submits a job returning an array of `elements` ones (2 bytes each as JSON) and waits for it.
async fn large_result(server: &Server, elements: usize) {
    let (status, job) = server
        .json(
            reqwest::Method::POST,
            "/v1/computation/jobs",
            Some(json!({
                "code": format!("return new Array({elements}).fill(1);"),
            })),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("id");
    let (status, done) = server
        .json(
            reqwest::Method::GET,
            &format!("/v1/computation/jobs/{id}?wait_s=30"),
            None,
        )
        .await;
    assert_eq!(
        (status, done["state"].as_str()),
        (200, Some("completed")),
        "{done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_does_not_grow_with_the_number_of_finished_jobs_with_large_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "[services.computation]\nmax_kept_bytes_per_account = 8388608\n",
    );
    let server = Server::start(BIN, &config).await;
    // 400,000 elements: 800 KB of JSON each; as a tree of values, ~25 MB each.
    let elements = 400_000;
    // The first jobs fill the account's 8 MiB of kept results and warm the workers' allocators.
    for _ in 0..12 {
        large_result(&server, elements).await;
    }
    let warmed = resident(&server);
    for _ in 0..48 {
        large_result(&server, elements).await;
    }
    let grown = resident(&server).saturating_sub(warmed);
    // 48 more results are 38 MB of text, 1.2 GB as trees: what is kept stays at the bound.
    assert!(
        grown < 16 * MIB,
        "the process grew by {} MiB over 48 more finished jobs",
        grown / MIB
    );
    let (_, jobs) = server
        .json(reqwest::Method::GET, "/v1/computation/jobs", None)
        .await;
    let kept = jobs["jobs"]
        .as_array()
        .or(jobs.as_array())
        .map_or(0, Vec::len);
    assert!((1..=10).contains(&kept), "{kept} jobs kept");
}
