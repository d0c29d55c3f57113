//! The storage service through its handle, with the crypto service, on the simulation platform.

mod common;

use std::path::Path;

use common::{
    Fixture, build, build_on, build_with, failure, platform, postgres, ready, recipe, start,
    start_on,
};
use test_support::postgres::Postgres;

use runtime::journal::Event;
use runtime::{Builder, Journal};
use storage::{Error, Request, Storage, Value, Write};

const ALICE: &str = "alice";
const BOB: &str = "bob";

async fn put(h: &storage::Handle, ns: &str, key: &str, value: &[u8]) -> Result<u64, Error> {
    h.call(|reply| Request::Put {
        namespace: ns.into(),
        key: key.into(),
        value: value.to_vec(),
        reply,
    })
    .await
    .expect("call")
}

/// Commits as many times as the freshness counter carries commits, so a copy of the database taken
/// before is out of its reach (within it, the commits the copy lacks are applied at start);
/// answers the last commit number.
async fn past_the_counters_reach(h: &storage::Handle) -> u64 {
    let mut last = 0;
    for i in 0..storage::LOG_SLOTS {
        last = put(h, "filler", &format!("f{i}"), b"x").await.expect("put");
    }
    last
}

/// Drops namespace `ns` with its values.
async fn drop_namespace(h: &storage::Handle, ns: &str) {
    h.call(|reply| Request::DropNamespace {
        namespace: ns.into(),
        reply,
    })
    .await
    .expect("call")
    .expect("drop");
}

/// Starts storage on `dir`, makes one commit, stops, and answers that commit's number and a copy
/// of the database as it was then.
async fn one_commit_and_a_copy(dir: &Path) -> (u64, Vec<u8>) {
    let f = start(dir, None).await;
    let base = put(&f.storage, ALICE, "a", b"1").await.expect("put");
    f.rt.shutdown().await;
    let copy = std::fs::read(dir.join("storage.redb")).expect("read");
    (base, copy)
}

/// Starts storage on `dir`, which must refuse to: answers why.
async fn refusal_of(dir: &Path) -> String {
    let f = build(dir, None, |_| {});
    let reason = failure(&f.journal).await;
    f.rt.shutdown().await;
    reason
}

async fn get(h: &storage::Handle, ns: &str, key: &str) -> Result<Value, Error> {
    h.call(|reply| Request::Get {
        namespace: ns.into(),
        key: key.into(),
        reply,
    })
    .await
    .expect("call")
}

async fn delete(h: &storage::Handle, ns: &str, key: &str) -> Result<u64, Error> {
    h.call(|reply| Request::Delete {
        namespace: ns.into(),
        key: key.into(),
        reply,
    })
    .await
    .expect("call")
}

async fn batch(h: &storage::Handle, ns: &str, writes: Vec<Write>) -> Result<u64, Error> {
    h.call(|reply| Request::Batch {
        namespace: ns.into(),
        writes,
        reply,
    })
    .await
    .expect("call")
}

async fn list(
    h: &storage::Handle,
    ns: &str,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<storage::Page, Error> {
    h.call(|reply| Request::List {
        namespace: ns.into(),
        prefix: prefix.into(),
        after: after.map(str::to_owned),
        limit,
        reply,
    })
    .await
    .expect("call")
}

fn keys(page: &storage::Page) -> Vec<&str> {
    page.keys.iter().map(|l| l.key.as_str()).collect()
}

#[tokio::test]
async fn put_get_delete_list_and_batches_per_namespace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = start(dir.path(), None).await;
    basics(&f.storage).await;
    f.rt.shutdown().await;
}

#[tokio::test]
async fn put_get_delete_list_and_batches_per_namespace_on_postgres() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let f = start_on(dir.path(), postgres(&pg), None).await;
    basics(&f.storage).await;
    f.rt.shutdown().await;
}

async fn put_if(
    h: &storage::Handle,
    ns: &str,
    key: &str,
    value: &[u8],
    current: Option<u64>,
) -> Result<u64, Error> {
    h.call(|reply| storage::Request::PutIf {
        namespace: ns.into(),
        key: key.into(),
        value: value.to_vec(),
        current,
        reply,
    })
    .await
    .expect("the storage service answers")
}

/// A conditional put writes only over the version its caller read: a write in between (another
/// node's, in a cluster) makes it fail with the version found, and changes nothing.
async fn conditional_puts(h: &storage::Handle) {
    let first = put_if(h, ALICE, "cas", b"one", None).await.expect("absent");
    let refused = put_if(h, ALICE, "cas", b"again", None).await;
    assert_eq!(
        refused,
        Err(Error::Changed {
            key: "cas".into(),
            expected: None,
            found: Some(first)
        })
    );
    let second = put_if(h, ALICE, "cas", b"two", Some(first))
        .await
        .expect("at the version read");
    // Someone else's write in between: the stale writer is refused, and its value is not stored.
    let between = put(h, ALICE, "cas", b"someone else").await.expect("put");
    let refused = put_if(h, ALICE, "cas", b"stale", Some(second)).await;
    assert_eq!(
        refused,
        Err(Error::Changed {
            key: "cas".into(),
            expected: Some(second),
            found: Some(between)
        })
    );
    assert_eq!(
        get(h, ALICE, "cas").await.expect("get").data,
        b"someone else"
    );
    delete(h, ALICE, "cas").await.expect("delete");
    let refused = put_if(h, ALICE, "cas", b"gone", Some(between)).await;
    assert_eq!(
        refused,
        Err(Error::Changed {
            key: "cas".into(),
            expected: Some(between),
            found: None
        })
    );
    assert!(matches!(
        get(h, ALICE, "cas").await,
        Err(Error::NotFound(_))
    ));
}

