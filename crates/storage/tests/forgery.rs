//! The host edits `storage.redb` while the service is stopped, as an adversary would: an old copy
//! with its commit number forged to the counter's, one record's older value spliced in, one record
//! deleted, the state digest removed. Each is refused at start with the typed [`StateError`]
//! naming what was found (through `Storage::verify`, which runs the same check and changes
//! nothing), and through the service, which fails for the operator with the command to accept it.

mod common;

use std::path::Path;

use common::{build, failure, recipe, start};

use storage::{Request, StateError, Value, Verified};

const ALICE: &str = "alice";
const VALUES: redb::TableDefinition<(&str, &str), &[u8]> = redb::TableDefinition::new("values");
const META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
const STATE: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("state");

/// What a start would find, without starting.
fn verify(dir: &Path) -> Result<Verified, StateError> {
    recipe(dir).verify()
}

/// Starts storage expecting the refusal `expected`, and checks the reason says it with the
/// command that accepts it.
async fn refused(dir: &Path, expected: &StateError) {
    let f = build(dir, None, |_| {});
    let reason = failure(&f.journal).await;
    let seq = expected.refused_at().expect("a refusal");
    assert!(
        reason.contains(&expected.to_string())
            && reason.contains(&format!("--accept-storage-rollback {seq}")),
        "{reason}"
    );
    f.rt.shutdown().await;
}

async fn put(h: &storage::Handle, key: &str, value: &[u8]) -> u64 {
    h.call(|reply| Request::Put {
        namespace: ALICE.into(),
        key: key.into(),
        value: value.to_vec(),
        reply,
    })
    .await
    .expect("call")
    .expect("put")
}

async fn get(h: &storage::Handle, key: &str) -> Result<Value, storage::Error> {
    h.call(|reply| Request::Get {
        namespace: ALICE.into(),
        key: key.into(),
        reply,
    })
    .await
    .expect("call")
}

/// Runs `edit` in one write transaction on the stopped service's database.
fn edit(dir: &Path, edit: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::open(dir.join("storage.redb")).expect("open");
    let txn = db.begin_write().expect("write");
    edit(&txn);
    txn.commit().expect("commit");
}

fn record(path: &Path, key: &str) -> Vec<u8> {
    let db = redb::Database::open(path).expect("open");
    let txn = redb::ReadableDatabase::begin_read(&db).expect("read");
    let table = txn.open_table(VALUES).expect("values");
    table
        .get((ALICE, key))
        .expect("get")
        .expect("present")
        .value()
        .to_vec()
}

/// Item (a): the host keeps an old copy, and after newer commits puts it back with the commit
/// number in its plain metadata forged to the counter's value. The balance would be the old one.
#[tokio::test]
async fn an_old_copy_with_its_commit_number_forged_to_the_counter_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db_path = dir.path().join("storage.redb");
    let f = start(dir.path(), None).await;
    put(&f.storage, "balance", b"100").await;
    f.rt.shutdown().await;
    let old_copy = std::fs::read(&db_path).expect("read");

    let f = start(dir.path(), None).await;
    put(&f.storage, "balance", b"0").await;
    let mut last = put(&f.storage, "spent", b"100").await;
    // More commits than the freshness counter carries (within its reach, the commits the copy
    // lacks would be applied from it: `a_database_behind_the_counter_within_its_slots_is_brought_up_to_it`).
    for i in 0..storage::LOG_SLOTS {
        last = put(&f.storage, &format!("filler-{i}"), b"x").await;
    }
    f.rt.shutdown().await;

    std::fs::write(&db_path, &old_copy).expect("swap");
    assert_eq!(
        verify(dir.path()),
        Err(StateError::RolledBack {
            found: 1,
            expected: last
        }),
        "the old copy as it is"
    );
    edit(dir.path(), |txn| {
        txn.open_table(META)
            .expect("meta")
            .insert("commit", last)
            .expect("forge");
    });
    let expected = StateError::StateMismatch {
        found: last,
        entries: 2,
    };
    assert_eq!(verify(dir.path()), Err(expected.clone()), "forged");
    refused(dir.path(), &expected).await;
}

