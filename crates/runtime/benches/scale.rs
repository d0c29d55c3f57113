//! Scale: 1,000 and 10,000 idle services in a random dependency DAG (each on up to 3 earlier ones,
//! seeded), on an in-memory journal: time from `Builder::start` to readiness `Ready`, time for
//! `Runtime::shutdown`, and heap bytes per idle service from a counting global allocator.
//!
//! Run: `cargo bench -p runtime --bench scale` (without `--bench`, as under `cargo test`, it runs 200
//! services only).

#![allow(clippy::print_stdout)]

use std::alloc::System;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use runtime::{
    Builder, Context, Journal, Kind, Reply, RuntimeLevel, Service, ServiceError, ServiceName, Spec,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const WORKERS: usize = 2;
const MAX_DEPENDENCIES: usize = 3;
const SEED: u64 = 0x00c1_0157;
/// Far beyond any plausible start or stop; reached only if the runtime is stuck.
const STUCK: Duration = Duration::from_secs(300);

/// Heap bytes allocated and not yet freed, over every thread.
fn live_bytes() -> i64 {
    let stats = ALLOCATOR.stats();
    stats.bytes_allocated as i64 - stats.bytes_deallocated as i64
}

/// A service that waits for requests (of which none come) and does nothing else.
struct Idle {
    spec: Spec,
}

impl Service for Idle {
    type Request = Reply<()>;

    fn spec(&self) -> Spec {
        self.spec.clone()
    }

    async fn run(&self, mut cx: Context<Reply<()>>) -> Result<(), ServiceError> {
        while let Some(reply) = cx.recv().await {
            reply.send(());
        }
        Ok(())
    }
}

/// `n` specs, service `i` depending on up to three distinct services before it.
fn random_dag(n: usize, rng: &mut StdRng) -> Vec<Spec> {
    let names: Vec<ServiceName> = (0..n)
        .map(|i| ServiceName::new(&format!("svc-{i}")).expect("a valid service name"))
        .collect();
    (0..n)
        .map(|i| {
            let count = rng.gen_range(0..=MAX_DEPENDENCIES).min(i);
            let mut spec = Spec::new(names[i].clone(), Kind::Core);
            for d in rand::seq::index::sample(rng, i.max(1), count) {
                spec = spec.depends_on(names[d].clone());
            }
            spec
        })
        .collect()
}

struct Figures {
    services: usize,
    edges: usize,
    start: Duration,
    shutdown: Duration,
    registered_bytes: i64,
    running_bytes: i64,
}

fn measure(n: usize) -> Figures {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut rng = StdRng::seed_from_u64(SEED);
    rt.block_on(async {
        let before = live_bytes();
        let specs = random_dag(n, &mut rng);
        let edges = specs.iter().map(|s| s.dependencies.len()).sum();
        let mut builder = Builder::new(Journal::in_memory());
        let handles: Vec<_> = specs
            .into_iter()
            .map(|spec| builder.add(Idle { spec }))
            .collect();
        let registered = live_bytes();

        let started = Instant::now();
        let runtime = builder.start().expect("a valid graph");
        let mut readiness = runtime.readiness();
        tokio::time::timeout(
            STUCK,
            readiness.wait_for(|r| r.level == RuntimeLevel::Ready),
        )
        .await
        .expect("the runtime becomes ready in time")
        .expect("the runtime is running");
        let start = started.elapsed();
        drop(readiness);
        let running = live_bytes();

        let stopping = Instant::now();
        tokio::time::timeout(STUCK, runtime.shutdown())
            .await
            .expect("the runtime stops in time");
        let shutdown = stopping.elapsed();
        drop(handles);
        Figures {
            services: n,
            edges,
            start,
            shutdown,
            registered_bytes: registered - before,
            running_bytes: running - before,
        }
    })
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if full { &[1_000, 10_000] } else { &[200] };
    println!(
        "scale: idle services in a random DAG (<= {MAX_DEPENDENCIES} deps each, seed {SEED:#x}), {WORKERS} tokio workers"
    );
    for &n in sizes {
        let f = measure(n);
        let per = |bytes: i64| bytes as f64 / f.services as f64;
        println!(
            "{:>6} services ({:>5} edges): start -> Ready {:>8.1} ms, shutdown {:>8.1} ms, \
             live heap per service {:>7.0} B (registered {:.0} B + running {:.0} B)",
            f.services,
            f.edges,
            f.start.as_secs_f64() * 1e3,
            f.shutdown.as_secs_f64() * 1e3,
            per(f.running_bytes),
            per(f.registered_bytes),
            per(f.running_bytes - f.registered_bytes),
        );
    }
}
