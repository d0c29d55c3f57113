//! What a key operation costs as the keystore grows: a generate and a delete (two writes, so the
//! keystore's size stays put) through the crypto service's handle, with 10 and with 1,000 other
//! keys in the keystore. Each write is durable (synced, then the freshness counter advanced).
//!
//! Run: `cargo bench -p crypto --bench keystore`

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use crypto::{Algorithm, Crypto, Request};
use runtime::{Builder, Journal, RuntimeLevel};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let mut group = c.benchmark_group("keystore");
    group.sample_size(20);
    for others in [10usize, 1_000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let platform: Arc<dyn enclave::Platform> =
            Arc::new(enclave::Simulation::open(dir.path(), b"bench", b"", 1).expect("simulation"));
        let (runtime, handle) = rt.block_on(async {
            let mut b = Builder::new(Journal::in_memory());
            let handle = b.add(Crypto::new(dir.path(), platform));
            let runtime = b.start().expect("start");
            runtime
                .readiness()
                .wait_for(|r| r.level == RuntimeLevel::Ready)
                .await
                .expect("ready");
            // Spread over owners, so no account is near its key cap.
            for i in 0..others {
                handle
                    .call(|reply| Request::Generate {
                        owner: format!("owner{}", i % 10),
                        algorithm: Algorithm::Ed25519,
                        reply,
                    })
                    .await
                    .expect("call")
                    .expect("generate");
            }
            (runtime, handle)
        });
        group.bench_function(format!("generate_and_delete/{others}_other_keys"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let key = handle
                        .call(|reply| Request::Generate {
                            owner: "bench".into(),
                            algorithm: Algorithm::Ed25519,
                            reply,
                        })
                        .await
                        .expect("call")
                        .expect("generate");
                    handle
                        .call(|reply| Request::Delete {
                            owner: "bench".into(),
                            id: key.id,
                            reply,
                        })
                        .await
                        .expect("call")
                        .expect("delete");
                })
            });
        });
        rt.block_on(runtime.shutdown());
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
