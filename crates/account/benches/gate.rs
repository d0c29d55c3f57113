//! What authenticating a request costs: the gate's token check (SHA-256 of the token, a lookup in
//! the published directory, the expiry check) and the per-account rate limit, with 1,000 accounts
//! loaded, next to the floor of any token check (one SHA-256 of the token) and to the admin token's
//! constant-time comparison, in one run.
//!
//! Run: `cargo bench -p account --bench gate`

use std::hint::black_box;
use std::sync::Arc;

use account::{Account, Request};
use criterion::{Criterion, criterion_group, criterion_main};
use runtime::{Builder, Journal, RuntimeLevel};
use sha2::{Digest, Sha256};

const ACCOUNTS: usize = 1000;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let dir = tempfile::tempdir().expect("tempdir");
    let platform: Arc<dyn enclave::Platform> =
        Arc::new(enclave::Simulation::open(dir.path(), b"bench", b"", 1).expect("simulation"));
    let (runtime, gate, secrets) = rt.block_on(async {
        let journal = Journal::in_memory();
        let mut b = Builder::new(journal.clone());
        let crypto = b.add(crypto::Crypto::new(dir.path(), platform.clone()));
        let storage = b.add(storage::Storage::new(dir.path(), platform, crypto.clone()));
        let service = Account::new(crypto, storage, journal);
        let gate = service.gate();
        let handle = b.add(service);
        let runtime = b.start().expect("start");
        runtime
            .readiness()
            .wait_for(|r| r.level == RuntimeLevel::Ready)
            .await
            .expect("ready");
        let mut secrets = Vec::with_capacity(ACCOUNTS);
        for n in 0..ACCOUNTS {
            let created = handle
                .call(|reply| Request::Create {
                    name: format!("bench-{n}"),
                    reply,
                })
                .await
                .expect("answer")
                .expect("created");
            secrets.push(created.token.secret);
        }
        (runtime, gate, secrets)
    });

    let mut group = c.benchmark_group("token check");
    let mut i = 0usize;
    group.bench_function("floor: SHA-256 of the token", |b| {
        b.iter(|| {
            i = (i + 1) % ACCOUNTS;
            black_box(Sha256::digest(black_box(secrets[i].as_bytes())))
        })
    });
    let admin = "an-admin-token-of-some-length-0123456789";
    group.bench_function("admin token comparison (two SHA-256)", |b| {
        b.iter(|| {
            i = (i + 1) % ACCOUNTS;
            let x = Sha256::digest(admin.as_bytes());
            let y = Sha256::digest(black_box(secrets[i].as_bytes()));
            black_box(
                x.iter()
                    .zip(y.iter())
                    .fold(0u8, |acc, (p, q)| acc | (p ^ q)),
            )
        })
    });
    group.bench_function("gate: authenticate", |b| {
        b.iter(|| {
            i = (i + 1) % ACCOUNTS;
            black_box(gate.authenticate(black_box(&secrets[i])).expect("valid"))
        })
    });
    group.bench_function("gate: authenticate + rate limit", |b| {
        b.iter(|| {
            i = (i + 1) % ACCOUNTS;
            let principal = gate.authenticate(black_box(&secrets[i])).expect("valid");
            // The default limit (100/s, burst 200) refuses most of these: both outcomes cost the
            // same lock and arithmetic.
            black_box(gate.admit(&principal.account).is_ok())
        })
    });
    group.finish();
    rt.block_on(runtime.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