async fn basics(h: &storage::Handle) {
    conditional_puts(h).await;
    let v1 = put(h, ALICE, "a/1", b"one").await.expect("put");
    let v2 = put(h, ALICE, "a/2", b"two").await.expect("put");
    assert!(v2 > v1);
    assert_eq!(
        get(h, ALICE, "a/1").await,
        Ok(Value {
            data: b"one".to_vec(),
            version: v1
        })
    );
    // Overwrite: new data, new version.
    let v3 = put(h, ALICE, "a/1", b"uno").await.expect("put");
    assert_eq!(get(h, ALICE, "a/1").await.expect("get").data, b"uno");
    assert_eq!(get(h, ALICE, "a/1").await.expect("get").version, v3);
    // Empty values are values.
    put(h, ALICE, "empty", b"").await.expect("put");
    assert_eq!(get(h, ALICE, "empty").await.expect("get").data, b"");

    // Namespaces are isolated: bob sees none of alice's keys, and his own key of the same name.
    assert_eq!(
        get(h, "bob", "a/1").await,
        Err(Error::NotFound("a/1".into()))
    );
    put(h, "bob", "a/1", b"bob's").await.expect("put");
    assert_eq!(get(h, "bob", "a/1").await.expect("get").data, b"bob's");
    assert_eq!(get(h, ALICE, "a/1").await.expect("get").data, b"uno");

    // Batches are one commit: one version for all.
    let vb = batch(
        h,
        ALICE,
        vec![
            Write::Put {
                key: "b/1".into(),
                value: b"x".to_vec(),
            },
            Write::Put {
                key: "b/2".into(),
                value: b"y".to_vec(),
            },
            Write::Delete { key: "a/2".into() },
            Write::Delete {
                key: "never-was".into(),
            },
        ],
    )
    .await
    .expect("batch");
    assert_eq!(get(h, ALICE, "b/1").await.expect("get").version, vb);
    assert_eq!(get(h, ALICE, "b/2").await.expect("get").version, vb);
    assert_eq!(
        get(h, ALICE, "a/2").await,
        Err(Error::NotFound("a/2".into()))
    );

    // Listing pages through a prefix.
    let page = list(h, ALICE, "", None, 2).await.expect("list");
    assert_eq!(keys(&page), ["a/1", "b/1"]);
    assert_eq!(page.next.as_deref(), Some("b/1"));
    let page = list(h, ALICE, "", page.next.as_deref(), 2)
        .await
        .expect("list");
    assert_eq!(keys(&page), ["b/2", "empty"]);
    assert_eq!(page.next, None);
    let page = list(h, ALICE, "b/", None, 10).await.expect("list");
    assert_eq!(keys(&page), ["b/1", "b/2"]);
    assert_eq!(
        keys(&list(h, "bob", "", None, 10).await.expect("list")),
        ["a/1"]
    );

    delete(h, ALICE, "b/1").await.expect("delete");
    assert_eq!(
        delete(h, ALICE, "b/1").await,
        Err(Error::NotFound("b/1".into()))
    );
    assert_eq!(
        get(h, ALICE, "b/1").await,
        Err(Error::NotFound("b/1".into()))
    );
    // Keys of any bytes a string holds, and prefixes at the edges of the byte order.
    for key in ["nul\0key", "é/1", "é/2", "ê"] {
        put(h, "edge", key, key.as_bytes()).await.expect("put");
    }
    assert_eq!(
        keys(&list(h, "edge", "é", None, 10).await.expect("list")),
        ["é/1", "é/2"]
    );
    assert_eq!(
        get(h, "edge", "nul\0key").await.expect("get").data,
        b"nul\0key"
    );
}

fn small_limits(spec: &mut runtime::Spec) {
    spec.set(&storage::MAX_KEY_BYTES, 8);
    spec.set(&storage::MAX_VALUE_BYTES, 16);
    spec.set(&storage::MAX_BATCH_WRITES, 2);
    spec.set(&storage::MAX_LIST_LIMIT, 5);
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = build(dir.path(), None, small_limits);
    ready(&f.rt).await;
    bad_input(&f.storage).await;
    f.rt.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing_on_postgres() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let f = build_on(dir.path(), postgres(&pg), None, |_| {}, small_limits);
    ready(&f.rt).await;
    bad_input(&f.storage).await;
    f.rt.shutdown().await;
}

