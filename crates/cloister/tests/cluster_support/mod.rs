//! What the cluster tests share: the CLI with the admin token, a node's `GET /v1/cluster`, a first
//! node with the cluster made on it, and waiting for an audit entry.

use std::path::Path;

use serde_json::Value;
use test_support::postgres::Postgres;
use test_support::server::{Server, TOKEN, command, journal_head};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_cloister");

/// `cloister cluster ARGS --url URL` with the admin token: exit status, stdout, stderr.
pub(crate) fn cli(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = command(BIN)
        .arg("cluster")
        .args(args)
        .args(["--url", url])
        .env("CLOISTER_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("cloister cluster");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A node's `GET /v1/cluster`, and the `x-cloister-node` header it came with.
pub(crate) async fn status(server: &Server) -> (Value, String) {
    let r = server
        .http
        .get(format!("{}/v1/cluster", server.base))
        .bearer_auth(&server.token)
        .send()
        .await
        .expect("GET /v1/cluster");
    assert_eq!(r.status().as_u16(), 200);
    let node = r
        .headers()
        .get("x-cloister-node")
        .expect("x-cloister-node")
        .to_str()
        .expect("text")
        .to_owned();
    (r.json().await.expect("json"), node)
}

/// Starts node A and makes the cluster on it with `cloister cluster init`; answers the server,
/// what init printed, and the head of A's journal after it.
pub(crate) async fn first_node(pg: &Postgres, dir: &Path) -> (Server, Value, u64) {
    let config = pg.write_config(dir);
    let a = Server::start(BIN, &config).await;
    let (ok, out, err) = cli(&a.base, &["init", "--json"]);
    assert!(ok, "cluster init: {err}");
    let made: Value = serde_json::from_str(&out).expect("json");
    let head = journal_head(&config);
    (a, made, head)
}

/// The audit entry `action` about `subject` in `server`'s journal after `since`.
pub(crate) async fn audit(server: &Server, since: u64, action: &str, subject: &str) -> Value {
    server
        .wait_event(since, |e| {
            e["event"]["kind"] == "audit"
                && e["event"]["action"] == action
                && e["event"]["subject"] == subject
        })
        .await
}
