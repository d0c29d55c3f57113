//! Default-domain operators where tract 0.23 falls short of what exporters write: opset-6 `PRelu`,
//! whose slope is per channel (axis 1), not broadcast from the last axis; `StringNormalizer`,
//! which tract does not have; and `Expand` to a shape given as an input, which tract can only do
//! when it knows the shape's values at load time.

use std::sync::LazyLock;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core;

/// How tract builds an operator from its ONNX node.
pub(crate) type Builder =
    fn(&ParsingContext, &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

/// tract's own `PRelu` builder, for opset 7 and later.
static TRACT_PRELU: LazyLock<Option<Builder>> =
    LazyLock::new(|| tract_onnx::onnx().op_register.0.get("PRelu").copied());

/// Registers the operators above (over tract's, which they call where tract is right).
pub(crate) fn register(register: &mut OnnxOpRegister) {
    register.insert("PRelu", prelu);
    register.insert("StringNormalizer", string_normalizer);
    register.insert("Expand", |_, _| Ok((expand(Expand), vec![])));
}

fn prelu(
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    if ctx.onnx_operator_set_version < 7 {
        return Ok((expand(ChannelPrelu), vec![]));
    }
    let Some(build) = *TRACT_PRELU else {
        bail!("this build of tract has no PRelu");
    };
    build(ctx, node)
}

/// Opset-6 `PRelu`: `x < 0 ? x × slope : x`, a one-dimensional slope applied along axis 1 (the
/// channels), as PyTorch's `nn.PReLU(num_parameters=C)` exported it.
#[derive(Debug, Clone, Hash)]
struct ChannelPrelu;

impl Expansion for ChannelPrelu {
    fn name(&self) -> StaticName {
        "PRelu".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, &outputs[0].datum_type)?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        name: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let a = inputs[0];
        let mut b = inputs[1];
        let rank = model.outlet_fact(a)?.rank();
        // A slope per channel: [C] becomes [C, 1, ...] so that it lines up with axis 1.
        if model.outlet_fact(b)?.rank() == 1 && rank > 2 {
            while model.outlet_fact(b)?.rank() < rank - 1 {
                let at = model.outlet_fact(b)?.rank();
                b = model.wire_node(format!("{name}.channel-axis-{at}"), AxisOp::Add(at), &[b])?[0];
            }
        }
        while model.outlet_fact(b)?.rank() < rank {
            b = model.wire_node(
                format!("{name}.add-axis-{}", model.outlet_fact(b)?.rank()),
                AxisOp::Add(0),
                &[b],
            )?[0];
        }
        let zero = tensor0(0.0)
            .cast_to_dt(model.outlet_fact(a)?.datum_type)?
            .into_owned()
            .broadcast_into_rank(rank)?;
        let ab = model.wire_node(
            format!("{name}.mul"),
            tract_onnx::tract_hir::ops::math::mul(),
            &[a, b],
        )?[0];
        let zero = model.add_const(format!("{name}.zero"), zero)?;
        let test = model.wire_node(
            format!("{name}.test"),
            tract_core::ops::binary::TypedBinOp(tract_core::ops::logic::comp_gt(), None),
            &[zero, a],
        )?;
        model.wire_node(
            format!("{name}.iff"),
            tract_core::ops::logic::Iff,
            &[test[0], ab, a],
        )
    }
}

