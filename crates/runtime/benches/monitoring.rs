//! What monitoring costs the bus: sequential request/reply round trips to 100 echo services in round
//! robin (one caller, as `bus.rs`'s sequential case), in configurations measured in interleaved rounds
//! (A, B, C, D, E, A, B, ...): (A) latency and per-operation figures off (`Bus::set_metrics(false)`),
//! no monitor; (B) figures on, no monitor; (C) figures on and the performance monitor sampling every
//! 10 ms. Prints median msg/s of each and the overheads B/A and C/A.
//!
//! Two controls separate the monitor's work from its mere presence: a task that wakes every 10 ms and
//! does nothing changes how tokio's workers park, which on its own speeds this ping-pong up by a few
//! percent. (D) figures on with such an idle timer, no monitor, and (E) figures off with it: C/D is
//! the monitor's own cost, D/E the figures' cost with a timer running.
//!
//! (F) is the liveness probe's cost: figures on, no monitor, every service pinged every 10 ms, 100
//! times as often as the default (1 s): F/B is the pings' cost at that rate, and the default's is a
//! hundredth of it.
//!
//! Every round builds a fresh runtime, so a monitor or timer runs only during its own rounds.
//!
//! Run: `cargo bench -p runtime --bench monitoring` (without `--bench`, as under `cargo test`, it runs
//! one short round of each).

#![allow(clippy::print_stdout)]

mod support;

use support::{EchoRequest, EchoService};

use std::time::{Duration, Instant};

use runtime::spec::HealthPolicy;
use runtime::{Builder, Handle, Journal, Kind, RuntimeLevel, ServiceName, Spec};

const SERVICES: usize = 100;
const WORKERS: usize = 2;
/// The monitor's interval in configuration C (and the idle timer's in D and E): short, to make its
/// cost visible.
const INTERVAL: Duration = Duration::from_millis(10);
/// Measured time per round and configuration.
const BATCH: Duration = Duration::from_millis(150);
/// Time each fresh runtime idles before it is measured, so C's monitor has ticked a few times (and
/// learned the services) before its round starts; the others wait the same.
const SETTLE: Duration = Duration::from_millis(30);
/// Round trips before the measured ones, in every round.
const WARM_UP_CALLS: u64 = 2_000;

#[derive(Clone, Copy)]
struct Setup {
    label: &'static str,
    /// Latency histograms and per-operation figures recorded.
    metrics: bool,
    /// The performance monitor runs every [`INTERVAL`].
    monitor: bool,
    /// A task wakes every [`INTERVAL`] and does nothing.
    idle_timer: bool,
    /// Every service's liveness probe pings every [`INTERVAL`] (else the default, every second,
    /// which hardly fires within a round).
    pings: bool,
}

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const D: usize = 3;
const E: usize = 4;
const F: usize = 5;

const SETUPS: [Setup; 6] = [
    Setup {
        label: "A: metrics off, no monitor",
        metrics: false,
        monitor: false,
        idle_timer: false,
        pings: false,
    },
    Setup {
        label: "B: metrics on, no monitor",
        metrics: true,
        monitor: false,
        idle_timer: false,
        pings: false,
    },
    Setup {
        label: "C: metrics on, monitor 10 ms",
        metrics: true,
        monitor: true,
        idle_timer: false,
        pings: false,
    },
    Setup {
        label: "D: metrics on, idle 10 ms timer",
        metrics: true,
        monitor: false,
        idle_timer: true,
        pings: false,
    },
    Setup {
        label: "E: metrics off, idle 10 ms timer",
        metrics: false,
        monitor: false,
        idle_timer: true,
        pings: false,
    },
    Setup {
        label: "F: metrics on, pings every 10 ms",
        metrics: true,
        monitor: false,
        idle_timer: false,
        pings: true,
    },
];

/// `calls` sequential round trips, to services `first, first + 1, ...` modulo 100.
async fn drive(handles: &[Handle<EchoRequest>], first: u64, calls: u64) {
    for k in first..first + calls {
        let target = k as usize % SERVICES;
        let got = handles[target]
            .call(|reply| EchoRequest::Echo(k, reply))
            .await
            .expect("an echo from a running service");
        assert_eq!(got, k, "the echo of {k} from service {target}");
    }
}