async fn bad_input(h: &storage::Handle) {
    assert!(matches!(
        put(h, ALICE, "", b"v").await,
        Err(Error::BadInput(_))
    ));
    assert_eq!(
        put(h, ALICE, "123456789", b"v").await,
        Err(Error::TooLarge {
            what: "the key",
            size: 9,
            limit: 8,
            setting: "max_key_bytes"
        })
    );
    assert!(matches!(
        put(h, ALICE, "k", &[0; 17]).await,
        Err(Error::TooLarge {
            what: "the value",
            ..
        })
    ));
    put(h, ALICE, "k", &[7; 16]).await.expect("at the limit");
    // One bad write refuses the whole batch: the good one before it is not written either.
    assert!(matches!(
        batch(
            h,
            ALICE,
            vec![
                Write::Put {
                    key: "good".into(),
                    value: b"v".to_vec()
                },
                Write::Put {
                    key: "bad".into(),
                    value: vec![0; 17]
                },
            ]
        )
        .await,
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(
        get(h, ALICE, "good").await,
        Err(Error::NotFound("good".into()))
    );
    let three = (0..3)
        .map(|i| Write::Delete {
            key: format!("k{i}"),
        })
        .collect();
    assert!(matches!(
        batch(h, ALICE, three).await,
        Err(Error::TooLarge {
            what: "the batch",
            ..
        })
    ));
    assert!(matches!(
        batch(h, ALICE, vec![]).await,
        Err(Error::BadInput(_))
    ));
    assert_eq!(
        list(h, ALICE, "", None, 6).await,
        Err(Error::BadInput(storage::BadInput::ListLimit {
            asked: 6,
            max: 5,
            setting: "max_list_limit"
        }))
    );
    assert!(matches!(
        list(h, ALICE, "", None, 0).await,
        Err(Error::BadInput(_))
    ));
    assert!(matches!(get(h, "", "k").await, Err(Error::BadInput(_))));
    assert_eq!(get(h, ALICE, "k").await.expect("get").data, [7; 16]);
}

#[tokio::test]
async fn values_survive_a_service_restart_and_a_process_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = start(dir.path(), None).await;
    let v = put(&f.storage, ALICE, "k", b"kept").await.expect("put");
    f.rt.restart(&storage::NAME).await.expect("restart");
    ready(&f.rt).await;
    assert_eq!(
        get(&f.storage, ALICE, "k")
            .await
            .expect("after restart")
            .data,
        b"kept"
    );
    f.rt.shutdown().await;

    let f = start(dir.path(), None).await;
    assert_eq!(
        get(&f.storage, ALICE, "k").await,
        Ok(Value {
            data: b"kept".to_vec(),
            version: v
        })
    );
    f.rt.shutdown().await;
}

/// A namespace's value key is an AES-256-GCM key in the crypto service: when it reaches its
/// encryption bound (`services.crypto.max_encryptions_per_key`, lowered here to 2) it rotates,
/// and every value written under an older version still reads, across a restart too.
#[tokio::test]
async fn values_outlive_their_value_keys_rotation_at_the_encryption_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lowered = |spec: &mut runtime::Spec| spec.set(&crypto::MAX_ENCRYPTIONS, 2);
    let started = |f: Fixture| async move {
        tokio::select! {
            () = ready(&f.rt) => {}
            reason = failure(&f.journal) => panic!("storage failed to start: {reason}"),
        }
        f
    };
    let f = started(build_with(dir.path(), None, lowered, |_| {})).await;
    for i in 0..5u8 {
        put(&f.storage, ALICE, &format!("k{i}"), &[i])
            .await
            .expect("put");
    }
    let keys = f
        .crypto
        .call(|reply| crypto::Request::List {
            owner: "@storage".into(),
            reply,
        })
        .await
        .expect("call")
        .expect("list");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(
        keys[0].version, 3,
        "two encryptions per version: 1, 1, 2, 2, 3"
    );
    for i in 0..5u8 {
        assert_eq!(
            get(&f.storage, ALICE, &format!("k{i}"))
                .await
                .expect("get")
                .data,
            [i]
        );
    }
    f.rt.shutdown().await;
    let f = started(build_with(dir.path(), None, lowered, |_| {})).await;
    for i in 0..5u8 {
        assert_eq!(
            get(&f.storage, ALICE, &format!("k{i}"))
                .await
                .expect("get")
                .data,
            [i]
        );
    }
    put(&f.storage, ALICE, "after", b"x").await.expect("put");
    assert_eq!(
        get(&f.storage, ALICE, "after").await.expect("get").data,
        b"x"
    );
    f.rt.shutdown().await;
}

/// The raw tables, as a host with the file would see them.
use redb::ReadableTable;
const VALUES: redb::TableDefinition<(&str, &str), &[u8]> = redb::TableDefinition::new("values");

#[tokio::test]
async fn a_ciphertext_moved_to_another_key_or_namespace_is_an_integrity_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = start(dir.path(), None).await;
    put(&f.storage, ALICE, "salary", b"100").await.expect("put");
    put(&f.storage, ALICE, "bonus", b"5").await.expect("put");
    let last = put(&f.storage, "bob", "salary", b"90").await.expect("put");
    f.rt.shutdown().await;

    {
        let db = redb::Database::open(dir.path().join("storage.redb")).expect("open");
        let txn = db.begin_write().expect("write");
        {
            let mut t = txn.open_table(VALUES).expect("table");
            let salary = t
                .get((ALICE, "salary"))
                .expect("get")
                .expect("present")
                .value()
                .to_vec();
            // alice's salary record copied over her bonus, and over bob's salary.
            t.insert((ALICE, "bonus"), salary.as_slice())
                .expect("insert");
            t.insert(("bob", "salary"), salary.as_slice())
                .expect("insert");
        }
        txn.commit().expect("commit");
    }

    // The database no longer matches its sealed digest: refused at start (`tests/forgery.rs`).
    let f = build(dir.path(), None, |_| {});
    let reason = failure(&f.journal).await;
    assert!(
        reason.contains("does not match the sealed digest"),
        "{reason}"
    );
    f.rt.shutdown().await;
    // Even accepted by the operator, a moved ciphertext never reads as data: its associated data
    // names another key.
    let f = build(dir.path(), Some(last), |_| {});
    ready(&f.rt).await;
    assert_eq!(
        get(&f.storage, ALICE, "bonus").await,
        Err(Error::Integrity {
            key: "bonus".into()
        })
    );
    assert_eq!(
        get(&f.storage, "bob", "salary").await,
        Err(Error::Integrity {
            key: "salary".into()
        })
    );
    // The service stays up for the untouched key.
    assert_eq!(
        get(&f.storage, ALICE, "salary").await.expect("get").data,
        b"100"
    );
    f.rt.shutdown().await;
}

