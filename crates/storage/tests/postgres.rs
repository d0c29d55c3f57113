//! The storage service on a private PostgreSQL server: what the database's operator (or anyone
//! with SQL access) can do to the rows, and what the service makes of it; an older dump restored;
//! the database stopped and started again under a running service.

mod common;

use common::{build_on, failure, postgres, start_on};

use runtime::{Classify, ErrorKind};
use storage::{Error, Request, Value};
use test_support::postgres::Postgres;

const ALICE: &str = "alice";

async fn put(h: &storage::Handle, key: &str, value: &[u8]) -> Result<u64, Error> {
    h.call(|reply| Request::Put {
        namespace: ALICE.into(),
        key: key.into(),
        value: value.to_vec(),
        reply,
    })
    .await
    .expect("call")
}

async fn get(h: &storage::Handle, key: &str) -> Result<Value, Error> {
    h.call(|reply| Request::Get {
        namespace: ALICE.into(),
        key: key.into(),
        reply,
    })
    .await
    .expect("call")
}

async fn list(h: &storage::Handle) -> Result<Vec<String>, Error> {
    h.call(|reply| Request::List {
        namespace: ALICE.into(),
        prefix: String::new(),
        after: None,
        limit: 100,
        reply,
    })
    .await
    .expect("call")
    .map(|page| page.keys.into_iter().map(|l| l.key).collect())
}

/// The SQL naming one of alice's rows.
fn row(key: &str) -> String {
    format!("namespace = convert_to('{ALICE}', 'UTF8') AND key = convert_to('{key}', 'UTF8')")
}

fn integrity(key: &str) -> Result<Value, Error> {
    Err(Error::Integrity { key: key.into() })
}

#[tokio::test]
async fn rows_changed_with_sql_read_as_integrity_errors_naming_the_key() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let f = start_on(dir.path(), postgres(&pg), None).await;
    let h = &f.storage;
    let record = |key: &str| {
        pg.sql(&format!(
            "SELECT encode(record, 'hex') FROM storage_values WHERE {}",
            row(key)
        ))
    };
    put(h, "replayed", b"the first value").await.expect("put");
    put(h, "spliced", b"an older value").await.expect("put");
    let first = record("replayed");
    let spliced_first = record("spliced");
    for (key, value) in [
        ("replayed", &b"the second value"[..]),
        ("altered", b"a value to alter"),
        ("source", b"a value to copy"),
        ("target", b"the target's own value"),
        ("spliced", b"a value whose version is kept"),
        ("intact", b"left alone"),
    ] {
        put(h, key, value).await.expect("put");
    }
    // One bit of the ciphertext flipped.
    pg.sql(&format!(
        "UPDATE storage_values SET record = set_byte(record, length(record) - 1, \
         get_byte(record, length(record) - 1) # 1) WHERE {}",
        row("altered")
    ));
    // Another key's row copied over this one's.
    pg.sql(&format!(
        "UPDATE storage_values SET record = (SELECT record FROM storage_values WHERE {}) WHERE {}",
        row("source"),
        row("target")
    ));
    // An older ciphertext of the same key under the current version: the version is bound.
    pg.sql(&format!(
        "UPDATE storage_values SET record = substring(record FROM 1 FOR 9) || \
         substring(decode('{spliced_first}', 'hex') FROM 10) WHERE {}",
        row("spliced")
    ));
    // Another key's older row, whole (its own version and ciphertext), replayed into this one.
    pg.sql(&format!(
        "UPDATE storage_values SET record = decode('{first}', 'hex') WHERE {}",
        row("intact")
    ));
    assert_eq!(get(h, "altered").await, integrity("altered"));
    assert_eq!(get(h, "target").await, integrity("target"));
    assert_eq!(get(h, "spliced").await, integrity("spliced"));
    assert_eq!(get(h, "intact").await, integrity("intact"));
    assert_eq!(
        get(h, "source").await.expect("untouched").data,
        b"a value to copy"
    );
    // The limit docs/security.md states: one key's own older row, whole, reads as that older
    // value. Per-row encryption cannot tell it from the current one; only a whole database
    // behind the freshness counter is refused (at start).
    pg.sql(&format!(
        "UPDATE storage_values SET record = decode('{first}', 'hex') WHERE {}",
        row("replayed")
    ));
    assert_eq!(
        get(h, "replayed")
            .await
            .expect("an older row of its own")
            .data,
        b"the first value"
    );
    // A row that is not a record at all, and one planted in a namespace without a key.
    pg.sql(&format!(
        "UPDATE storage_values SET record = '\\x02'::bytea WHERE {}",
        row("source")
    ));
    assert_eq!(get(h, "source").await, integrity("source"));
    pg.sql(&format!(
        "INSERT INTO storage_values SELECT convert_to('mallory', 'UTF8'), key, record \
         FROM storage_values WHERE {}",
        row("replayed")
    ));
    let planted = h
        .call(|reply| Request::Get {
            namespace: "mallory".into(),
            key: "replayed".into(),
            reply,
        })
        .await
        .expect("call");
    assert_eq!(planted, integrity("replayed"));
    f.rt.shutdown().await;
}

