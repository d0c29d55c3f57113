//! The ai service's requests and answers (`/v1/ai`): tensors with their element type, a model's
//! description, training jobs.
//!
//! A tensor's elements are JSON values read by its `dtype`: numbers for the float types (NaN and the
//! infinities as the strings `"NaN"`, `"Infinity"` and `"-Infinity"`, which JSON numbers cannot
//! spell), integers for the integer types (read exactly, never through a float), `true`/`false` for
//! `bool`, strings for `string` (text, class labels).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A tensor's element type.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 32-bit float (the default when a request names no `dtype`).
    #[default]
    F32,
    /// 64-bit float.
    F64,
    /// 64-bit signed integer (embedding indices, classifier labels, shapes).
    I64,
    /// 32-bit signed integer.
    I32,
    /// 8-bit signed integer.
    I8,
    /// 8-bit unsigned integer (images).
    U8,
    /// `true` or `false` (masks).
    Bool,
    /// Text: strings a model normalizes, class labels of a classifier trained on strings.
    String,
}

impl DType {
    /// Its name on the wire (`f32`, `i64`...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::Bool => "bool",
            DType::String => "string",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One element as JSON has it: an integer (kept exact), another number, a boolean, or a string
/// (`"NaN"`, `"Infinity"` and `"-Infinity"` read as those floats).
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// A JSON integer.
    Int(i64),
    /// A JSON number with a fraction or an exponent (or an integer beyond `i64`), or one of the
    /// strings spelling NaN and the infinities.
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
    /// Any other string.
    Text(String),
}

impl Serialize for Scalar {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Scalar::Int(v) => s.serialize_i64(*v),
            Scalar::Float(v) if v.is_nan() => s.serialize_str("NaN"),
            Scalar::Float(v) if v.is_infinite() => {
                s.serialize_str(if *v > 0.0 { "Infinity" } else { "-Infinity" })
            }
            Scalar::Float(v) => s.serialize_f64(*v),
            Scalar::Bool(v) => s.serialize_bool(*v),
            Scalar::Text(v) => s.serialize_str(v),
        }
    }
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number, a boolean or a string (\"NaN\", \"Infinity\", \"-Infinity\")")
    }

    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(i64::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(match v {
            "NaN" => Scalar::Float(f64::NAN),
            "Infinity" => Scalar::Float(f64::INFINITY),
            "-Infinity" => Scalar::Float(f64::NEG_INFINITY),
            other => Scalar::Text(other.to_owned()),
        })
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

impl Scalar {
    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Scalar::Int(v) => Some(*v as f64),
            Scalar::Float(v) => Some(*v),
            Scalar::Bool(_) | Scalar::Text(_) => None,
        }
    }
}

/// The schema of an array of [`Scalar`]s.
fn scalar_array() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::Array::new(scalar_schema())
}

/// The same, or `null`.
fn scalar_array_or_null() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            utoipa::openapi::schema::Type::Array,
            utoipa::openapi::schema::Type::Null,
        ]))
        .items(scalar_schema())
        .build()
}

/// One element: a number, a boolean or a string.
fn scalar_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            utoipa::openapi::schema::Type::Number,
            utoipa::openapi::schema::Type::Boolean,
            utoipa::openapi::schema::Type::String,
        ]))
        .build()
}

/// The elements of a tensor, read one by one (no intermediate JSON tree).
fn scalars<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Scalar>, D::Error> {
    struct Seq;
    impl<'de> Visitor<'de> for Seq {
        type Value = Vec<Scalar>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of elements")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Scalar>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(v) = seq.next_element::<Scalar>()? {
                out.push(v);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Seq)
}

/// A tensor in a request or an answer: its element type, its shape, and its elements in row-major
/// order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tensor {
    /// The element type (default `f32`).
    #[serde(default)]
    pub dtype: DType,
    /// Each dimension's size.
    #[serde(deserialize_with = "crate::integer::vec")]
    pub shape: Vec<usize>,
    /// The elements, row-major: numbers (`"NaN"`, `"Infinity"`, `"-Infinity"` as strings) for the
    /// float types, integers for the integer types, booleans for `bool`, strings for `string`.
    #[serde(deserialize_with = "scalars")]
    #[schema(schema_with = scalar_array)]
    pub data: Vec<Scalar>,
    /// Answers only: the class label of each position along the last axis, for a classifier's
    /// probabilities written by a ZipMap (scikit-learn's default export).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = scalar_array_or_null)]
    pub labels: Option<Vec<Scalar>>,
}

