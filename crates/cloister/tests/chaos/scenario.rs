//! The chaos scenario, shared by the test (`tests/chaos.rs`: a short fixed-seed round) and the
//! bench (`benches/chaos.rs`: a long random one, with figures).
//!
//! The real `cloister run` on loopback with fault injection on. Clients with an account token write
//! and read values, sign and verify, run scripts and predict, each call with a deadline
//! (`x-cloister-deadline-ms`), while an injector puts random panics, hangs and errors into the six
//! services, one after another, each after the clients have had a stated number of answers since
//! the previous one (so the pace follows the machine, not a clock). Then the faults stop, and the
//! runtime must come back to ready by itself. What is checked:
//!
//! - every call is answered within its deadline plus [`MARGIN`], with a success or a retryable
//!   503; never a hang, never another 5xx, never a client error for a valid request;
//! - no wrong value: a read gives the last acknowledged write of its key or a later attempted one,
//!   never an older one or another key's; a signature verifies; a script's result and a
//!   prediction are the ones computed before the faults;
//! - no acknowledged write lost: after recovery every key reads back as above;
//! - every service back: the runtime reports ready after the last fault, and every kind of call
//!   succeeds again.

// A scenario shared by a test and a bench: each uses its own part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloister_sdk::types::ai::{PredictInput, Prediction, Tensor};
use cloister_sdk::types::computation::{Ending, Program};
use cloister_sdk::{Client, Error};
use serde_json::{Value, json};
use test_support::server::{Server, TOKEN, journal_head};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_cloister");
const MLP: &[u8] = include_bytes!("../../../ai/tests/fixtures/mlp.onnx");

/// The services the injector picks from.
pub(crate) const SERVICES: [&str; 6] = [
    "crypto",
    "storage",
    "account",
    "computation",
    "oracle",
    "ai",
];
/// The faults it picks from.
pub(crate) const FAULTS: [&str; 3] = ["panic", "hang", "error"];

/// What a call may take past its deadline before it counts as not answered: the runtime answers
/// at the deadline; this is the time to write and read the answer on a loaded machine, and is no
/// performance figure. With the test's 1 s deadline, 1 s + this is under the soonest a hang is
/// found (2.6 s: two missed pings a second apart, then the third's 600 ms timeout), so a request
/// left to wait for the hang's discovery, not answered at its own deadline, is caught.
pub(crate) const MARGIN: Duration = Duration::from_millis(1500);
/// How long the runtime may take to notice a fault and be ready again before the scenario says it
/// did not recover (the harness's wait for an awaited journal entry): hang detection (interval ×
/// threshold + timeout, about 3.6 s with the defaults) plus the longest backoff (`backoff_max`, 1 s
/// in the test, 30 s by default) plus the starts of the services that depend on it, with room to
/// spare for a debug build on a loaded machine.
pub(crate) const RECOVERY_BOUND: Duration = test_support::server::WAIT;

/// One round.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Seeds the injector's choices.
    pub(crate) seed: u64,
    /// How many faults.
    pub(crate) faults: usize,
    /// Answers the clients must have had between two faults.
    pub(crate) answers_between: u64,
    /// Each call's deadline.
    pub(crate) deadline: Duration,
    /// Concurrent writers (each owns its keys).
    pub(crate) writers: usize,
    /// `recovery.backoff_max` for every service (`None`: the default, 5 s).
    pub(crate) backoff_max: Option<&'static str>,
}

/// What happened.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Calls answered with success.
    pub(crate) succeeded: u64,
    /// Calls answered with a retryable 503.
    pub(crate) unavailable: u64,
    /// Each call's time to its answer.
    pub(crate) latencies: Vec<Duration>,
    /// Faults injected (the service was running) and not (it was already down).
    pub(crate) injected: Vec<(String, String)>,
    pub(crate) not_injected: u64,
    /// Writes acknowledged.
    pub(crate) acked_writes: u64,
    /// From the last fault to the runtime reporting ready again.
    pub(crate) recovery: Duration,
    /// Every broken promise, each said once with what was seen.
    pub(crate) violations: Vec<String>,
}

