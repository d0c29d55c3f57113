//! The ai service: ONNX inference with tract (a pure-Rust engine) and training of small models
//! (linear and logistic regression, k-means). Models are kept in the storage service under their
//! owner's account, so they are sealed to the enclave, rollback-evident, and deleted with the
//! account. Loaded models are cached within the service's memory budget.
//!
//! Inference and training run on the service's own bounded set of blocking threads, as many as its
//! spec's `resources.cpu_cores` (counted in the enclave's thread budget); training runs as a job
//! that can be cancelled between iterations.

mod cache;
mod onnx;
mod service;
mod store;
pub mod train;

use std::collections::BTreeMap;
use std::time::Duration;

use runtime::{Reply, ServiceName};
use serde::{Deserialize, Serialize};

pub use crate::onnx::{TensorData, TensorSpec};
pub use crate::service::{
    Ai, CACHE_BYTES, MAX_DATASET_ROWS, MAX_FEATURES, MAX_FINISHED_JOBS, MAX_INPUT_ELEMENTS,
    MAX_MODEL_BYTES,
};
pub use crate::train::{Dataset, Metrics, Params, Trained};

pub const NAME: ServiceName = ServiceName::from_static("ai");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadInput(String),
    /// Something in the request is over a limit; `setting` (of `[services.SERVICE]`) names it.
    #[error("{what} is {size}; at most {limit} ([services.{service}] {setting})")]
    TooLarge {
        what: String,
        size: u64,
        limit: u64,
        service: &'static str,
        setting: &'static str,
    },
    #[error("no model {0:?}")]
    NotFound(String),
    #[error("no job {0:?}")]
    JobNotFound(String),
    #[error("{0}")]
    InvalidModel(String),
    /// Inputs that do not fit the model: names, shapes, sizes.
    #[error("{0}")]
    Shape(String),
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("the job was cancelled")]
    Cancelled,
    /// The storage service failed or did not answer: retry after [`StorageFailure::retry_after`].
    #[error("storage: {0}")]
    Storage(StorageFailure),
    /// A stored model is no longer what was uploaded (its bytes fail their recorded SHA-256, or
    /// storage found them tampered with): it is not used. Retrying does not help.
    #[error("{0}")]
    Integrity(String),
    #[error("{0}")]
    Internal(String),
}

impl runtime::Classify for Error {
    fn kind(&self) -> runtime::ErrorKind {
        use runtime::ErrorKind;
        match self {
            Error::BadInput(_) => ErrorKind::Invalid,
            Error::TooLarge { .. } => ErrorKind::TooLarge,
            Error::NotFound(_) | Error::JobNotFound(_) => ErrorKind::NotFound,
            Error::InvalidModel(_) | Error::Shape(_) | Error::Inference(_) => {
                ErrorKind::Unprocessable
            }
            Error::Cancelled => ErrorKind::Conflict,
            Error::Storage(failure) => ErrorKind::Unavailable {
                retry_after: failure.retry_after(),
            },
            Error::Integrity(_) => ErrorKind::Integrity,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Error::BadInput(_) => "ai.bad_input",
            Error::TooLarge { .. } => "ai.too_large",
            Error::NotFound(_) => "ai.model_not_found",
            Error::JobNotFound(_) => "ai.job_not_found",
            Error::InvalidModel(_) => "ai.invalid_model",
            Error::Shape(_) => "ai.shape",
            Error::Inference(_) => "ai.inference",
            Error::Cancelled => "ai.cancelled",
            Error::Storage(_) => "ai.storage",
            Error::Integrity(_) => "ai.integrity",
            Error::Internal(_) => "ai.internal",
        }
    }
}

/// How the storage service failed the ai service: no answer at all (restarting, circuit open), or
/// an error of its own that a retry may get past.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageFailure {
    #[error(transparent)]
    NoAnswer(runtime::CallError),
    #[error(transparent)]
    Failed(storage::Error),
}

impl StorageFailure {
    /// When the same request may succeed: what the bus or the storage service says, else a second.
    pub fn retry_after(&self) -> Duration {
        use runtime::Classify;
        match self {
            StorageFailure::NoAnswer(e) => e.retry_after(),
            StorageFailure::Failed(e) => match e.kind() {
                runtime::ErrorKind::Unavailable { retry_after }
                | runtime::ErrorKind::Limited { retry_after } => retry_after,
                _ => Duration::from_secs(1),
            },
        }
    }
}

/// What a model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Onnx,
    LinearRegression,
    LogisticRegression,
    Kmeans,
}

/// A kept model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelInfo {
    pub id: String,
    /// The account it belongs to (not shown: it is always the caller's).
    #[serde(default, skip_serializing)]
    #[schema(ignore)]
    pub owner: String,
    pub name: String,
    pub kind: ModelKind,
    /// The ONNX file's size (0 for trained models).
    pub size_bytes: u64,
    /// SHA-256 (hex) of the ONNX file, or of the trained parameters' JSON.
    pub sha256: String,
    pub created_ms: u64,
    /// ONNX: the model's inputs and outputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<TensorSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<TensorSpec>,
    /// Trained models: the figures measured on the held-out rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
}