impl Tensor {
    /// A tensor of `dtype` without labels.
    pub fn new(dtype: DType, shape: Vec<usize>, data: Vec<Scalar>) -> Tensor {
        Tensor {
            dtype,
            shape,
            data,
            labels: None,
        }
    }

    /// An `f32` tensor of these values.
    pub fn f32(shape: Vec<usize>, data: impl IntoIterator<Item = f64>) -> Tensor {
        Tensor::new(
            DType::F32,
            shape,
            data.into_iter().map(Scalar::Float).collect(),
        )
    }
}

/// One input or output of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TensorSpec {
    /// Its name, as the model declares it.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Each dimension: a number, or null for a dimension given at run time (e.g. a batch size).
    pub shape: Vec<Option<u64>>,
    /// Outputs written by a ZipMap: the class label of each column of the probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Value>>)]
    pub labels: Option<Vec<Scalar>>,
}

/// What a model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// An uploaded ONNX model.
    Onnx,
    /// Trained here.
    LinearRegression,
    /// Trained here.
    LogisticRegression,
    /// Trained here.
    Kmeans,
}

/// Honest figures: on the held-out rows when there are any, on the training rows otherwise (named
/// so).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Metrics {
    /// Rows trained on.
    pub train_rows: usize,
    /// Rows held out.
    pub test_rows: usize,
    /// R² on the held-out rows (regressions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r2_test: Option<f64>,
    /// R² on the training rows, when none are held out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r2_train: Option<f64>,
    /// Accuracy on the held-out rows (classifiers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_test: Option<f64>,
    /// Accuracy on the training rows, when none are held out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_train: Option<f64>,
    /// Mean log loss on the held-out rows (logistic regression).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_loss_test: Option<f64>,
    /// Mean log loss on the training rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_loss_train: Option<f64>,
    /// Sum of squared distances to the nearest center, training rows (k-means).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inertia_train: Option<f64>,
    /// The same on the held-out rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inertia_test: Option<f64>,
    /// Iterations the solver took (Newton steps, or Lloyd iterations of the best start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<usize>,
}

/// A kept model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelInfo {
    /// Its id.
    pub id: String,
    /// The account it belongs to (not shown: it is always the caller's).
    #[serde(default, skip_serializing)]
    #[schema(ignore)]
    pub owner: String,
    /// The name given at upload or training.
    pub name: String,
    /// What it is.
    pub kind: ModelKind,
    /// The ONNX file's size, or the trained parameters' size.
    pub size_bytes: u64,
    /// SHA-256 (hex) of the ONNX file, or of the trained parameters' JSON.
    pub sha256: String,
    /// When it was kept (ms since the epoch).
    pub created_ms: u64,
    /// ONNX: the model's inputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<TensorSpec>,
    /// ONNX: the model's outputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<TensorSpec>,
    /// Trained models: the figures measured on the held-out rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
}

/// Inputs for a prediction: named tensors for an ONNX model, rows of features for a trained one.
/// Read through [`PredictBody`]: exactly one of the two, and nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged, try_from = "PredictBody")]
pub enum PredictInput {
    /// `{"inputs": {NAME: {"dtype", "shape", "data"}}}`.
    Tensors {
        /// Each input of the model by its name.
        inputs: BTreeMap<String, Tensor>,
    },
    /// `{"features": [[...]]}`.
    Features {
        /// One row of features per prediction.
        features: Vec<Vec<f64>>,
    },
}

/// A prediction's body as JSON has it, before it is one [`PredictInput`] or the other.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictBody {
    inputs: Option<BTreeMap<String, Tensor>>,
    features: Option<Vec<Vec<f64>>>,
}

impl TryFrom<PredictBody> for PredictInput {
    type Error = &'static str;

    fn try_from(b: PredictBody) -> Result<PredictInput, &'static str> {
        match (b.inputs, b.features) {
            (Some(inputs), None) => Ok(PredictInput::Tensors { inputs }),
            (None, Some(features)) => Ok(PredictInput::Features { features }),
            _ => Err("give either \"inputs\" (an ONNX model) or \"features\" (a trained one)"),
        }
    }
}

