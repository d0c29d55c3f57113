//! Inference and training, measured side by side in one run.
//!
//! - `inference/*`: one prediction (batch 1) of the fixture MLPs through the ai service's handle
//!   (a bus round trip, input checks, the cached model) next to raw tract running the same
//!   optimized model. onnxruntime's figure for the same models is in
//!   `tests/fixtures/reference_timings.json` (measured from Python by `generate.py`). Each call
//!   through the service is measured twice: from criterion's thread (`service`,
//!   `bus_round_trip`: every call wakes the runtime's worker thread and waits to be woken back),
//!   and from a task on the runtime (`service_on_runtime`, `bus_round_trip_on_runtime`: as the
//!   HTTP API calls it, so a call is a channel hop on the same worker, no thread wake-up); and
//!   `inline`: as the HTTP API predicts with a model the service has loaded, on the caller's own
//!   task through [`ai::Inline`], with no bus hop.
//! - `train/*`: fitting the fixture datasets with this crate's trainers; scikit-learn's fit times
//!   for the same data are in the same file.
//!
//! Run: `cargo bench -p ai --bench inference`
//!
//! `AI_COUNT=MODEL,raw|inline|service,N` (for example `mlp,service,20000`) makes N predictions of
//! one model (raw tract, on the caller's task as the API makes them, or through the service from a
//! task on the runtime) and exits: for an instruction
//! count under callgrind, the same from run to run on this noisy machine. Two runs with different
//! N give the instructions per prediction, (I(N2) - I(N1)) / (N2 - N1).

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use ai::{Dataset, Params, PredictInput, Request, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use runtime::{Builder, Journal, RuntimeLevel};
use tract_onnx::prelude::*;

/// One call through the service, as a task on the runtime makes it.
type CallFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn input(model: &str) -> (Vec<usize>, Vec<f64>) {
    let text = std::fs::read_to_string(fixture(&format!("{model}.cases.json"))).expect("cases");
    let cases: serde_json::Value = serde_json::from_str(&text).expect("json");
    let case = &cases["cases"][0];
    let shape = case["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("dim") as usize)
        .collect();
    let data = case["x"]
        .as_array()
        .expect("x")
        .iter()
        .map(|v| v.as_f64().expect("number"))
        .collect();
    (shape, data)
}

/// What `AI_COUNT` asks for: the model, how to predict, and how many times.
type Count = Option<(String, String, u64)>;

/// In count mode, makes the predictions `count` asks for if they are `how` of `model` (`run` with
/// their number), then exits.
fn count_and_exit(count: &Count, model: &str, how: &str, run: impl FnOnce(u64)) {
    if let Some((m, h, n)) = count
        && m == model
        && h == how
    {
        run(*n);
        println!("{model} {how} x{n}");
        std::process::exit(0);
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio");
    let dir = tempfile::tempdir().expect("tempdir");
    let platform: Arc<dyn enclave::Platform> =
        Arc::new(enclave::Simulation::open(dir.path(), b"bench", b"", 1).expect("simulation"));
    let (_runtime, handle, inline) = rt.block_on(async {
        let mut b = Builder::new(Journal::in_memory());
        let crypto = b.add(crypto::Crypto::new(dir.path(), platform.clone()));
        let storage = b.add(storage::Storage::new(dir.path(), platform, crypto));
        let service = ai::Ai::new(storage);
        let inline = service.inline();
        let handle = b.add(service);
        let runtime = b.start().expect("start");
        runtime
            .readiness()
            .wait_for(|r| r.level == RuntimeLevel::Ready)
            .await
            .expect("ready");
        (runtime, handle, inline)
    });

    // `iters` calls made one after the other by a task on the runtime; the time they took.
    let on_runtime = |iters: u64, call: Arc<dyn Fn() -> CallFuture + Send + Sync>| {
        rt.block_on(async move {
            tokio::spawn(async move {
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    call().await;
                }
                start.elapsed()
            })
            .await
            .expect("the calling task")
        })
    };

    let count: Count = std::env::var("AI_COUNT").ok().map(|spec| {
        let parts: Vec<String> = spec.split(',').map(str::to_owned).collect();
        let [model, how, n] = &parts[..] else {
            panic!("AI_COUNT is MODEL,raw|inline|service,N, not {spec:?}");
        };
        let n: u64 = n.parse().expect("N is a number");
        (model.clone(), how.clone(), n)
    });
    let mut group = c.benchmark_group("inference");
    let jobs = {
        let handle = handle.clone();
        Arc::new(move || -> CallFuture {
            let handle = handle.clone();
            Box::pin(async move {
                black_box(
                    handle
                        .call(|reply| Request::Jobs {
                            owner: "nobody".into(),
                            reply,
                        })
                        .await
                        .expect("answer")
                        .expect("jobs"),
                );
            })
        })
    };
    // The bus round trip alone: a request the service answers at once (no jobs to list).
    if count.is_none() {
        group.bench_function("bus_round_trip", |b| b.to_async(&rt).iter(|| jobs()));
        group.bench_function("bus_round_trip_on_runtime", |b| {
            b.iter_custom(|iters| on_runtime(iters, jobs.clone()))
        });
    }
    for model in ["mlp", "mlp_big"] {
        let file = std::fs::read(fixture(&format!("{model}.onnx"))).expect("model");
        let (shape, data) = input(model);

        // Raw tract: the same optimized plan, the same input, no service around it.
        let plan = tract_onnx::onnx()
            .model_for_read(&mut &file[..])
            .and_then(|m| m.into_typed())
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .expect("tract loads the fixture");
        let floats: Vec<f32> = data.iter().map(|v| *v as f32).collect();
        let raw = || {
            let tensor = tract_ndarray::ArrayD::from_shape_vec(shape.clone(), floats.clone())
                .expect("shape")
                .into_tensor();
            black_box(plan.run(tvec!(tensor.into_tvalue())).expect("run"))
        };
        count_and_exit(&count, model, "raw", |n| (0..n).for_each(|_| drop(raw())));
        if count.is_none() {
            group.bench_function(format!("{model}/raw_tract"), |b| b.iter(raw));
        }

        let info = rt
            .block_on(handle.call(|reply| Request::Upload {
                owner: "bench".into(),
                name: model.into(),
                file: file.clone(),
                reply,
            }))
            .expect("answer")
            .expect("uploaded");
        let inputs = BTreeMap::from([(
            "x".to_owned(),
            Tensor::f32(shape.clone(), data.iter().copied()),
        )]);
        let input = PredictInput::Tensors {
            inputs: inputs.clone(),
        };
        let predict = {
            let (handle, id, inputs) = (handle.clone(), info.id.clone(), inputs.clone());
            Arc::new(move || -> CallFuture {
                let (handle, id, inputs) = (handle.clone(), id.clone(), inputs.clone());
                Box::pin(async move {
                    let out = handle
                        .call(|reply| Request::Predict {
                            owner: "bench".into(),
                            id,
                            input: PredictInput::Tensors { inputs },
                            reply,
                        })
                        .await
                        .expect("answer")
                        .expect("predicted");
                    black_box(out);
                })
            })
        };
        // As the HTTP API predicts with a model already loaded: on the caller's own task.
        let local = || {
            let answer = inline.predict(&handle, "bench", &info.id, &input);
            black_box(answer.expect("loaded").expect("predicted"))
        };
        count_and_exit(&count, model, "inline", |n| {
            (0..n).for_each(|_| drop(local()));
        });
        count_and_exit(&count, model, "service", |n| {
            on_runtime(n, predict.clone());
        });
        if count.is_some() {
            continue;
        }
        group.bench_function(format!("{model}/inline"), |b| b.iter(local));
        group.bench_function(format!("{model}/service"), |b| {
            b.to_async(&rt).iter(|| predict())
        });
        group.bench_function(format!("{model}/service_on_runtime"), |b| {
            b.iter_custom(|iters| on_runtime(iters, predict.clone()))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("train");
    let cancel = AtomicBool::new(false);
    for (name, params) in [
        ("linear", Params::LinearRegression),
        ("logistic", Params::LogisticRegression { c: 1.0 }),
        (
            "kmeans",
            Params::Kmeans {
                k: 3,
                n_init: 10,
                seed: 0,
            },
        ),
    ] {
        let text = std::fs::read_to_string(fixture(&format!("{name}.json"))).expect("dataset");
        let data: Dataset = serde_json::from_str(&text).expect("dataset");
        group.bench_function(name, |b| {
            b.iter(|| black_box(ai::train::train(&data, &params, 0.2, &cancel).expect("trained")))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