#[tokio::test]
async fn an_older_copy_of_the_database_is_refused_until_the_operator_accepts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db_path = dir.path().join("storage.redb");
    let f = start(dir.path(), None).await;
    put(&f.storage, ALICE, "k", b"old").await.expect("put");
    f.rt.shutdown().await;
    let old_copy = std::fs::read(&db_path).expect("read");

    let f = start(dir.path(), None).await;
    put(&f.storage, ALICE, "k", b"new").await.expect("put");
    let newer = past_the_counters_reach(&f.storage).await;
    f.rt.shutdown().await;

    // The host swaps the old copy back in.
    std::fs::write(&db_path, &old_copy).expect("swap");
    let f = build(dir.path(), None, |_| {});
    let reason = failure(&f.journal).await;
    assert!(
        reason.contains("is at commit 1")
            && reason.contains(&format!("says commit {newer}"))
            && reason.contains("--accept-storage-rollback 1"),
        "{reason}"
    );
    f.rt.shutdown().await;
    // The refusal changed nothing, and accepting another commit number does not accept this one:
    // the same copy is refused again.
    let f = build(dir.path(), Some(7), |_| {});
    assert!(failure(&f.journal).await.contains("is at commit 1"));
    f.rt.shutdown().await;

    let f = build(dir.path(), Some(1), |_| {});
    ready(&f.rt).await;
    assert_eq!(get(&f.storage, ALICE, "k").await.expect("get").data, b"old");
    // Writes go on after the counter, so the newer state's commit numbers are never reused.
    let next = put(&f.storage, ALICE, "k", b"newest").await.expect("put");
    assert!(next > newer, "{next} > {newer}");
    f.rt.shutdown().await;

    // And the accepted state is now the normal one.
    let f = start(dir.path(), None).await;
    assert_eq!(
        get(&f.storage, ALICE, "k").await.expect("get").data,
        b"newest"
    );
    f.rt.shutdown().await;
}

/// A refusal only the operator can lift is not retried: under the default recovery (restart),
/// an older copy makes storage exit once and go to `failed` at once, with the command to accept it
/// as the reason.
#[tokio::test(start_paused = true)]
async fn a_rollback_refusal_fails_at_once_without_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db_path = dir.path().join("storage.redb");
    let f = start(dir.path(), None).await;
    put(&f.storage, ALICE, "k", b"old").await.expect("put");
    f.rt.shutdown().await;
    let old_copy = std::fs::read(&db_path).expect("read");
    let f = start(dir.path(), None).await;
    put(&f.storage, ALICE, "k", b"new").await.expect("put");
    past_the_counters_reach(&f.storage).await;
    f.rt.shutdown().await;
    std::fs::write(&db_path, &old_copy).expect("swap");

    let f = build(dir.path(), None, |spec| {
        spec.recovery = Storage::default_spec().recovery;
    });
    assert_eq!(
        Storage::default_spec().recovery.strategy,
        runtime::Strategy::Restart,
        "the default recovery would restart a failing storage"
    );
    let failed = f
        .journal
        .wait_for(0, std::time::Duration::from_secs(30), |e| {
            e.service.as_ref() == Some(&storage::NAME) && matches!(e.event, Event::Failed { .. })
        })
        .await
        .expect("storage fails");
    let Event::Failed { reason } = &failed.event else {
        unreachable!()
    };
    assert!(reason.contains("--accept-storage-rollback 1"), "{reason}");
    let snapshot = f.rt.snapshot().await.expect("snapshot");
    let status = snapshot.service(storage::NAME.as_str()).expect("storage");
    assert_eq!(status.state, runtime::State::Failed);
    assert_eq!(status.restarts, 0);
    let storage_events: Vec<_> = f
        .journal
        .read(0, usize::MAX)
        .expect("journal")
        .into_iter()
        .filter(|e| e.service.as_ref() == Some(&storage::NAME))
        .map(|e| e.event.clone())
        .collect();
    let exits = storage_events
        .iter()
        .filter(|e| matches!(e, Event::Exited { .. }))
        .count();
    let backoffs = storage_events
        .iter()
        .filter(|e| matches!(e, Event::BackoffScheduled { .. }))
        .count();
    assert_eq!((exits, backoffs), (1, 0), "{storage_events:#?}");
    f.rt.shutdown().await;
}

#[tokio::test]
async fn a_lost_counter_file_is_refused_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = start(dir.path(), None).await;
    put(&f.storage, ALICE, "a", b"1").await.expect("put");
    put(&f.storage, ALICE, "b", b"2").await.expect("put");
    f.rt.shutdown().await;
    std::fs::remove_file(dir.path().join("storage.counter")).expect("remove");
    let f = build(dir.path(), None, |_| {});
    let reason = failure(&f.journal).await;
    assert!(reason.contains("deleted or replaced"), "{reason}");
    f.rt.shutdown().await;
    let f = build(dir.path(), Some(2), |_| {});
    ready(&f.rt).await;
    assert_eq!(get(&f.storage, ALICE, "b").await.expect("get").data, b"2");
    f.rt.shutdown().await;
}