/// Item (b): one record's older encrypted value, from an older copy, spliced into the current
/// database. Its associated data (namespace, key, version) is its own, so it would decrypt.
#[tokio::test]
async fn an_older_value_spliced_in_from_an_old_copy_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db_path = dir.path().join("storage.redb");
    let f = start(dir.path(), None).await;
    put(&f.storage, "token", b"valid").await;
    put(&f.storage, "other", b"x").await;
    f.rt.shutdown().await;
    let old_path = dir.path().join("old.redb");
    std::fs::copy(&db_path, &old_path).expect("copy");
    let old_record = record(&old_path, "token");

    let f = start(dir.path(), None).await;
    let last = put(&f.storage, "token", b"revoked").await;
    f.rt.shutdown().await;
    assert_ne!(record(&db_path, "token"), old_record);

    edit(dir.path(), |txn| {
        txn.open_table(VALUES)
            .expect("values")
            .insert((ALICE, "token"), old_record.as_slice())
            .expect("splice");
    });
    let expected = StateError::StateMismatch {
        found: last,
        entries: 3,
    };
    assert_eq!(verify(dir.path()), Err(expected.clone()));
    refused(dir.path(), &expected).await;

    // The operator may accept it (say, a repair they made on purpose): then it is served, and the
    // next start is a normal one.
    let f = start(dir.path(), Some(last)).await;
    assert_eq!(get(&f.storage, "token").await.expect("get").data, b"valid");
    f.rt.shutdown().await;
    assert_eq!(
        verify(dir.path()),
        Ok(Verified {
            seq: last,
            entries: 3,
            pending: 0
        })
    );
}

/// Item (c): one record deleted directly in redb.
#[tokio::test]
async fn a_record_deleted_in_the_database_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = start(dir.path(), None).await;
    put(&f.storage, "a", b"1").await;
    let last = put(&f.storage, "revocations", b"token-7").await;
    f.rt.shutdown().await;
    edit(dir.path(), |txn| {
        txn.open_table(VALUES)
            .expect("values")
            .remove((ALICE, "revocations"))
            .expect("remove");
    });
    let expected = StateError::StateMismatch {
        found: last,
        entries: 2,
    };
    assert_eq!(verify(dir.path()), Err(expected.clone()));
    refused(dir.path(), &expected).await;
}

/// A database without the state digest (written before it existed, or with the digest removed)
/// is not taken as current: refused until the operator accepts its commit number, which seals it
/// as it is.
#[tokio::test]
async fn a_database_without_its_state_digest_is_refused_until_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = start(dir.path(), None).await;
    let last = put(&f.storage, "a", b"1").await;
    f.rt.shutdown().await;
    edit(dir.path(), |txn| {
        txn.delete_table(STATE).expect("delete the state table");
    });
    let expected = StateError::Untagged { found: last };
    assert_eq!(verify(dir.path()), Err(expected.clone()));
    refused(dir.path(), &expected).await;
    let f = start(dir.path(), Some(last)).await;
    assert_eq!(get(&f.storage, "a").await.expect("get").data, b"1");
    f.rt.shutdown().await;
    assert_eq!(
        verify(dir.path()),
        Ok(Verified {
            seq: last,
            entries: 2,
            pending: 0
        })
    );
}

/// The digest follows every kind of write, so the normal path never trips it: puts over existing
/// keys, deletes, batches and a dropped namespace, across restarts.
#[tokio::test]
async fn every_kind_of_write_keeps_the_digest_true() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        verify(dir.path()),
        Ok(Verified {
            seq: 0,
            entries: 0,
            pending: 0
        })
    );
    let f = start(dir.path(), None).await;
    put(&f.storage, "a", b"1").await;
    put(&f.storage, "a", b"2").await;
    put(&f.storage, "b", b"3").await;
    f.storage
        .call(|reply| Request::Delete {
            namespace: ALICE.into(),
            key: "b".into(),
            reply,
        })
        .await
        .expect("call")
        .expect("delete");
    f.storage
        .call(|reply| Request::Batch {
            namespace: "bob".into(),
            writes: vec![
                storage::Write::Put {
                    key: "x".into(),
                    value: b"y".to_vec(),
                },
                storage::Write::Delete { key: "z".into() },
            ],
            reply,
        })
        .await
        .expect("call")
        .expect("batch");
    let last = f
        .storage
        .call(|reply| Request::DropNamespace {
            namespace: "bob".into(),
            reply,
        })
        .await
        .expect("call")
        .expect("drop");
    f.rt.shutdown().await;
    // alice's namespace mapping and her one value.
    assert_eq!(
        verify(dir.path()),
        Ok(Verified {
            seq: last,
            entries: 2,
            pending: 0
        })
    );
    let f = start(dir.path(), None).await;
    assert_eq!(get(&f.storage, "a").await.expect("get").data, b"2");
    f.rt.shutdown().await;
}
