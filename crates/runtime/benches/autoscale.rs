//! Autoscaling step response under tokio's paused clock: one service whose requests take 20 ms of
//! work each (replicas 1..=8, latency objective 100 ms, 4 queued requests per replica, cooldown 2 s,
//! scale-in after 20 s, monitor every 1 s), driven open loop at 10 requests/s for 30 s, 200/s for
//! 60 s, then 10/s for 60 s; every request is its own task, spawned at its scheduled time, so its
//! latency includes queueing. Writes one row per simulated second to `docs/autoscale.csv`
//! (`t_s,offered_rps,replicas,queue_depth,p90_ms`: row `t_s` covers the second `[t_s - 1, t_s)`,
//! replicas and queue depth are read from a snapshot at `t_s`, `p90_ms` is over the requests that
//! completed in that second, empty if none did) and prints how long p90 took to get back under the
//! objective after the step, the peak replica count and when it scaled back in.
//!
//! The clock is simulated and the runtime is single-threaded, so the run is deterministic and the CSV
//! is reproducible byte for byte; it takes well under a second of real time.
//!
//! Run: `cargo bench -p runtime --bench autoscale` (without `--bench`, as under `cargo test`, it
//! simulates the same run but leaves the CSV alone).

#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runtime::budget::Demand;
use runtime::journal::Event;
use runtime::{
    Builder, Context, Journal, Kind, Reply, RuntimeLevel, Service, ServiceError, ServiceName, Spec,
};
use tokio::time::Instant;

const NAME: ServiceName = ServiceName::from_static("worker");
const WORK: Duration = Duration::from_millis(20);
const OBJECTIVE: Duration = Duration::from_millis(100);
const MONITOR_INTERVAL: Duration = Duration::from_secs(1);
/// (duration in seconds, offered requests per second), in order.
const PHASES: [(u64, u64); 3] = [(30, 10), (60, 200), (60, 10)];
/// Consecutive seconds under the objective that count as recovered.
const RECOVERED_FOR: usize = 5;
const CSV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/autoscale.csv");

enum Request {
    /// Works (sleeps) this long, then answers.
    Work(Duration, Reply<()>),
}

impl runtime::bus::Operation for Request {
    fn operation(&self) -> &'static str {
        match self {
            Request::Work(..) => "work",
        }
    }
}

struct Worker;

impl Service for Worker {
    type Request = Request;

    fn spec(&self) -> Spec {
        let mut spec = Spec::new(NAME, Kind::Core);
        spec.replicas.min = 1;
        spec.replicas.max = 8;
        spec.autoscale.enabled = true;
        spec.autoscale.latency_objective = OBJECTIVE;
        spec.autoscale.queue_per_replica = 4;
        spec.autoscale.cooldown = Duration::from_secs(2);
        spec.autoscale.scale_in_after = Duration::from_secs(20);
        spec
    }

    async fn run(&self, mut cx: Context<Request>) -> Result<(), ServiceError> {
        while let Some(Request::Work(work, reply)) = cx.recv().await {
            tokio::time::sleep(work).await;
            reply.send(());
        }
        Ok(())
    }
}

fn offered(second: u64) -> u64 {
    let mut end = 0;
    for (length, rate) in PHASES {
        end += length;
        if second < end {
            return rate;
        }
    }
    0
}

/// A request's fate: when it was due (relative to the start of the load), when it was answered or
/// refused, whether it was answered.
#[derive(Clone, Copy)]
struct Done {
    due: Duration,
    completed: Duration,
    ok: bool,
}

struct Row {
    t: u64,
    offered: u64,
    replicas: u32,
    queue_depth: usize,
    p90: Option<Duration>,
}

struct Run {
    rows: Vec<Row>,
    /// (seconds since the start of the load, from, to) of each `Scaled` event.
    scaled: Vec<(f64, u32, u32)>,
    requests: usize,
    failed: usize,
}

