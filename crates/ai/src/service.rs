//! The ai service itself: its recipe (the spec and the settings it declares), the incarnation's
//! loop, and its running state (the model cache, the training jobs, the blocking threads).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use runtime::clock::now_ms;
use runtime::id::new_id;
use runtime::jobs::{Cancel, Table};
use runtime::setting::Setting;
use runtime::{Context, Kind, Priority, Service, ServiceError, Spec};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::cache::LOADED_COST_FACTOR;
use crate::inline::{Inline, Models, is_small};
use crate::onnx;
use crate::store::{Record, Store, sha256_hex};
use crate::train::{self, Trained};
use crate::{
    Error, JobInfo, JobState, ModelInfo, ModelKind, NAME, PredictInput, Prediction, Request,
    TrainRequest,
};

/// Largest ONNX file that may be uploaded (`max_model_bytes`).
pub const MAX_MODEL_BYTES: Setting<usize> = Setting::new(
    "max_model_bytes",
    16 << 20,
    1,
    256 << 20,
    "largest ONNX file that may be uploaded",
);
/// Memory for loaded models; a model that would not fit alone is refused (`cache_bytes`).
pub const CACHE_BYTES: Setting<u64> = Setting::new(
    "cache_bytes",
    256 << 20,
    1 << 20,
    4 << 30,
    "memory for loaded models; a model that would not fit alone is refused",
);
/// Most rows in a training dataset (`max_dataset_rows`).
pub const MAX_DATASET_ROWS: Setting<usize> = Setting::new(
    "max_dataset_rows",
    100_000,
    1,
    10_000_000,
    "most rows in a training dataset",
);
/// Most features per row (`max_features`).
pub const MAX_FEATURES: Setting<usize> =
    Setting::new("max_features", 1_000, 1, 100_000, "most features per row");
/// Most elements in one input tensor (`max_input_elements`).
pub const MAX_INPUT_ELEMENTS: Setting<usize> = Setting::new(
    "max_input_elements",
    1 << 20,
    1,
    1 << 28,
    "most elements in one input tensor",
);
/// Training jobs one account may have queued or running at once, so one account cannot fill the
/// service's queue or its memory with datasets (`max_active_jobs_per_account`).
pub const MAX_ACTIVE_JOBS_PER_ACCOUNT: Setting<usize> = Setting::new(
    "max_active_jobs_per_account",
    4,
    1,
    10_000,
    "training jobs one account may have queued or running at once",
);
/// The most work a training job may take, in multiply-adds as [`train::work`] counts them before
/// the job is accepted (`max_training_work`). The default is about a quarter of an hour of one core.
pub const MAX_TRAINING_WORK: Setting<u64> = Setting::new(
    "max_training_work",
    1_000_000_000_000,
    1,
    1_000_000_000_000_000_000,
    "the most work a training job may take, in multiply-adds (rows × features × ... as counted at submit)",
);
/// Finished training jobs kept per account (`max_finished_jobs`).
pub const MAX_FINISHED_JOBS: Setting<usize> = Setting::new(
    "max_finished_jobs",
    100,
    1,
    10_000,
    "finished training jobs kept per account",
);

const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The recipe.
#[derive(Debug)]
pub struct Ai {
    storage: storage::Handle,
    /// Shared by every incarnation and replica, and lent through [`Inline`].
    models: Arc<Models>,
}

impl Ai {
    pub fn new(storage: storage::Handle) -> Self {
        Ai {
            storage: storage.with_caller(&NAME),
            models: Arc::default(),
        }
    }

    /// Predictions of small models the service has loaded, made on the caller's own task (the
    /// HTTP API's): see [`Inline`].
    pub fn inline(&self) -> Inline {
        Inline::new(self.models.clone())
    }

