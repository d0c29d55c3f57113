//! ONNX models through tract, a pure-Rust engine: load (and so validate) a model, describe its
//! inputs and outputs, and run it on inputs whose names, shapes and types are checked first.
//!
//! tract panics on some malformed files; every call into it is behind `catch_unwind`, so a hostile
//! model is an error, never a crashed service.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::*;

use crate::Error;

/// One input or output of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TensorSpec {
    pub name: String,
    /// Element type, e.g. `f32`.
    pub dtype: String,
    /// Each dimension: a number, or null for a dimension given at run time (e.g. a batch size).
    pub shape: Vec<Option<u64>>,
}

/// A tensor in a request or an answer: its shape and its elements in row-major order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TensorData {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

/// A loaded, optimized, runnable model.
pub(crate) struct Loaded {
    plan: Arc<TypedRunnableModel>,
    pub(crate) inputs: Vec<TensorSpec>,
    pub(crate) outputs: Vec<TensorSpec>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

fn guarded<T>(what: &str, f: impl FnOnce() -> TractResult<T>) -> Result<T, Error> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::InvalidModel(format!("{what}: {e:#}"))),
        Err(_) => Err(Error::InvalidModel(format!(
            "{what}: the model broke the ONNX engine (it is malformed or uses something unsupported)"
        ))),
    }
}

fn spec(name: &str, fact: &TypedFact) -> TensorSpec {
    TensorSpec {
        name: name.to_owned(),
        dtype: format!("{:?}", fact.datum_type).to_lowercase(),
        shape: fact
            .shape
            .iter()
            .map(|d| d.to_i64().ok().and_then(|v| u64::try_from(v).ok()))
            .collect(),
    }
}

/// Parses, types and optimizes `bytes`. Errors say what is wrong with the model; a panic anywhere
/// in tract on the way is one of them.
pub(crate) fn load(bytes: &[u8]) -> Result<Loaded, Error> {
    catch_unwind(AssertUnwindSafe(|| load_unguarded(bytes))).unwrap_or_else(|_| {
        Err(Error::InvalidModel(
            "the model broke the ONNX engine (it is malformed or uses something unsupported)"
                .into(),
        ))
    })
}

