//! Request/reply round trips to 100 services in round robin, one caller at a time and 64 callers at
//! once: Cloister's bus (`Handle::call` to an echo service) against raw tokio `mpsc` + `oneshot`, actix,
//! kameo and ractor, all on two worker threads. After criterion's report, an interleaved pass (every
//! contender in turn, round after round) gives median messages/s and Cloister's ratio to each.
//!
//! Run: `cargo bench -p runtime --bench bus -- --warm-up-time 1 --measurement-time 3`

#![allow(clippy::print_stdout)]

mod support;

use support::{EchoRequest, EchoService};

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use runtime::{Builder, Handle, Journal, Kind, RuntimeLevel, ServiceName, Spec};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

const SERVICES: usize = 100;
const WORKERS: usize = 2;
/// The `concurrent64` variant's callers.
const CONCURRENT_CALLERS: usize = 64;
/// Queue bound of the raw tokio baseline, the same as a Cloister service's default.
const QUEUE: usize = 1024;

/// One system under test: something that can send `x` to service `target` and await the echo.
trait RoundTrip: Clone + Send + Sync + 'static {
    fn echo(&self, target: usize, x: u64) -> impl Future<Output = u64> + Send;
}

/// One caller: `calls` sequential round trips, to services `first`, `first + 1`, ... modulo 100.
async fn drive<T: RoundTrip>(system: T, first: usize, calls: u64) {
    for k in 0..calls {
        let target = (first + k as usize) % SERVICES;
        let got = system.echo(target, k).await;
        assert_eq!(got, k, "the echo of {k} from service {target}");
    }
}

/// How a benchmark's callers are laid out. One iteration is one round trip per caller.
#[derive(Clone, Copy)]
enum Variant {
    Sequential,
    Concurrent,
}

impl Variant {
    fn callers(self) -> usize {
        match self {
            Variant::Sequential => 1,
            Variant::Concurrent => CONCURRENT_CALLERS,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Variant::Sequential => "sequential",
            Variant::Concurrent => "concurrent64",
        }
    }
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Runs `iters` round trips per caller on the workers of `rt` (not on the bench thread).
fn run_on_tokio<T: RoundTrip>(
    rt: &tokio::runtime::Runtime,
    system: &T,
    variant: Variant,
    iters: u64,
) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        let mut callers = JoinSet::new();
        for c in 0..variant.callers() {
            callers.spawn(drive(system.clone(), c, iters));
        }
        while let Some(done) = callers.join_next().await {
            done.expect("a caller");
        }
        start.elapsed()
    })
}

/// One system under test, set up and idle until run.
struct Contender {
    name: &'static str,
    /// Runs `iters` round trips per caller and returns the time they took.
    run: Box<dyn Fn(Variant, u64) -> Duration>,
    /// Stops the system and waits for it.
    stop: Box<dyn FnOnce()>,
}

impl Contender {
    fn on_tokio<T: RoundTrip>(
        name: &'static str,
        rt: tokio::runtime::Runtime,
        system: T,
        stop: impl FnOnce(&tokio::runtime::Runtime, T) + 'static,
    ) -> Self {
        let rt = Arc::new(rt);
        let run = {
            let (rt, system) = (rt.clone(), system.clone());
            move |variant, iters| run_on_tokio(&rt, &system, variant, iters)
        };
        Contender {
            name,
            run: Box::new(run),
            stop: Box::new(move || stop(&rt, system)),
        }
    }
}

// --- Cloister -------------------------------------------------------------------------------------

#[derive(Clone)]
struct Cloister(Arc<Vec<Handle<EchoRequest>>>);

impl RoundTrip for Cloister {
    fn echo(&self, target: usize, x: u64) -> impl Future<Output = u64> + Send {
        let handle = &self.0[target];
        async move {
            handle
                .call(|reply| EchoRequest::Echo(x, reply))
                .await
                .expect("an echo from a running service")
        }
    }
}

fn cloister() -> Contender {
    cloister_with(true)
}