    pub fn default_spec() -> Spec {
        Spec::new(NAME, Kind::Optional)
            .description(
                "ONNX inference (tract) and training of linear/logistic regression and k-means; models sealed in storage",
            )
            .depends_on(storage::NAME)
            .priority(Priority::Low)
            .capability("ai.inference")
            .capability("ai.training")
            .resources(runtime::spec::Resources {
                min_memory_mib: 64,
                max_memory_mib: 512,
                cpu_cores: 1,
                network_access: false,
            })
            .call_timeout(CALL_TIMEOUT)
            .setting(&MAX_MODEL_BYTES)
            .setting(&CACHE_BYTES)
            .setting(&MAX_DATASET_ROWS)
            .setting(&MAX_FEATURES)
            .setting(&MAX_INPUT_ELEMENTS)
            .setting(&MAX_FINISHED_JOBS)
            .setting(&MAX_ACTIVE_JOBS_PER_ACCOUNT)
            .setting(&MAX_TRAINING_WORK)
    }
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    max_model_bytes: usize,
    cache_bytes: u64,
    data: train::DataLimits,
    max_input_elements: usize,
    max_finished_jobs: usize,
    max_active_jobs: usize,
}

impl Settings {
    fn of(spec: &Spec) -> Settings {
        Settings {
            max_model_bytes: spec.get(&MAX_MODEL_BYTES),
            cache_bytes: spec.get(&CACHE_BYTES),
            data: train::DataLimits {
                max_rows: spec.get(&MAX_DATASET_ROWS),
                max_features: spec.get(&MAX_FEATURES),
                max_work: spec.get(&MAX_TRAINING_WORK),
            },
            max_input_elements: spec.get(&MAX_INPUT_ELEMENTS),
            max_finished_jobs: spec.get(&MAX_FINISHED_JOBS),
            max_active_jobs: spec.get(&MAX_ACTIVE_JOBS_PER_ACCOUNT),
        }
    }
}

impl Service for Ai {
    type Request = Request;

    fn spec(&self) -> Spec {
        Ai::default_spec()
    }

    fn validate(&self, new: &Spec) -> Result<(), runtime::Veto> {
        if new.get(&MAX_MODEL_BYTES) as u64 * LOADED_COST_FACTOR > new.get(&CACHE_BYTES) {
            return Err(format!(
                "cache_bytes must hold a model of max_model_bytes loaded ({LOADED_COST_FACTOR} × its size)"
            ).into());
        }
        Ok(())
    }

