//! The real binary with `[storage] backend = "postgres"` on a private PostgreSQL server, spoken to
//! over HTTP: values go to the database as ciphertext only, survive a restart of the process,
//! and a stopped database answers 503 with `Retry-After` until it is back.

const BIN: &str = env!("CARGO_BIN_EXE_cloister");

use serde_json::Value;
use test_support::postgres::Postgres;
use test_support::server::{Server, command};

async fn list(server: &Server, query: &str) -> (u16, Value) {
    server
        .json(reqwest::Method::GET, &format!("/v1/storage?{query}"), None)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_keeps_values_in_postgres_as_ciphertext_across_restarts() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = pg.write_config(dir.path());
    let server = Server::start(BIN, &config).await;
    let values: Vec<(String, Vec<u8>)> = (0..5)
        .map(|i| {
            (
                format!("docs/{i}"),
                format!("the confidential document number {i}").into_bytes(),
            )
        })
        .collect();
    for (key, value) in &values {
        let r = server.put(key, value.clone()).await.expect("put");
        assert_eq!(r.status().as_u16(), 200);
    }
    for (key, value) in &values {
        assert_eq!(server.get(key).await, (200, value.clone()));
    }
    let (status, page) = list(&server, "prefix=docs/&limit=3").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["keys"].as_array().expect("keys").len(), 3);
    let next = page["next"].as_str().expect("a next page").to_owned();
    let (status, page) = list(&server, &format!("prefix=docs/&limit=3&after={next}")).await;
    assert_eq!(status, 200, "{page}");
    let rest: Vec<&str> = page["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["key"].as_str().expect("key"))
        .collect();
    assert_eq!(rest, ["docs/3", "docs/4"]);
    // The records are in the database, and no redb file was made.
    assert_eq!(
        pg.sql("SELECT count(*) FROM storage_values WHERE key LIKE 'docs/%'::bytea"),
        "5"
    );
    assert!(!dir.path().join("data/storage.redb").exists());
    assert!(server.terminate().success());

    let dump = String::from_utf8_lossy(&pg.dump()).into_owned();
    for (_, value) in &values {
        let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
        let text = String::from_utf8_lossy(value);
        assert!(
            !dump.contains(&hex) && !dump.contains(text.as_ref()),
            "the dump holds {text:?}"
        );
    }

    let server = Server::start(BIN, &config).await;
    for (key, value) in &values {
        assert_eq!(server.get(key).await, (200, value.clone()));
    }
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_answers_503_with_retry_after_until_it_is_back() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = pg.write_config(dir.path());
    let server = Server::start(BIN, &config).await;
    let r = server.put("kept", b"kept".to_vec()).await.expect("put");
    assert_eq!(r.status().as_u16(), 200);

    let head = test_support::server::journal_head(&config);
    pg.stop_server();
    for request in [
        server.http.get(format!("{}/v1/storage/kept", server.base)),
        server
            .http
            .put(format!("{}/v1/storage/during", server.base))
            .body("x"),
    ] {
        let r = request
            .bearer_auth(&server.token)
            .send()
            .await
            .expect("answered");
        assert_eq!(r.status().as_u16(), 503);
        assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"]["code"], "storage.unavailable", "{body}");
        assert_eq!(body["error"]["retryable"], true, "{body}");
    }

    // Meanwhile the service says why it is degraded (status, /readyz, the journal).
    let storage_health = |level: &'static str| {
        move |e: &Value| {
            e["service"] == "storage"
                && e["event"]["kind"] == "health_changed"
                && e["event"]["health"]["level"] == level
        }
    };
    let degraded = server.wait_event(head, storage_health("degraded")).await;
    let reason = degraded["event"]["health"]["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("the PostgreSQL database cannot be reached"),
        "{degraded}"
    );

    // Back: the next requests are served, with no restart of anything.
    pg.start_server();
    assert_eq!(server.get("kept").await, (200, b"kept".to_vec()));
    let since = degraded["seq"].as_u64().expect("seq");
    server.wait_event(since, storage_health("healthy")).await;
    let r = server.put("after", b"after".to_vec()).await.expect("put");
    assert_eq!(r.status().as_u16(), 200);
    let (status, services) = server
        .json(reqwest::Method::GET, "/v1/services/storage", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(services["restart_count"], 0, "{services}");
    assert!(server.terminate().success());
}

#[test]
fn a_database_url_that_cannot_be_used_stops_the_start_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (storage, reason) in [
        (
            "database_url = \"postgres://cloister@127.0.0.1:5432\"".to_owned(),
            "storage.database_url: the database URL names no database",
        ),
        (
            format!(
                "database_url_file = \"{}\"",
                dir.path().join("missing").display()
            ),
            "storage.database_url_file: cannot read",
        ),
    ] {
        let path = dir.path().join("cloister.toml");
        std::fs::write(
            &path,
            format!(
                "[runtime]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[storage]\nbackend = \"postgres\"\n{storage}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("write");
        let out = command(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains(reason), "{stderr}");
    }
}