/// Inputs for a prediction: named tensors for an ONNX model, rows of features for a trained one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum PredictInput {
    Tensors {
        inputs: BTreeMap<String, TensorData>,
    },
    Features {
        features: Vec<Vec<f64>>,
    },
}

/// A training request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainRequest {
    /// A name for the model (default: its kind).
    #[serde(default)]
    pub name: Option<String>,
    pub model: Params,
    pub dataset: Dataset,
    /// The last `round(rows × test_fraction)` rows are held out for the metrics (default 0.2).
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
}

fn default_test_fraction() -> f64 {
    0.2
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

/// A training job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobInfo {
    pub id: String,
    pub state: JobState,
    pub created_ms: u64,
    pub finished_ms: Option<u64>,
    /// The trained model, once completed.
    pub model: Option<ModelInfo>,
    pub error: Option<String>,
}

impl runtime::jobs::Info for JobInfo {
    fn is_finished(&self) -> bool {
        self.finished_ms.is_some()
    }
}

type Answer<T> = Reply<Result<T, Error>>;

#[derive(Debug)]
pub enum Request {
    Upload {
        owner: String,
        name: String,
        file: Vec<u8>,
        reply: Answer<ModelInfo>,
    },
    Models {
        owner: String,
        reply: Answer<Vec<ModelInfo>>,
    },
    Model {
        owner: String,
        id: String,
        reply: Answer<ModelInfo>,
    },
    Delete {
        owner: String,
        id: String,
        reply: Answer<()>,
    },
    Predict {
        owner: String,
        id: String,
        input: PredictInput,
        reply: Answer<serde_json::Value>,
    },
    Train {
        owner: String,
        request: Box<TrainRequest>,
        reply: Answer<JobInfo>,
    },
    Job {
        owner: String,
        id: String,
        /// Answer once the job has finished, or after this long.
        wait: Duration,
        reply: Answer<JobInfo>,
    },
    Jobs {
        owner: String,
        reply: Answer<Vec<JobInfo>>,
    },
    Cancel {
        owner: String,
        id: String,
        reply: Answer<JobInfo>,
    },
    /// Cancels and forgets every job of `owner` (an account being deleted); its models go with its
    /// storage namespace.
    Purge { owner: String, reply: Answer<()> },
}

impl runtime::bus::Operation for Request {
    fn operation(&self) -> &'static str {
        match self {
            Request::Upload { .. } => "upload",
            Request::Models { .. } => "models",
            Request::Model { .. } => "model",
            Request::Delete { .. } => "delete",
            Request::Predict { .. } => "predict",
            Request::Train { .. } => "train",
            Request::Job { .. } => "job",
            Request::Jobs { .. } => "jobs",
            Request::Cancel { .. } => "cancel",
            Request::Purge { .. } => "purge",
        }
    }
}

pub type Handle = runtime::Handle<Request>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use runtime::{CallError, Classify, ErrorKind};

    use super::{Error, StorageFailure};

    /// The kind and the stable code of each variant, as the API answers them (docs/api.md).
    #[test]
    fn every_error_has_its_kind_and_code() {
        let s = || "x".to_owned();
        let table = [
            (Error::BadInput(s()), ErrorKind::Invalid, "ai.bad_input"),
            (
                Error::TooLarge {
                    what: s(),
                    size: 2,
                    limit: 1,
                    service: "ai",
                    setting: "max_model_bytes",
                },
                ErrorKind::TooLarge,
                "ai.too_large",
            ),
            (
                Error::NotFound(s()),
                ErrorKind::NotFound,
                "ai.model_not_found",
            ),
            (
                Error::JobNotFound(s()),
                ErrorKind::NotFound,
                "ai.job_not_found",
            ),
            (
                Error::InvalidModel(s()),
                ErrorKind::Unprocessable,
                "ai.invalid_model",
            ),
            (Error::Shape(s()), ErrorKind::Unprocessable, "ai.shape"),
            (
                Error::Inference(s()),
                ErrorKind::Unprocessable,
                "ai.inference",
            ),
            (Error::Cancelled, ErrorKind::Conflict, "ai.cancelled"),
            (
                Error::Storage(StorageFailure::NoAnswer(CallError::Interrupted {
                    service: storage::NAME,
                })),
                ErrorKind::Unavailable {
                    retry_after: Duration::from_secs(1),
                },
                "ai.storage",
            ),
            // An open circuit to storage says when to retry, and the caller is told that.
            (
                Error::Storage(StorageFailure::NoAnswer(CallError::CircuitOpen {
                    service: storage::NAME,
                    retry_after: Duration::from_secs(5),
                })),
                ErrorKind::Unavailable {
                    retry_after: Duration::from_secs(5),
                },
                "ai.storage",
            ),
            (
                Error::Storage(StorageFailure::Failed(storage::Error::CryptoUnavailable(
                    CallError::Interrupted {
                        service: crypto::NAME,
                    },
                ))),
                ErrorKind::Unavailable {
                    retry_after: Duration::from_secs(1),
                },
                "ai.storage",
            ),
            (Error::Integrity(s()), ErrorKind::Integrity, "ai.integrity"),
            (Error::Internal(s()), ErrorKind::Internal, "ai.internal"),
        ];
        for (error, kind, code) in table {
            assert_eq!((error.kind(), error.code()), (kind, code), "{error:?}");
        }
    }
}