/// A small, fixed, seeded generator (splitmix64): the same seed picks the same faults.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z % n as u64) as usize
    }
}

/// The configuration: the defaults but for fault injection, `on_exhausted = "retry"` for every
/// service (so each must come back by itself), a rate limit the clients cannot reach, and
/// `backoff_max` when the plan says.
pub(crate) fn config(data: &std::path::Path, plan: &Plan) -> String {
    let mut text = format!(
        "[runtime]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n\n[testing]\nfault_injection = true\n\n\
         [services.account]\nrate_per_second = 1000000\nrate_burst = 1000000\n",
        data.display()
    );
    for service in SERVICES {
        text.push_str(&format!(
            "\n[services.{service}.recovery]\non_exhausted = \"retry\"\nbackoff_initial = \"50ms\"\n"
        ));
        if let Some(max) = plan.backoff_max {
            text.push_str(&format!("backoff_max = \"{max}\"\n"));
        }
    }
    text
}

/// What the clients share.
struct Shared {
    deadline: Duration,
    stop: AtomicBool,
    answers: AtomicU64,
    progress: tokio::sync::Notify,
    report: Mutex<Report>,
}

impl Shared {
    fn violation(&self, what: String) {
        let mut report = self.report.lock().expect("report");
        if report.violations.len() < 50 {
            report.violations.push(what);
        }
    }

    /// Makes one call, bounded by the deadline and the margin, and sorts its answer: `Ok(Some)`
    /// a success, `Ok(None)` a retryable 503, `Err` the error for callers that expect one
    /// (a 404 for a key not yet written); anything else is a violation and `Ok(None)`.
    async fn call<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<Option<T>, Error> {
        let started = Instant::now();
        let answer = tokio::time::timeout(self.deadline + MARGIN, call).await;
        let took = started.elapsed();
        self.answers.fetch_add(1, Ordering::Relaxed);
        self.progress.notify_waiters();
        let mut report = self.report.lock().expect("report");
        report.latencies.push(took);
        match answer {
            Err(_) => {
                drop(report);
                self.violation(format!(
                    "{what}: no answer within the deadline {:?} + {MARGIN:?}",
                    self.deadline
                ));
                Ok(None)
            }
            Ok(Ok(value)) => {
                report.succeeded += 1;
                Ok(Some(value))
            }
            Ok(Err(Error::Api(e))) if e.status.as_u16() == 503 && e.retryable => {
                report.unavailable += 1;
                Ok(None)
            }
            Ok(Err(e @ Error::Api(_))) if e.code() == Some("storage.not_found") => Err(e),
            Ok(Err(e)) => {
                drop(report);
                self.violation(format!("{what}: {}", chain(&e)));
                Ok(None)
            }
        }
    }
}

/// An error with its causes.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// One writer's view of one of its keys: the last acknowledged write and the last attempted.
#[derive(Debug, Default, Clone, Copy)]
struct KeyState {
    acked: u64,
    attempted: u64,
}

const KEYS_PER_WRITER: usize = 4;

fn key(writer: usize, k: usize) -> String {
    format!("chaos/w{writer}/k{k}")
}

fn value(writer: usize, k: usize, n: u64) -> String {
    format!("w{writer}/k{k}/{n}")
}

/// Whether `read` is a value `state` allows for the key: the last acknowledged write or a later
/// attempted one, of this key.
fn check_read(writer: usize, k: usize, state: KeyState, read: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(read);
    let n = text
        .strip_prefix(&format!("w{writer}/k{k}/"))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| format!("{}: read {text:?}, another key's value", key(writer, k)))?;
    if n < state.acked || n > state.attempted {
        return Err(format!(
            "{}: read write {n}, but write {} was acknowledged and {} is the last attempted",
            key(writer, k),
            state.acked,
            state.attempted
        ));
    }
    Ok(())
}

