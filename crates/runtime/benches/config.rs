//! Hot configuration latency on the real clock: a chain of five services (`s0 <- s1 <- ... <- s4`,
//! each depending on the one before), and ~500 new versions applied through
//! `reconfig::Handle::apply(text, Source::Api, false)`, each changing `queue_capacity` of all five,
//! timed from the call to its `Outcome::Applied`; next to it, the supervisor's step alone
//! (`Client::reconfigure` with the resolved specs), as p50/p90/p99/max.
//!
//! Run: `cargo bench -p runtime --bench config` (without `--bench`, as under `cargo test`, it applies
//! a few versions only).

#![allow(clippy::print_stdout)]

mod support;

use support::report;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runtime::config::Config;
use runtime::journal::{Cause, Event};
use runtime::reconfig::{Controller, Outcome, Source};
use runtime::{
    Builder, Context, Journal, Kind, Reply, RuntimeLevel, Service, ServiceError, ServiceName, Spec,
};
use tokio_util::sync::CancellationToken;

const WORKERS: usize = 2;
const CHAIN: usize = 5;
/// The controller alternates between these two capacities, so every version is a real change; the
/// supervisor-only baseline sets the third, so each of its steps is a real change too.
const CAPACITIES: [usize; 2] = [256, 512];
const BASELINE_CAPACITY: usize = 768;
/// Far beyond any plausible apply; reached only if the controller is stuck.
const STUCK: Duration = Duration::from_secs(30);

/// A service that answers calls and does nothing else.
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

fn chain() -> Vec<Spec> {
    let names: Vec<ServiceName> = (0..CHAIN)
        .map(|i| ServiceName::new(&format!("s{i}")).expect("a valid service name"))
        .collect();
    (0..CHAIN)
        .map(|i| {
            let spec = Spec::new(names[i].clone(), Kind::Core);
            if i == 0 {
                spec
            } else {
                spec.depends_on(names[i - 1].clone())
            }
        })
        .collect()
}

/// A configuration with a 1 ms watch window that sets `queue_capacity` of every service.
fn text(capacity: usize) -> String {
    let mut t = String::from("[runtime]\nconfig_watch = \"1ms\"\n");
    for i in 0..CHAIN {
        t.push_str(&format!("\n[services.s{i}]\nqueue_capacity = {capacity}\n"));
    }
    t
}

struct Samples {
    /// `Handle::apply` -> `Outcome::Applied`.
    apply: Vec<Duration>,
    /// `Handle::apply` -> the journal's `ConfigConfirmed` (includes the 1 ms watch window).
    confirmed: Vec<Duration>,
    /// `Client::reconfigure` -> its answer.
    supervisor: Vec<Duration>,
}

async fn measure(rounds: usize, warm_up: usize) -> Samples {
    let journal = Journal::in_memory();
    let mut builder = Builder::new(journal.clone());
    let catalog = chain();
    for spec in &catalog {
        builder.add(Idle { spec: spec.clone() });
    }
    let rt = builder.start().expect("a valid graph");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("the runtime becomes ready");

    let first = text(1024);
    let config = Config::parse(&first, &catalog).expect("the first version parses");
    let cancel = CancellationToken::new();
    let (handle, task) = Controller::spawn(
        rt.client(),
        catalog.clone(),
        first,
        config,
        Arc::new(|_: &mut Config| {}),
        cancel.clone(),
    );
    let baseline_specs = Config::parse(&text(BASELINE_CAPACITY), &catalog)
        .expect("the baseline version parses")
        .resolve(&catalog)
        .0;

    let mut samples = Samples {
        apply: Vec::with_capacity(rounds),
        confirmed: Vec::with_capacity(rounds),
        supervisor: Vec::with_capacity(rounds),
    };
    for round in 0..warm_up + rounds {
        // Through the controller: parse, check, reconfigure, journal, publish.
        let version_text = text(CAPACITIES[round % 2]);
        let since = journal.last_seq();
        let start = Instant::now();
        let outcome = handle
            .apply(version_text, Source::Api, false)
            .await
            .expect("the controller answers");
        let applied = start.elapsed();
        let Outcome::Applied {
            version, changed, ..
        } = &outcome
        else {
            panic!("not applied: {outcome:?}");
        };
        assert_eq!(changed.len(), CHAIN, "every service changed: {changed:?}");
        // Wait out the watch window, so the next apply is not queued behind it.
        let version = *version;
        journal
            .wait_for(
                since,
                STUCK,
                |e| matches!(e.event, Event::ConfigConfirmed { version: v } if v == version),
            )
            .await
            .expect("the version is confirmed");
        let confirmed = start.elapsed();

        // The supervisor's step alone.
        let specs = baseline_specs.clone();
        let start = Instant::now();
        let changed = rt
            .reconfigure(
                specs,
                BTreeSet::new(),
                Cause::Operator {
                    command: "bench".into(),
                },
            )
            .await
            .expect("the supervisor reconfigures");
        let supervisor = start.elapsed();
        assert_eq!(changed.len(), CHAIN, "every service changed: {changed:?}");

        if round >= warm_up {
            samples.apply.push(applied);
            samples.confirmed.push(confirmed);
            samples.supervisor.push(supervisor);
        }
    }
    cancel.cancel();
    task.await.expect("the controller task");
    rt.shutdown().await;
    samples
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, warm_up) = if full { (500, 50) } else { (5, 1) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // Everything runs in a worker task, as the API's handler would.
    let samples = rt.block_on(async move {
        tokio::spawn(measure(rounds, warm_up))
            .await
            .expect("the measurement task")
    });
    println!(
        "hot configuration, a chain of {CHAIN} services, {WORKERS} tokio workers, real clock; \
         every version changes queue_capacity of all {CHAIN}"
    );
    report("Handle::apply -> Outcome::Applied", samples.apply);
    report(
        "  (apply -> ConfigConfirmed, 1 ms watch window)",
        samples.confirmed,
    );
    report(
        "baseline: Client::reconfigure (supervisor alone)",
        samples.supervisor,
    );
}
