//! Hang detection on the real clock: a service that becomes ready and then stops answering anything,
//! probed every 20 ms with a 5 ms timeout and a threshold of 3; the delay from the hang to the
//! journal's `Exited { outcome: Hung }`, against interval x threshold and
//! `runtime::health::worst_case_detection`.
//!
//! Run: `cargo bench -p runtime --bench hang` (without `--bench`, as under `cargo test`, it measures
//! 3 hangs only).

#![allow(clippy::print_stdout)]

use std::time::{Duration, SystemTime};

use runtime::journal::{Event, ExitOutcome};
use runtime::spec::HealthPolicy;
use runtime::{Builder, Context, Journal, Kind, Reply, Service, ServiceError, ServiceName, Spec};
use tokio::sync::mpsc;

const WORKERS: usize = 2;
const NAME: ServiceName = ServiceName::from_static("hangs");
const POLICY: HealthPolicy = HealthPolicy {
    interval: Duration::from_millis(20),
    timeout: Duration::from_millis(5),
    failure_threshold: 3,
    start_timeout: Duration::from_secs(10),
};
/// Far beyond any plausible detection; reached only if the probe never fires.
const STUCK: Duration = Duration::from_secs(10);

/// Each incarnation becomes ready, reports when it stopped answering, and hangs.
struct Hangs {
    hung_at: mpsc::UnboundedSender<(u64, SystemTime)>,
}

impl Service for Hangs {
    type Request = Reply<()>;

    fn spec(&self) -> Spec {
        let mut spec = Spec::new(NAME, Kind::Core).health(POLICY);
        spec.recovery.backoff.initial = Duration::ZERO;
        spec.recovery.backoff.jitter = 0.0;
        spec.recovery.max_restarts = u32::MAX;
        spec.recovery.window = Duration::from_millis(1);
        spec
    }

    async fn run(&self, mut cx: Context<Reply<()>>) -> Result<(), ServiceError> {
        cx.set_ready();
        let _ = self.hung_at.send((cx.generation(), SystemTime::now()));
        std::future::pending::<()>().await;
        Ok(())
    }
}

async fn measure(rounds: usize) -> Vec<Duration> {
    let (hung_at, mut hangs) = mpsc::unbounded_channel();
    let journal = Journal::in_memory();
    let mut builder = Builder::new(journal.clone());
    builder.add(Hangs { hung_at });
    let rt = builder.start().expect("a valid graph");
    let mut cursor = 0;
    let mut delays = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let (generation, since) = hangs.recv().await.expect("the next incarnation hangs");
        let exited = journal
            .wait_for(cursor, STUCK, |e| {
                e.generation == Some(generation)
                    && matches!(
                        e.event,
                        Event::Exited {
                            outcome: ExitOutcome::Hung { .. },
                            ..
                        }
                    )
            })
            .await
            .expect("the hang is detected");
        cursor = exited.seq;
        // Both instants are wall-clock readings taken where they happen (the entry's time is set when
        // it is appended), so waking this task adds nothing to the delay.
        delays.push(exited.time.duration_since(since).unwrap_or_default());
    }
    rt.shutdown().await;
    delays
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full { 30 } else { 3 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut delays = rt.block_on(measure(rounds));
    delays.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = delays[delays.len() / 2];
    let (min, max) = (delays[0], delays[delays.len() - 1]);
    let nominal = POLICY.interval * POLICY.failure_threshold;
    let bound = runtime::health::worst_case_detection(&POLICY);
    println!(
        "hang detection (interval {} ms, timeout {} ms, threshold {}), {} hangs on the real clock:",
        ms(POLICY.interval),
        ms(POLICY.timeout),
        POLICY.failure_threshold,
        delays.len()
    );
    println!(
        "  min {:.2} ms, p50 {:.2} ms, max {:.2} ms",
        ms(min),
        ms(median),
        ms(max)
    );
    println!(
        "  interval x threshold = {:.0} ms; worst_case_detection = {:.0} ms",
        ms(nominal),
        ms(bound)
    );
    println!(
        "  p50 - interval x threshold = {:+.2} ms; max - worst case = {:+.2} ms",
        ms(median) - ms(nominal),
        ms(max) - ms(bound)
    );
}
