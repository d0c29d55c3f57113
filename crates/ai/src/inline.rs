//! Predictions of small ONNX models already loaded, made on the caller's own task: the HTTP API
//! answers them without a bus hop. Everything else (a model not loaded yet, a large model or
//! input, a trained model, a stopped service) is left to the service.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use crate::cache::Cache;
use crate::{Error, Handle, PredictInput, Prediction, Tensor};

/// The operation a prediction is counted as, here as on the bus ([`crate::Request::Predict`]).
pub(crate) const PREDICT: &str = "predict";

/// Inference this small runs on the task that asks for it (a short burst, well under a
/// millisecond); anything larger goes to the service's blocking threads.
const INLINE_MODEL_BYTES: u64 = 4 << 20;
const INLINE_INPUT_ELEMENTS: usize = 16 << 10;

/// Whether running `inputs` through a model of `size` bytes is short enough to do in place.
pub(crate) fn is_small(size: u64, inputs: &BTreeMap<String, Tensor>) -> bool {
    let elements: usize = inputs.values().map(|t| t.data.len()).sum();
    size <= INLINE_MODEL_BYTES && elements <= INLINE_INPUT_ELEMENTS
}

/// The loaded models, shared by every incarnation and replica of the service and by [`Inline`]: a
/// model deleted or purged through any of them is gone for all of them at once.
#[derive(Default)]
pub(crate) struct Models {
    cache: Mutex<Cache>,
    /// `max_input_elements` as the service last read it from its spec; 0 until an incarnation
    /// has started, which keeps [`Inline`] from answering before the service has.
    max_input_elements: AtomicUsize,
}

impl std::fmt::Debug for Models {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Models").finish_non_exhaustive()
    }
}

impl Models {
    pub(crate) fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_max_input_elements(&self, limit: usize) {
        self.max_input_elements.store(limit, Ordering::Relaxed);
    }
}

/// Lent by the service's recipe ([`crate::Ai::inline`]): answers a prediction of a small ONNX
/// model the service has already loaded on the caller's own task, with the same checks and the
/// same limits as the service, and counts it in the service's figures. It answers only while the
/// service takes requests.
#[derive(Clone)]
pub struct Inline {
    models: Arc<Models>,
}

impl std::fmt::Debug for Inline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inline").finish_non_exhaustive()
    }
}

impl Inline {
    pub(crate) fn new(models: Arc<Models>) -> Self {
        Inline { models }
    }

    /// The prediction of model `id` of `owner` on `input`, if it can be made here: the service
    /// behind `service` is open, the model is an ONNX model it has loaded, and the run is small.
    /// `None` otherwise: send the request to the service ([`crate::Request::Predict`]).
    pub fn predict(
        &self,
        service: &Handle,
        owner: &str,
        id: &str,
        input: &PredictInput,
    ) -> Option<Result<Prediction, Error>> {
        let PredictInput::Tensors { inputs } = input else {
            return None;
        };
        let limit = self.models.max_input_elements.load(Ordering::Relaxed);
        if limit == 0 || !service.is_open() {
            return None;
        }
        let started = Instant::now();
        let (model, size) = self
            .models
            .cache()
            .get(&(owner.to_owned(), id.to_owned()))?;
        if !is_small(size, inputs) {
            return None;
        }
        let answer = model
            .run(inputs, limit)
            .map(|outputs| Prediction::Outputs { outputs });
        service.count_local(PREDICT, started);
        Some(answer)
    }
}
