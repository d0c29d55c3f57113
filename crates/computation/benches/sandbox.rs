//! A script in a fresh sandbox through the computation service's handle, next to raw rquickjs doing
//! the same (a new `Runtime` and `Context`, then eval), in one run: a trivial script (`1 + 1`) and
//! fib(25).
//!
//! What the service adds per run: a bus round trip, the hand-off to a worker thread and back, the
//! capability API (objects and functions, frozen and defined read-only), compiling the code as
//! an async function body, draining the job queue, heap sampling and JSON of the result.
//! `node_vm.js` beside this file measures Node's `vm.runInNewContext` for comparison.
//!
//! Run: `cargo bench -p computation --bench sandbox` and `node crates/computation/benches/node_vm.js`

#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use computation::{Caller, Computation, Ending, LimitOverrides, Program, Request};
use criterion::{Criterion, criterion_group, criterion_main};
use runtime::{Builder, Journal, RuntimeLevel};

const FIB: &str = "function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }";

fn raw(code: &str) -> i32 {
    let rt = rquickjs::Runtime::new().expect("runtime");
    let ctx = rquickjs::Context::full(&rt).expect("context");
    ctx.with(|ctx| ctx.eval::<i32, _>(code).expect("eval"))
}

/// Prints runs per second and the median of `times`, then clears it.
fn report(name: &str, total: Duration, times: &mut Vec<Duration>) {
    times.sort();
    let p50 = times[times.len() / 2];
    println!(
        "{name}: {:.0} runs/s, p50 {:.1} µs ({} runs)",
        times.len() as f64 / total.as_secs_f64(),
        p50.as_secs_f64() * 1e6,
        times.len()
    );
    times.clear();
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio");
    let dir = tempfile::tempdir().expect("tempdir");
    let platform: Arc<dyn enclave::Platform> =
        Arc::new(enclave::Simulation::open(dir.path(), b"bench", b"", 1).expect("simulation"));
    let (runtime, handle) = rt.block_on(async {
        let mut b = Builder::new(Journal::in_memory());
        let crypto = b.add(crypto::Crypto::new(dir.path(), platform.clone()));
        let storage = b.add(storage::Storage::new(dir.path(), platform, crypto.clone()));
        let handle = b.add(Computation::new(crypto, storage));
        let runtime = b.start().expect("start");
        runtime
            .readiness()
            .wait_for(|r| r.level == RuntimeLevel::Ready)
            .await
            .expect("ready");
        (runtime, handle)
    });
    let run = |code: &'static str| {
        let handle = &handle;
        async move {
            let outcome = handle
                .call(|reply| Request::Run {
                    caller: Caller {
                        owner: "bench".into(),
                        signing_key: None,
                        grants: computation::Grants::ALL,
                        allowance: None,
                        capabilities: computation::Capabilities::Account,
                    },
                    program: Program {
                        code: code.into(),
                        args: None,
                        limits: LimitOverrides::default(),
                        deterministic: false,
                    },
                    reply,
                })
                .await
                .expect("call")
                .expect("run");
            assert_eq!(outcome.ending, Ending::Completed);
            outcome.result
        }
    };
    let rt = &rt;
    let run = &run;
    let service = |code: &'static str| {
        move |b: &mut criterion::Bencher<'_>| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(run(code).await);
                    }
                    start.elapsed()
                })
            });
        }
    };

    let mut group = c.benchmark_group("computation/trivial");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    group.bench_function("raw_rquickjs", |b| b.iter(|| black_box(raw("1 + 1"))));
    group.bench_function("service", service("return 1 + 1"));
    group.finish();

    // Runs per second and the median run (warm, after the group above), directly comparable
    // with benches/node_vm.js.
    let runs = 2000;
    let mut times = Vec::with_capacity(runs);
    let all = Instant::now();
    for _ in 0..runs {
        let t = Instant::now();
        black_box(raw("1 + 1"));
        times.push(t.elapsed());
    }
    report("raw rquickjs '1 + 1'", all.elapsed(), &mut times);
    let all = Instant::now();
    rt.block_on(async {
        for _ in 0..runs {
            let t = Instant::now();
            black_box(run("return 1 + 1").await);
            times.push(t.elapsed());
        }
    });
    report("service 'return 1 + 1'", all.elapsed(), &mut times);

    let mut group = c.benchmark_group("computation/fib25");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    group.bench_function("raw_rquickjs", |b| {
        // The same shape as the service's: `fib` local to a function, not a global.
        b.iter(|| black_box(raw(&format!("(function () {{ {FIB} return fib(25); }})()"))))
    });
    group.bench_function(
        "service",
        service("function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); } return fib(25);"),
    );
    group.finish();
    rt.block_on(runtime.shutdown());
}

criterion_group!(benches, bench);
criterion_main!(benches);
