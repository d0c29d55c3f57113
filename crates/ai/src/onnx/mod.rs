//! ONNX models through tract, a pure-Rust engine: load (and so validate) a model, describe its
//! inputs and outputs, and run it on inputs whose names, shapes and element types are checked
//! first.
//!
//! Models come as exporters write them: a dimension may be a size, a name (`N`) or anonymous
//! (skl2onnx's batch dimension), and each anonymous dimension is given a name before tract types
//! the model, so it is taken from the inputs at predict time. Inputs and outputs keep the names
//! the model declares, whatever tract's optimizer does to its nodes.
//!
//! tract panics on some malformed files; every call into it is behind `catch_unwind`, so a hostile
//! model is an error, never a crashed service.

mod ml;
mod ops;
mod tensor;

use std::collections::{BTreeMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;
use tract_onnx::pb::type_proto::Value as Type;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::InferenceModelExt;
use wire::ai::{Scalar, Tensor as WireTensor, TensorSpec};

use crate::Error;

/// A loaded, optimized, runnable model.
pub struct Loaded {
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

fn shape_of(fact: &TypedFact) -> Vec<Option<u64>> {
    fact.shape
        .iter()
        .map(|d| d.to_i64().ok().and_then(|v| u64::try_from(v).ok()))
        .collect()
}

/// tract's ONNX framework with the service's own operators (`ml.rs`, `ops.rs`).
fn framework() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    ml::register(&mut onnx.op_register);
    ops::register(&mut onnx.op_register);
    onnx
}

/// Parses, types and optimizes `bytes`. Errors say what is wrong with the model; a panic anywhere
/// in tract on the way is one of them.
pub fn load(bytes: &[u8]) -> Result<Loaded, Error> {
    catch_unwind(AssertUnwindSafe(|| load_unguarded(bytes))).unwrap_or_else(|_| {
        Err(Error::InvalidModel(
            "the model broke the ONNX engine (it is malformed or uses something unsupported)"
                .into(),
        ))
    })
}

/// Gives each anonymous dimension of the graph's inputs (no size and no name, a negative size, or
/// `?`) a name of its own, shared by the inputs' dimensions at the same position (the batch
/// dimension of two inputs is one batch), so tract can type the model and read the sizes from
/// the inputs at predict time.
fn name_anonymous_dims(graph: &mut tract_onnx::pb::GraphProto, initializers: &HashSet<String>) {
    for input in &mut graph.input {
        if initializers.contains(&input.name) {
            continue;
        }
        let Some(Type::TensorType(t)) = input.r#type.as_mut().and_then(|t| t.value.as_mut()) else {
            continue;
        };
        let Some(shape) = t.shape.as_mut() else {
            continue;
        };
        for (i, dim) in shape.dim.iter_mut().enumerate() {
            let anonymous = match &dim.value {
                None => true,
                Some(Dim::DimValue(v)) => *v < 0,
                Some(Dim::DimParam(p)) => p.is_empty() || p == "?",
            };
            if anonymous {
                dim.value = Some(Dim::DimParam(format!("unk__{i}")));
            }
        }
    }
}