#[tokio::test]
async fn storage_refuses_more_than_one_replica() {
    let dir = tempfile::tempdir().expect("tempdir");
    let platform = platform(dir.path());
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal);
    let crypto = b.add(crypto::Crypto::new(dir.path(), platform.clone()));
    let s = Storage::new(dir.path(), platform, crypto);
    let mut spec = Storage::default_spec();
    spec.replicas.max = 2;
    use runtime::Service;
    assert!(s.validate(&spec).is_err());
    spec.replicas.max = 1;
    assert!(s.validate(&spec).is_ok());
}

#[tokio::test]
async fn concurrent_writes_share_commits_and_each_gets_its_own_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = start(dir.path(), None).await;
    concurrent_writes(&f.storage).await;
    f.rt.shutdown().await;
}

#[tokio::test]
async fn concurrent_writes_share_commits_and_each_gets_its_own_answer_on_postgres() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let f = start_on(dir.path(), postgres(&pg), None).await;
    concurrent_writes(&f.storage).await;
    f.rt.shutdown().await;
}

async fn concurrent_writes(h: &storage::Handle) {
    put(h, ALICE, "old", b"x").await.expect("put");
    // All queued before storage runs (one thread): they form one group, in queue order.
    let puts = (0..32)
        .map(|i| async move { put(h, ALICE, &format!("k{i}"), format!("v{i}").as_bytes()).await });
    let big = vec![0; (1 << 20) + 1];
    let (versions, put_then_delete, absent, too_big, old) = tokio::join!(
        futures::future::join_all(puts),
        async {
            put(h, ALICE, "brief", b"b").await.expect("put");
            delete(h, ALICE, "brief").await
        },
        delete(h, ALICE, "never"),
        put(h, ALICE, "big", &big),
        delete(h, ALICE, "old"),
    );
    let versions: Vec<u64> = versions.into_iter().map(|v| v.expect("put")).collect();
    let distinct: std::collections::BTreeSet<_> = versions.iter().collect();
    assert!(
        distinct.len() < versions.len(),
        "32 queued puts took {} commits",
        distinct.len()
    );
    put_then_delete.expect("a delete sees the put before it");
    assert_eq!(absent, Err(Error::NotFound("never".into())));
    assert!(matches!(too_big, Err(Error::TooLarge { .. })));
    old.expect("delete");
    for i in 0..32 {
        assert_eq!(
            get(h, ALICE, &format!("k{i}")).await.expect("get").data,
            format!("v{i}").into_bytes()
        );
    }
    assert_eq!(
        get(h, ALICE, "brief").await,
        Err(Error::NotFound("brief".into()))
    );
    assert_eq!(
        get(h, ALICE, "old").await,
        Err(Error::NotFound("old".into()))
    );
}

#[tokio::test]
async fn a_dropped_namespace_loses_its_values_and_its_key_and_nothing_else() {
    dropped_namespace(|| storage::Backend::Redb).await;
}

#[tokio::test]
async fn a_dropped_namespace_loses_its_values_and_its_key_and_nothing_else_on_postgres() {
    let pg = Postgres::start();
    dropped_namespace(|| postgres(&pg)).await;
}

async fn dropped_namespace(backend: impl Fn() -> storage::Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = start_on(dir.path(), backend(), None).await;
    let storage_keys = |f: &Fixture| {
        let crypto = f.crypto.clone();
        async move {
            crypto
                .call(|reply| crypto::Request::List {
                    owner: "@storage".into(),
                    reply,
                })
                .await
                .expect("call")
                .expect("list")
                .len()
        }
    };
    for n in 0..5 {
        put(&f.storage, ALICE, &format!("doc/{n}"), b"alice's")
            .await
            .expect("put");
    }
    put(&f.storage, "bob", "doc/0", b"bob's")
        .await
        .expect("put");
    assert_eq!(storage_keys(&f).await, 2);
    let version = f
        .storage
        .call(|reply| Request::DropNamespace {
            namespace: ALICE.into(),
            reply,
        })
        .await
        .expect("call")
        .expect("dropped");
    assert!(version > 0);
    assert_eq!(
        keys(&list(&f.storage, ALICE, "", None, 100).await.expect("list")),
        Vec::<&str>::new()
    );
    assert!(matches!(
        get(&f.storage, ALICE, "doc/0").await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        get(&f.storage, "bob", "doc/0").await.expect("bob's").data,
        b"bob's"
    );
    assert_eq!(
        storage_keys(&f).await,
        1,
        "alice's namespace key is deleted"
    );
    f.rt.shutdown().await;

    // After a restart: still gone; a new value in the namespace gets a new key and reads back.
    let f = start_on(dir.path(), backend(), None).await;
    assert!(matches!(
        get(&f.storage, ALICE, "doc/1").await,
        Err(Error::NotFound(_))
    ));
    put(&f.storage, ALICE, "fresh", b"new").await.expect("put");
    assert_eq!(
        get(&f.storage, ALICE, "fresh").await.expect("get").data,
        b"new"
    );
    assert_eq!(
        get(&f.storage, "bob", "doc/0").await.expect("bob's").data,
        b"bob's"
    );
    f.rt.shutdown().await;
}

/// The freshness counter as the storage service keeps it, read from outside the service.
fn counter(dir: &Path) -> u64 {
    enclave::Counters::new(dir)
        .read(&*platform(dir), "storage")
        .expect("the counter reads")
}

/// A crash between a commit and its counter advance leaves the database exactly one commit ahead:
/// the next start moves the counter up to it and serves the commit. Two ahead is not that crash
/// (the counter file was replaced), and is refused.
#[tokio::test]
async fn a_database_one_commit_ahead_of_the_counter_is_fixed_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counter_path = dir.path().join("storage.counter");
    let f = start(dir.path(), None).await;
    let first = put(&f.storage, ALICE, "a", b"1").await.expect("put");
    f.rt.shutdown().await;
    let counter_at_first = std::fs::read(&counter_path).expect("read the counter");
    assert_eq!(counter(dir.path()), first);

    let f = start(dir.path(), None).await;
    let second = put(&f.storage, ALICE, "b", b"2").await.expect("put");
    assert_eq!(second, first + 1);
    f.rt.shutdown().await;
    // The crash: the commit of `b` is on disk, its counter advance is not.
    std::fs::write(&counter_path, &counter_at_first).expect("restore the counter");
    assert_eq!(counter(dir.path()), first);

    let f = start(dir.path(), None).await;
    assert_eq!(
        counter(dir.path()),
        second,
        "the start fixed the counter up"
    );
    assert_eq!(get(&f.storage, ALICE, "b").await.expect("get").data, b"2");
    let third = put(&f.storage, ALICE, "c", b"3").await.expect("put");
    assert_eq!(third, second + 1);
    f.rt.shutdown().await;

    // The same counter file now lags two commits: that is not a crash, and it is refused.
    std::fs::write(&counter_path, &counter_at_first).expect("replace the counter");
    let f = build(dir.path(), None, |_| {});
    let reason = failure(&f.journal).await;
    assert!(
        reason.contains(&format!("is at commit {third}")) && reason.contains("deleted or replaced"),
        "{reason}"
    );
    f.rt.shutdown().await;
}

