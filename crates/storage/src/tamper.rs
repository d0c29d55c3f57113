//! Flips every byte of a small storage database in turn, then opens it the way a starting
//! incarnation does (open, the state digest and freshness check) and reads every key back the way a
//! `Get` does. A flip in a value, a namespace or the tag is refused at open (the content no longer
//! matches the sealed digest); past the open, each read gives the value that was written or a typed
//! error: integrity naming the key, not found, or a database error. Never wrong data, never a panic.
//!
//! It runs below the mailbox (one runtime start per flip would take minutes); the service tests cover
//! the same paths through the handle.

use std::sync::Arc;

use runtime::{Builder, Journal};

use super::{Limits, State, Storage};
use crate::Error;
use crate::db::Db;
use crate::fresh::Opened;

const NAMESPACE: &str = "alice";
const KEYS: [(&str, &[u8]); 3] = [
    ("alpha", b"first value"),
    ("beta", b"second value, a little longer"),
    ("gamma/1", b""),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flipped_byte_is_detected_or_harmless() {
    // In memory where there is a tmpfs: redb syncs on open and close, and this test is about
    // detection, not disks.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
    .expect("tempdir");
    let platform: Arc<dyn enclave::Platform> = Arc::new(
        enclave::Simulation::open(dir.path(), b"test binary", b"", 1).expect("simulation"),
    );
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let crypto = b.add(crypto::Crypto::new(dir.path(), platform.clone()));
    let handle = b.add(Storage::new(dir.path(), platform.clone(), crypto.clone()));
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == runtime::RuntimeLevel::Ready)
        .await
        .expect("ready");
    for (key, value) in KEYS {
        handle
            .call(|reply| crate::Request::Put {
                namespace: NAMESPACE.into(),
                key: key.into(),
                value: value.to_vec(),
                reply,
            })
            .await
            .expect("call")
            .expect("put");
    }
    // The service closes its database; from here on this test opens it the way the service does.
    rt.stop(&crate::NAME).await.expect("stop");
    journal
        .wait_for(0, std::time::Duration::from_secs(30), |e| {
            e.service.as_ref() == Some(&crate::NAME)
                && matches!(
                    e.event,
                    runtime::journal::Event::Exited {
                        outcome: runtime::journal::ExitOutcome::Stopped,
                        ..
                    }
                )
        })
        .await
        .expect("storage stops");
    let storage = Storage::new(dir.path(), platform, crypto);
    let limits = Limits::of(&Storage::default_spec());
    let open = |storage: &Storage| -> Result<(Db, Opened), String> {
        let db = Db::open(&storage.path).map_err(|e| e.to_string())?;
        let opened = storage
            .check_freshness(&db)
            .map_err(|e| e.message().to_owned())?;
        Ok((db, opened))
    };

    let original = std::fs::read(&storage.path).expect("read");
    let (mut refused, mut detected, mut intact) = (0usize, 0usize, 0usize);
    for i in 0..original.len() {
        let mut flipped = original.clone();
        flipped[i] ^= 0x01;
        std::fs::write(&storage.path, &flipped).expect("write");
        let (db, opened) = match open(&storage) {
            Ok(opened) => opened,
            Err(_) => {
                refused += 1;
                continue;
            }
        };
        let seq = opened.seq;
        let Ok(store) = storage.redb_store(db, opened) else {
            refused += 1;
            continue;
        };
        let mut state = State::new(store, seq, &storage);
        for (key, value) in KEYS {
            match state.get(NAMESPACE, key).await {
                Ok(got) => {
                    assert_eq!(got.data, value, "byte {i}: wrong data for {key}");
                    intact += 1;
                }
                Err(Error::Integrity { key: named }) => {
                    assert_eq!(named, key, "byte {i}");
                    detected += 1;
                }
                Err(Error::NotFound(_) | Error::Database(_)) => detected += 1,
                Err(other) => panic!("byte {i}: {key}: unexpected {other:?}"),
            }
        }
        // A listing of a damaged file is an error or keys, never a panic.
        let _ = state.list(NAMESPACE, "", None, 10, &limits).await;
    }
    eprintln!(
        "{} bytes flipped: {refused} refused at open, {detected} reads detected, {intact} reads intact",
        original.len()
    );
    assert!(
        refused > 0,
        "some flips land in values and must be refused at open"
    );
    rt.shutdown().await;
}