fn load_unguarded(bytes: &[u8]) -> Result<Loaded, Error> {
    let onnx = framework();
    let mut proto = guarded("not a valid ONNX model", || {
        onnx.proto_model_for_read(&mut &bytes[..])
    })?;
    let graph = proto
        .graph
        .as_mut()
        .ok_or_else(|| Error::InvalidModel("not a valid ONNX model: it has no graph".into()))?;
    let initializers: HashSet<String> = graph.initializer.iter().map(|i| i.name.clone()).collect();
    let input_names: Vec<String> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(&i.name))
        .map(|i| i.name.clone())
        .collect();
    name_anonymous_dims(graph, &initializers);
    let outputs: Vec<(String, Option<Vec<Scalar>>)> = graph
        .output
        .iter()
        .map(|o| {
            let zip_map = graph
                .node
                .iter()
                .find(|n| n.op_type == "ZipMap" && n.output.first() == Some(&o.name));
            (o.name.clone(), zip_map.and_then(|n| ml::labels(n).ok()))
        })
        .collect();
    let model = guarded("the model cannot be read", || {
        onnx.model_for_proto_model(&proto)
    })?;
    let sources = model
        .input_outlets()
        .map_err(|e| Error::InvalidModel(e.to_string()))?;
    if let Some(extra) = sources.get(input_names.len()) {
        return Err(Error::InvalidModel(format!(
            "a node reads {:?}, which is neither a graph input, an initializer nor a node's output: \
             declare it as an input of the graph, or fix the node's input name",
            model.node(extra.node).name
        )));
    }
    let typed = match model.clone().into_typed() {
        Ok(typed) => typed,
        Err(e) => return Err(Error::InvalidModel(explain(model, &input_names, &e))),
    };
    let inputs = input_names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let fact = typed
                .input_fact(i)
                .map_err(|e| Error::InvalidModel(e.to_string()))?;
            let dtype = tensor::input_dtype(fact.datum_type).ok_or_else(|| {
                Error::InvalidModel(format!(
                    "input {name:?} is of type {:?}; the service takes f32, f64, i64, i32, i8, u8 \
                     and bool inputs: convert the model's input to one of them",
                    fact.datum_type
                ))
            })?;
            Ok(TensorSpec {
                name: name.clone(),
                dtype,
                shape: shape_of(fact),
                labels: None,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let outputs = outputs
        .into_iter()
        .enumerate()
        .map(|(i, (name, labels))| {
            let fact = typed
                .output_fact(i)
                .map_err(|e| Error::InvalidModel(e.to_string()))?;
            let dtype = tensor::output_dtype(fact.datum_type).ok_or_else(|| {
                Error::InvalidModel(format!(
                    "output {name:?} is of type {:?}, which the service cannot answer",
                    fact.datum_type
                ))
            })?;
            Ok(TensorSpec {
                name,
                dtype,
                shape: shape_of(fact),
                labels,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let plan = guarded("the model cannot be optimized", || {
        typed.into_optimized()?.into_runnable()
    })?;
    Ok(Loaded {
        plan,
        inputs,
        outputs,
    })
}

/// Why `model` could not be typed, for its author: the input without a usable type or shape, or
/// the first node (in evaluation order) whose outputs could not be derived, its operator and its
/// inputs as far as they are known, and what to change.
fn explain(mut model: InferenceModel, input_names: &[String], error: &TractError) -> String {
    let cause = error.root_cause().to_string();
    // Obstinate: type as much of the graph as can be, past the node that failed.
    let _ = model.analyse(true);
    let missing = model.missing_type_shape().unwrap_or_default();
    let inputs = model
        .input_outlets()
        .map(<[OutletId]>::to_vec)
        .unwrap_or_default();
    for (outlet, name) in inputs.iter().zip(input_names) {
        if missing.contains(outlet) {
            let fact = model
                .outlet_fact(*outlet)
                .map(|f| f.format_dt_shape())
                .unwrap_or_default();
            return format!(
                "the model cannot be typed: input {name:?} has no complete type and shape ({fact}); \
                 give the input a shape in the model, each dimension a size or a name \
                 (for example \"N\" for the batch)"
            );
        }
    }
    let Some(outlet) = missing.iter().find(|o| !inputs.contains(o)) else {
        return format!("the model cannot be typed: {error:#}");
    };
    let node = model.node(outlet.node);
    let op = node.op.name();
    if let Some(missing_op) = op
        .strip_prefix("Unimplemented(")
        .and_then(|o| o.strip_suffix(')'))
    {
        let sequences = if missing_op.starts_with("Sequence") || missing_op.ends_with("ToSequence")
        {
            " (sequence-typed values are not supported: the service carries tensors)"
        } else {
            ""
        };
        return format!(
            "the model cannot be typed at node {:?}: it uses operator {missing_op}, which the ONNX \
             engine (tract 0.23) does not implement{sequences}. Export the model without it (another \
             opset, or the same computation in other operators)",
            node.name
        );
    }
    let label = |o: &OutletId| {
        model
            .outlet_label(*o)
            .map(str::to_owned)
            .unwrap_or_else(|| model.node(o.node).name.clone())
    };
    let described: Vec<String> = node
        .inputs
        .iter()
        .enumerate()
        .map(|(k, o)| {
            let fact = model
                .outlet_fact(*o)
                .map(|f| f.format_dt_shape())
                .unwrap_or_default();
            let known = if missing.contains(o) { "unknown: " } else { "" };
            format!("input {k} {:?} ({known}{fact})", label(o))
        })
        .collect();
    format!(
        "the model cannot be typed at node {:?} (operator {}): its output {:?} cannot be derived \
         from {}: {cause}. Give the model's inputs fixed sizes (or names) for their dimensions, or \
         export the model with a newer opset or with constant folding (onnx-simplifier) so this \
         operator's inputs are known",
        node.name,
        op,
        label(outlet),
        if described.is_empty() {
            "no inputs".to_owned()
        } else {
            described.join(", ")
        },
    )
}

impl Loaded {
    /// Checks `given` against the model's inputs and runs it. A panic anywhere in tract on the way
    /// is an error for this request only.
    pub(crate) fn run(
        &self,
        given: &BTreeMap<String, WireTensor>,
        max_elements: usize,
    ) -> Result<BTreeMap<String, WireTensor>, Error> {
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
        given: &BTreeMap<String, WireTensor>,
        max_elements: usize,
    ) -> Result<BTreeMap<String, WireTensor>, Error> {
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
            tensors.push(check_input(input, t, max_elements)?.into_tvalue());
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
            let (dtype, data) = tensor::from_tract(&spec.name, &value)?;
            answer.insert(
                spec.name.clone(),
                WireTensor {
                    dtype,
                    shape: value.shape().to_vec(),
                    data,
                    labels: spec.labels.clone(),
                },
            );
        }
        Ok(answer)
    }
}

/// `t` as tract's tensor for `input`, once its type, shape and size fit.
fn check_input(input: &TensorSpec, t: &WireTensor, max_elements: usize) -> Result<Tensor, Error> {
    if t.labels.is_some() {
        return Err(Error::Shape(format!(
            "input {:?} has labels; labels are only in answers",
            input.name
        )));
    }
    if t.dtype != input.dtype {
        return Err(Error::Shape(format!(
            "input {:?} is {} in the model; the request gives {} (set \"dtype\": \"{}\")",
            input.name, input.dtype, t.dtype, input.dtype
        )));
    }
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
    tensor::to_tract(&input.name, input.dtype, &t.shape, &t.data)
}

fn describe(shape: &[Option<u64>]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map_or("N".to_owned(), |v| v.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}
