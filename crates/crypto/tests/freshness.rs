//! The host puts back an older keystore (`keystore.sealed` and its change log `keystore.log`),
//! after a key was deleted and another rotated:
//! the crypto service refuses to start, for the operator (no restart), with the command that
//! accepts it; accepted, it runs on that keystore and never reuses a generation.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crypto::{Algorithm, Crypto, Error, Request};
use runtime::journal::Event;
use runtime::{Builder, Journal, RuntimeLevel};

const OWNER: &str = "alice";

struct Fixture {
    rt: runtime::Runtime,
    crypto: crypto::Handle,
    journal: Journal,
}

/// The crypto service with its default recovery (restart), accepting generation `accept`.
fn build(dir: &Path, accept: Option<u64>) -> Fixture {
    let platform: Arc<dyn enclave::Platform> =
        Arc::new(enclave::Simulation::open(dir, b"test binary", b"", 1).expect("simulation"));
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let crypto = b.add(Crypto::new(dir, platform).accept_rollback(accept));
    let rt = b.start().expect("start");
    Fixture {
        rt,
        crypto,
        journal,
    }
}

async fn start(dir: &Path, accept: Option<u64>) -> Fixture {
    let f = build(dir, accept);
    f.rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    f
}

async fn call<T: Send + 'static>(
    h: &crypto::Handle,
    request: impl FnOnce(runtime::Reply<Result<T, Error>>) -> Request,
) -> Result<T, Error> {
    h.call(request).await.expect("call")
}

async fn generate(h: &crypto::Handle) -> String {
    call(h, |reply| Request::Generate {
        owner: OWNER.into(),
        algorithm: Algorithm::P256,
        reply,
    })
    .await
    .expect("generate")
    .id
}

async fn sign(h: &crypto::Handle, id: &str) -> Result<crypto::Signed, Error> {
    call(h, |reply| Request::Sign {
        owner: OWNER.into(),
        id: id.into(),
        message: b"pay bob".to_vec(),
        der: false,
        reply,
    })
    .await
}

#[tokio::test]
async fn an_older_keystore_is_refused_until_the_operator_accepts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keystore.sealed");
    let f = start(dir.path(), None).await;
    let rotated = generate(&f.crypto).await; // generation 1
    let deleted = generate(&f.crypto).await; // generation 2
    f.rt.shutdown().await;
    let log = dir.path().join("keystore.log");
    let old_copy = std::fs::read(&path).expect("read");
    let old_log = std::fs::read(&log).expect("read the log");

    let f = start(dir.path(), None).await;
    call(&f.crypto, |reply| Request::Delete {
        owner: OWNER.into(),
        id: deleted.clone(),
        reply,
    })
    .await
    .expect("delete"); // generation 3
    call(&f.crypto, |reply| Request::Rotate {
        owner: OWNER.into(),
        id: rotated.clone(),
        reply,
    })
    .await
    .expect("rotate"); // generation 4
    assert_eq!(sign(&f.crypto, &rotated).await.expect("sign").version, 2);
    f.rt.shutdown().await;

    // The host puts the older keystore back: the deleted key would sign again, and the rotated
    // one with its old version.
    std::fs::write(&path, &old_copy).expect("swap");
    std::fs::write(&log, &old_log).expect("swap the log");
    let f = build(dir.path(), None);
    let failed = f
        .journal
        .wait_for(0, Duration::from_secs(30), |e| {
            e.service.as_ref() == Some(&crypto::NAME) && matches!(e.event, Event::Failed { .. })
        })
        .await
        .expect("crypto fails");
    let Event::Failed { reason } = &failed.event else {
        unreachable!()
    };
    let stale = crypto::StaleKeystore::RolledBack {
        found: 2,
        expected: 4,
    };
    assert!(
        reason.contains(&stale.to_string())
            && reason.contains("`cloister run --accept-keystore-rollback 2`"),
        "{reason}"
    );
    let snapshot = f.rt.snapshot().await.expect("snapshot");
    let status = snapshot.service(crypto::NAME.as_str()).expect("crypto");
    assert_eq!(
        (status.state, status.restarts),
        (runtime::State::Failed, 0),
        "for the operator: no restart"
    );
    f.rt.shutdown().await;
    // Refused again, unchanged, when another generation is accepted.
    let f = build(dir.path(), Some(3));
    f.journal
        .wait_for(0, Duration::from_secs(30), |e| {
            e.service.as_ref() == Some(&crypto::NAME) && matches!(e.event, Event::Failed { .. })
        })
        .await
        .expect("crypto fails");
    f.rt.shutdown().await;

    // The operator accepts generation 2: that keystore is served, as it was.
    let f = start(dir.path(), Some(2)).await;
    assert_eq!(sign(&f.crypto, &rotated).await.expect("sign").version, 1);
    assert!(sign(&f.crypto, &deleted).await.is_ok());
    // Writes go on after the counter (generation 5), so no generation is written twice.
    generate(&f.crypto).await;
    f.rt.shutdown().await;
    let counter = enclave::Counters::new(dir.path())
        .read(
            &enclave::Simulation::open(dir.path(), b"test binary", b"", 1).expect("simulation"),
            "keystore",
        )
        .expect("counter");
    assert_eq!(counter, 5);
    // And the accepted keystore is now the normal one.
    let f = start(dir.path(), None).await;
    assert!(sign(&f.crypto, &deleted).await.is_ok());
    f.rt.shutdown().await;
}

/// A crash between the keystore's write and the counter's advance leaves the keystore one
/// generation ahead: the next start lets the counter catch up. A deleted counter file is not that.
#[tokio::test]
async fn a_keystore_one_generation_ahead_is_fixed_up_and_a_lost_counter_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counter_path = dir.path().join("keystore.counter");
    let f = start(dir.path(), None).await;
    let first = generate(&f.crypto).await;
    f.rt.shutdown().await;
    let counter_at_one = std::fs::read(&counter_path).expect("the counter");
    let f = start(dir.path(), None).await;
    generate(&f.crypto).await;
    f.rt.shutdown().await;
    std::fs::write(&counter_path, &counter_at_one).expect("the crash");
    let f = start(dir.path(), None).await;
    assert!(sign(&f.crypto, &first).await.is_ok());
    f.rt.shutdown().await;

    std::fs::remove_file(&counter_path).expect("remove the counter");
    let f = build(dir.path(), None);
    let failed = f
        .journal
        .wait_for(0, Duration::from_secs(30), |e| {
            e.service.as_ref() == Some(&crypto::NAME) && matches!(e.event, Event::Failed { .. })
        })
        .await
        .expect("crypto fails");
    let Event::Failed { reason } = &failed.event else {
        unreachable!()
    };
    assert!(
        reason.contains("the freshness counter is missing")
            && reason.contains("--accept-keystore-rollback 2"),
        "{reason}"
    );
    f.rt.shutdown().await;
}
