//! The fixture shared by the ai tests: crypto, storage and ai on the simulation platform, in a
//! temporary data directory, with helpers to call the ai service and read the fixture files.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ai::{
    Dataset, Error, JobInfo, JobState, ModelInfo, Params, PredictInput, Request, Tensor,
    TrainRequest,
};
use runtime::{Builder, Journal, RuntimeLevel};
use serde_json::Value;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

pub fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

pub struct Fixture {
    pub ai: ai::Handle,
    /// Predictions made on the test's own task, as the HTTP API makes them.
    pub inline: ai::Inline,
    pub storage: storage::Handle,
    pub rt: runtime::Runtime,
    _dir: tempfile::TempDir,
}

/// Starts crypto, storage and ai; `configure` may change the ai spec first.
pub async fn start(configure: impl FnOnce(&mut runtime::Spec)) -> Fixture {
    start_with(configure, |_| {}).await
}

/// Like [`start`], with the storage spec changed by `storage_configure` too.
pub async fn start_with(
    configure: impl FnOnce(&mut runtime::Spec),
    storage_configure: impl FnOnce(&mut runtime::Spec),
) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let platform: Arc<dyn enclave::Platform> = Arc::new(
        enclave::Simulation::open(dir.path(), b"test binary", b"", 1).expect("simulation"),
    );
    let mut b = Builder::new(Journal::in_memory());
    let crypto = b.add(crypto::Crypto::new(dir.path(), platform.clone()));
    let mut storage_spec = storage::Storage::default_spec();
    storage_configure(&mut storage_spec);
    let storage = b.add_with_spec(
        storage::Storage::new(dir.path(), platform, crypto),
        storage_spec,
    );
    let mut spec = ai::Ai::default_spec();
    configure(&mut spec);
    let service = ai::Ai::new(storage.clone());
    let inline = service.inline();
    let ai = b.add_with_spec(service, spec);
    let rt = b.start().expect("start");
    rt.readiness()
        .wait_for(|r| r.level == RuntimeLevel::Ready)
        .await
        .expect("ready");
    Fixture {
        ai,
        inline,
        storage,
        rt,
        _dir: dir,
    }
}

impl Fixture {
    /// Changes the ai spec through the runtime, as hot configuration does.
    pub async fn reconfigure_ai(&self, change: impl FnOnce(&mut runtime::Spec)) {
        let mut spec = ai::Ai::default_spec();
        change(&mut spec);
        self.rt
            .client()
            .reconfigure(
                vec![spec],
                Default::default(),
                runtime::journal::Cause::Operator {
                    command: "test".into(),
                },
            )
            .await
            .expect("the change is accepted");
    }

    pub async fn ask<T: Send + 'static>(
        &self,
        make: impl FnOnce(runtime::Reply<Result<T, Error>>) -> Request,
    ) -> Result<T, Error> {
        self.ai.call(make).await.expect("the ai service answers")
    }

    pub async fn upload(&self, owner: &str, file: Vec<u8>) -> Result<ModelInfo, Error> {
        self.ask(|reply| Request::Upload {
            owner: owner.into(),
            name: "model".into(),
            file,
            reply,
        })
        .await
    }

    pub async fn predict(
        &self,
        owner: &str,
        id: &str,
        input: PredictInput,
    ) -> Result<Value, Error> {
        // As JSON, the way the API writes it: the tests compare what a caller reads.
        self.ask(|reply| Request::Predict {
            owner: owner.into(),
            id: id.into(),
            input,
            reply,
        })
        .await
        .map(|p| serde_json::to_value(p).expect("a prediction serializes"))
    }

    pub async fn train(&self, request: TrainRequest) -> Result<JobInfo, Error> {
        self.ask(|reply| Request::Train {
            owner: "alice".into(),
            request: Box::new(request),
            reply,
        })
        .await
    }

    pub async fn wait(&self, id: &str) -> JobInfo {
        loop {
            let job = self
                .ask(|reply| Request::Job {
                    owner: "alice".into(),
                    id: id.into(),
                    wait: Duration::from_secs(30),
                    reply,
                })
                .await
                .expect("job");
            if job.finished_ms.is_some() {
                return job;
            }
        }
    }

    pub async fn trained(&self, dataset: &str, model: Params) -> ModelInfo {
        let dataset: Dataset = serde_json::from_value(json(dataset)).expect("dataset");
        let job = self
            .train(TrainRequest {
                name: None,
                model,
                dataset,
                test_fraction: 0.2,
            })
            .await
            .expect("accepted");
        let job = self.wait(&job.id).await;
        assert_eq!(job.state, JobState::Completed, "{job:?}");
        job.model.expect("a model")
    }
}

pub fn tensors(name: &str, shape: Vec<usize>, data: Vec<f64>) -> PredictInput {
    PredictInput::Tensors {
        inputs: BTreeMap::from([(name.to_owned(), Tensor::f32(shape, data))]),
    }
}