async fn simulate() -> Run {
    let journal = Journal::in_memory();
    let mut builder = Builder::new(journal.clone());
    let handle = builder.add(Worker);
    builder.budget(Demand {
        memory_mib: 4096,
        threads: 256,
    });
    builder.monitor(MONITOR_INTERVAL);
    let rt = builder.start().expect("a valid graph");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("the runtime becomes ready");
    let t0 = Instant::now();
    let total: u64 = PHASES.iter().map(|(length, _)| length).sum();

    // Scale events, timed on the simulated clock as they are journaled.
    let mut live = journal.subscribe();
    let scaled = Arc::new(Mutex::new(Vec::new()));
    let recorder = {
        let scaled = scaled.clone();
        tokio::spawn(async move {
            loop {
                match live.recv().await {
                    Ok(entry) => {
                        if let Event::Scaled { from, to, .. } = entry.event {
                            let at = t0.elapsed().as_secs_f64();
                            scaled.lock().expect("scaled").push((at, from, to));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    };

    // Open-loop load: each request is spawned at its due time, whatever came of the earlier ones.
    let done = Arc::new(Mutex::new(Vec::new()));
    let load = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut calls = tokio::task::JoinSet::new();
            let mut phase_start = Duration::ZERO;
            for (length, rate) in PHASES {
                let gap = Duration::from_secs(1) / rate as u32;
                for k in 0..length * rate {
                    let due = phase_start + gap * k as u32;
                    tokio::time::sleep_until(t0 + due).await;
                    let (handle, done) = (handle.clone(), done.clone());
                    calls.spawn(async move {
                        let ok = handle.call(|r| Request::Work(WORK, r)).await.is_ok();
                        let completed = t0.elapsed();
                        done.lock().expect("done").push(Done { due, completed, ok });
                    });
                    while calls.try_join_next().is_some() {}
                }
                phase_start += Duration::from_secs(length);
            }
            while calls.join_next().await.is_some() {}
        })
    };

    // One snapshot at the end of every simulated second.
    let mut samples = Vec::new();
    for t in 1..=total {
        tokio::time::sleep_until(t0 + Duration::from_secs(t)).await;
        let snapshot = rt.snapshot().await.expect("a snapshot");
        let status = snapshot.service(NAME.as_str()).expect("the worker");
        samples.push((t, status.replicas_running, status.queue_depth));
    }
    load.await.expect("the load generator");
    rt.shutdown().await;
    recorder.abort();
    let _ = recorder.await;

    let done = std::mem::take(&mut *done.lock().expect("done"));
    let rows = samples
        .into_iter()
        .map(|(t, replicas, queue_depth)| {
            let window = Duration::from_secs(t - 1)..Duration::from_secs(t);
            let mut latencies: Vec<Duration> = done
                .iter()
                .filter(|d| d.ok && window.contains(&d.completed))
                .map(|d| d.completed - d.due)
                .collect();
            latencies.sort();
            let p90 = (!latencies.is_empty()).then(|| {
                let i = ((latencies.len() as f64 * 0.9).ceil() as usize).clamp(1, latencies.len());
                latencies[i - 1]
            });
            Row {
                t,
                offered: offered(t - 1),
                replicas,
                queue_depth,
                p90,
            }
        })
        .collect();
    let scaled = std::mem::take(&mut *scaled.lock().expect("scaled"));
    Run {
        rows,
        scaled,
        requests: done.len(),
        failed: done.iter().filter(|d| !d.ok).count(),
    }
}

fn csv(rows: &[Row]) -> String {
    let mut out = String::from("t_s,offered_rps,replicas,queue_depth,p90_ms\n");
    for r in rows {
        let p90 = r
            .p90
            .map(|d| format!("{:.1}", d.as_secs_f64() * 1e3))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{},{},{},{},{}",
            r.t, r.offered, r.replicas, r.queue_depth, p90
        );
    }
    out
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a tokio runtime");
    let wall = std::time::Instant::now();
    let run = rt.block_on(simulate());
    let wall = wall.elapsed();
    let Run {
        rows,
        scaled,
        requests,
        failed,
    } = run;

    let step = PHASES[0].0;
    let drop_at = step + PHASES[1].0;
    let over = |r: &Row| r.p90.is_none_or(|p| p > OBJECTIVE);
    // The first second after the step whose p90 is over the objective, then the first run of five
    // seconds under it.
    let breach = rows.iter().position(|r| r.t > step && over(r));
    let recovered = breach.and_then(|b| {
        (b..rows.len().saturating_sub(RECOVERED_FOR - 1))
            .find(|&i| rows[i..i + RECOVERED_FOR].iter().all(|r| !over(r)))
    });
    let peak = rows.iter().map(|r| r.replicas).max().unwrap_or(0);
    let worst = rows.iter().filter_map(|r| r.p90).max().unwrap_or_default();

    println!(
        "autoscale step response (paused clock, {} simulated s in {:.2} s): {} ms of work per \
         request, objective {} ms, replicas 1..=8, monitor every {} s",
        rows.len(),
        wall.as_secs_f64(),
        WORK.as_millis(),
        OBJECTIVE.as_millis(),
        MONITOR_INTERVAL.as_secs()
    );
    println!(
        "  load: {}; {requests} requests, {failed} failed",
        PHASES
            .iter()
            .map(|(length, rate)| format!("{rate}/s for {length} s"))
            .collect::<Vec<_>>()
            .join(", then ")
    );
    match (breach, recovered) {
        (None, _) => println!("  p90 never went over the objective after the step at t={step} s"),
        (Some(b), None) => println!(
            "  p90 went over the objective at t={} s and never stayed under it for {RECOVERED_FOR} s",
            rows[b].t - 1
        ),
        (Some(b), Some(r)) => println!(
            "  step at t={step} s: p90 over the objective from t={} s; back under it for \
             {RECOVERED_FOR}+ s from t={} s, {} s after the step (worst p90 {:.0} ms)",
            rows[b].t - 1,
            rows[r].t - 1,
            rows[r].t - 1 - step,
            worst.as_secs_f64() * 1e3
        ),
    }
    let outs: Vec<String> = scaled
        .iter()
        .filter(|(_, from, to)| to > from)
        .map(|(at, from, to)| format!("{from}->{to} at {at:.0} s"))
        .collect();
    println!(
        "  peak replicas {peak}; scale-outs: {}",
        if outs.is_empty() {
            "none".into()
        } else {
            outs.join(", ")
        }
    );
    let ins: Vec<String> = scaled
        .iter()
        .filter(|(_, from, to)| to < from)
        .map(|(at, from, to)| format!("{from}->{to} at {at:.0} s"))
        .collect();
    let first_in = scaled
        .iter()
        .find(|(at, from, to)| to < from && *at >= drop_at as f64)
        .map_or("never".into(), |(at, ..)| {
            format!("at {at:.0} s, {:.0} s after", at - drop_at as f64)
        });
    println!(
        "  load back to {}/s at t={drop_at} s; first scale-in after it {first_in}; {} replica(s) at \
         the end (t={} s); all scale-ins: {}",
        PHASES[2].1,
        rows.last().map_or(0, |r| r.replicas),
        rows.len(),
        if ins.is_empty() {
            "none".into()
        } else {
            ins.join(", ")
        }
    );
    if full {
        std::fs::write(CSV, csv(&rows)).expect("docs/autoscale.csv is writable");
        println!("  wrote {} rows to docs/autoscale.csv", rows.len());
    }
}
