//! How long each hostile script of the test corpus (`tests/common/corpus.rs`) takes to come to its
//! ending through the service, against its time limit, and how much resident memory the process
//! kept over the whole corpus. `tests/hostile.rs` asserts the endings; these figures depend on the
//! machine, so they are measured here and not asserted anywhere.
//!
//! A script that ends at its time limit should be answered at the limit; one stuck in a builtin
//! that does not poll for interrupts at the watchdog's hard deadline (1.5 × the limit); anything
//! past 2 × the limit is listed as late. The last case leaves a thread spinning until the process
//! exits, as the watchdog has to.
//!
//! Run: `cargo bench -p computation --bench hostile`

#![allow(clippy::print_stdout)]

#[path = "../tests/common/corpus.rs"]
mod corpus;

use std::sync::Arc;
use std::time::{Duration, Instant};

use computation::{Caller, Computation, Program, Request};
use runtime::{Builder, Journal, RuntimeLevel};

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let dir = tempfile::tempdir().expect("tempdir");
    let platform: Arc<dyn enclave::Platform> =
        Arc::new(enclave::Simulation::open(dir.path(), b"bench", b"", 1).expect("simulation"));
    rt.block_on(async {
        let mut b = Builder::new(Journal::in_memory());
        let crypto = b.add(crypto::Crypto::new(dir.path(), platform.clone()));
        let storage = b.add(storage::Storage::new(dir.path(), platform, crypto.clone()));
        let mut spec = Computation::default_spec();
        spec.resources.cpu_cores = 2;
        let handle = b.add_with_spec(Computation::new(crypto, storage), spec);
        let runtime = b.start().expect("start");
        runtime
            .readiness()
            .wait_for(|r| r.level == RuntimeLevel::Ready)
            .await
            .expect("ready");
        let run = |code: &str| {
            let program = Program {
                code: code.into(),
                args: None,
                limits: corpus::limits(),
                deterministic: false,
            };
            handle.call(|reply| Request::Run {
                caller: Caller {
                    owner: "mallory".into(),
                    signing_key: None,
                    grants: computation::Grants::ALL,
                    allowance: None,
                    capabilities: computation::Capabilities::Account,
                },
                program,
                reply,
            })
        };
        for _ in 0..3 {
            run(corpus::PROBE).await.expect("call").expect("run");
        }
        let baseline = rss_kib();
        let limit = Duration::from_millis(corpus::TIME_MS);
        let mut late = Vec::new();
        println!(
            "{:<55} {:<18} {:>7} {:>7}",
            "case", "ending", "ms", "× limit"
        );
        for case in corpus::corpus() {
            let started = Instant::now();
            let outcome = run(case.code).await.expect("call");
            let elapsed = started.elapsed();
            let ending = match &outcome {
                Ok(o) if o.ending == (computation::Ending::TimedOut { abandoned: true }) => {
                    "abandoned"
                }
                Ok(o) => o.ending.code(),
                Err(_) => "refused",
            };
            let ratio = elapsed.as_secs_f64() / limit.as_secs_f64();
            println!(
                "{:<55} {:<18} {:>7} {:>7.2}",
                case.name,
                ending,
                elapsed.as_millis(),
                ratio
            );
            if elapsed > 2 * limit {
                late.push(case.name);
            }
            run(corpus::PROBE).await.expect("call").expect("run");
        }
        println!("past 2 × the {} ms limit: {late:?}", corpus::TIME_MS);
        if let (Some(before), Some(after)) = (baseline, rss_kib()) {
            println!("VmRSS: {before} KiB before the corpus, {after} KiB after");
        }
        let pool = handle
            .call(|reply| Request::Pool { reply })
            .await
            .expect("call");
        println!("{pool:?}");
        runtime.shutdown().await;
    });
}