/// Cloister's bus with its latency figures recorded or not (`Bus::set_metrics`).
fn cloister_with(figures: bool) -> Contender {
    let rt = tokio_runtime();
    let mut builder = Builder::new(Journal::in_memory());
    builder.bus().set_metrics(figures);
    let handles = (0..SERVICES)
        .map(|i| {
            let name = ServiceName::new(&format!("echo-{i}")).expect("a valid service name");
            builder.add(EchoService {
                spec: Spec::new(name, Kind::Core),
            })
        })
        .collect();
    let runtime = rt.block_on(async {
        let runtime = builder.start().expect("a valid graph");
        runtime
            .readiness()
            .wait_for(|r| r.level == RuntimeLevel::Ready)
            .await
            .expect("the runtime becomes ready");
        runtime
    });
    let name = if figures { "cloister" } else { "no-figures" };
    Contender::on_tokio(name, rt, Cloister(Arc::new(handles)), move |rt, _| {
        rt.block_on(runtime.shutdown())
    })
}

// --- raw tokio ------------------------------------------------------------------------------------

type RawRequest = (u64, oneshot::Sender<u64>);

#[derive(Clone)]
struct Raw(Arc<Vec<mpsc::Sender<RawRequest>>>);

impl RoundTrip for Raw {
    fn echo(&self, target: usize, x: u64) -> impl Future<Output = u64> + Send {
        let sender = &self.0[target];
        async move {
            let (tx, rx) = oneshot::channel();
            sender
                .send((x, tx))
                .await
                .expect("the echo task is running");
            rx.await.expect("the echo task answers")
        }
    }
}

fn raw_tokio() -> Contender {
    let rt = tokio_runtime();
    let mut tasks = JoinSet::new();
    let senders = (0..SERVICES)
        .map(|_| {
            let (tx, mut rx) = mpsc::channel::<RawRequest>(QUEUE);
            tasks.spawn_on(
                async move {
                    while let Some((x, reply)) = rx.recv().await {
                        let _ = reply.send(x);
                    }
                },
                rt.handle(),
            );
            tx
        })
        .collect();
    Contender::on_tokio("tokio", rt, Raw(Arc::new(senders)), move |rt, _| {
        // The runner still holds senders, so the tasks are aborted rather than left to drain.
        rt.block_on(tasks.shutdown());
    })
}

// --- kameo ----------------------------------------------------------------------------------------

struct Echo(u64);

#[derive(kameo::Actor)]
struct KameoEcho;

impl kameo::message::Message<Echo> for KameoEcho {
    type Reply = u64;

    async fn handle(&mut self, msg: Echo, _: &mut kameo::message::Context<Self, u64>) -> u64 {
        msg.0
    }
}

#[derive(Clone)]
struct Kameo(Arc<Vec<kameo::actor::ActorRef<KameoEcho>>>);

impl RoundTrip for Kameo {
    fn echo(&self, target: usize, x: u64) -> impl Future<Output = u64> + Send {
        let actor = &self.0[target];
        async move {
            actor
                .ask(Echo(x))
                .await
                .expect("a running kameo actor answers")
        }
    }
}

fn kameo() -> Contender {
    use kameo::actor::Spawn;
    let rt = tokio_runtime();
    let actors: Vec<_> = {
        let _entered = rt.enter();
        (0..SERVICES).map(|_| KameoEcho::spawn(KameoEcho)).collect()
    };
    Contender::on_tokio("kameo", rt, Kameo(Arc::new(actors)), |rt, system| {
        rt.block_on(async {
            for actor in system.0.iter() {
                actor.kill();
                actor.wait_for_shutdown().await;
            }
        })
    })
}

// --- ractor ---------------------------------------------------------------------------------------

enum RactorRequest {
    Echo(u64, ractor::RpcReplyPort<u64>),
}

struct RactorEcho;