#[tokio::test]
async fn a_dump_of_the_database_holds_none_of_the_values() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let f = start_on(dir.path(), postgres(&pg), None).await;
    let values: Vec<String> = (0..20)
        .map(|i| format!("plaintext value number {i} that must not reach the database"))
        .collect();
    for (i, value) in values.iter().enumerate() {
        put(&f.storage, &format!("key-{i}"), value.as_bytes())
            .await
            .expect("put");
    }
    f.rt.shutdown().await;
    let dump = pg.dump();
    let text = String::from_utf8_lossy(&dump);
    // The dump is real: it holds the rows (keys are plaintext, as docs/security.md says; bytea
    // is dumped as hex).
    assert!(text.contains("storage_values"), "no table in the dump");
    assert!(
        text.contains(&hex(b"key-19")),
        "the rows are not in the dump"
    );
    for value in &values {
        for needle in [
            value.clone(),
            hex(value.as_bytes()),
            hex(&value.as_bytes()[..16]),
        ] {
            assert!(
                !text.contains(&needle),
                "the dump holds {needle:?} (from the value {value:?})"
            );
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn an_older_dump_restored_is_refused_at_start_and_the_override_admits_it() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let f = start_on(dir.path(), postgres(&pg), None).await;
    let v1 = put(&f.storage, "k1", b"one").await.expect("put");
    f.rt.shutdown().await;
    let older = pg.dump();
    let f = start_on(dir.path(), postgres(&pg), None).await;
    put(&f.storage, "k2", b"two").await.expect("put");
    let v3 = put(&f.storage, "k3", b"three").await.expect("put");
    f.rt.shutdown().await;

    pg.restore(&older);
    let f = build_on(dir.path(), postgres(&pg), None, |_| {}, |_| {});
    let reason = failure(&f.journal).await;
    let expected = storage::StateError::RolledBack {
        found: v1,
        expected: v3,
    };
    assert!(
        reason.contains(&expected.to_string())
            && reason.contains(&format!("--accept-storage-rollback {v1}")),
        "{reason}"
    );
    f.rt.shutdown().await;

    // The operator accepts the restored database: it serves what the dump held, and no commit
    // number is used twice.
    let f = start_on(dir.path(), postgres(&pg), Some(v1)).await;
    assert_eq!(get(&f.storage, "k1").await.expect("get").data, b"one");
    assert_eq!(
        get(&f.storage, "k3").await,
        Err(Error::NotFound("k3".into()))
    );
    let next = put(&f.storage, "k4", b"four").await.expect("put");
    assert!(next > v3, "commit {next} reuses a number up to {v3}");
    f.rt.shutdown().await;
    // Accepted once: the next start is an ordinary one.
    let f = start_on(dir.path(), postgres(&pg), None).await;
    assert_eq!(get(&f.storage, "k4").await.expect("get").version, next);
    f.rt.shutdown().await;
}

#[tokio::test]
async fn a_stopped_database_gives_retryable_errors_and_the_service_recovers_by_itself() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let f = start_on(dir.path(), postgres(&pg), None).await;
    let h = &f.storage;
    let before = put(h, "before", b"kept").await.expect("put");

    pg.stop_server();
    let retryable = |e: &Error| {
        e.code() == "storage.unavailable" && matches!(e.kind(), ErrorKind::Unavailable { .. })
    };
    let read = get(h, "before").await.expect_err("the database is down");
    assert!(retryable(&read), "{read:?}");
    let write = put(h, "during", b"lost")
        .await
        .expect_err("the database is down");
    assert!(retryable(&write), "{write:?}");
    let listing = list(h).await.expect_err("the database is down");
    assert!(retryable(&listing), "{listing:?}");

    // Back: the very next requests succeed, through new connections, with no restart.
    pg.start_server();
    assert_eq!(get(h, "before").await.expect("get").data, b"kept");
    let after = put(h, "after", b"new").await.expect("put");
    assert!(after > before);
    assert_eq!(list(h).await.expect("list"), ["after", "before"]);
    f.rt.shutdown().await;
    // And a start finds the database and the counter agreeing.
    let f = start_on(dir.path(), postgres(&pg), None).await;
    assert_eq!(get(&f.storage, "after").await.expect("get").version, after);
    f.rt.shutdown().await;
}
