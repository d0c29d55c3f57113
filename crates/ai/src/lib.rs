//! The ai service: ONNX inference with tract (a pure-Rust engine) and training of small models
//! (linear and logistic regression, k-means). Models are kept in the storage service under their
//! owner's account, so they are sealed to the enclave, rollback-evident, and deleted with the
//! account. Loaded models are cached within the service's memory budget.
//!
//! Inference and training run on the service's own bounded set of blocking threads, as many as its
//! spec's `resources.cpu_cores` (counted in the enclave's thread budget); training runs as a job
//! whose work is bounded at submit, that can be cancelled at any row of any iteration, and an
//! account has a bounded number of them queued or running.

mod cache;
mod inline;
mod onnx;
mod service;
mod store;
pub mod train;

use std::time::Duration;

use runtime::{Reply, ServiceName};

pub use crate::inline::Inline;
pub use crate::onnx::{Loaded, load as load_model};
pub use crate::service::{
    Ai, CACHE_BYTES, MAX_ACTIVE_JOBS_PER_ACCOUNT, MAX_DATASET_ROWS, MAX_FEATURES,
    MAX_FINISHED_JOBS, MAX_INPUT_ELEMENTS, MAX_MODEL_BYTES, MAX_TRAINING_WORK,
};
pub use crate::train::Trained;
pub use wire::ai::{
    DType, Dataset, JobInfo, JobList, JobState, Metrics, ModelInfo, ModelKind, ModelList, Outputs,
    Params, PredictInput, Prediction, Scalar, Tensor, TensorSpec, TrainRequest,
};

pub const NAME: ServiceName = ServiceName::from_static("ai");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A request that breaks the API document (a bound, an empty list).
    #[error("{0}")]
    BadInput(String),
    /// A dataset whose parts each have the documented shape but do not fit together or the kind
    /// of model: ragged rows, targets that do not match the rows, labels other than 0 and 1, too
    /// few rows for the features or for `k`.
    #[error("{0}")]
    Dataset(String),
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
    /// The account already has this many training jobs queued or running; retry when one ends.
    #[error(
        "{active} training jobs of this account are queued or running, the most services.ai.{MAX_ACTIVE_JOBS_PER_ACCOUNT} allows; retry when one has ended"
    )]
    TooManyJobs { active: usize },
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
            Error::Dataset(_) | Error::InvalidModel(_) | Error::Shape(_) | Error::Inference(_) => {
                ErrorKind::Unprocessable
            }
            Error::Cancelled => ErrorKind::Conflict,
            Error::TooManyJobs { .. } => ErrorKind::Limited {
                retry_after: RETRY_AFTER,
            },
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
            Error::Dataset(_) => "ai.bad_dataset",
            Error::TooLarge { .. } => "ai.too_large",
            Error::NotFound(_) => "ai.model_not_found",
            Error::JobNotFound(_) => "ai.job_not_found",
            Error::InvalidModel(_) => "ai.invalid_model",
            Error::Shape(_) => "ai.shape",
            Error::Inference(_) => "ai.inference",
            Error::Cancelled => "ai.cancelled",
            Error::TooManyJobs { .. } => "ai.too_many_jobs",
            Error::Storage(_) => "ai.storage",
            Error::Integrity(_) => "ai.integrity",
            Error::Internal(_) => "ai.internal",
        }
    }
}

/// When an account over its active training jobs may try again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

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
        reply: Answer<Prediction>,
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
            Request::Predict { .. } => inline::PREDICT,
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
                Error::Dataset(s()),
                ErrorKind::Unprocessable,
                "ai.bad_dataset",
            ),
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
                Error::TooManyJobs { active: 4 },
                ErrorKind::Limited {
                    retry_after: Duration::from_secs(1),
                },
                "ai.too_many_jobs",
            ),
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
