//! Sign and verify per algorithm through the crypto service's handle, next to the same library call
//! made directly, in one run: what the service adds (the bus round trip, owner checks).
//!
//! Run: `cargo bench -p crypto --bench sign`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use crypto::{Algorithm, Crypto, Request};
use runtime::{Builder, Journal, RuntimeLevel};

const MESSAGE: &[u8] = b"a message of modest length, as signed in practice";

fn bench(c: &mut Criterion) {
    // The service on the caller's thread (current-thread runtime) shows what the service itself
    // adds; on a two-worker runtime the request crosses to the other core, which on this kind of
    // machine costs more than the bus round trip itself.
    let same_thread = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let two_workers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    run(c, "same_thread", &same_thread, true);
    run(c, "two_workers", &two_workers, false);
}

fn run(c: &mut Criterion, flavor: &str, rt: &tokio::runtime::Runtime, with_direct: bool) {
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
        (runtime, handle)
    });
    let mut group = c.benchmark_group(format!("crypto/{flavor}"));
    for algorithm in [Algorithm::Secp256k1, Algorithm::P256, Algorithm::Ed25519] {
        let key = rt.block_on(async {
            handle
                .call(|reply| Request::Generate {
                    owner: "bench".into(),
                    algorithm,
                    reply,
                })
                .await
                .expect("call")
                .expect("generate")
        });
        let signature = rt.block_on(async {
            handle
                .call(|reply| Request::Sign {
                    owner: "bench".into(),
                    id: key.id.clone(),
                    message: MESSAGE.to_vec(),
                    der: false,
                    reply,
                })
                .await
                .expect("call")
                .expect("sign")
                .signature
        });
        let name = algorithm.as_str();
        // Many calls inside one `block_on`, as a caller on the runtime would make them (entering the
        // runtime per call would measure the thread handoff instead).
        group.bench_function(format!("{name}/sign/handle"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = std::time::Instant::now();
                    for _ in 0..iters {
                        let signed = handle
                            .call(|reply| Request::Sign {
                                owner: "bench".into(),
                                id: key.id.clone(),
                                message: MESSAGE.to_vec(),
                                der: false,
                                reply,
                            })
                            .await
                            .expect("call")
                            .expect("sign");
                        black_box(signed);
                    }
                    start.elapsed()
                })
            })
        });
        group.bench_function(format!("{name}/verify/handle"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = std::time::Instant::now();
                    for _ in 0..iters {
                        let valid = handle
                            .call(|reply| Request::Verify {
                                owner: "bench".into(),
                                id: key.id.clone(),
                                message: MESSAGE.to_vec(),
                                signature: signature.clone(),
                                reply,
                            })
                            .await
                            .expect("call")
                            .expect("verify");
                        black_box(valid);
                    }
                    start.elapsed()
                })
            })
        });
        if with_direct {
            direct(&mut group, algorithm);
        }
    }
    group.finish();
    rt.block_on(runtime.shutdown());
}

/// The library calls the service makes, with a key made here.
fn direct(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    algorithm: Algorithm,
) {
    use k256::ecdsa::signature::{Signer, Verifier};
    let name = algorithm.as_str();
    let secret: [u8; 32] = [7; 32];
    match algorithm {
        Algorithm::Secp256k1 => {
            let key = k256::ecdsa::SigningKey::from_slice(&secret).expect("key");
            let sig: k256::ecdsa::Signature = key.sign(MESSAGE);
            group.bench_function(format!("{name}/sign/direct"), |b| {
                b.iter(|| -> k256::ecdsa::Signature { key.sign(black_box(MESSAGE)) })
            });
            group.bench_function(format!("{name}/verify/direct"), |b| {
                b.iter(|| key.verifying_key().verify(black_box(MESSAGE), &sig).is_ok())
            });
        }
        Algorithm::P256 => {
            let key = p256::ecdsa::SigningKey::from_slice(&secret).expect("key");
            let sig: p256::ecdsa::Signature = key.sign(MESSAGE);
            group.bench_function(format!("{name}/sign/direct"), |b| {
                b.iter(|| -> p256::ecdsa::Signature { key.sign(black_box(MESSAGE)) })
            });
            group.bench_function(format!("{name}/verify/direct"), |b| {
                b.iter(|| key.verifying_key().verify(black_box(MESSAGE), &sig).is_ok())
            });
        }
        Algorithm::Ed25519 => {
            let key = ed25519_dalek::SigningKey::from_bytes(&secret);
            let sig = key.sign(MESSAGE);
            group.bench_function(format!("{name}/sign/direct"), |b| {
                b.iter(|| key.sign(black_box(MESSAGE)))
            });
            group.bench_function(format!("{name}/verify/direct"), |b| {
                b.iter(|| {
                    key.verifying_key()
                        .verify_strict(black_box(MESSAGE), &sig)
                        .is_ok()
                })
            });
        }
        Algorithm::Aes256gcm => {}
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
