//! The `ai.onnx.ml` operators scikit-learn exports need beyond what tract 0.23 registers:
//! `TreeEnsembleRegressor` (random forests, gradient boosting) and `ZipMap` (a classifier's
//! probabilities labelled by class), and a check of every tree ensemble's structure before tract's
//! evaluator (which indexes its node table unchecked) sees it.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core::ops::identity::Identity;
use tract_onnx_opl::ml::tree::{Aggregate, Cmp, TreeEnsemble, TreeEnsembleData};
use tract_onnx_opl::ml::tree_ensemble_classifier::TreeEnsembleClassifier as TreeScores;

type Builder = fn(&ParsingContext, &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

/// tract's own `TreeEnsembleClassifier` builder, called once the ensemble has passed [`check`].
static TRACT_CLASSIFIER: LazyLock<Option<Builder>> = LazyLock::new(|| {
    tract_onnx::onnx()
        .op_register
        .0
        .get("TreeEnsembleClassifier")
        .copied()
});

/// Registers the operators above (over tract's `TreeEnsembleClassifier`, which it then calls).
pub(crate) fn register(register: &mut OnnxOpRegister) {
    register.insert("TreeEnsembleRegressor", tree_regressor);
    register.insert("TreeEnsembleClassifier", tree_classifier);
    register.insert("ZipMap", zip_map);
}

fn tree_classifier(
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let n_classes = labels(node)?.len();
    check(node, "class", n_classes)?;
    let Some(build) = *TRACT_CLASSIFIER else {
        bail!("this build of tract has no TreeEnsembleClassifier");
    };
    match binary_logistic(node, n_classes)? {
        Some(two_sided) => build(ctx, &two_sided),
        None => build(ctx, node),
    }
}

/// A binary classifier written with one score (every leaf weight for class 0, at most one base
/// value, a LOGISTIC post-transform: gradient boosting's export), rewritten with two: class 1
/// scores `s`, class 0 scores `-s`, so the logistic gives `[1 - p, p]` as onnxruntime answers and
/// the label is the larger one. `None` for every other classifier.
fn binary_logistic(node: &NodeProto, n_classes: usize) -> TractResult<Option<NodeProto>> {
    let ids = node.get_attr_vec::<i64>("class_ids")?;
    let base = node
        .get_attr_opt_vec::<f32>("base_values")?
        .unwrap_or_default();
    let logistic = node.get_attr_opt::<&str>("post_transform")? == Some("LOGISTIC");
    if n_classes != 2 || !logistic || base.len() > 1 || ids.iter().any(|c| *c != 0) {
        return Ok(None);
    }
    let trees = node.get_attr_vec::<i64>("class_treeids")?;
    let nodes = node.get_attr_vec::<i64>("class_nodeids")?;
    let weights = node.get_attr_vec::<f32>("class_weights")?;
    let b = base.first().copied().unwrap_or(0.0);
    let mut out = node.clone();
    for attr in &mut out.attribute {
        match attr.name.as_str() {
            "class_treeids" => attr.ints = trees.iter().flat_map(|t| [*t, *t]).collect(),
            "class_nodeids" => attr.ints = nodes.iter().flat_map(|n| [*n, *n]).collect(),
            "class_ids" => attr.ints = ids.iter().flat_map(|_| [0, 1]).collect(),
            "class_weights" => attr.floats = weights.iter().flat_map(|w| [-w, *w]).collect(),
            "base_values" => attr.floats = vec![-b, b],
            _ => {}
        }
    }
    Ok(Some(out))
}

/// A classifier's class labels (`classlabels_int64s` or `classlabels_strings`), as they appear
/// in an answer.
pub(crate) fn labels(node: &NodeProto) -> TractResult<Vec<wire::ai::Scalar>> {
    let ints = node.get_attr_opt_slice::<i64>("classlabels_int64s")?;
    let strs = node.get_attr_opt_tvec::<&str>("classlabels_strings")?;
    Ok(match (ints, strs) {
        (Some(n), None) => n.iter().map(|v| wire::ai::Scalar::Int(*v)).collect(),
        (None, Some(s)) => s
            .iter()
            .map(|v| wire::ai::Scalar::Text((*v).to_owned()))
            .collect(),
        _ => bail!("exactly one of classlabels_int64s and classlabels_strings must be set"),
    })
}

/// The structure of a tree ensemble, checked so that evaluating it can neither index outside its
/// tables nor loop: trees numbered from 0 without a gap, each tree's nodes numbered from 0
/// without a gap, each branch's children in its tree and numbered after it (so every walk ends at
/// a leaf), each leaf weight on a leaf of its tree and for an output that exists.
fn check(node: &NodeProto, leaf: &str, n_outputs: usize) -> TractResult<()> {
    let tree_ids = node.get_attr_vec::<i64>("nodes_treeids")?;
    let node_ids = node.get_attr_vec::<i64>("nodes_nodeids")?;
    let modes = node.get_attr_vec::<&str>("nodes_modes")?;
    let true_ids = node.get_attr_vec::<i64>("nodes_truenodeids")?;
    let false_ids = node.get_attr_vec::<i64>("nodes_falsenodeids")?;
    let n = tree_ids.len();
    ensure!(n > 0, "the ensemble has no nodes");
    for (attr, len) in [
        ("nodes_nodeids", node_ids.len()),
        ("nodes_modes", modes.len()),
        ("nodes_truenodeids", true_ids.len()),
        ("nodes_falsenodeids", false_ids.len()),
    ] {
        ensure!(len == n, "{attr} has {len} entries; nodes_treeids has {n}");
    }
    let mut trees: BTreeMap<i64, BTreeMap<i64, usize>> = BTreeMap::new();
    for i in 0..n {
        let previous = trees.entry(tree_ids[i]).or_default().insert(node_ids[i], i);
        ensure!(
            previous.is_none(),
            "node {} of tree {} is given twice",
            node_ids[i],
            tree_ids[i]
        );
    }
    ensure!(
        trees.keys().copied().eq(0..trees.len() as i64),
        "tree ids must be 0, 1, 2... without a gap"
    );
    for (tree, nodes) in &trees {
        let count = nodes.len() as i64;
        ensure!(
            nodes.keys().copied().eq(0..count),
            "the node ids of tree {tree} must be 0, 1, 2... without a gap"
        );
        for (id, &i) in nodes {
            if modes[i] == "LEAF" {
                continue;
            }
            for child in [true_ids[i], false_ids[i]] {
                ensure!(
                    *id < child && child < count,
                    "node {id} of tree {tree} branches to node {child}, which is not a later node of that tree"
                );
            }
        }
    }
    let prefixed = |name: &str| format!("{leaf}_{name}");
    let leaf_trees = node.get_attr_vec::<i64>(&prefixed("treeids"))?;
    let leaf_nodes = node.get_attr_vec::<i64>(&prefixed("nodeids"))?;
    let leaf_outputs = node.get_attr_vec::<i64>(&prefixed("ids"))?;
    let weights = node.get_attr_vec::<f32>(&prefixed("weights"))?;
    let m = leaf_trees.len();
    ensure!(m > 0, "the ensemble has no leaf weights");
    for (attr, len) in [
        (prefixed("nodeids"), leaf_nodes.len()),
        (prefixed("ids"), leaf_outputs.len()),
        (prefixed("weights"), weights.len()),
    ] {
        ensure!(len == m, "{attr} has {len} entries; {leaf}_treeids has {m}");
    }
    for j in 0..m {
        let at = trees
            .get(&leaf_trees[j])
            .and_then(|t| t.get(&leaf_nodes[j]));
        ensure!(
            at.is_some_and(|&i| modes[i] == "LEAF"),
            "leaf weight {j} is on node {} of tree {}, which is not a leaf",
            leaf_nodes[j],
            leaf_trees[j]
        );
        ensure!(
            (0..n_outputs as i64).contains(&leaf_outputs[j]),
            "leaf weight {j} is for output {} of {n_outputs}",
            leaf_outputs[j]
        );
    }
    Ok(())
}

fn mode(s: &str) -> TractResult<Option<Cmp>> {
    Ok(Some(match s {
        "BRANCH_LEQ" => Cmp::LessEqual,
        "BRANCH_LT" => Cmp::Less,
        "BRANCH_GTE" => Cmp::GreaterEqual,
        "BRANCH_GT" => Cmp::Greater,
        "BRANCH_EQ" => Cmp::Equal,
        "BRANCH_NEQ" => Cmp::NotEqual,
        "LEAF" => return Ok(None),
        other => bail!("unknown node mode {other:?}"),
    }))
}

/// The ensemble in tract's table layout (see `tract_onnx_opl::ml::tree::TreeEnsembleData`), from
/// attributes [`check`] has accepted: rows in (tree, node) order, a tree's root its first row.
fn ensemble(node: &NodeProto, n_targets: usize, aggregate: Aggregate) -> TractResult<TreeEnsemble> {
    let tree_ids = node.get_attr_vec::<i64>("nodes_treeids")?;
    let node_ids = node.get_attr_vec::<i64>("nodes_nodeids")?;
    let features = node.get_attr_vec::<i64>("nodes_featureids")?;
    let values = node.get_attr_vec::<f32>("nodes_values")?;
    let true_ids = node.get_attr_vec::<i64>("nodes_truenodeids")?;
    let false_ids = node.get_attr_vec::<i64>("nodes_falsenodeids")?;
    let modes = node
        .get_attr_vec::<&str>("nodes_modes")?
        .iter()
        .map(|s| mode(s))
        .collect::<TractResult<Vec<_>>>()?;
    let n = tree_ids.len();
    ensure!(
        features.len() == n && values.len() == n,
        "nodes_featureids and nodes_values must have an entry per node"
    );
    ensure!(
        features
            .iter()
            .all(|f| (0..i64::from(u32::MAX)).contains(f)),
        "a feature id is negative or too large"
    );
    let nan_true = node
        .get_attr_opt_vec::<i64>("nodes_missing_value_tracks_true")?
        .unwrap_or_else(|| vec![0; n]);
    ensure!(
        nan_true.len() == n,
        "nodes_missing_value_tracks_true must have an entry per node"
    );
    let leaf_trees = node.get_attr_vec::<i64>("target_treeids")?;
    let leaf_nodes = node.get_attr_vec::<i64>("target_nodeids")?;
    let leaf_outputs = node.get_attr_vec::<i64>("target_ids")?;
    let weights = node.get_attr_vec::<f32>("target_weights")?;

    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (tree_ids[i], node_ids[i]));
    let mut by_leaf: BTreeMap<(i64, i64), Vec<usize>> = BTreeMap::new();
    for j in 0..leaf_trees.len() {
        by_leaf
            .entry((leaf_trees[j], leaf_nodes[j]))
            .or_default()
            .push(j);
    }
    let mut roots: Vec<u32> = Vec::new();
    let mut rows: Vec<u32> = Vec::with_capacity(n * 5);
    let mut leaves: Vec<u32> = Vec::new();
    let mut current = None;
    for i in order {
        if current != Some(tree_ids[i]) {
            current = Some(tree_ids[i]);
            roots.push((rows.len() / 5) as u32);
        }
        let root = *roots.last().expect("a root was just pushed");
        match modes[i] {
            Some(cmp) => rows.extend([
                features[i] as u32,
                true_ids[i] as u32 + root,
                false_ids[i] as u32 + root,
                values[i].to_bits(),
                (0x0100 * u32::from(nan_true[i] != 0)) | cmp as u32,
            ]),
            None => {
                let start = (leaves.len() / 2) as u32;
                for &j in by_leaf
                    .get(&(tree_ids[i], node_ids[i]))
                    .into_iter()
                    .flatten()
                {
                    leaves.extend([leaf_outputs[j] as u32, weights[j].to_bits()]);
                }
                rows.extend([start, (leaves.len() / 2) as u32, 0, 0, 0]);
            }
        }
    }
    let max_feature = features.iter().copied().max().unwrap_or(0) as usize;
    let data = TreeEnsembleData {
        trees: rctensor1(&roots),
        nodes: tensor1(&rows)
            .into_shape(&[rows.len() / 5, 5])?
            .into_arc_tensor(),
        leaves: tensor1(&leaves)
            .into_shape(&[leaves.len() / 2, 2])?
            .into_arc_tensor(),
    };
    TreeEnsemble::build(data, max_feature, n_targets, aggregate)
}

