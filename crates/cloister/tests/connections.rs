//! Slow or idle connections cannot exhaust the process: the real binary on loopback, with small
//! limits in `[runtime]`, against clients that trickle headers or open too many connections.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use test_support::server::{Server, TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_cloister");

/// Only a guard against a hang: no assertion depends on how long anything takes.
const HANG_GUARD: Duration = Duration::from_secs(60);

fn write_config(dir: &Path, runtime: &str) -> PathBuf {
    let text = format!(
        "[runtime]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{runtime}",
        dir.join("data").display()
    );
    let path = dir.join("cloister.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn address(server: &Server) -> SocketAddr {
    server
        .base
        .strip_prefix("http://")
        .and_then(|a| a.parse().ok())
        .expect("the server's address")
}

/// A connection to `server` from the loopback address `from` (Linux routes all of 127/8 to
/// the loopback interface, so each is another peer address).
async fn connect_from(from: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::V4(from), 0))
        .expect("bind a loopback address");
    socket.connect(server).await.expect("connect")
}

/// Reads until the server closes the connection (end of file, or a reset); what it sent before
/// is returned. While waiting, `trickle` (if any) is sent one byte at a time, as a slowloris does.
async fn until_closed(stream: &mut TcpStream, trickle: Option<&[u8]>) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut trickle = trickle.unwrap_or_default().iter().cycle();
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            tokio::select! {
                read = stream.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                },
                _ = tick.tick() => {
                    if let Some(b) = trickle.next()
                        && stream.write_all(&[*b]).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the server kept the connection open (hang guard); it sent: {:?}",
            String::from_utf8_lossy(&got)
        )
    });
    got
}

/// One request on `stream`, kept alive; answers the status line.
async fn get(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: cloister\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(HANG_GUARD, async {
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before answering {path}");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("an answer (hang guard)");
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// README, "Limits": a client that trickles its headers is cut off after
/// `runtime.header_read_timeout`, however slowly it keeps sending, and others are served
/// meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_headers_is_cut_off_while_another_is_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "header_read_timeout = \"1s\"\n");
    let server = Server::start(BIN, &config).await;
    let addr = address(&server);

    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /livez HTTP/1.1\r\nHost: cloister\r\n")
        .await
        .expect("write");
    // Served while the slow client holds its connection.
    let mut normal = TcpStream::connect(addr).await.expect("connect");
    assert_eq!(get(&mut normal, "/livez").await, "HTTP/1.1 200 OK");

    let sent = until_closed(&mut slow, Some(b"X-Slow: y\r\n")).await;
    assert!(
        !String::from_utf8_lossy(&sent).contains("200 OK"),
        "the slow request was served: {:?}",
        String::from_utf8_lossy(&sent)
    );
    drop(normal);
    // And the server still serves.
    let (status, _) = server.json(reqwest::Method::GET, "/livez", None).await;
    assert_eq!(status, 200);
}

/// README, "Limits": a peer address over `runtime.max_connections_per_peer` has its next
/// connection closed at once while another address is served, and over `runtime.max_connections`
/// any next connection is closed; each refusal is counted in
/// `cloister_http_connections_refused_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_caps_are_closed_at_once_while_another_peer_is_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        "max_connections_per_peer = 2\nmax_connections = 3\nheader_read_timeout = \"10m\"\n",
    );
    let server = Server::start(BIN, &config).await;
    let addr = address(&server);
    // The harness followed the event stream to see the runtime ready, from 127.0.0.1: once the
    // server has closed that connection, only this test's connections count.
    until_only_the_asker_is_open(addr).await;
    let greedy = Ipv4Addr::new(127, 0, 0, 4);

    // Two kept-alive connections from one address: each served, so each accepted and counted.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = connect_from(greedy, addr).await;
        assert_eq!(get(&mut c, "/livez").await, "HTTP/1.1 200 OK");
        held.push(c);
    }
    // A third from the same address is closed without an answer.
    let mut third = connect_from(greedy, addr).await;
    let _ = third
        .write_all(b"GET /livez HTTP/1.1\r\nHost: cloister\r\n\r\n")
        .await;
    let answer = until_closed(&mut third, None).await;
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));

    // Another address is served: the third connection in all.
    let mut other = connect_from(Ipv4Addr::new(127, 0, 0, 2), addr).await;
    assert_eq!(get(&mut other, "/livez").await, "HTTP/1.1 200 OK");

    // A fourth in all, from yet another address, is over max_connections.
    let mut fourth = connect_from(Ipv4Addr::new(127, 0, 0, 3), addr).await;
    let _ = fourth
        .write_all(b"GET /livez HTTP/1.1\r\nHost: cloister\r\n\r\n")
        .await;
    let answer = until_closed(&mut fourth, None).await;
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));

    // The refusals are counted (asked on a connection already held).
    other
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: cloister\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("write");
    let metrics = String::from_utf8(until_closed(&mut other, None).await).expect("text");
    for line in [
        "cloister_http_connections_refused_total{limit=\"max_connections_per_peer\"} 1",
        "cloister_http_connections_refused_total{limit=\"max_connections\"} 1",
        "cloister_http_connections_open 3",
    ] {
        assert!(metrics.contains(line), "no {line:?} in:\n{metrics}");
    }
    drop(held);
}

/// Asks `/metrics` (over a new connection from 127.0.0.9, closed after each answer) until the
/// server counts only that connection open: connections an earlier client dropped are gone.
async fn until_only_the_asker_is_open(addr: SocketAddr) {
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            let mut asker = connect_from(Ipv4Addr::new(127, 0, 0, 9), addr).await;
            asker
                .write_all(
                    format!("GET /metrics HTTP/1.1\r\nHost: cloister\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
                .await
                .expect("write");
            let metrics = String::from_utf8_lossy(&until_closed(&mut asker, None).await).into_owned();
            if metrics.contains("cloister_http_connections_open 1\n") {
                return;
            }
            // The server closes a dropped connection when it next polls it.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the earlier connections close (hang guard)");
}

/// README, "Limits": a body that does not arrive within `runtime.body_read_timeout` is answered
/// 408 `request.body_timeout` in the API's error shape, and the connection closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_is_408_body_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), "body_read_timeout = \"1s\"\n");
    let server = Server::start(BIN, &config).await;
    let mut slow = TcpStream::connect(address(&server)).await.expect("connect");
    slow.write_all(
        format!(
            "POST /v1/crypto/keys HTTP/1.1\r\nHost: cloister\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"algo"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let answer = String::from_utf8(until_closed(&mut slow, None).await).expect("text");
    assert!(
        answer.starts_with("HTTP/1.1 408") && answer.contains("\"code\":\"request.body_timeout\""),
        "{answer}"
    );
}