/// Reads of cached values: the service fills its read cache from its own reads, and the lent
/// `Reads` answer from it on the caller's task, counted as the service's `get`. Once a write,
/// delete, batch or dropped namespace is acknowledged, no read returns what it replaced; a stopped
/// service answers nothing through `Reads`, a new incarnation starts empty, and with
/// `read_cache_bytes = 0` nothing is kept. Each account's values stay its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_read_never_outlives_the_write_that_replaced_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = start(dir.path(), None).await;
    let lent = |ns: &str, key: &str| f.reads.get(&f.storage, ns, key);
    put(&f.storage, ALICE, "k", b"v1").await.expect("put");
    assert_eq!(lent(ALICE, "k"), None, "a write does not fill the cache");
    let v1 = get(&f.storage, ALICE, "k").await.expect("get");
    assert_eq!(lent(ALICE, "k"), Some(v1.clone()), "a read does");
    assert_eq!(lent("bob", "k"), None, "another account's namespace");
    let figures = || async {
        let snapshot = f.rt.snapshot().await.expect("snapshot");
        let storage = snapshot.service(storage::NAME.as_str()).expect("storage");
        storage
            .operations
            .iter()
            .find(|o| o.operation == "get")
            .map_or(0, |o| o.calls)
    };
    let gets = figures().await;
    lent(ALICE, "k").expect("cached");
    assert_eq!(figures().await, gets + 1, "counted as the service's get");

    // Each kind of write takes the key out before it is acknowledged.
    let v2 = put(&f.storage, ALICE, "k", b"v2").await.expect("put");
    assert_eq!(lent(ALICE, "k"), None);
    assert_eq!(get(&f.storage, ALICE, "k").await.expect("get").version, v2);
    assert_eq!(lent(ALICE, "k").expect("cached").data, b"v2");
    delete(&f.storage, ALICE, "k").await.expect("delete");
    assert_eq!(lent(ALICE, "k"), None);
    assert!(matches!(
        get(&f.storage, ALICE, "k").await,
        Err(Error::NotFound(_))
    ));
    put(&f.storage, ALICE, "a", b"1").await.expect("put");
    get(&f.storage, ALICE, "a").await.expect("get");
    f.storage
        .call(|reply| Request::Batch {
            namespace: ALICE.into(),
            writes: vec![Write::Put {
                key: "a".into(),
                value: b"2".to_vec(),
            }],
            reply,
        })
        .await
        .expect("call")
        .expect("batch");
    assert_eq!(lent(ALICE, "a"), None);
    assert_eq!(get(&f.storage, ALICE, "a").await.expect("get").data, b"2");
    put(&f.storage, "bob", "x", b"y").await.expect("put");
    get(&f.storage, "bob", "x").await.expect("get");
    assert!(lent("bob", "x").is_some());
    drop_namespace(&f.storage, "bob").await;
    assert_eq!(lent("bob", "x"), None);
    assert_eq!(lent(ALICE, "a").expect("untouched").data, b"2");

    // Stopped, nothing answers here; started again, the cache is empty.
    let since = f.journal.last_seq();
    f.rt.client().stop(&storage::NAME).await.expect("stop");
    f.journal
        .wait_for(since, std::time::Duration::from_secs(60), |e| {
            e.service.as_ref() == Some(&storage::NAME) && matches!(e.event, Event::Stopped { .. })
        })
        .await
        .expect("stopped");
    assert_eq!(lent(ALICE, "a"), None);
    f.rt.client().start(&storage::NAME).await.expect("start");
    ready(&f.rt).await;
    assert_eq!(lent(ALICE, "a"), None);
    get(&f.storage, ALICE, "a").await.expect("get");
    assert!(lent(ALICE, "a").is_some());
    f.rt.shutdown().await;

    // With no budget, nothing is kept.
    let f = build(dir.path(), None, |spec| {
        spec.set(&storage::READ_CACHE_BYTES, 0)
    });
    ready(&f.rt).await;
    get(&f.storage, ALICE, "a").await.expect("get");
    assert_eq!(f.reads.get(&f.storage, ALICE, "a"), None);
    f.rt.shutdown().await;
}