fn load_unguarded(bytes: &[u8]) -> Result<Loaded, Error> {
    let model = guarded("not a valid ONNX model", || {
        tract_onnx::onnx().model_for_read(&mut &bytes[..])
    })?;
    let typed = guarded("the model cannot be typed", || model.into_typed())?;
    let inputs = typed
        .input_outlets()
        .map_err(|e| Error::InvalidModel(e.to_string()))?
        .iter()
        .enumerate()
        .map(|(i, outlet)| {
            let fact = typed
                .input_fact(i)
                .map_err(|e| Error::InvalidModel(e.to_string()))?;
            Ok(spec(&typed.node(outlet.node).name, fact))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let outputs = typed
        .output_outlets()
        .map_err(|e| Error::InvalidModel(e.to_string()))?
        .iter()
        .enumerate()
        .map(|(i, outlet)| {
            let fact = typed
                .output_fact(i)
                .map_err(|e| Error::InvalidModel(e.to_string()))?;
            let name = typed
                .outlet_label(*outlet)
                .map(str::to_owned)
                .unwrap_or_else(|| typed.node(outlet.node).name.clone());
            Ok(spec(&name, fact))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    for input in &inputs {
        if input.dtype != "f32" {
            return Err(Error::InvalidModel(format!(
                "input {:?} is {}; only f32 inputs are supported",
                input.name, input.dtype
            )));
        }
    }
    let plan = guarded("the model cannot be optimized", || {
        typed.into_optimized()?.into_runnable()
    })?;
    Ok(Loaded {
        plan,
        inputs,
        outputs,
    })
}

impl Loaded {
    /// Checks `given` against the model's inputs and runs it. A panic anywhere in tract on the way
    /// is an error for this request only.
    pub(crate) fn run(
        &self,
        given: &BTreeMap<String, TensorData>,
        max_elements: usize,
    ) -> Result<BTreeMap<String, TensorData>, Error> {
        catch_unwind(AssertUnwindSafe(|| self.run_unguarded(given, max_elements))).unwrap_or_else(
            |_| {
                Err(Error::Inference(
                    "the model broke the ONNX engine on this input".into(),
                ))
            },
        )
    }

    fn run_unguarded(
        &self,
        given: &BTreeMap<String, TensorData>,
        max_elements: usize,
    ) -> Result<BTreeMap<String, TensorData>, Error> {
        for name in given.keys() {
            if !self.inputs.iter().any(|i| &i.name == name) {
                let known: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
                return Err(Error::Shape(format!(
                    "the model has no input {name:?} (its inputs: {})",
                    known.join(", ")
                )));
            }
        }
        let mut tensors = TVec::new();
        for input in &self.inputs {
            let t = given
                .get(&input.name)
                .ok_or_else(|| Error::Shape(format!("input {:?} is missing", input.name)))?;
            if t.shape.len() != input.shape.len() {
                return Err(Error::Shape(format!(
                    "input {:?} has {} dimensions; the model takes {} ({})",
                    input.name,
                    t.shape.len(),
                    input.shape.len(),
                    describe(&input.shape)
                )));
            }
            for (i, (got, want)) in t.shape.iter().zip(&input.shape).enumerate() {
                match want {
                    Some(w) if *w != *got as u64 => {
                        return Err(Error::Shape(format!(
                            "input {:?} dimension {i} is {got}; the model takes {}",
                            input.name,
                            describe(&input.shape)
                        )));
                    }
                    None if *got == 0 => {
                        return Err(Error::Shape(format!(
                            "input {:?} dimension {i} is 0",
                            input.name
                        )));
                    }
                    _ => {}
                }
            }
            let elements = t
                .shape
                .iter()
                .try_fold(1usize, |acc, d| acc.checked_mul(*d))
                .filter(|n| *n <= max_elements)
                .ok_or_else(|| Error::TooLarge {
                    what: format!("the number of elements of input {:?}", input.name),
                    size: t
                        .shape
                        .iter()
                        .fold(1u64, |acc, d| acc.saturating_mul(*d as u64)),
                    limit: max_elements as u64,
                    service: "ai",
                    setting: crate::MAX_INPUT_ELEMENTS.name(),
                })?;
            if t.data.len() != elements {
                return Err(Error::Shape(format!(
                    "input {:?} has {} values for shape {:?} ({elements} values)",
                    input.name,
                    t.data.len(),
                    t.shape
                )));
            }
            if let Some(i) = t.data.iter().position(|v| v.abs() > f64::from(f32::MAX)) {
                return Err(Error::Shape(format!(
                    "input {:?} value {i} ({}) is outside the range of f32",
                    input.name, t.data[i]
                )));
            }
            let data: Vec<f32> = t.data.iter().map(|v| *v as f32).collect();
            let tensor = guarded("the input cannot be made", || {
                Ok(tract_ndarray::ArrayD::from_shape_vec(t.shape.clone(), data)?.into_tensor())
            })?;
            tensors.push(tensor.into_tvalue());
        }
        let outputs = match catch_unwind(AssertUnwindSafe(|| self.plan.run(tensors))) {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return Err(Error::Inference(format!("{e:#}"))),
            Err(_) => {
                return Err(Error::Inference(
                    "the model broke the ONNX engine on this input".into(),
                ));
            }
        };
        let mut answer = BTreeMap::new();
        for (spec, value) in self.outputs.iter().zip(outputs) {
            let tensor = value.into_tensor();
            let converted = tensor
                .cast_to::<f64>()
                .map_err(|e| Error::Inference(format!("output {:?}: {e}", spec.name)))?;
            let data = converted
                .to_plain_array_view::<f64>()
                .map_err(|e| Error::Inference(format!("output {:?}: {e}", spec.name)))?
                .iter()
                .copied()
                .collect();
            answer.insert(
                spec.name.clone(),
                TensorData {
                    shape: tensor.shape().to_vec(),
                    data,
                },
            );
        }
        Ok(answer)
    }
}

fn describe(shape: &[Option<u64>]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map_or("N".to_owned(), |v| v.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}