fn tree_regressor(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let n_targets: i64 = node.get_attr("n_targets")?;
    ensure!(
        (1..=1 << 16).contains(&n_targets),
        "n_targets is {n_targets}"
    );
    let n_targets = n_targets as usize;
    check(node, "target", n_targets)?;
    let aggregate = match node
        .get_attr_opt::<&str>("aggregate_function")?
        .unwrap_or("SUM")
    {
        "SUM" => Aggregate::Sum,
        "AVERAGE" => Aggregate::Avg,
        other => bail!("aggregate_function {other} is not supported (SUM and AVERAGE are)"),
    };
    match node
        .get_attr_opt::<&str>("post_transform")?
        .unwrap_or("NONE")
    {
        "NONE" => {}
        other => bail!("post_transform {other} is not supported for a regressor (NONE is)"),
    }
    let base = node.get_attr_opt_vec::<f32>("base_values")?;
    if let Some(base) = &base {
        ensure!(
            base.len() == n_targets,
            "base_values has {} values for {n_targets} targets",
            base.len()
        );
    }
    let base = match base {
        Some(b) => Some(tensor1(&b).into_shape(&[1, n_targets])?.into_arc_tensor()),
        None => None,
    };
    let ensemble = ensemble(node, n_targets, aggregate)?;
    Ok((expand(TreeRegressor { ensemble, base }), vec![]))
}