    async fn run(&self, mut cx: Context<Request>) -> Result<(), ServiceError> {
        let spec = cx.spec();
        let state = Arc::new(State {
            store: Store {
                storage: self.storage.clone(),
            },
            threads: Semaphore::new(usize::from(spec.resources.cpu_cores.max(1))),
            models: self.models.clone(),
        });
        let mut settings = Settings::of(&spec);
        self.models
            .set_max_input_elements(settings.max_input_elements);
        // The first replica starts with nothing loaded, as if the process had just started (a
        // replica added beside it finds what is loaded already).
        if cx.replica() == 0 {
            self.models.cache().shrink(0);
        }
        // A change of settings applies when it comes, not at the next request: predictions made
        // through [`Inline`] read the input limit without asking the service.
        let mut changes = cx.spec_changes().clone();
        let mut tasks = JoinSet::new();
        let (reports, mut reported) = mpsc::unbounded_channel();
        let mut training = Training {
            table: Table::new("job", settings.max_finished_jobs),
            reports,
            active: HashMap::new(),
        };
        loop {
            tokio::select! {
                request = cx.recv() => {
                    let Some(request) = request else { break };
                    if changes.has_changed().unwrap_or(false) {
                        settings = self.apply(&changes.borrow_and_update().clone(), &mut training);
                    }
                    state.handle(request, settings, &mut training, &mut tasks);
                }
                Ok(()) = changes.changed() => {
                    settings = self.apply(&changes.borrow_and_update().clone(), &mut training);
                }
                Some(report) = reported.recv() => training.report(report),
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        // Running training jobs see the service go: cancel them.
        training.table.cancel_all();
        Ok(())
    }
}

impl Ai {
    /// The settings of `spec`, applied now to what outlives a request: a lowered budget evicts
    /// models at once, not at the next model loaded.
    fn apply(&self, spec: &Spec, training: &mut Training) -> Settings {
        let settings = Settings::of(spec);
        self.models.cache().shrink(settings.cache_bytes);
        self.models
            .set_max_input_elements(settings.max_input_elements);
        training.table.set_keep_finished(settings.max_finished_jobs);
        settings
    }
}

/// A training task's report to the incarnation, which owns the job table.
enum Report {
    Started {
        owner: String,
        id: String,
    },
    Finished {
        owner: String,
        id: String,
        result: Box<Result<ModelInfo, Error>>,
    },
}

/// The training jobs: the table the incarnation owns, and the channel training tasks report on.
struct Training {
    table: Table<JobInfo>,
    reports: mpsc::UnboundedSender<Report>,
    /// Each account's jobs queued or running: counted up at submit, down when the job's task
    /// reports its end (also for a job its owner's purge has already forgotten, which still holds
    /// its dataset until then).
    active: HashMap<String, usize>,
}

impl Training {
    fn report(&mut self, report: Report) {
        match report {
            Report::Started { owner, id } => self
                .table
                .update(&owner, &id, |job| job.state = JobState::Running),
            Report::Finished { owner, id, result } => {
                if let Some(active) = self.active.get_mut(&owner) {
                    *active = active.saturating_sub(1);
                    if *active == 0 {
                        self.active.remove(&owner);
                    }
                }
                self.finish(&owner, &id, *result);
            }
        }
    }

    fn finish(&mut self, owner: &str, id: &str, result: Result<ModelInfo, Error>) {
        self.table.update(owner, id, |job| {
            job.finished_ms = Some(now_ms());
            match result {
                Ok(model) => {
                    job.state = JobState::Completed;
                    job.model = Some(model);
                }
                Err(Error::Cancelled) => job.state = JobState::Cancelled,
                Err(e) => {
                    job.state = JobState::Failed;
                    job.error = Some(e.to_string());
                }
            }
        })
    }
}

/// The incarnation's running state, shared with its request tasks.
struct State {
    store: Store,
    /// Blocking work (loading, inference, training) holds one of these: at most `cpu_cores` at once.
    threads: Semaphore,
    models: Arc<Models>,
}

impl State {
    fn handle(
        self: &Arc<Self>,
        request: Request,
        settings: Settings,
        training: &mut Training,
        tasks: &mut JoinSet<()>,
    ) {
        let this = self.clone();
        match request {
            Request::Upload {
                owner,
                name,
                file,
                reply,
            } => {
                tasks.spawn(
                    async move { reply.send(this.upload(owner, name, file, settings).await) },
                );
            }
            Request::Models { owner, reply } => {
                tasks.spawn(async move { reply.send(this.store.list(&owner).await) });
            }
            Request::Model { owner, id, reply } => {
                tasks.spawn(async move {
                    reply.send(this.store.record(&owner, &id).await.map(|r| r.info));
                });
            }
            Request::Delete { owner, id, reply } => {
                tasks.spawn(async move {
                    let result = this.store.delete(&owner, &id).await;
                    this.models.cache().remove(&(owner, id));
                    reply.send(result);
                });
            }
            Request::Predict {
                owner,
                id,
                input,
                reply,
            } => {
                // A small ONNX model already loaded answers here, without a task of its own.
                let key = (owner, id);
                let cached = self.models.cache().get(&key);
                if let (Some((model, size)), PredictInput::Tensors { inputs }) = (&cached, &input)
                    && is_small(*size, inputs)
                {
                    let outputs = model.run(inputs, settings.max_input_elements);
                    return reply.send(outputs.map(|outputs| Prediction::Outputs { outputs }));
                }
                let (owner, id) = key;
                tasks.spawn(
                    async move { reply.send(this.predict(owner, id, input, settings).await) },
                );
            }
            Request::Train {
                owner,
                request,
                reply,
            } => reply.send(self.train(owner, *request, settings, training, tasks)),
            Request::Job {
                owner,
                id,
                wait,
                reply,
            } => match training.table.watch(&owner, &id) {
                None => reply.send(Err(Error::JobNotFound(id))),
                Some(_) if wait.is_zero() => {
                    reply.send(
                        training
                            .table
                            .get(&owner, &id)
                            .ok_or(Error::JobNotFound(id)),
                    );
                }
                Some(job) => {
                    let deadline = tokio::time::Instant::now() + wait;
                    tasks.spawn(async move {
                        let job = job.finished_by(deadline).await;
                        reply.send(job.map_err(|_| Error::JobNotFound(id)));
                    });
                }
            },
            Request::Jobs { owner, reply } => {
                let mut list = training.table.list(&owner);
                // Newest first.
                list.reverse();
                reply.send(Ok(list));
            }
            Request::Cancel { owner, id, reply } => match training.table.cancel(&owner, &id) {
                None => reply.send(Err(Error::JobNotFound(id))),
                Some(Cancel::Finished(info)) => reply.send(Ok(info)),
                Some(Cancel::Stopping { done, .. }) => {
                    tasks.spawn(async move {
                        let job = done.finished().await;
                        reply.send(job.map_err(|_| Error::JobNotFound(id)));
                    });
                }
            },
            Request::Purge { owner, reply } => {
                let stopped = training.table.purge(&owner);
                {
                    let mut cache = self.models.cache();
                    let theirs: Vec<_> = cache
                        .models
                        .keys()
                        .filter(|(o, _)| *o == owner)
                        .cloned()
                        .collect();
                    for key in theirs {
                        cache.remove(&key);
                    }
                }
                tasks.spawn(async move {
                    stopped.await;
                    reply.send(Ok(()));
                });
            }
        }
    }

    /// Runs `work` on a blocking thread once one of the service's threads is free.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let _permit = self
            .threads
            .acquire()
            .await
            .map_err(|_| Error::Internal("the service is stopping".into()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Error::Internal(format!("a worker thread failed: {e}")))?
    }

    async fn upload(
        &self,
        owner: String,
        name: String,
        file: Vec<u8>,
        settings: Settings,
    ) -> Result<ModelInfo, Error> {
        if file.is_empty() {
            return Err(Error::InvalidModel("the model file is empty".into()));
        }
        if file.len() > settings.max_model_bytes {
            return Err(Error::TooLarge {
                what: "the model file, in bytes,".into(),
                size: file.len() as u64,
                limit: settings.max_model_bytes as u64,
                service: "ai",
                setting: MAX_MODEL_BYTES.name(),
            });
        }
        let cost = file.len() as u64 * LOADED_COST_FACTOR;
        if cost > settings.cache_bytes {
            return Err(Error::TooLarge {
                what: format!(
                    "the memory the model takes loaded (about {LOADED_COST_FACTOR} × its file), in bytes,"
                ),
                size: cost,
                limit: settings.cache_bytes,
                service: "ai",
                setting: CACHE_BYTES.name(),
            });
        }
        let file = Arc::new(file);
        let checked = file.clone();
        let loaded = self.blocking(move || onnx::load(&checked)).await?;
        let info = ModelInfo {
            id: new_id("mdl"),
            owner: owner.clone(),
            name,
            kind: ModelKind::Onnx,
            size_bytes: file.len() as u64,
            sha256: sha256_hex(&file),
            created_ms: now_ms(),
            inputs: loaded.inputs.clone(),
            outputs: loaded.outputs.clone(),
            metrics: None,
        };
        let record = Record {
            info: info.clone(),
            chunks: file.len().div_ceil(512 << 10),
            trained: None,
        };
        self.store.put(&record, Some(&file)).await?;
        self.models.cache().insert(
            (owner, info.id.clone()),
            Arc::new(loaded),
            cost,
            settings.cache_bytes,
        );
        Ok(info)
    }

    async fn predict(
        &self,
        owner: String,
        id: String,
        input: PredictInput,
        settings: Settings,
    ) -> Result<Prediction, Error> {
        let key = (owner, id);
        let cached = self.models.cache().get(&key);
        let (model, size) = match cached {
            Some(found) => found,
            None => {
                let record = self.store.record(&key.0, &key.1).await?;
                if let Some(trained) = record.trained {
                    let PredictInput::Features { features } = input else {
                        return Err(Error::Shape(
                            "this is a trained model: give {\"features\": [[...], ...]}".into(),
                        ));
                    };
                    return self.blocking(move || trained.predict(&features)).await;
                }
                let file = self.store.file(&record).await?;
                let loaded = Arc::new(self.blocking(move || onnx::load(&file)).await?);
                self.models.cache().insert(
                    key.clone(),
                    loaded.clone(),
                    record.info.size_bytes * LOADED_COST_FACTOR,
                    settings.cache_bytes,
                );
                (loaded, record.info.size_bytes)
            }
        };
        let PredictInput::Tensors { inputs } = input else {
            return Err(Error::Shape(
                "this is an ONNX model: give {\"inputs\": {\"NAME\": {\"shape\": [...], \"data\": [...]}}}"
                    .into(),
            ));
        };
        let limit = settings.max_input_elements;
        let outputs = if is_small(size, &inputs) {
            model.run(&inputs, limit)?
        } else {
            self.blocking(move || model.run(&inputs, limit)).await?
        };
        Ok(Prediction::Outputs { outputs })
    }

    fn train(
        self: &Arc<Self>,
        owner: String,
        request: TrainRequest,
        settings: Settings,
        training: &mut Training,
        tasks: &mut JoinSet<()>,
    ) -> Result<JobInfo, Error> {
        let active = training.active.get(&owner).copied().unwrap_or(0);
        if active >= settings.max_active_jobs {
            return Err(Error::TooManyJobs { active });
        }
        train::check(
            &request.dataset,
            &request.model,
            request.test_fraction,
            settings.data,
        )?;
        let job = training.table.submit(&owner, |id| JobInfo {
            id: id.to_owned(),
            state: JobState::Pending,
            created_ms: now_ms(),
            finished_ms: None,
            model: None,
            error: None,
        });
        *training.active.entry(owner.clone()).or_default() += 1;
        let this = self.clone();
        let reports = training.reports.clone();
        let (id, cancel) = (job.id, job.cancel);
        tasks.spawn(async move {
            let result = this
                .run_training(&owner, &id, request, cancel, &reports)
                .await;
            let _ = reports.send(Report::Finished {
                owner,
                id,
                result: Box::new(result),
            });
        });
        Ok(job.info)
    }

    async fn run_training(
        &self,
        owner: &str,
        id: &str,
        request: TrainRequest,
        cancel: Arc<AtomicBool>,
        reports: &mpsc::UnboundedSender<Report>,
    ) -> Result<ModelInfo, Error> {
        let _permit = self
            .threads
            .acquire()
            .await
            .map_err(|_| Error::Internal("the service is stopping".into()))?;
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        let _ = reports.send(Report::Started {
            owner: owner.to_owned(),
            id: id.to_owned(),
        });
        let params = request.model.clone();
        let flag = cancel.clone();
        let (trained, metrics) = tokio::task::spawn_blocking(move || {
            train::train(&request.dataset, &params, request.test_fraction, &flag)
                .map(|(t, m)| (t, m, request.name))
        })
        .await
        .map_err(|e| Error::Internal(format!("a worker thread failed: {e}")))?
        .map(|(t, m, name)| ((t, name), m))?;
        let (trained, name) = trained;
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        let kind = match &trained {
            Trained::LinearRegression { .. } => ModelKind::LinearRegression,
            Trained::LogisticRegression { .. } => ModelKind::LogisticRegression,
            Trained::Kmeans { .. } => ModelKind::Kmeans,
        };
        let parameters =
            serde_json::to_vec(&trained).map_err(|e| Error::Internal(e.to_string()))?;
        let info = ModelInfo {
            id: new_id("mdl"),
            owner: owner.to_owned(),
            name: name.unwrap_or_else(|| {
                serde_json::to_value(kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            }),
            kind,
            // What is stored (and hashed): the parameters.
            size_bytes: parameters.len() as u64,
            sha256: sha256_hex(&parameters),
            created_ms: now_ms(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            metrics: Some(metrics),
        };
        self.store
            .put(
                &Record {
                    info: info.clone(),
                    chunks: 0,
                    trained: Some(trained),
                },
                None,
            )
            .await?;
        Ok(info)
    }
}