fn string_normalizer(
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let case = match node
        .get_attr_opt::<&str>("case_change_action")?
        .unwrap_or("NONE")
    {
        "NONE" => Case::Keep,
        "LOWER" => Case::Lower,
        "UPPER" => Case::Upper,
        other => bail!("case_change_action {other:?} is not NONE, LOWER or UPPER"),
    };
    let case_sensitive = node.get_attr_opt::<i64>("is_case_sensitive")?.unwrap_or(0) != 0;
    let stopwords: Vec<String> = node
        .get_attr_opt_tvec::<&str>("stopwords")?
        .map(|words| {
            words
                .iter()
                .map(|w| {
                    if case_sensitive {
                        (*w).to_owned()
                    } else {
                        w.to_lowercase()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let count = ctx.template.symbols.new_with_prefix("words");
    Ok((
        expand(StringNormalizer(Normalize {
            case,
            case_sensitive,
            stopwords,
            count,
        })),
        vec![],
    ))
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

/// `StringNormalizer` (ONNX, text): the stop words taken out of a `[C]` or `[1, C]` string tensor
/// (compared as they are, or ignoring case), then each string's case changed; nothing left is
/// `[""]`. The number of strings kept depends on the values: a symbol of its own.
#[derive(Debug, Clone, Hash)]
struct StringNormalizer(Normalize);

impl Expansion for StringNormalizer {
    fn name(&self) -> StaticName {
        "StringNormalizer".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, DatumType::String)?;
        s.equals(&outputs[0].datum_type, DatumType::String)?;
        s.equals(&outputs[0].rank, &inputs[0].rank)?;
        Ok(())
    }

    fn wire(
        &self,
        name: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(name, self.0.clone(), inputs)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Normalize {
    case: Case,
    case_sensitive: bool,
    /// Lowercased unless `case_sensitive`.
    stopwords: Vec<String>,
    count: Symbol,
}

impl Op for Normalize {
    fn mints_runtime_symbols(&self) -> bool {
        true
    }

    fn name(&self) -> StaticName {
        "StringNormalizer".into()
    }

    op_as_typed_op!();
}

impl EvalOp for Normalize {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let rank = input.rank();
        ensure!(
            rank == 1 || (rank == 2 && input.shape()[0] == 1),
            "StringNormalizer takes [C] or [1, C] strings, not {:?}",
            input.shape()
        );
        let mut kept: Vec<String> = input
            .to_plain_array_view::<String>()?
            .iter()
            .filter(|w| {
                let key = if self.case_sensitive {
                    (*w).clone()
                } else {
                    w.to_lowercase()
                };
                !self.stopwords.contains(&key)
            })
            .map(|w| match self.case {
                Case::Keep => w.clone(),
                Case::Lower => w.to_lowercase(),
                Case::Upper => w.to_uppercase(),
            })
            .collect();
        if kept.is_empty() {
            kept.push(String::new());
        }
        let shape: Vec<usize> = if rank == 1 {
            vec![kept.len()]
        } else {
            vec![1, kept.len()]
        };
        let out = tract_onnx::tract_hir::tract_ndarray::ArrayD::from_shape_vec(shape, kept)?;
        Ok(tvec!(out.into_tensor().into_tvalue()))
    }
}

impl TypedOp for Normalize {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        let last = shape.len().checked_sub(1).context("a scalar input")?;
        shape[last] = self.count.to_dim();
        Ok(tvec!(String::fact(shape)))
    }

    as_op!();
}

/// The most elements an `Expand` to a shape known only at run time may make (16 Mi): the shape
/// comes from the request, and nothing else would bound the tensor it asks for.
const MAX_EXPANDED_ELEMENTS: usize = 16 << 20;

/// `Expand`: tract's, and where tract needs the target shape at load time but only its length is
/// known (a shape given as an input), a broadcast to the shape read at run time.
#[derive(Debug, Clone, Hash)]
struct Expand;

impl Expansion for Expand {
    fn name(&self) -> StaticName {
        "Expand".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        Expansion::rules(&TractExpand, s, inputs, outputs)?;
        s.given_2(
            &inputs[0].rank,
            &inputs[1].shape[0],
            move |s, rank, length| {
                if let Ok(length) = length.to_i64() {
                    s.equals(&outputs[0].rank, rank.max(length))?;
                }
                Ok(())
            },
        )?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        TractExpand.wire(prefix, model, inputs)
    }

    fn wire_with_inference_model_and_node(
        &self,
        prefix: &str,
        source: &InferenceModel,
        node: &InferenceNode,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let known = model.outlet_fact(inputs[1])?.konst.is_some()
            || source
                .outlet_fact(node.id.into())?
                .shape
                .concretize()
                .is_some();
        if known {
            return TractExpand
                .wire_with_inference_model_and_node(prefix, source, node, model, inputs);
        }
        let rank = model.outlet_fact(inputs[0])?.rank();
        let length = model
            .outlet_fact(inputs[1])?
            .shape
            .as_concrete()
            .map(|s| s[0]);
        let Some(length) = length else {
            bail!("Expand to a shape whose length is not known when the model is typed");
        };
        let dims = (0..rank.max(length))
            .map(|_| model.symbols.new_with_prefix("expand").to_dim())
            .collect();
        model.wire_node(prefix, RuntimeExpand { dims }, inputs)
    }
}

use tract_onnx::tract_hir::ops::array::MultiBroadcastTo as TractExpand;

/// A broadcast of its first input to the shape its second input holds, bidirectionally as ONNX's
/// `Expand` (a 1 in either takes the other's size), its output's dimensions symbols of their own.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct RuntimeExpand {
    dims: TVec<TDim>,
}

impl Op for RuntimeExpand {
    fn mints_runtime_symbols(&self) -> bool {
        true
    }

    fn name(&self) -> StaticName {
        "Expand".into()
    }

    op_as_typed_op!();
}

impl EvalOp for RuntimeExpand {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (input, shape) = args_2!(inputs);
        let shape = shape.cast_to::<i64>()?;
        let wanted = shape
            .to_plain_array_view::<i64>()?
            .iter()
            .map(|d| usize::try_from(*d).map_err(|_| format_err!("Expand to a negative size {d}")))
            .collect::<TractResult<TVec<usize>>>()?;
        let target = tract_core::broadcast::multi_broadcast(&[input.shape(), &wanted[..]])?;
        let elements = target
            .iter()
            .try_fold(1usize, |acc, d| acc.checked_mul(*d))
            .filter(|n| *n <= MAX_EXPANDED_ELEMENTS);
        ensure!(
            elements.is_some(),
            "Expand to {target:?} would make more than {MAX_EXPANDED_ELEMENTS} elements"
        );
        ensure!(
            target.len() == self.dims.len(),
            "Expand to rank {}, typed as rank {}",
            target.len(),
            self.dims.len()
        );
        Ok(tvec!(input.broadcast_to_shape(&target)?.into_tvalue()))
    }
}

impl TypedOp for RuntimeExpand {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(inputs[0].datum_type.fact(self.dims.clone())))
    }

    as_op!();
}