/// The freshness counter carries each commit (its slot is the commit's one sync; the database
/// syncs every few commits): a database behind the counter by commits its slots still hold (a
/// crash before the database synced them, or an older copy swapped in) is brought up to it at
/// start, with every kind of write, and nothing acknowledged is lost. One commit further back is
/// out of reach, and refused.
#[tokio::test]
async fn a_database_behind_the_counter_within_its_slots_is_brought_up_to_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db_path = dir.path().join("storage.redb");
    let (base, old_copy) = one_commit_and_a_copy(dir.path()).await;

    let f = start(dir.path(), None).await;
    put(&f.storage, ALICE, "a", b"2").await.expect("put");
    put(&f.storage, "bob", "x", b"y").await.expect("put");
    delete(&f.storage, ALICE, "a").await.expect("delete");
    put(&f.storage, ALICE, "b", b"3").await.expect("put");
    drop_namespace(&f.storage, "bob").await;
    let mut last = put(&f.storage, ALICE, "c", b"4").await.expect("put");
    while last - base < storage::LOG_SLOTS {
        last = put(&f.storage, ALICE, "c", b"5").await.expect("put");
    }
    f.rt.shutdown().await;

    // The database loses every commit after `base`: exactly as many as the counter carries.
    std::fs::write(&db_path, &old_copy).expect("swap");
    assert_eq!(
        recipe(dir.path()).verify().expect("verifies").pending,
        storage::LOG_SLOTS
    );
    let f = start(dir.path(), None).await;
    assert!(matches!(
        get(&f.storage, ALICE, "a").await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(get(&f.storage, ALICE, "b").await.expect("get").data, b"3");
    assert_eq!(get(&f.storage, ALICE, "c").await.expect("get").data, b"5");
    assert!(matches!(
        get(&f.storage, "bob", "x").await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(counter(dir.path()), last);
    let next = put(&f.storage, ALICE, "d", b"6").await.expect("put");
    assert_eq!(next, last + 1);
    f.rt.shutdown().await;
    assert_eq!(recipe(dir.path()).verify().expect("verifies").pending, 0);

    // The counter has moved on by one since: the same copy is out of its reach, an older copy.
    std::fs::write(&db_path, &old_copy).expect("swap");
    let reason = refusal_of(dir.path()).await;
    assert!(
        reason.contains(&format!("is at commit {base}")) && reason.contains("older copy"),
        "{reason}"
    );
}

/// A commit too large for the counter's slot (over 64 KiB of changes) is synced to the database
/// first and the counter follows carrying nothing: it is acknowledged durable, and a database that
/// lacks it cannot have it applied from the counter, so an older copy is refused, not brought up.
#[tokio::test]
async fn a_commit_too_large_for_the_counters_slot_is_synced_to_the_database_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db_path = dir.path().join("storage.redb");
    let (base, old_copy) = one_commit_and_a_copy(dir.path()).await;

    let f = start(dir.path(), None).await;
    let big = vec![0x42; 100 << 10];
    let large = put(&f.storage, ALICE, "big", &big).await.expect("put");
    assert_eq!(large, base + 1);
    f.rt.shutdown().await;
    assert_eq!(recipe(dir.path()).verify().expect("verifies").pending, 0);
    let f = start(dir.path(), None).await;
    assert_eq!(get(&f.storage, ALICE, "big").await.expect("get").data, big);
    f.rt.shutdown().await;

    std::fs::write(&db_path, &old_copy).expect("swap");
    let reason = refusal_of(dir.path()).await;
    assert!(
        reason.contains(&format!("is at commit {base}"))
            && reason.contains(&format!("says commit {large}")),
        "{reason}"
    );
}

/// A write is acknowledged only once the counter's advance carrying it is on disk: when the
/// counter cannot be advanced, the caller hears an error, never success, the service stops (its
/// memory and the disk may disagree until the next start's freshness check), and nothing of the
/// write is applied.
#[tokio::test]
async fn a_write_is_acknowledged_only_after_the_counter_carrying_it_is_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counter_path = dir.path().join("storage.counter");
    let f = start(dir.path(), None).await;
    let first = put(&f.storage, ALICE, "a", b"1").await.expect("put");
    // The counter can no longer be written (nor read): a directory stands where its file was.
    let saved = std::fs::read(&counter_path).expect("read the counter");
    std::fs::remove_file(&counter_path).expect("remove");
    std::fs::create_dir(&counter_path).expect("a directory in its place");

    let answer = put(&f.storage, ALICE, "b", b"2").await;
    assert!(
        matches!(&answer, Err(Error::Internal(m)) if m.contains("freshness counter")),
        "a write whose counter advance failed was answered {answer:?}"
    );
    assert!(failure(&f.journal).await.contains("freshness counter"));
    f.rt.shutdown().await;

    // The counter comes back: the commit of `b` went nowhere (the counter is written first), and
    // `a` is there as acknowledged.
    std::fs::remove_dir(&counter_path).expect("remove the directory");
    std::fs::write(&counter_path, &saved).expect("restore");
    let f = start(dir.path(), None).await;
    assert_eq!(counter(dir.path()), first);
    assert_eq!(get(&f.storage, ALICE, "a").await.expect("get").data, b"1");
    assert!(matches!(
        get(&f.storage, ALICE, "b").await,
        Err(Error::NotFound(_))
    ));
    f.rt.shutdown().await;
}

/// Starts storage on `dir` with `configure` applied to its spec, until ready.
async fn start_with(
    dir: &Path,
    backend: storage::Backend,
    configure: impl FnOnce(&mut runtime::Spec),
) -> Fixture {
    let f = build_on(dir, backend, None, |_| {}, configure);
    common::ready(&f.rt).await;
    f
}

/// Attack (#14): one account could fill the enclave's disk and its other tenants' share of it.
/// Each account's namespace holds at most `max_account_keys` keys and `max_account_bytes` bytes:
/// past either, a write is refused (413 `storage.quota_exceeded`, naming the setting) and changes
/// nothing; shrinking is always allowed; a group commit cannot pass the quota its requests one by
/// one could not; a restart counts what is on disk; other accounts and the service's own
/// namespaces are not limited by it.
#[tokio::test]
async fn an_account_cannot_store_past_its_quota_of_keys_and_bytes() {
    quotas(|| storage::Backend::Redb).await;
}

#[tokio::test]
async fn an_account_cannot_store_past_its_quota_of_keys_and_bytes_on_postgres() {
    let pg = Postgres::start();
    quotas(|| postgres(&pg)).await;
    // The usage each commit records (what a quota check reads) is what the values add up to.
    assert_eq!(
        pg.sql(
            "SELECT count(*) FROM (SELECT namespace, count(*) AS k,
                    sum(length(key) + length(record)) AS b
                FROM storage_values GROUP BY namespace) v
             FULL JOIN storage_usage u USING (namespace)
             WHERE coalesce(v.k, 0) <> coalesce(u.keys, 0) OR coalesce(v.b, 0) <> coalesce(u.bytes, 0)"
        ),
        "0"
    );
    assert_ne!(pg.sql("SELECT count(*) FROM storage_usage"), "0");
}