async fn writer(shared: Arc<Shared>, client: Client, writer: usize) -> [KeyState; KEYS_PER_WRITER] {
    let mut keys = [KeyState::default(); KEYS_PER_WRITER];
    let mut n = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        n += 1;
        for (k, state) in keys.iter_mut().enumerate() {
            state.attempted = n;
            let name = key(writer, k);
            let put = client.put(&name, value(writer, k, n));
            if let Ok(Some(_)) = shared.call("storage put", put).await {
                state.acked = n;
                shared.report.lock().expect("report").acked_writes += 1;
            }
            let read = shared.call("storage get", client.get(&name)).await;
            match read {
                Ok(Some(read)) => {
                    if let Err(e) = check_read(writer, k, *state, &read.data) {
                        shared.violation(e);
                    }
                }
                Ok(None) => {}
                Err(_) if state.acked == 0 => {}
                Err(e) => shared.violation(format!(
                    "{}: {} after write {} was acknowledged",
                    key(writer, k),
                    chain(&e),
                    state.acked
                )),
            }
        }
    }
    keys
}

async fn signer(shared: Arc<Shared>, client: Client, key_id: String) {
    let mut i = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        i += 1;
        let message = format!("chaos message {i}");
        let sign = client.sign(&key_id, message.as_bytes(), None);
        let Ok(Some(signed)) = shared.call("crypto sign", sign).await else {
            continue;
        };
        let Ok(signature) = base64_decode(&signed.signature) else {
            shared.violation(format!("crypto sign: not base64: {}", signed.signature));
            continue;
        };
        let verify = client.verify(&key_id, message.as_bytes(), &signature);
        if let Ok(Some(verified)) = shared.call("crypto verify", verify).await
            && !verified.valid
        {
            shared.violation(format!(
                "crypto verify: the signature of {message:?} is not valid"
            ));
        }
    }
}

fn base64_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text)
}

async fn runner(shared: Arc<Shared>, client: Client) {
    let mut i = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        i += 1;
        let program = Program::new("return args.x * 2;")
            .with_args(&json!({ "x": i }))
            .expect("args");
        // A run whose incarnation was stopped under it is a retryable 503
        // (`computation.interrupted`), never an outcome: every outcome is the right one.
        if let Ok(Some(outcome)) = shared.call("computation run", client.run(&program)).await
            && (outcome.ending != Ending::Completed || outcome.result != json!(i * 2))
        {
            shared.violation(format!(
                "computation run: x = {i} ended {:?} with {}, not completed with {}",
                outcome.ending,
                outcome.result,
                i * 2
            ));
        }
    }
}

fn mlp_input() -> PredictInput {
    PredictInput::Tensors {
        inputs: [(
            "x".to_owned(),
            Tensor::f32(vec![1, 4], [0.1, 0.2, 0.3, 0.4]),
        )]
        .into(),
    }
}

async fn predictor(shared: Arc<Shared>, client: Client, model: String, expected: Prediction) {
    let input = mlp_input();
    while !shared.stop.load(Ordering::Relaxed) {
        if let Ok(Some(prediction)) = shared
            .call("ai predict", client.predict(&model, &input))
            .await
            && prediction != expected
        {
            shared.violation(format!(
                "ai predict: {prediction:?}, not the {expected:?} predicted before the faults"
            ));
        }
    }
}

/// Injects a fault; whether it was injected (202) or the service was not running (409).
pub(crate) async fn inject(server: &Server, service: &str, fault: &str) -> bool {
    let (status, body) = server
        .json(
            reqwest::Method::POST,
            &format!("/v1/services/{service}/faults"),
            Some(json!({ "kind": fault })),
        )
        .await;
    // 409 `service.not_running`: it is already down (in backoff, or starting).
    assert!(
        status == 202 || (status == 409 && body["error"]["code"] == "service.not_running"),
        "injecting {fault} into {service}: {status} {body}"
    );
    status == 202
}

/// Waits until the clients have had `n` more answers than `from`, or says they stopped answering.
async fn answers_after(shared: &Shared, from: u64, n: u64) -> Result<u64, String> {
    let wait = async {
        loop {
            let progressed = shared.progress.notified();
            let now = shared.answers.load(Ordering::Relaxed);
            if now >= from + n {
                return now;
            }
            progressed.await;
        }
    };
    tokio::time::timeout(RECOVERY_BOUND, wait)
        .await
        .map_err(|_| {
            format!(
                "the clients had fewer than {n} answers in {RECOVERY_BOUND:?}: calls are hanging"
            )
        })
}