impl utoipa::PartialSchema for PredictInput {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        serde_json::from_value(serde_json::json!({
            "description": "Inputs for a prediction: named tensors for an ONNX model \
                (`{\"inputs\": {NAME: {\"dtype\", \"shape\", \"data\"}}}`), rows of features for a \
                trained one (`{\"features\": [[...]]}`).",
            "oneOf": [
                {
                    "type": "object",
                    "title": "Tensors",
                    "required": ["inputs"],
                    "properties": {"inputs": {
                        "type": "object",
                        "description": "Each input of the model by its name.",
                        "additionalProperties": {"$ref": "#/components/schemas/Tensor"},
                    }},
                    "additionalProperties": false,
                },
                {
                    "type": "object",
                    "title": "Features",
                    "required": ["features"],
                    "properties": {"features": {
                        "type": "array",
                        "description": "One row of features per prediction.",
                        "items": {"type": "array", "items": {"type": "number", "format": "double"}},
                    }},
                    "additionalProperties": false,
                },
            ],
        }))
        .expect("a schema")
    }
}

impl utoipa::ToSchema for PredictInput {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push(("Tensor".into(), <Tensor as utoipa::PartialSchema>::schema()));
        <Tensor as utoipa::ToSchema>::schemas(schemas);
    }
}

/// An ONNX model's answer: each output by its name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Outputs {
    /// Each output of the model by its name.
    pub outputs: BTreeMap<String, Tensor>,
}

/// A training job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = TrainingJobState)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Queued.
    Pending,
    /// Training.
    Running,
    /// Done; the model is kept.
    Completed,
    /// Ended with an error.
    Failed,
    /// Cancelled by its owner (or its account's deletion).
    Cancelled,
}

/// A training job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = TrainingJob)]
pub struct JobInfo {
    /// Its id.
    pub id: String,
    /// Where it is.
    pub state: JobState,
    /// When it was submitted (ms since the epoch).
    pub created_ms: u64,
    /// When it ended.
    pub finished_ms: Option<u64>,
    /// The trained model, once completed.
    pub model: Option<ModelInfo>,
    /// Why it failed.
    pub error: Option<String>,
}

impl runtime::jobs::Info for JobInfo {
    fn is_finished(&self) -> bool {
        self.finished_ms.is_some()
    }
}

/// `GET /v1/ai/models`: the caller's models, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelList {
    /// Each model.
    pub models: Vec<ModelInfo>,
}

/// `GET /v1/ai/jobs`: the caller's training jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = TrainingJobList)]
pub struct JobList {
    /// Each job.
    pub jobs: Vec<JobInfo>,
}

/// A model's answer to `POST /v1/ai/models/{id}/predict`: by the kind of model, one of these
/// shapes (told apart by their fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Prediction {
    /// An ONNX model: `{"outputs": {NAME: {"dtype", "shape", "data"}}}`.
    Outputs {
        /// Each output of the model by its name.
        outputs: BTreeMap<String, Tensor>,
    },
    /// A logistic regression: a label (0 or 1) per row, and the probability of label 1.
    Classes {
        /// The label of each row.
        predictions: Vec<u8>,
        /// The probability of label 1 for each row.
        probabilities: Vec<f64>,
    },
    /// A linear regression: the value for each row.
    Values {
        /// The value of each row.
        predictions: Vec<f64>,
    },
    /// k-means: the index of the nearest center for each row.
    Clusters {
        /// The cluster of each row.
        clusters: Vec<usize>,
    },
}

/// A dataset as submitted: rows of features, and targets for supervised kinds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    /// One row of features per example: at least one row of at least one feature, every row as
    /// long as the first.
    #[schema(schema_with = feature_rows)]
    pub features: Vec<Vec<f64>>,
    /// The target of each row (a value for linear regression, 0 or 1 for logistic regression);
    /// none for k-means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<f64>>,
}

/// What to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Params {
    /// Ordinary least squares with an intercept.
    LinearRegression,
    /// Binary labels 0 and 1. Minimizes `c × Σ log-loss + ½‖w‖²` (the intercept is not
    /// penalized), as scikit-learn's `LogisticRegression(C=c)`.
    LogisticRegression {
        /// The inverse of the regularization strength (default 1).
        #[serde(default = "default_c")]
        c: f64,
    },
    /// `k` clusters; the best of `n_init` k-means++ starts (seeded by `seed`).
    Kmeans {
        /// How many clusters: at least 1, at most the training rows.
        #[serde(deserialize_with = "crate::integer::whole")]
        k: usize,
        /// How many starts (default 10).
        #[serde(default = "default_n_init", deserialize_with = "crate::integer::whole")]
        n_init: usize,
        /// The seed of the starts (default 0).
        #[serde(default, deserialize_with = "crate::integer::whole")]
        seed: u64,
    },
}