/// Starts a fresh runtime set up as `setup`, runs `calls` measured round trips, stops it; returns the
/// time the measured round trips took.
async fn round(setup: Setup, calls: u64) -> Duration {
    let mut builder = Builder::new(Journal::in_memory());
    builder.bus().set_metrics(setup.metrics);
    if setup.monitor {
        builder.monitor(INTERVAL);
    }
    let handles: Vec<_> = (0..SERVICES)
        .map(|i| {
            let name = ServiceName::new(&format!("echo-{i}")).expect("a valid service name");
            let mut spec = Spec::new(name, Kind::Core);
            if setup.pings {
                spec = spec.health(HealthPolicy {
                    interval: INTERVAL,
                    timeout: INTERVAL / 2,
                    failure_threshold: 3,
                    start_timeout: Duration::from_secs(10),
                });
            }
            builder.add(EchoService { spec })
        })
        .collect();
    let runtime = builder.start().expect("a valid graph");
    runtime
        .readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("the runtime becomes ready");
    let timer = setup.idle_timer.then(|| {
        tokio::spawn(async {
            let mut tick = tokio::time::interval(INTERVAL);
            loop {
                tick.tick().await;
            }
        })
    });
    tokio::time::sleep(SETTLE).await;
    drive(&handles, 0, WARM_UP_CALLS).await;
    let start = Instant::now();
    drive(&handles, WARM_UP_CALLS, calls).await;
    let elapsed = start.elapsed();
    if let Some(timer) = timer {
        timer.abort();
    }
    runtime.shutdown().await;
    elapsed
}

/// Runs one round on a worker of `rt` (not on the bench thread), as `bus.rs` does.
fn run(rt: &tokio::runtime::Runtime, setup: Setup, calls: u64) -> Duration {
    rt.block_on(async move {
        tokio::spawn(round(setup, calls))
            .await
            .expect("the measurement task")
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (rounds, calls) = if full {
        // Size the batch from a trial round of A.
        let trial = 20_000;
        let per_call = run(&rt, SETUPS[A], trial).as_secs_f64() / trial as f64;
        (21, (BATCH.as_secs_f64() / per_call) as u64)
    } else {
        (1, 500)
    };
    let mut rates: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); SETUPS.len()];
    for r in 0..rounds {
        // Rotate who goes first, so no configuration always follows the same one.
        for k in 0..SETUPS.len() {
            let i = (r + k) % SETUPS.len();
            let elapsed = run(&rt, SETUPS[i], calls);
            rates[i].push(calls as f64 / elapsed.as_secs_f64());
        }
    }
    // Overhead as extra time per call, from the median of the per-round ratios (less sensitive to
    // the machine drifting between rounds) and from the ratio of the medians.
    let pct = |x: f64| (x - 1.0) * 100.0;
    let paired = |base: usize, other: usize| {
        let mut ratios: Vec<f64> = rates[base]
            .iter()
            .zip(&rates[other])
            .map(|(b, o)| b / o)
            .collect();
        pct(median(&mut ratios))
    };
    let overheads = [
        ("B/A", B, A, "the figures"),
        ("C/A", C, A, "figures and monitor"),
        ("C/D", C, D, "the monitor's own work, beyond an idle timer"),
        ("D/E", D, E, "the figures, with a timer running"),
        (
            "F/B",
            F,
            B,
            "liveness pings at 100x the default rate (the default costs 1/100 of this)",
        ),
    ]
    .map(|(name, other, base, what)| (name, paired(base, other), base, other, what));
    let medians: Vec<f64> = rates.iter_mut().map(|r| median(r)).collect();
    println!(
        "monitoring overhead on the bus: sequential round robin over {SERVICES} echo services, \
         {WORKERS} tokio workers, {rounds} interleaved rounds of {calls} calls, median msg/s"
    );
    for ((setup, m), r) in SETUPS.iter().zip(&medians).zip(&rates) {
        // `median` sorted `r`.
        let (q1, q3) = (r[r.len() / 4], r[(r.len() * 3) / 4]);
        println!(
            "  {:<34} {:>10.0} msg/s   (quartiles {:.0} .. {:.0})",
            setup.label, m, q1, q3
        );
    }
    for (name, paired, base, other, what) in overheads {
        println!(
            "  overhead {name}: {paired:+5.1} % (ratio of medians {:+5.1} %)   {what}",
            pct(medians[base] / medians[other])
        );
    }
}
