//! The ai service against models it did not choose: the model tests that ship inside the `onnx`
//! Python package (`onnx/backend/test/data`: simple, pytorch-converted, pytorch-operator, each a
//! model with recorded inputs and outputs), and scikit-learn models of every kind docs/ai.md
//! promises, converted by skl2onnx with its defaults and compared with scikit-learn and
//! onnxruntime. `scripts/test` installs the Python packages; a machine without python3 at all
//! skips these tests and says so.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ai::{DType, Error, PredictInput, Scalar, Tensor};
use common::{Fixture, start};
use serde_json::Value;
use tract_onnx::prelude::{DatumType, Tensor as TractTensor};

/// The models of the `onnx` package that cannot pass, each with the reason (docs/ai.md lists them).
const CANNOT_PASS: &[(&str, &str)] = &[
    (
        "test_gradient_of_add",
        "a training operator (ai.onnx.preview.training Gradient)",
    ),
    (
        "test_gradient_of_add_and_mul",
        "a training operator (ai.onnx.preview.training Gradient)",
    ),
    (
        "test_sequence_model1",
        "sequence-typed values (SequenceConstruct, SequenceAt...): tensors only",
    ),
    (
        "test_sequence_model2",
        "sequence-typed values (SequenceConstruct, SequenceAt...): tensors only",
    ),
    (
        "test_sequence_model3",
        "sequence-typed values (SequenceConstruct, SequenceAt...): tensors only",
    ),
    (
        "test_sequence_model4",
        "sequence-typed values (SequenceConstruct, SequenceAt...): tensors only",
    ),
    (
        "test_sequence_model5",
        "sequence-typed values (SequenceConstruct, SequenceAt...): tensors only",
    ),
    (
        "test_sequence_model6",
        "sequence-typed values (SequenceConstruct, SequenceAt...): tensors only",
    ),
    (
        "test_sequence_model7",
        "sequence-typed values (SequenceConstruct, SequenceAt...): tensors only",
    ),
    (
        "test_sequence_model8",
        "sequence-typed values (SequenceConstruct, SequenceAt...): tensors only",
    ),
];

fn python() -> Option<&'static str> {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "skipped: python3 is missing (scripts/test installs the packages these tests need)"
        );
    }
    ok.then_some("python3")
}

