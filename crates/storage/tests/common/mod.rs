//! What the storage test targets share: a runtime with crypto and storage on a data directory,
//! started until ready or until storage says why it failed.
// Each test target uses a part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use runtime::journal::{Event, ExitOutcome};
use runtime::{Builder, Journal, RuntimeLevel};
use storage::Storage;

/// Waits until storage has failed and returns the reason it gave.
pub(crate) async fn failure(journal: &Journal) -> String {
    let exited = journal
        .wait_for(0, std::time::Duration::from_secs(30), |e| {
            e.service.as_ref() == Some(&storage::NAME)
                && matches!(
                    e.event,
                    Event::Exited {
                        outcome: ExitOutcome::Error { .. },
                        ..
                    }
                )
        })
        .await
        .expect("storage exits with an error");
    match &exited.event {
        Event::Exited {
            outcome: ExitOutcome::Error { message },
            ..
        } => message.clone(),
        other => panic!("unexpected {other:?}"),
    }
}

pub(crate) struct Fixture {
    pub(crate) rt: runtime::Runtime,
    pub(crate) storage: storage::Handle,
    pub(crate) crypto: crypto::Handle,
    pub(crate) journal: Journal,
    /// The recipe's lent reads of cached values.
    pub(crate) reads: storage::Reads,
}

pub(crate) fn platform(dir: &Path) -> Arc<dyn enclave::Platform> {
    Arc::new(enclave::Simulation::open(dir, b"test binary", b"", 1).expect("simulation"))
}

/// The storage recipe on `dir`, to call `verify` on (never started: its crypto handle leads nowhere,
/// and `verify` never calls the crypto service).
pub(crate) fn recipe(dir: &Path) -> Storage {
    let mut b = Builder::new(Journal::in_memory());
    let crypto = b.add(crypto::Crypto::new(dir, platform(dir)));
    Storage::new(dir, platform(dir), crypto)
}

pub(crate) fn build(
    dir: &Path,
    accept: Option<u64>,
    configure: impl FnOnce(&mut runtime::Spec),
) -> Fixture {
    build_with(dir, accept, |_| {}, configure)
}

/// As [`build`], with the crypto service's spec changed by `configure_crypto`.
pub(crate) fn build_with(
    dir: &Path,
    accept: Option<u64>,
    configure_crypto: impl FnOnce(&mut runtime::Spec),
    configure: impl FnOnce(&mut runtime::Spec),
) -> Fixture {
    build_on(
        dir,
        storage::Backend::Redb,
        accept,
        configure_crypto,
        configure,
    )
}

/// The backend on the private PostgreSQL server `pg`.
pub(crate) fn postgres(pg: &test_support::postgres::Postgres) -> storage::Backend {
    storage::Backend::Postgres(Box::new(
        storage::postgres::Target::parse(&pg.url()).expect("url"),
    ))
}

/// As [`build_with`], with the records in `backend`.
pub(crate) fn build_on(
    dir: &Path,
    backend: storage::Backend,
    accept: Option<u64>,
    configure_crypto: impl FnOnce(&mut runtime::Spec),
    configure: impl FnOnce(&mut runtime::Spec),
) -> Fixture {
    let platform = platform(dir);
    let journal = Journal::in_memory();
    let mut b = Builder::new(journal.clone());
    let mut crypto_spec = crypto::Crypto::default_spec();
    crypto_spec.recovery.strategy = runtime::Strategy::Manual;
    configure_crypto(&mut crypto_spec);
    let crypto = b.add_with_spec(crypto::Crypto::new(dir, platform.clone()), crypto_spec);
    let crypto_handle = crypto.clone();
    let mut spec = Storage::default_spec();
    spec.recovery.strategy = runtime::Strategy::Manual;
    configure(&mut spec);
    let recipe = Storage::new(dir, platform, crypto)
        .with_backend(backend)
        .accept_rollback(accept);
    let reads = recipe.reads();
    let storage = b.add_with_spec(recipe, spec);
    let rt = b.start().expect("start");
    Fixture {
        rt,
        storage,
        crypto: crypto_handle,
        journal,
        reads,
    }
}

/// Starts storage and waits until it is ready; if it fails instead, the test fails with its reason.
pub(crate) async fn start(dir: &Path, accept: Option<u64>) -> Fixture {
    let f = build(dir, accept, |_| {});
    tokio::select! {
        () = ready(&f.rt) => {}
        reason = failure(&f.journal) => panic!("storage failed to start: {reason}"),
    }
    f
}

/// As [`start`], with the records in `backend`.
pub(crate) async fn start_on(
    dir: &Path,
    backend: storage::Backend,
    accept: Option<u64>,
) -> Fixture {
    let f = build_on(dir, backend, accept, |_| {}, |_| {});
    tokio::select! {
        () = ready(&f.rt) => {}
        reason = failure(&f.journal) => panic!("storage failed to start: {reason}"),
    }
    f
}

pub(crate) async fn ready(rt: &runtime::Runtime) {
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
}