/// Retries `call` on retryable 503s until it succeeds, within [`RECOVERY_BOUND`].
async fn eventually<T>(
    what: &str,
    mut call: impl AsyncFnMut() -> Result<T, Error>,
) -> Result<T, String> {
    let started = Instant::now();
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(Error::Api(e)) if e.retryable && started.elapsed() < RECOVERY_BOUND => {
                // The runtime says when: an open breaker's probe, a restart's backoff.
                let after = e.retry_after.unwrap_or(Duration::from_millis(100));
                tokio::time::sleep(after.min(Duration::from_secs(1))).await;
            }
            Err(e) => return Err(format!("{what}: {}", chain(&e))),
        }
    }
}

/// Runs one round of `plan` against a new `cloister run`, and answers what happened.
pub(crate) async fn run(plan: &Plan) -> Report {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("cloister.toml");
    std::fs::write(&config, self::config(&dir.path().join("data"), plan)).expect("config");
    let server = Server::start(BIN, &config).await;
    let admin = Client::new(&server.base, TOKEN).expect("client");

    // Before the faults: an account, its token and signing key, a model, and the answers to
    // compare with.
    let created = admin.create_account("chaos").await.expect("account");
    let setup = Client::new(&server.base, created.token.secret.clone()).expect("client");
    let account = setup.clone().with_deadline(plan.deadline);
    let signing_key = created.account.signing_key.clone();
    let model = setup
        .upload_model("mlp", MLP.to_vec())
        .await
        .expect("upload the model");
    let expected = setup
        .predict(&model.id, &mlp_input())
        .await
        .expect("predict before the faults");

    let shared = Arc::new(Shared {
        deadline: plan.deadline,
        stop: AtomicBool::new(false),
        answers: AtomicU64::new(0),
        progress: tokio::sync::Notify::new(),
        report: Mutex::new(Report::default()),
    });
    let writers: Vec<_> = (0..plan.writers)
        .map(|w| tokio::spawn(writer(shared.clone(), account.clone(), w)))
        .collect();
    let others = [
        tokio::spawn(signer(shared.clone(), account.clone(), signing_key.clone())),
        tokio::spawn(runner(shared.clone(), account.clone())),
        tokio::spawn(predictor(
            shared.clone(),
            account.clone(),
            model.id.clone(),
            expected.clone(),
        )),
    ];

    // The faults. Each injected one is remembered with the journal's head before it, so that its
    // effect (the incarnation's exit) can be awaited: a hang is noticed only seconds later.
    let mut rng = Rng::new(plan.seed);
    let mut seen = 0;
    let mut last_fault = Instant::now();
    let mut pending: BTreeMap<&str, u64> = BTreeMap::new();
    for _ in 0..plan.faults {
        match answers_after(&shared, seen, plan.answers_between).await {
            Ok(now) => seen = now,
            Err(e) => {
                shared.violation(e);
                break;
            }
        }
        let service = SERVICES[rng.below(SERVICES.len())];
        let fault = FAULTS[rng.below(FAULTS.len())];
        let head = journal_head(&config);
        let injected = inject(&server, service, fault).await;
        last_fault = Instant::now();
        let mut report = shared.report.lock().expect("report");
        if injected {
            report.injected.push((service.to_owned(), fault.to_owned()));
            pending.insert(service, head);
        } else {
            report.not_injected += 1;
        }
    }

    // Back by itself: each service's last fault has ended its incarnation, and after that the
    // runtime is ready again (the head is read before readiness, so a ready that comes after it is
    // in the journal after it).
    for (service, head) in pending {
        let exited = server.wait_event(head, |e| {
            e["service"] == service && e["event"]["kind"] == "exited"
        });
        if tokio::time::timeout(RECOVERY_BOUND / 2, exited)
            .await
            .is_err()
        {
            let entries = admin.events(head, 200).await.map(|page| {
                page.events
                    .iter()
                    .filter(|e| e.service.as_ref().is_some_and(|s| s.as_str() == service))
                    .map(|e| format!("{:?}", e.event))
                    .collect::<Vec<_>>()
            });
            shared.violation(format!(
                "{service}: no incarnation ended after its last fault; its entries since: {entries:?}"
            ));
        }
    }
    let head = journal_head(&config);
    let ready = admin.services().await.map(|l| l.readiness.level);
    if !matches!(ready, Ok(cloister_sdk::types::RuntimeLevel::Ready)) {
        let wait = server.wait_event(head, |e| {
            e["event"]["kind"] == "runtime_health" && e["event"]["level"] == "ready"
        });
        if tokio::time::timeout(RECOVERY_BOUND, wait).await.is_err() {
            shared.violation(format!(
                "the runtime was not ready {RECOVERY_BOUND:?} after the last fault"
            ));
        }
    }
    let recovery = last_fault.elapsed();

    shared.stop.store(true, Ordering::Relaxed);
    let mut keys = Vec::new();
    for (w, task) in writers.into_iter().enumerate() {
        keys.push((w, task.await.expect("writer")));
    }
    for task in others {
        task.await.expect("client");
    }

    // Nothing acknowledged is lost, and every kind of call works again.
    let mut after = Vec::new();
    for (w, states) in &keys {
        for (k, state) in states.iter().enumerate() {
            let read = eventually("storage get after recovery", async || {
                account.get(&key(*w, k)).await
            })
            .await;
            match read {
                Ok(read) => {
                    if let Err(e) = check_read(*w, k, *state, &read.data) {
                        after.push(e);
                    }
                }
                Err(e) if state.acked == 0 && e.contains("storage.not_found") => {}
                Err(e) => after.push(format!("{e} (write {} was acknowledged)", state.acked)),
            }
        }
    }
    let signed = eventually("crypto sign after recovery", async || {
        account.sign(&signing_key, b"after", None).await
    })
    .await;
    let ran = eventually("computation run after recovery", async || {
        account.run(&Program::new("return 7;")).await
    })
    .await;
    let predicted = eventually("ai predict after recovery", async || {
        account.predict(&model.id, &mlp_input()).await
    })
    .await;
    after.extend(signed.err());
    match ran {
        Ok(outcome) if outcome.ending == Ending::Completed && outcome.result == json!(7) => {}
        Ok(outcome) => after.push(format!("computation run after recovery: {outcome:?}")),
        Err(e) => after.push(e),
    }
    match predicted {
        Ok(p) if p == expected => {}
        Ok(p) => after.push(format!("ai predict after recovery: {p:?}")),
        Err(e) => after.push(e),
    }
    let livez = reqwest::get(format!("{}/livez", server.base))
        .await
        .expect("livez");
    if livez.status() != 200 {
        after.push(format!("/livez answers {} after recovery", livez.status()));
    }
    drop(server);

    let mut report = Arc::into_inner(shared)
        .expect("the clients are done")
        .report
        .into_inner()
        .expect("report");
    report.violations.extend(after);
    report.recovery = recovery;
    report
}

/// The `q` quantile of `latencies` (sorted in place).
pub(crate) fn quantile(latencies: &mut [Duration], q: f64) -> Duration {
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    latencies.sort_unstable();
    let i = ((latencies.len() - 1) as f64 * q).round() as usize;
    latencies[i]
}

/// The faults injected, counted by service and kind.
pub(crate) fn by_service(report: &Report) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (service, fault) in &report.injected {
        *counts.entry(format!("{service}:{fault}")).or_default() += 1;
    }
    counts
}

/// `value` as JSON, for the report.
pub(crate) fn summary(report: &Report) -> Value {
    json!({
        "succeeded": report.succeeded,
        "unavailable": report.unavailable,
        "acked_writes": report.acked_writes,
        "injected": report.injected.len(),
        "not_injected": report.not_injected,
        "recovery_ms": report.recovery.as_millis() as u64,
    })
}
