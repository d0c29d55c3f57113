//! Values over HTTP: put, get, list, delete, and what a tampered value answers.

use super::*;

#[tokio::test]
async fn storage_over_http_with_clear_errors() {
    let h = harness_with(false, true).await;
    let app = &h.app;
    let binary: Vec<u8> = (0..=255).collect();
    let (status, _, body) = raw(app, "PUT", "/v1/storage/docs/a%20b.bin", binary.clone()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let put: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(put["key"], "docs/a b.bin");
    let (status, headers, body) = raw(app, "GET", "/v1/storage/docs/a%20b.bin", vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, binary);
    assert_eq!(
        headers["x-cloister-version"].to_str().expect("ascii"),
        put["version"].to_string()
    );

    let (status, _, body) = send(
        app,
        "POST",
        "/v1/storage",
        Some(TOKEN),
        r#"{"writes":[{"key":"docs/c","value":"aGk="},{"key":"other","value":""},{"key":"nope","delete":true}]}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = send(
        app,
        "GET",
        "/v1/storage?prefix=docs/&limit=1",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["keys"][0]["key"], "docs/a b.bin");
    assert_eq!(body["next"], "docs/a b.bin");
    let (_, _, body) = send(
        app,
        "GET",
        "/v1/storage?prefix=docs/&limit=1&after=docs/a%20b.bin",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(body["keys"][0]["key"], "docs/c");
    assert_eq!(body["next"], Value::Null);

    // Errors: unknown key 404, oversized value 413, bad base64 400, bad limit 400, no token 401.
    let (status, _, body) = raw(app, "GET", "/v1/storage/missing", vec![]).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (StatusCode::NOT_FOUND, "storage.not_found")
    );
    let (status, _, body) = raw(app, "PUT", "/v1/storage/big", vec![0; (1 << 20) + 1]).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "storage.too_large")
    );
    let (status, _, body) = send(
        app,
        "POST",
        "/v1/storage",
        Some(TOKEN),
        r#"{"writes":[{"key":"k","value":"not base64!"}]}"#,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("request.invalid_base64"))
    );
    let (status, _, body) = send(
        app,
        "POST",
        "/v1/storage",
        Some(TOKEN),
        r#"{"writes":[{"key":"k","value":"aGk=","delete":true}]}"#,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("request.invalid_body"))
    );
    let (status, _, body) = send(app, "GET", "/v1/storage?limit=0", Some(TOKEN), "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("storage.bad_input"))
    );
    let (status, _, _) = send(app, "GET", "/v1/storage/docs/c", None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, _, _) = raw(app, "DELETE", "/v1/storage/docs/c", vec![]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = raw(app, "DELETE", "/v1/storage/docs/c", vec![]).await;
    assert_eq!(
        (status, code(&body).as_str()),
        (StatusCode::NOT_FOUND, "storage.not_found")
    );
    h.runtime.shutdown().await;
}

/// docs/api.md: 500 `storage.integrity` when a stored value was modified on disk: the message names
/// the key, and no data is returned; other keys still read. A modified value no longer matches the
/// database's sealed state digest, so storage first refuses to start (`storage/tests/forgery.rs`);
/// the operator accepting that state is what lets the API answer at all.
#[tokio::test]
async fn error_code_storage_integrity_is_500_naming_the_key() {
    let h = harness_with(false, true).await;
    let value = vec![b'v'; 64];
    let (status, _, body) = raw(&h.app, "PUT", "/v1/storage/ledger", value).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let version = serde_json::from_slice::<Value>(&body).expect("json")["version"]
        .as_u64()
        .expect("version");
    let (status, _, _) = raw(&h.app, "PUT", "/v1/storage/other", b"intact".to_vec()).await;
    assert_eq!(status, StatusCode::OK);

    // Stop storage (its dependents first), so its file is closed, then change one byte of the
    // value's ciphertext. A record is a format byte (1), the version (u64, little endian), then
    // the crypto service's ciphertext: key version (4 bytes), nonce (12), the encrypted value, tag.
    let since = h.runtime.journal().last_seq();
    h.runtime.stop(&::storage::NAME).await.expect("stop");
    h.runtime
        .journal()
        .wait_for(since, Duration::from_secs(60), |e| {
            e.service.as_ref() == Some(&::storage::NAME) && matches!(e.event, Event::Stopped { .. })
        })
        .await
        .expect("storage stops");
    // The record is found by its whole bytes, read through redb: a short pattern (the format byte
    // and the version) can also match the database's own metadata, which must not be hit.
    let file = h.dir.path().join("storage.redb");
    let record = stored_record(&file, "ledger");
    assert_eq!(record[0], 1, "format byte");
    assert_eq!(
        record[1..9],
        version.to_le_bytes(),
        "the record of version {version}"
    );
    let mut bytes = std::fs::read(&file).expect("read the database");
    let starts: Vec<usize> = bytes
        .windows(record.len())
        .enumerate()
        .filter(|(_, w)| *w == record.as_slice())
        .map(|(i, _)| i)
        .collect();
    assert!(!starts.is_empty(), "the record is in the file");
    for start in starts {
        bytes[start + 9 + 16 + 10] ^= 0x01;
    }
    std::fs::write(&file, bytes).expect("tamper");
    let since = h.runtime.journal().last_seq();
    h.runtime.start(&::storage::NAME).await.expect("start");
    let failed = h
        .runtime
        .journal()
        .wait_for(since, Duration::from_secs(60), |e| {
            e.service.as_ref() == Some(&::storage::NAME) && matches!(e.event, Event::Failed { .. })
        })
        .await
        .expect("storage refuses the modified database");
    let Event::Failed { reason } = &failed.event else {
        unreachable!()
    };
    assert!(
        reason.contains("does not match the sealed digest"),
        "{reason}"
    );
    let accept: u64 = reason
        .split("--accept-storage-rollback ")
        .nth(1)
        .and_then(|rest| rest.split('`').next())
        .and_then(|n| n.parse().ok())
        .expect("the commit to accept, in the reason");
    let Harness { runtime, dir, .. } = h;
    runtime.shutdown().await;
    let h = start(Setup {
        with_storage: true,
        dir: Some(dir),
        accept_storage_rollback: Some(accept),
        ..Setup::default()
    })
    .await;

    let answer = send(&h.app, "GET", "/v1/storage/ledger", Some(TOKEN), "").await;
    assert_error(
        &answer,
        StatusCode::INTERNAL_SERVER_ERROR,
        "storage.integrity",
        None,
    );
    assert!(
        answer.2["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("ledger")),
        "{}",
        answer.2
    );
    let (status, _, body) = raw(&h.app, "GET", "/v1/storage/other", vec![]).await;
    assert_eq!((status, body), (StatusCode::OK, b"intact".to_vec()));
    h.runtime.shutdown().await;
}

/// The bytes the storage service keeps for `key` (in any namespace), read from its stopped
/// database with redb directly.
fn stored_record(file: &std::path::Path, key: &str) -> Vec<u8> {
    use redb::{ReadableDatabase, ReadableTable};
    const VALUES: redb::TableDefinition<(&str, &str), &[u8]> = redb::TableDefinition::new("values");
    let db = redb::Database::open(file).expect("open the stopped service's database");
    let txn = db.begin_read().expect("read");
    let values = txn.open_table(VALUES).expect("the values table");
    let found = values
        .iter()
        .expect("iterate")
        .map(|row| row.expect("a row"))
        .find(|(k, _)| k.value().1 == key)
        .expect("the key is stored");
    found.1.value().to_vec()
}