impl ractor::Actor for RactorEcho {
    type Msg = RactorRequest;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ractor::ActorRef<RactorRequest>,
        _: (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ractor::ActorRef<RactorRequest>,
        message: RactorRequest,
        _: &mut (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        match message {
            RactorRequest::Echo(x, reply) => {
                let _ = reply.send(x);
            }
        }
        Ok(())
    }
}

#[derive(Clone)]
struct Ractor(Arc<Vec<ractor::ActorRef<RactorRequest>>>);

impl RoundTrip for Ractor {
    fn echo(&self, target: usize, x: u64) -> impl Future<Output = u64> + Send {
        let actor = &self.0[target];
        async move {
            ractor::call!(actor, RactorRequest::Echo, x).expect("a running ractor actor answers")
        }
    }
}

fn ractor() -> Contender {
    use ractor::Actor;
    let rt = tokio_runtime();
    let (actors, joins): (Vec<_>, Vec<_>) = rt.block_on(async {
        let mut spawned = Vec::new();
        for _ in 0..SERVICES {
            spawned.push(
                RactorEcho::spawn(None, RactorEcho, ())
                    .await
                    .expect("a ractor actor starts"),
            );
        }
        spawned.into_iter().unzip()
    });
    Contender::on_tokio("ractor", rt, Ractor(Arc::new(actors)), |rt, system| {
        for actor in system.0.iter() {
            actor.stop(None);
        }
        rt.block_on(async {
            for join in joins {
                join.await.expect("a ractor actor stops");
            }
        });
    })
}

// --- actix ----------------------------------------------------------------------------------------

impl actix::Message for Echo {
    type Result = u64;
}

struct ActixEcho;

impl actix::Actor for ActixEcho {
    type Context = actix::Context<Self>;
}

impl actix::Handler<Echo> for ActixEcho {
    type Result = u64;

    fn handle(&mut self, msg: Echo, _: &mut actix::Context<Self>) -> u64 {
        msg.0
    }
}

#[derive(Clone)]
struct Actix(Arc<Vec<actix::Addr<ActixEcho>>>);

impl RoundTrip for Actix {
    fn echo(&self, target: usize, x: u64) -> impl Future<Output = u64> + Send {
        let addr = &self.0[target];
        async move {
            addr.send(Echo(x))
                .await
                .expect("a running actix actor answers")
        }
    }
}

/// Actix runs each arbiter on its own thread: two arbiters stand in for the two tokio workers, with
/// actors and callers spread over both.
fn actix() -> Contender {
    use actix::Actor;
    let system_runner = actix::System::new();
    let arbiters: Vec<actix::Arbiter> = (0..WORKERS).map(|_| actix::Arbiter::new()).collect();
    let handles: Vec<actix::ArbiterHandle> = arbiters.iter().map(|a| a.handle()).collect();
    let addrs = (0..SERVICES)
        .map(|i| ActixEcho::start_in_arbiter(&handles[i % WORKERS], |_| ActixEcho))
        .collect();
    let system = Actix(Arc::new(addrs));
    let run = {
        let system = system.clone();
        move |variant: Variant, iters: u64| {
            let start = Instant::now();
            let (done_tx, mut done_rx) = mpsc::unbounded_channel();
            for caller in 0..variant.callers() {
                let (system, done) = (system.clone(), done_tx.clone());
                let spawned = handles[caller % WORKERS].spawn(async move {
                    drive(system, caller, iters).await;
                    let _ = done.send(());
                });
                assert!(spawned, "the arbiter is running");
            }
            drop(done_tx);
            for _ in 0..variant.callers() {
                done_rx.blocking_recv().expect("every caller finishes");
            }
            start.elapsed()
        }
    };
    let stop = move || {
        drop(system);
        for arbiter in arbiters {
            arbiter.stop();
            arbiter.join().expect("an arbiter thread ends");
        }
        drop(system_runner);
    };
    Contender {
        name: "actix",
        run: Box::new(run),
        stop: Box::new(stop),
    }
}

// --- criterion and the interleaved comparison ----------------------------------------------------

fn bench(c: &mut Criterion, contenders: &[Contender]) {
    let mut group = c.benchmark_group("bus");
    for variant in [Variant::Sequential, Variant::Concurrent] {
        group.throughput(Throughput::Elements(variant.callers() as u64));
        for contender in contenders {
            group.bench_function(BenchmarkId::new(variant.label(), contender.name), |b| {
                b.iter_custom(|iters| (contender.run)(variant, iters))
            });
        }
    }
    group.finish();
}

/// Criterion measures one contender after the other, so a machine that speeds up or slows down in
/// between skews their ratios. Here every contender runs a ~25 ms batch in turn, round after round
/// (`BUS_ROUNDS`, 15 unless set), and Cloister's ratio to each is taken within each round, where
/// the batches ran at most a few hundred milliseconds apart: the median of those per-round ratios,
/// with their middle half (25th to 75th percentile) as the spread.
fn interleaved(contenders: &[Contender]) {
    let rounds: usize = std::env::var("BUS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(15)
        .max(1);
    const BATCH: Duration = Duration::from_millis(25);
    let rate = |variant: Variant, iters: u64, elapsed: Duration| {
        (iters * variant.callers() as u64) as f64 / elapsed.as_secs_f64()
    };
    let quantile =
        |sorted: &[f64], q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    println!(
        "\nbus, interleaved: {rounds} rounds of ~{} ms per contender and variant; median msg/s, and \
         Cloister's ratio to each within a round: median [25th-75th percentile]",
        BATCH.as_millis()
    );
    for variant in [Variant::Sequential, Variant::Concurrent] {
        let batches: Vec<u64> = contenders
            .iter()
            .map(|c| {
                let trial = 64;
                let per_iteration = (c.run)(variant, trial).as_secs_f64() / trial as f64;
                (BATCH.as_secs_f64() / per_iteration).clamp(16.0, 1e7) as u64
            })
            .collect();
        let mut rates: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); contenders.len()];
        for round in 0..rounds {
            // Rotate who goes first, so no contender always follows the same one.
            for k in 0..contenders.len() {
                let i = (round + k) % contenders.len();
                let elapsed = (contenders[i].run)(variant, batches[i]);
                rates[i].push(rate(variant, batches[i], elapsed));
            }
        }
        for (contender, theirs) in contenders.iter().zip(&rates) {
            let mut ratios: Vec<f64> = rates[0].iter().zip(theirs).map(|(o, t)| o / t).collect();
            ratios.sort_by(f64::total_cmp);
            let mut sorted = theirs.clone();
            sorted.sort_by(f64::total_cmp);
            println!(
                "  {:<14} {:<8} {:>10.0} msg/s   cloister / {:<8} = {:.2} [{:.2}-{:.2}]",
                variant.label(),
                contender.name,
                quantile(&sorted, 0.5),
                contender.name,
                quantile(&ratios, 0.5),
                quantile(&ratios, 0.25),
                quantile(&ratios, 0.75),
            );
        }
    }
}