async fn quotas(backend: impl Fn() -> storage::Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let quota = |spec: &mut runtime::Spec| {
        spec.set(&storage::MAX_ACCOUNT_KEYS, 3);
        spec.set(&storage::MAX_ACCOUNT_BYTES, 4000);
    };
    let f = start_with(dir.path(), backend(), quota).await;
    let h = &f.storage;
    for key in ["k1", "k2", "k3"] {
        put(h, ALICE, key, b"v").await.expect("within the quota");
    }
    let refused = put(h, ALICE, "k4", b"v").await;
    assert!(
        matches!(
            refused,
            Err(Error::Quota {
                what: storage::Exceeded::Keys,
                used: 4,
                limit: 3,
                ..
            })
        ),
        "{refused:?}"
    );
    let message = refused.expect_err("refused").to_string();
    assert!(
        message.contains("services.storage.max_account_keys"),
        "{message}"
    );
    assert_eq!(get(h, ALICE, "k4").await, Err(Error::NotFound("k4".into())));
    // Overwriting and deleting are fine; then there is room again.
    put(h, ALICE, "k1", b"w")
        .await
        .expect("an overwrite adds no key");
    delete(h, ALICE, "k1").await.expect("delete");
    put(h, ALICE, "k4", b"v").await.expect("room again");
    // Bytes: a value that would take her past 4000 bytes as stored is refused (here an overwrite,
    // which adds no key).
    delete(h, ALICE, "k2").await.expect("delete");
    put(h, ALICE, "big1", &[1; 1800]).await.expect("within");
    let refused = put(h, ALICE, "k3", &[1; 2200]).await;
    assert!(
        matches!(
            refused,
            Err(Error::Quota {
                what: storage::Exceeded::Bytes,
                limit: 4000,
                ..
            })
        ),
        "{refused:?}"
    );
    // Bob is not limited by Alice's use, nor is the service's own namespace.
    for (key, size) in [("b1", 1800), ("b2", 1800), ("b3", 1)] {
        put(h, BOB, key, &vec![2; size])
            .await
            .expect("bob's own quota");
    }
    for i in 0..5 {
        put(h, "@internal", &format!("i{i}"), b"x")
            .await
            .expect("no quota");
    }
    // Five puts queued together (one group commit) with one key free: one lands.
    delete(h, BOB, "b3").await.expect("delete");
    let puts = (0..5).map(|i| async move { put(h, BOB, &format!("g{i}"), b"g").await });
    let results = futures::future::join_all(puts).await;
    let landed = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(landed, 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| matches!(
                e,
                Error::Quota {
                    what: storage::Exceeded::Keys,
                    ..
                }
            )),
        "{results:?}"
    );
    f.rt.shutdown().await;
    // A new incarnation reads what is on disk: Alice still has three keys.
    let f = start_with(dir.path(), backend(), quota).await;
    assert!(matches!(
        put(&f.storage, ALICE, "k5", b"v").await,
        Err(Error::Quota { .. })
    ));
    f.rt.shutdown().await;
}