fn python_output(python: &str, args: &[&str]) -> String {
    let out = Command::new(python)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 {args:?} failed (scripts/test installs onnx, onnxruntime, scikit-learn, skl2onnx \
         and numpy):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A recorded tensor (`.pb`) as the wire carries it.
fn wire_tensor(t: &TractTensor) -> Tensor {
    fn each<T: tract_onnx::prelude::Datum + Copy>(
        t: &TractTensor,
        f: impl Fn(T) -> Scalar,
    ) -> Vec<Scalar> {
        t.to_plain_array_view::<T>()
            .expect("plain")
            .iter()
            .map(|v| f(*v))
            .collect()
    }
    let (dtype, data) = match t.datum_type() {
        DatumType::F32 => (DType::F32, each::<f32>(t, |v| Scalar::Float(v.into()))),
        DatumType::F64 => (DType::F64, each::<f64>(t, Scalar::Float)),
        DatumType::I64 => (DType::I64, each::<i64>(t, Scalar::Int)),
        DatumType::I32 => (DType::I32, each::<i32>(t, |v| Scalar::Int(v.into()))),
        DatumType::I8 => (DType::I8, each::<i8>(t, |v| Scalar::Int(v.into()))),
        DatumType::U8 => (DType::U8, each::<u8>(t, |v| Scalar::Int(v.into()))),
        DatumType::Bool => (DType::Bool, each::<bool>(t, Scalar::Bool)),
        DatumType::String => (
            DType::String,
            t.to_plain_array_view::<String>()
                .expect("plain")
                .iter()
                .map(|s| Scalar::Text(s.clone()))
                .collect(),
        ),
        other => panic!("a recorded tensor of type {other:?}"),
    };
    Tensor::new(dtype, t.shape().to_vec(), data)
}

fn read_pb(path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let proto = tract_onnx::tensor::proto_from_reader(&bytes[..])
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let tensor = tract_onnx::tensor::load_tensor(
        &tract_onnx::data_resolver::FopenDataResolver,
        &proto,
        None,
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(wire_tensor(&tensor))
}

/// Whether `got` is `expected` within rtol 1e-3 and atol 1e-5 (NaN equal to NaN), integers and
/// booleans exactly; else why not.
fn compare(name: &str, got: &Value, expected: &Tensor) -> Result<(), String> {
    let got: Tensor = serde_json::from_value(got.clone()).map_err(|e| format!("{name}: {e}"))?;
    if got.shape != expected.shape {
        return Err(format!(
            "{name}: shape {:?}, expected {:?}",
            got.shape, expected.shape
        ));
    }
    for (i, (a, b)) in got.data.iter().zip(&expected.data).enumerate() {
        let same = match (a.as_f64(), b.as_f64()) {
            _ if a == b => true,
            (Some(x), Some(y)) if x.is_nan() && y.is_nan() => true,
            (Some(x), Some(y)) => (x - y).abs() <= 1e-5 + 1e-3 * y.abs(),
            _ => false,
        };
        if !same {
            return Err(format!("{name}[{i}] is {a:?}, expected {b:?}"));
        }
    }
    Ok(())
}

/// Runs one of the `onnx` package's model tests through the service.
async fn run_model_test(f: &Fixture, dir: &Path) -> Result<(), String> {
    let bytes = std::fs::read(dir.join("model.onnx")).map_err(|e| e.to_string())?;
    let info = f.upload("alice", bytes).await.map_err(describe)?;
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    sets.sort();
    for set in sets {
        let mut inputs = BTreeMap::new();
        for (i, spec) in info.inputs.iter().enumerate() {
            let path = set.join(format!("input_{i}.pb"));
            inputs.insert(spec.name.clone(), read_pb(&path)?);
        }
        let answer = f
            .predict("alice", &info.id, PredictInput::Tensors { inputs })
            .await
            .map_err(describe)?;
        for (i, spec) in info.outputs.iter().enumerate() {
            let expected = read_pb(&set.join(format!("output_{i}.pb")))?;
            compare(&spec.name, &answer["outputs"][&spec.name], &expected)?;
        }
    }
    Ok(())
}

fn describe(e: Error) -> String {
    use runtime::Classify;
    format!("{}: {e}", e.code())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_onnx_packages_model_tests_pass() {
    let Some(python) = python() else { return };
    let root = python_output(
        python,
        &[
            "-c",
            "import onnx, os; print(os.path.join(os.path.dirname(onnx.__file__), 'backend', 'test', 'data'))",
        ],
    );
    let root = PathBuf::from(root.trim());
    let f = start(|_| {}).await;
    let mut failed = BTreeMap::new();
    let mut total = 0;
    for kind in ["simple", "pytorch-converted", "pytorch-operator"] {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join(kind))
            .expect("the onnx package's model tests")
            .map(|e| e.expect("entry").path())
            .collect();
        dirs.sort();
        for dir in dirs {
            total += 1;
            let name = dir
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            if let Err(why) = run_model_test(&f, &dir).await {
                failed.insert(name, why);
            }
        }
    }
    for (name, why) in &failed {
        eprintln!("{name}: {why}");
    }
    eprintln!(
        "{} of {total} model tests pass through the service",
        total - failed.len()
    );
    let failed_names: Vec<&str> = failed.keys().map(String::as_str).collect();
    let known: Vec<&str> = CANNOT_PASS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        failed_names, known,
        "the models that fail are exactly those docs/ai.md lists"
    );
}

fn scalars(v: &Value) -> Vec<Scalar> {
    serde_json::from_value(v.clone()).expect("elements")
}

fn close_to(what: &str, got: &[Scalar], expected: &[Scalar], tolerance: f64) {
    assert_eq!(got.len(), expected.len(), "{what}: lengths");
    for (i, (a, b)) in got.iter().zip(expected).enumerate() {
        let (x, y) = (a.as_f64().expect("a number"), b.as_f64().expect("a number"));
        assert!(
            (x - y).abs() <= tolerance * (1.0 + y.abs()),
            "{what}[{i}]: {x} against {y}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scikit_learn_models_agree_with_scikit_learn_and_onnxruntime() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/sklearn_models.py");
    python_output(
        python,
        &[
            script.to_str().expect("path"),
            dir.path().to_str().expect("path"),
        ],
    );
    let f = start(|_| {}).await;
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("models")
        .filter_map(|e| {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json").map(str::to_owned)
        })
        .collect();
    names.sort();
    assert_eq!(names.len(), 16, "{names:?}");
    for name in names {
        let case: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join(format!("{name}.json"))).expect("case"),
        )
        .expect("case JSON");
        let model = std::fs::read(dir.path().join(format!("{name}.onnx"))).expect("model");
        let info = f
            .upload("alice", model)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let input = case["input"].as_str().expect("input");
        assert_eq!(info.inputs[0].name, input, "{name}");
        // skl2onnx writes the batch dimension anonymous: it is taken from the request.
        assert_eq!(info.inputs[0].shape, vec![None, Some(5)], "{name}");
        let shape: Vec<usize> = serde_json::from_value(case["shape"].clone()).expect("shape");
        let x = Tensor::new(DType::F32, shape, scalars(&case["x"]));
        let answer = f
            .predict(
                "alice",
                &info.id,
                PredictInput::Tensors {
                    inputs: BTreeMap::from([(input.to_owned(), x)]),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let outputs = &answer["outputs"];
        // Every output as onnxruntime gives it (a ZipMap's maps as their rows of probabilities).
        for (output, expected) in case["onnxruntime"].as_object().expect("outputs") {
            let expected: Tensor = serde_json::from_value(expected.clone()).expect("tensor");
            compare(output, &outputs[output], &expected)
                .unwrap_or_else(|e| panic!("{name} against onnxruntime: {e}"));
        }
        if case["kind"] == "regressor" {
            let got = scalars(&outputs["variable"]["data"]);
            close_to(&name, &got, &scalars(&case["sklearn"]["value"]), 1e-4);
            continue;
        }
        let (label, probabilities) = if name.ends_with("_nozipmap") {
            ("label", "probabilities")
        } else {
            ("output_label", "output_probability")
        };
        assert_eq!(outputs[label]["dtype"], "i64", "{name}");
        assert_eq!(
            scalars(&outputs[label]["data"]),
            scalars(&case["sklearn"]["label"]),
            "{name}: labels against scikit-learn"
        );
        let got = scalars(&outputs[probabilities]["data"]);
        close_to(&name, &got, &scalars(&case["sklearn_proba"]), 1e-4);
        if !name.ends_with("_nozipmap") {
            // A ZipMap's labels come with its probabilities, in its column order.
            let labels = scalars(&outputs[probabilities]["labels"]);
            let classes = outputs[probabilities]["shape"][1]
                .as_u64()
                .expect("classes");
            assert_eq!(
                labels,
                (0..classes as i64).map(Scalar::Int).collect::<Vec<_>>(),
                "{name}"
            );
        }
    }
}

/// tract's tree evaluator indexes its node table without a check: a tree ensemble whose branches
/// lead outside their tree, or back up it (a walk that never ends), is refused at upload, with
/// the reason, and the service stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_ensemble_that_branches_outside_its_tree_or_back_up_it_is_refused() {
    use prost::Message;
    let f = start(|_| {}).await;
    let original = std::fs::read(common::fixture("trees.onnx")).expect("fixture");
    for (child, expected) in [(1_000, "branches to node 1000"), (0, "branches to node 0")] {
        let mut model = tract_onnx::pb::ModelProto::decode(&original[..]).expect("an ONNX model");
        let graph = model.graph.as_mut().expect("a graph");
        let node = graph
            .node
            .iter_mut()
            .find(|n| n.op_type == "TreeEnsembleRegressor")
            .expect("the ensemble");
        let attr = node
            .attribute
            .iter_mut()
            .find(|a| a.name == "nodes_truenodeids")
            .expect("branches");
        attr.ints[0] = child;
        match f.upload("alice", model.encode_to_vec()).await {
            Err(Error::InvalidModel(m)) => assert!(m.contains(expected), "{m}"),
            other => panic!("expected a refusal naming {expected:?}, got {other:?}"),
        }
    }
    f.upload("alice", original)
        .await
        .expect("the fixture itself loads");
}

/// A model `Y = Expand(X, shape)`, X f32 `[1, 3, 1]` and `shape` an i64 input of 2 values.
fn expand_model() -> Vec<u8> {
    use prost::Message;
    use tract_onnx::pb::{
        GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto, TypeProto,
        ValueInfoProto, tensor_shape_proto, type_proto,
    };
    let value = |name: &str, elem_type: i32, dims: &[i64]| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(*d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(GraphProto {
            name: "expand".into(),
            node: vec![NodeProto {
                name: "expand".into(),
                op_type: "Expand".into(),
                input: vec!["X".into(), "shape".into()],
                output: vec!["Y".into()],
                ..Default::default()
            }],
            // 1: FLOAT, 7: INT64.
            input: vec![value("X", 1, &[1, 3, 1]), value("shape", 7, &[2])],
            output: vec![ValueInfoProto {
                name: "Y".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}

/// An `Expand` to a shape the request gives runs, and cannot be made to allocate more than its
/// bound: a request for 18 Mi elements is an error for that request only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expand_to_a_shape_from_the_request_runs_within_its_bound() {
    let f = start(|_| {}).await;
    let info = f.upload("alice", expand_model()).await.expect("uploaded");
    let input = |shape: [i64; 2]| PredictInput::Tensors {
        inputs: BTreeMap::from([
            ("X".to_owned(), Tensor::f32(vec![1, 3, 1], [1.0, 2.0, 3.0])),
            (
                "shape".to_owned(),
                Tensor::new(DType::I64, vec![2], shape.map(Scalar::Int).to_vec()),
            ),
        ]),
    };
    let answer = f
        .predict("alice", &info.id, input([3, 2]))
        .await
        .expect("expanded");
    let y: Tensor = serde_json::from_value(answer["outputs"]["Y"].clone()).expect("Y");
    assert_eq!(y.shape, vec![1, 3, 2]);
    let floats: Vec<f64> = y.data.iter().filter_map(Scalar::as_f64).collect();
    assert_eq!(floats, vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0]);
    match f.predict("alice", &info.id, input([3, 6_000_000])).await {
        Err(Error::Inference(m)) => assert!(m.contains("more than"), "{m}"),
        other => panic!("expected the bound, got {:?}", other.map(|_| "an answer")),
    }
    // The service is still there.
    f.predict("alice", &info.id, input([3, 2]))
        .await
        .expect("expanded again");
}

/// An anonymous batch dimension stays a dimension of the request: shapes PyTorch exports compute
/// from it (`x.view(x.size(0), -1)`, `range(x.size(0))`) follow each request's batch, with the
/// model typed once at upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shapes_derived_from_an_anonymous_batch_follow_each_request() {
    let f = start(|_| {}).await;
    let info = f
        .upload(
            "alice",
            std::fs::read(common::fixture("batch.onnx")).expect("fixture"),
        )
        .await
        .expect("uploaded");
    assert_eq!(info.inputs[0].shape, vec![None, Some(2), Some(3)]);
    for batch in [1, 4, 7] {
        let x: Vec<f64> = (0..batch * 6).map(|v| v as f64).collect();
        let answer = f
            .predict(
                "alice",
                &info.id,
                common::tensors("x", vec![batch, 2, 3], x.clone()),
            )
            .await
            .expect("predicted");
        let flat: Tensor = serde_json::from_value(answer["outputs"]["flat"].clone()).expect("flat");
        assert_eq!(flat.shape, vec![batch, 6]);
        assert_eq!(
            flat.data
                .iter()
                .filter_map(Scalar::as_f64)
                .collect::<Vec<_>>(),
            x
        );
        let rows: Tensor = serde_json::from_value(answer["outputs"]["rows"].clone()).expect("rows");
        assert_eq!(rows.dtype, DType::I64);
        assert_eq!(
            rows.data,
            (0..batch as i64).map(Scalar::Int).collect::<Vec<_>>()
        );
    }
}