/// `TreeEnsembleRegressor`: the trees' targets summed (or averaged) by tract's evaluator, plus
/// `base_values`.
#[derive(Debug, Clone, Hash)]
struct TreeRegressor {
    ensemble: TreeEnsemble,
    /// `base_values` as a `[1, n_targets]` tensor.
    base: Option<Arc<Tensor>>,
}

impl Expansion for TreeRegressor {
    fn name(&self) -> StaticName {
        "TreeEnsembleRegressor".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].rank, 2)?;
        s.equals(&outputs[0].datum_type, DatumType::F32)?;
        s.equals(&outputs[0].rank, 2)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[0].shape[1], self.ensemble.n_classes().to_dim())?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let scores = model.wire_node(
            format!("{prefix}.trees"),
            TreeScores {
                ensemble: self.ensemble.clone(),
            },
            inputs,
        )?;
        let Some(base) = &self.base else {
            return Ok(scores);
        };
        let base = model.add_const(format!("{prefix}.base"), base.clone())?;
        model.wire_node(
            format!("{prefix}.base_values"),
            tract_onnx::tract_hir::tract_core::ops::math::add(),
            &[scores[0], base],
        )
    }
}

fn zip_map(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    labels(node)?;
    Ok((expand(ZipMap), vec![]))
}

/// `ZipMap`: ONNX makes a sequence of maps {label: probability} of a classifier's probabilities;
/// the service answers the probabilities as they are, a `[N, classes]` tensor, with the labels
/// beside them (see `crate::onnx::Loaded`'s output specs).
#[derive(Debug, Clone, Hash)]
struct ZipMap;

impl Expansion for ZipMap {
    fn name(&self) -> StaticName {
        "ZipMap".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].rank, 2)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, Identity, inputs)
    }
}
