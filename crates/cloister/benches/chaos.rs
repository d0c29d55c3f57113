//! Chaos, long and random: the scenario of `tests/chaos.rs` (see `tests/chaos/scenario.rs`) with
//! many faults and a new seed each run, on the default recovery settings (but `on_exhausted =
//! "retry"`, so every service must come back by itself), and then a burst: panics into crypto
//! every 200 ms for 3 s, and the time from the end of the burst until every service serves again.
//!
//! ```sh
//! cargo bench -p cloister --bench chaos                              # 60 faults, a random seed
//! CLOISTER_CHAOS_FAULTS=300 CLOISTER_CHAOS_SEED=42 cargo bench -p cloister --bench chaos
//! ```
//!
//! Without `--bench` (as in `cargo test --benches`) it runs 4 faults and no burst: a check that the
//! bench works, not a measurement. It fails (exits non-zero) on any broken promise, printing the
//! seed to replay it.

// A bench reports on stdout (the table) and stderr (progress).
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../tests/chaos/scenario.rs"]
mod scenario;

use std::time::{Duration, Instant};

use scenario::{Plan, quantile};
use test_support::server::{Server, journal_head};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Panics into crypto every 200 ms for 3 s (those that find it down are refused, 409), then the
/// time until the runtime is ready again, on the default recovery settings with `retry`.
async fn burst() -> (usize, Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("cloister.toml");
    let plan = Plan {
        seed: 0,
        faults: 0,
        answers_between: 0,
        deadline: Duration::from_secs(2),
        writers: 0,
        backoff_max: None,
    };
    std::fs::write(&config, scenario::config(&dir.path().join("data"), &plan)).expect("config");
    let server = Server::start(scenario::BIN, &config).await;
    let mut landed = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        landed += usize::from(scenario::inject(&server, "crypto", "panic").await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let end = Instant::now();
    let head = journal_head(&config);
    let (_, services) = server
        .json(reqwest::Method::GET, "/v1/services", None)
        .await;
    if services["readiness"]["level"] != "ready" {
        server
            .wait_event(head, |e| {
                e["event"]["kind"] == "runtime_health" && e["event"]["level"] == "ready"
            })
            .await;
    }
    (landed, end.elapsed())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let seed = std::env::var("CLOISTER_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let plan = Plan {
        seed,
        faults: if full {
            env_number("CLOISTER_CHAOS_FAULTS", 60) as usize
        } else {
            4
        },
        answers_between: env_number("CLOISTER_CHAOS_ANSWERS_BETWEEN", 40),
        deadline: Duration::from_millis(env_number("CLOISTER_CHAOS_DEADLINE_MS", 2000)),
        writers: 2,
        backoff_max: None,
    };
    eprintln!("chaos: seed {seed}, {} faults", plan.faults);
    let started = Instant::now();
    let mut report = scenario::run(&plan).await;
    let took = started.elapsed();
    let answered = report.succeeded + report.unavailable;
    println!("chaos round: seed {seed}, {:.0} s", took.as_secs_f64());
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| faults injected (not: service already down) | {} ({}) |",
        report.injected.len(),
        report.not_injected
    );
    println!("| calls answered | {answered} |");
    println!(
        "| of which retryable 503 | {} ({:.1} %) |",
        report.unavailable,
        100.0 * report.unavailable as f64 / answered.max(1) as f64
    );
    println!("| writes acknowledged | {} |", report.acked_writes);
    for (name, q) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
        println!(
            "| latency {name} (deadline {} ms) | {} ms |",
            plan.deadline.as_millis(),
            quantile(&mut report.latencies, q).as_millis()
        );
    }
    println!(
        "| last fault to ready | {} ms |",
        report.recovery.as_millis()
    );
    println!(
        "| faults by service | {:?} |",
        scenario::by_service(&report)
    );
    if full {
        let (landed, recovery) = burst().await;
        println!(
            "| crypto burst: panics landed in 3 s; end of burst to ready | {landed}; {} ms |",
            recovery.as_millis()
        );
    }
    if !report.violations.is_empty() {
        eprintln!(
            "broken promises (replay with CLOISTER_CHAOS_SEED={seed}):\n{}",
            report.violations.join("\n")
        );
        std::process::exit(1);
    }
}
