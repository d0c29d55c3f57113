//! Request/reply round trips to 100 services in round robin, one caller at a time and 64 callers at
//! once: Cloister's bus (`Handle::call` to an echo service) against raw tokio `mpsc` + `oneshot`, actix,
//! kameo and ractor, all on two worker threads. A summary of messages/s and ratios follows criterion's
//! report.
//!
//! Run: `cargo bench -p runtime --bench bus -- --warm-up-time 1 --measurement-time 3`

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use runtime::{
    Builder, Context, Handle, Journal, Kind, Reply, RuntimeLevel, Service, ServiceError,
    ServiceName, Spec,
};
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

/// Round trips and time spent, per (variant, system).
#[derive(Default, Clone, Copy)]
struct Total {
    messages: u64,
    elapsed: Duration,
}

/// Totals over everything criterion ran (warm-up included), for the summary.
#[derive(Default)]
struct Tally(Mutex<BTreeMap<(&'static str, &'static str), Total>>);

impl Tally {
    fn add(&self, variant: Variant, system: &'static str, iters: u64, elapsed: Duration) {
        let mut map = self.0.lock().expect("the tally lock is never poisoned");
        let total = map.entry((variant.label(), system)).or_default();
        total.messages += iters * variant.callers() as u64;
        total.elapsed += elapsed;
    }

    fn messages_per_second(&self, variant: Variant, system: &'static str) -> Option<f64> {
        let map = self.0.lock().expect("the tally lock is never poisoned");
        let total = map.get(&(variant.label(), system))?;
        (total.messages > 0).then(|| total.messages as f64 / total.elapsed.as_secs_f64())
    }
}

fn bench_on_tokio<T: RoundTrip>(
    c: &mut Criterion,
    tally: &Tally,
    rt: &tokio::runtime::Runtime,
    name: &'static str,
    system: &T,
) {
    let mut group = c.benchmark_group("bus");
    for variant in [Variant::Sequential, Variant::Concurrent] {
        group.throughput(Throughput::Elements(variant.callers() as u64));
        group.bench_function(BenchmarkId::new(variant.label(), name), |b| {
            b.iter_custom(|iters| {
                let elapsed = run_on_tokio(rt, system, variant, iters);
                tally.add(variant, name, iters, elapsed);
                elapsed
            })
        });
    }
    group.finish();
}

// --- Cloister -------------------------------------------------------------------------------------

enum EchoRequest {
    Echo(u64, Reply<u64>),
}

struct EchoService {
    spec: Spec,
}

impl Service for EchoService {
    type Request = EchoRequest;

    fn spec(&self) -> Spec {
        self.spec.clone()
    }

    async fn run(&self, mut cx: Context<EchoRequest>) -> Result<(), ServiceError> {
        while let Some(EchoRequest::Echo(x, reply)) = cx.recv().await {
            reply.send(x);
        }
        Ok(())
    }
}

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

fn cloister(c: &mut Criterion, tally: &Tally) {
    let rt = tokio_runtime();
    let mut builder = Builder::new(Journal::in_memory());
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
    bench_on_tokio(c, tally, &rt, "cloister", &Cloister(Arc::new(handles)));
    rt.block_on(runtime.shutdown());
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

fn raw_tokio(c: &mut Criterion, tally: &Tally) {
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
    let system = Raw(Arc::new(senders));
    bench_on_tokio(c, tally, &rt, "tokio", &system);
    // Closing every sender ends every task.
    drop(system);
    rt.block_on(async {
        while let Some(done) = tasks.join_next().await {
            done.expect("an echo task");
        }
    });
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

fn kameo(c: &mut Criterion, tally: &Tally) {
    use kameo::actor::Spawn;
    let rt = tokio_runtime();
    let actors: Vec<_> = {
        let _entered = rt.enter();
        (0..SERVICES).map(|_| KameoEcho::spawn(KameoEcho)).collect()
    };
    let system = Kameo(Arc::new(actors));
    bench_on_tokio(c, tally, &rt, "kameo", &system);
    rt.block_on(async {
        for actor in system.0.iter() {
            actor.kill();
            actor.wait_for_shutdown().await;
        }
    });
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

fn ractor(c: &mut Criterion, tally: &Tally) {
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
    let system = Ractor(Arc::new(actors));
    bench_on_tokio(c, tally, &rt, "ractor", &system);
    for actor in system.0.iter() {
        actor.stop(None);
    }
    rt.block_on(async {
        for join in joins {
            join.await.expect("a ractor actor stops");
        }
    });
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
fn actix(c: &mut Criterion, tally: &Tally) {
    use actix::Actor;
    let _system = actix::System::new();
    let arbiters: Vec<actix::Arbiter> = (0..WORKERS).map(|_| actix::Arbiter::new()).collect();
    let addrs = (0..SERVICES)
        .map(|i| ActixEcho::start_in_arbiter(&arbiters[i % WORKERS].handle(), |_| ActixEcho))
        .collect();
    let system = Actix(Arc::new(addrs));
    let run = |variant: Variant, iters: u64| {
        let start = Instant::now();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        for caller in 0..variant.callers() {
            let (system, done) = (system.clone(), done_tx.clone());
            let spawned = arbiters[caller % WORKERS].spawn(async move {
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
    };
    let mut group = c.benchmark_group("bus");
    for variant in [Variant::Sequential, Variant::Concurrent] {
        group.throughput(Throughput::Elements(variant.callers() as u64));
        group.bench_function(BenchmarkId::new(variant.label(), "actix"), |b| {
            b.iter_custom(|iters| {
                let elapsed = run(variant, iters);
                tally.add(variant, "actix", iters, elapsed);
                elapsed
            })
        });
    }
    group.finish();
    drop(system);
    for arbiter in arbiters {
        arbiter.stop();
        arbiter.join().expect("an arbiter thread ends");
    }
}

// --- summary --------------------------------------------------------------------------------------

fn summary(tally: &Tally) {
    const OTHERS: [&str; 4] = ["tokio", "actix", "kameo", "ractor"];
    println!(
        "\nbus summary (mean over all iterations run, warm-up included; 100 services in round robin)"
    );
    for variant in [Variant::Sequential, Variant::Concurrent] {
        let Some(ours) = tally.messages_per_second(variant, "cloister") else {
            continue;
        };
        println!("  {:<14} cloister {:>12.0} msg/s", variant.label(), ours);
        for other in OTHERS {
            if let Some(theirs) = tally.messages_per_second(variant, other) {
                println!(
                    "  {:<14} {:<8} {:>12.0} msg/s   cloister / {other} = {:.2}",
                    variant.label(),
                    other,
                    theirs,
                    ours / theirs
                );
            }
        }
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let tally = Tally::default();
    cloister(&mut c, &tally);
    raw_tokio(&mut c, &tally);
    actix(&mut c, &tally);
    kameo(&mut c, &tally);
    ractor(&mut c, &tally);
    c.final_summary();
    summary(&tally);
}