/// Each kind with its own parameters, and nothing else (utoipa's schema of an internally tagged
/// enum would let other fields through, which serde refuses).
impl utoipa::PartialSchema for Params {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let kind = |name: &str, description: &str, mut properties: serde_json::Value| {
            properties["kind"] = serde_json::json!({"type": "string", "enum": [name]});
            let required: Vec<&str> = if name == "kmeans" {
                vec!["kind", "k"]
            } else {
                vec!["kind"]
            };
            serde_json::json!({
                "type": "object",
                "title": name,
                "description": description,
                "required": required,
                "properties": properties,
                "additionalProperties": false,
            })
        };
        serde_json::from_value(serde_json::json!({
            "description": "What to train.",
            "oneOf": [
                kind(
                    "linear_regression",
                    "Ordinary least squares with an intercept.",
                    serde_json::json!({}),
                ),
                kind(
                    "logistic_regression",
                    "Binary labels 0 and 1; minimizes `c × Σ log-loss + ½‖w‖²`, as \
                     scikit-learn's `LogisticRegression(C=c)`.",
                    serde_json::json!({"c": {
                        "type": "number",
                        "format": "double",
                        "exclusiveMinimum": 0,
                        "description": "The inverse of the regularization strength (default 1).",
                    }}),
                ),
                kind(
                    "kmeans",
                    "`k` clusters; the best of `n_init` k-means++ starts (seeded by `seed`).",
                    serde_json::json!({
                        "k": {
                            "type": "integer",
                            "minimum": 1,
                            "description": "How many clusters: at most the training rows.",
                        },
                        "n_init": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 100,
                            "description": "How many starts (default 10).",
                        },
                        "seed": {
                            "type": "integer",
                            "minimum": 0,
                            "description": "The seed of the starts (default 0).",
                        },
                    }),
                ),
            ],
        }))
        .expect("a schema")
    }
}

impl utoipa::ToSchema for Params {}

/// Rows of features: at least one row, each of at least one number.
fn feature_rows() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .min_items(Some(1))
        .items(
            utoipa::openapi::schema::ArrayBuilder::new()
                .min_items(Some(1))
                .items(
                    utoipa::openapi::schema::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::Number)
                        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                            utoipa::openapi::KnownFormat::Double,
                        ))),
                ),
        )
        .build()
}

fn default_c() -> f64 {
    1.0
}

fn default_n_init() -> usize {
    10
}

/// `POST /v1/ai/train`: what to train, on what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainRequest {
    /// A name for the model (default: its kind).
    #[serde(default)]
    pub name: Option<String>,
    /// What to train.
    pub model: Params,
    /// The rows to train on.
    pub dataset: Dataset,
    /// The last `round(rows × test_fraction)` rows are held out for the metrics (default 0.2):
    /// at least 0, below 1.
    #[serde(default = "default_test_fraction")]
    #[schema(minimum = 0, exclusive_maximum = 1)]
    pub test_fraction: f64,
}

fn default_test_fraction() -> f64 {
    0.2
}

#[cfg(test)]
mod tests {
    use super::{DType, Prediction, Scalar, Tensor};

    #[test]
    fn each_kind_of_prediction_reads_back_as_itself() {
        for text in [
            r#"{"outputs":{"y":{"dtype":"f32","shape":[1],"data":[0.5]}}}"#,
            r#"{"predictions":[0,1],"probabilities":[0.25,0.75]}"#,
            r#"{"predictions":[1.0,2.5]}"#,
            r#"{"clusters":[0,2]}"#,
        ] {
            let p: Prediction = serde_json::from_str(text).expect(text);
            assert_eq!(serde_json::to_string(&p).expect("json"), text);
        }
        let linear: Prediction = serde_json::from_str(r#"{"predictions":[1.0]}"#).expect("p");
        assert!(matches!(linear, Prediction::Values { .. }), "{linear:?}");
    }

    #[test]
    fn elements_keep_integers_exact_and_spell_nan_and_infinities() {
        let text = r#"{"dtype":"i64","shape":[4],"data":[9007199254740993,-1,"NaN","-Infinity"]}"#;
        let t: Tensor = serde_json::from_str(text).expect("tensor");
        assert_eq!(t.dtype, DType::I64);
        assert_eq!(t.data[0], Scalar::Int(9_007_199_254_740_993));
        assert!(matches!(t.data[2], Scalar::Float(v) if v.is_nan()));
        assert_eq!(t.data[3], Scalar::Float(f64::NEG_INFINITY));
        let back = serde_json::to_string(&t).expect("json");
        assert_eq!(back, text);
        let default: Tensor = serde_json::from_str(r#"{"shape":[1],"data":[0.5]}"#).expect("f32");
        assert_eq!(default.dtype, DType::F32);
    }
}
