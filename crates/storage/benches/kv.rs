//! Put and get of 1 KiB values through the storage service's handle, next to raw redb doing the same
//! with the same durability (one immediate-durability commit per put), in one run.
//!
//! What the service adds on a put: two bus round trips (caller → storage → crypto), AES-256-GCM, the
//! state digest (an HMAC of the new record and of the one it replaces, and the tag, in the commit),
//! and the freshness counter (a sealed file written and synced after each commit, which is what makes
//! a rollback of the database detectable). On a get: the same round trips and the decryption.
//!
//! Then the check a start makes (`Storage::verify`: one scan recomputing the state digest, the tag,
//! the counter) over a database of 10,000 values of 1 KiB.
//!
//! Run: `cargo bench -p storage --bench kv`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use redb::{ReadableDatabase, TableDefinition};
use runtime::{Builder, Journal, RuntimeLevel};
use storage::{Request, Storage, Write};

const VALUE: [u8; 1024] = [0x5a; 1024];
const KEYS: usize = 1000;
/// Values in the database the start-up check scans.
const SCANNED: usize = 10_000;
const TABLE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("bench");

fn key(i: u64) -> String {
    format!("bench/key-{:04}", i % KEYS as u64)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let dir = tempfile::tempdir().expect("tempdir");
    let platform: Arc<dyn enclave::Platform> =
        Arc::new(enclave::Simulation::open(dir.path(), b"bench", b"", 1).expect("simulation"));
    let (runtime, handle, reads) = rt.block_on(async {
        let mut b = Builder::new(Journal::in_memory());
        let crypto = b.add(crypto::Crypto::new(dir.path(), platform.clone()));
        let recipe = Storage::new(dir.path(), platform, crypto);
        let reads = recipe.reads();
        let handle = b.add(recipe);
        let runtime = b.start().expect("start");
        runtime
            .readiness()
            .wait_for(|r| r.level == RuntimeLevel::Ready)
            .await
            .expect("ready");
        (runtime, handle, reads)
    });
    let put = |i: u64| {
        let handle = &handle;
        async move {
            handle
                .call(|reply| Request::Put {
                    namespace: "bench".into(),
                    key: key(i),
                    value: VALUE.to_vec(),
                    reply,
                })
                .await
                .expect("call")
                .expect("put")
        }
    };
    let get = |i: u64| {
        let handle = &handle;
        async move {
            handle
                .call(|reply| Request::Get {
                    namespace: "bench".into(),
                    key: key(i),
                    reply,
                })
                .await
                .expect("call")
                .expect("get")
        }
    };
    rt.block_on(async {
        for i in 0..KEYS as u64 {
            put(i).await;
        }
    });

    let raw_dir = tempfile::tempdir().expect("tempdir");
    let raw = redb::Database::create(raw_dir.path().join("raw.redb")).expect("redb");
    let raw_put = |i: u64| {
        let txn = raw.begin_write().expect("write");
        txn.open_table(TABLE)
            .expect("table")
            .insert(("bench", key(i).as_str()), VALUE.as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    };
    for i in 0..KEYS as u64 {
        raw_put(i);
    }

    let mut group = c.benchmark_group("storage/1KiB");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    // Interleaved: each pair runs back to back, so drift on a shared machine hits both alike.
    group.bench_function("put/raw_redb", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            raw_put(i);
        });
    });
    group.bench_function("put/service", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    black_box(put(i).await);
                }
                start.elapsed()
            })
        });
    });
    // Sixteen writers at once: raw redb commits one transaction at a time; the service groups the
    // writes that are waiting into one commit and one counter advance.
    const WRITERS: u64 = 16;
    group.bench_function("put_16_writers/raw_redb", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(WRITERS);
            let start = Instant::now();
            std::thread::scope(|s| {
                for w in 0..WRITERS {
                    let raw_put = &raw_put;
                    s.spawn(move || {
                        for i in 0..per {
                            raw_put(w * per + i);
                        }
                    });
                }
            });
            start.elapsed()
        });
    });
    group.bench_function("put_16_writers/service", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(WRITERS);
            rt.block_on(async {
                let start = Instant::now();
                let writers = (0..WRITERS).map(|w| async move {
                    for i in 0..per {
                        black_box(put(w * per + i).await);
                    }
                });
                futures::future::join_all(writers).await;
                start.elapsed()
            })
        });
    });
    group.bench_function("get/raw_redb", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            let txn = raw.begin_read().expect("read");
            let table = txn.open_table(TABLE).expect("table");
            let value = table
                .get(("bench", key(i).as_str()))
                .expect("get")
                .expect("present")
                .value()
                .to_vec();
            black_box(value)
        });
    });
    group.bench_function("get/service", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    black_box(get(i).await);
                }
                start.elapsed()
            })
        });
    });
    // The HTTP API's path for a value the service has cached (every key read once first):
    // answered on the caller's task, without the bus.
    rt.block_on(async {
        for i in 0..KEYS as u64 {
            get(i).await;
        }
    });
    group.bench_function("get/lent_reads", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            black_box(reads.get(&handle, "bench", &key(i)).expect("cached"))
        });
    });
    group.finish();
    rt.block_on(runtime.shutdown());

    // A database of SCANNED values, written in batches by a service that then stops, so that the
    // start-up check can open it.
    let scan_dir = tempfile::tempdir().expect("tempdir");
    let scan_platform: Arc<dyn enclave::Platform> =
        Arc::new(enclave::Simulation::open(scan_dir.path(), b"bench", b"", 1).expect("simulation"));
    let recipe = rt.block_on(async {
        let mut b = Builder::new(Journal::in_memory());
        let crypto = b.add(crypto::Crypto::new(scan_dir.path(), scan_platform.clone()));
        let handle = b.add(Storage::new(
            scan_dir.path(),
            scan_platform.clone(),
            crypto.clone(),
        ));
        let runtime = b.start().expect("start");
        runtime
            .readiness()
            .wait_for(|r| r.level == RuntimeLevel::Ready)
            .await
            .expect("ready");
        for chunk in 0..SCANNED / 1000 {
            let writes = (0..1000)
                .map(|i| Write::Put {
                    key: format!("scan/{chunk}/{i:04}"),
                    value: VALUE.to_vec(),
                })
                .collect();
            handle
                .call(|reply| Request::Batch {
                    namespace: "bench".into(),
                    writes,
                    reply,
                })
                .await
                .expect("call")
                .expect("batch");
        }
        runtime.shutdown().await;
        Storage::new(scan_dir.path(), scan_platform, crypto)
    });
    let mut group = c.benchmark_group("storage/start");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    group.bench_function("check_10000_values", |b| {
        b.iter(|| {
            let verified = recipe.verify().expect("verified");
            assert_eq!(verified.entries, SCANNED as u64 + 1);
            black_box(verified)
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