/// `BUS_COUNT=CONTENDER,VARIANT,N` (for example `cloister,sequential,200000`): runs N round trips
/// per caller of one contender (`cloister`, `cloister-nofigures`: without the latency figures, or
/// `tokio`) and exits, for an instruction count under callgrind, which is the
/// same from run to run on this noisy machine. Two runs with different N give the instructions
/// per call: (I(N2) - I(N1)) / (N2 - N1), the start and stop cancelling out.
fn count_only() -> bool {
    let Ok(spec) = std::env::var("BUS_COUNT") else {
        return false;
    };
    let parts: Vec<&str> = spec.split(',').collect();
    let [name, variant, n] = parts[..] else {
        panic!("BUS_COUNT is CONTENDER,VARIANT,N, not {spec:?}");
    };
    let variant = match variant {
        "sequential" => Variant::Sequential,
        "concurrent64" => Variant::Concurrent,
        other => panic!("variant {other:?}: sequential or concurrent64"),
    };
    let n: u64 = n.parse().expect("N is a number");
    let contender = match name {
        "cloister" => cloister(),
        "cloister-nofigures" => cloister_with(false),
        "tokio" => raw_tokio(),
        other => panic!("contender {other:?}: cloister, cloister-nofigures or tokio"),
    };
    let elapsed = (contender.run)(variant, n);
    println!("{name} {} x{n}: {elapsed:?}", variant.label());
    (contender.stop)();
    true
}

fn main() {
    if count_only() {
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    // Cloister first: the interleaved comparison divides by it.
    // `no-figures` is Cloister's bus without its latency figures: their cost, side by side.
    let contenders = vec![
        cloister(),
        raw_tokio(),
        cloister_with(false),
        actix(),
        kameo(),
        ractor(),
    ];
    bench(&mut c, &contenders);
    c.final_summary();
    // Without `--bench` (as under `cargo test`) criterion runs each benchmark once; so does this.
    if std::env::args().any(|a| a == "--bench") {
        interleaved(&contenders);
    }
    for contender in contenders {
        (contender.stop)();
    }
}
