//! The ai service against independent implementations: ONNX outputs against onnxruntime, trained
//! models against scikit-learn (fixtures and expected values from `tests/fixtures/generate.py`), and
//! every kind of bad model, input and dataset answered with a typed error while the service stays up.

mod common;

use ai::{Dataset, Error, JobState, Params, PredictInput, Request, TrainRequest};
use common::{Fixture, fixture, floats, json, start, tensors};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onnx_outputs_match_onnxruntime() {
    let f = start(|_| {}).await;
    for model in ["mlp", "conv", "trees"] {
        let info = f
            .upload(
                "alice",
                std::fs::read(fixture(&format!("{model}.onnx"))).expect("model"),
            )
            .await
            .expect("uploaded");
        let cases = json(&format!("{model}.cases.json"));
        let (input, output) = (
            cases["input"].as_str().expect("input"),
            cases["output"].as_str().expect("output"),
        );
        assert_eq!(info.inputs[0].name, input);
        for case in cases["cases"].as_array().expect("cases") {
            let shape: Vec<usize> = floats(&case["shape"]).iter().map(|d| *d as usize).collect();
            let answer = f
                .predict("alice", &info.id, tensors(input, shape, floats(&case["x"])))
                .await
                .expect("predicted");
            let got = &answer["outputs"][output];
            assert_eq!(
                floats(&got["shape"]),
                floats(&case["expected_shape"]),
                "{model}"
            );
            let (got, expected) = (floats(&got["data"]), floats(&case["expected"]));
            assert_eq!(got.len(), expected.len());
            let worst = got
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(worst <= 1e-5, "{model}: off by {worst} from onnxruntime");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_models_and_inputs_get_typed_errors_and_the_service_stays_up() {
    let f = start(|spec| {
        spec.set(&ai::MAX_MODEL_BYTES, 64 << 10);
    })
    .await;
    let mlp = std::fs::read(fixture("mlp.onnx")).expect("model");

    // Not ONNX at all, cut short, empty, too large, an operator tract does not have.
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    assert!(matches!(
        f.upload("alice", garbage).await,
        Err(Error::InvalidModel(_))
    ));
    assert!(matches!(
        f.upload("alice", mlp[..mlp.len() / 2].to_vec()).await,
        Err(Error::InvalidModel(_))
    ));
    assert!(matches!(
        f.upload("alice", Vec::new()).await,
        Err(Error::InvalidModel(_))
    ));
    match f
        .upload(
            "alice",
            std::fs::read(fixture("mlp_big.onnx")).expect("model"),
        )
        .await
    {
        Err(Error::TooLarge { setting, .. }) => assert_eq!(setting, ai::MAX_MODEL_BYTES.name()),
        other => panic!("expected too large, got {other:?}"),
    }
    // Still up: a good model uploads, and inputs that do not fit are refused with the reason.
    let info = f.upload("alice", mlp).await.expect("uploaded");
    let wrong = [
        (
            tensors("nope", vec![1, 4], vec![0.0; 4]),
            "no input \"nope\"",
        ),
        (tensors("x", vec![4], vec![0.0; 4]), "1 dimensions"),
        (tensors("x", vec![1, 5], vec![0.0; 5]), "dimension 1 is 5"),
        (tensors("x", vec![2, 4], vec![0.0; 7]), "7 values"),
        (tensors("x", vec![0, 4], vec![]), "dimension 0 is 0"),
        (
            PredictInput::Features {
                features: vec![vec![1.0; 4]],
            },
            "ONNX model",
        ),
    ];
    for (input, expected) in wrong {
        match f.predict("alice", &info.id, input).await {
            Err(Error::Shape(m)) => assert!(m.contains(expected), "{m:?} should say {expected:?}"),
            other => panic!("expected a shape error ({expected}), got {other:?}"),
        }
    }
    // Another account's model is not there.
    assert!(matches!(
        f.predict("bob", &info.id, tensors("x", vec![1, 4], vec![0.0; 4]))
            .await,
        Err(Error::NotFound(_))
    ));
    let ok = f
        .predict("alice", &info.id, tensors("x", vec![1, 4], vec![0.5; 4]))
        .await
        .expect("predicted");
    assert_eq!(floats(&ok["outputs"]["y"]["shape"]), vec![1.0, 3.0]);
}

fn close(a: &[f64], b: &[f64], tolerance: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert!(
            (x - y).abs() <= tolerance,
            "{what}: {x} vs scikit-learn {y}"
        );
    }
}

fn test_rows(dataset: &str) -> Vec<Vec<f64>> {
    let features = json(dataset)["features"].as_array().expect("rows").clone();
    let n = features.len();
    let test = (n as f64 * 0.2).round() as usize;
    features[n - test..].iter().map(floats).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trained_models_match_scikit_learn_and_predict() {
    let f = start(|_| {}).await;

    let expected = json("linear.expected.json");
    let model = f.trained("linear.json", Params::LinearRegression).await;
    let metrics = model.metrics.clone().expect("metrics");
    assert_eq!((metrics.train_rows, metrics.test_rows), (160, 40));
    close(
        &[metrics.r2_test.expect("r2")],
        &[expected["r2_test"].as_f64().expect("r2")],
        1e-9,
        "r2",
    );
    let p = f
        .predict(
            "alice",
            &model.id,
            PredictInput::Features {
                features: test_rows("linear.json"),
            },
        )
        .await
        .expect("predicted");
    close(
        &floats(&p["predictions"]),
        &floats(&expected["predictions_test"]),
        1e-6,
        "linear predictions",
    );

    let expected = json("logistic.expected.json");
    let model = f
        .trained("logistic.json", Params::LogisticRegression { c: 1.0 })
        .await;
    let metrics = model.metrics.clone().expect("metrics");
    close(
        &[metrics.accuracy_test.expect("accuracy")],
        &[expected["accuracy_test"].as_f64().expect("accuracy")],
        1e-12,
        "accuracy",
    );
    let p = f
        .predict(
            "alice",
            &model.id,
            PredictInput::Features {
                features: test_rows("logistic.json"),
            },
        )
        .await
        .expect("predicted");
    close(
        &floats(&p["probabilities"]),
        &floats(&expected["probabilities_test"]),
        1e-4,
        "probabilities",
    );
    assert_eq!(
        floats(&p["predictions"]),
        floats(&expected["predictions_test"])
    );

    let expected = json("kmeans.expected.json");
    let model = f
        .trained(
            "kmeans.json",
            Params::Kmeans {
                k: 3,
                n_init: 10,
                seed: 0,
            },
        )
        .await;
    let metrics = model.metrics.clone().expect("metrics");
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
    assert!(
        rel(
            metrics.inertia_train.expect("inertia"),
            expected["inertia_train"].as_f64().expect("f")
        ) <= 1e-3
    );
    assert!(
        rel(
            metrics.inertia_test.expect("inertia"),
            expected["inertia_test"].as_f64().expect("f")
        ) <= 1e-3
    );
    // The centers, as the model predicts them: each expected center falls in its own cluster.
    let centers: Vec<Vec<f64>> = expected["centers"]
        .as_array()
        .expect("centers")
        .iter()
        .map(floats)
        .collect();
    let p = f
        .predict(
            "alice",
            &model.id,
            PredictInput::Features { features: centers },
        )
        .await
        .expect("predicted");
    let mut clusters = floats(&p["clusters"]);
    clusters.sort_by(f64::total_cmp);
    clusters.dedup();
    assert_eq!(clusters.len(), 3, "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trained_coefficients_are_scikit_learns() {
    // The coefficients themselves, from the stored parameters (not only what they predict).
    let linear = json("linear.expected.json");
    let logistic = json("logistic.expected.json");
    let cancel = std::sync::atomic::AtomicBool::new(false);
    for (dataset, params, expected, tolerance) in [
        ("linear.json", Params::LinearRegression, &linear, 1e-6),
        (
            "logistic.json",
            Params::LogisticRegression { c: 1.0 },
            &logistic,
            1e-4,
        ),
    ] {
        let data: Dataset = serde_json::from_value(json(dataset)).expect("dataset");
        let (trained, _) = ai::train::train(&data, &params, 0.2, &cancel).expect("trained");
        let (coef, intercept) = match trained {
            ai::Trained::LinearRegression { coef, intercept }
            | ai::Trained::LogisticRegression { coef, intercept } => (coef, intercept),
            ai::Trained::Kmeans { .. } => unreachable!("not a regression"),
        };
        close(&coef, &floats(&expected["coef"]), tolerance, dataset);
        close(
            &[intercept],
            &[expected["intercept"].as_f64().expect("f")],
            tolerance,
            dataset,
        );
    }
}

async fn refuse(f: &Fixture, dataset: Dataset, model: Params, expected: &str) {
    let request = TrainRequest {
        name: None,
        model,
        dataset,
        test_fraction: 0.2,
    };
    match f.train(request).await {
        Err(e @ (Error::BadInput(_) | Error::Dataset(_) | Error::TooLarge { .. })) => {
            let m = e.to_string();
            assert!(m.contains(expected), "{m:?} should say {expected:?}")
        }
        other => panic!("expected a refusal ({expected}), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_datasets_are_refused_and_training_can_be_cancelled() {
    let f = start(|_| {}).await;
    // NaN cannot be written in JSON; the fixture has a null where a number should be.
    let nan = std::fs::read_to_string(fixture("nan.json")).expect("fixture");
    assert!(serde_json::from_str::<Dataset>(&nan).is_err());

    let rows = |n: usize| {
        (0..n)
            .map(|i| vec![i as f64, (i * i) as f64])
            .collect::<Vec<_>>()
    };
    refuse(
        &f,
        Dataset {
            features: vec![],
            targets: Some(vec![]),
        },
        Params::LinearRegression,
        "empty",
    )
    .await;
    refuse(
        &f,
        Dataset {
            features: rows(10),
            targets: None,
        },
        Params::LinearRegression,
        "needs targets",
    )
    .await;
    refuse(
        &f,
        Dataset {
            features: rows(10),
            targets: Some(vec![1.0; 9]),
        },
        Params::LinearRegression,
        "9 targets",
    )
    .await;
    refuse(
        &f,
        Dataset {
            features: vec![vec![1.0, 2.0], vec![1.0]],
            targets: Some(vec![0.0, 1.0]),
        },
        Params::LinearRegression,
        "features[1] has 1 values",
    )
    .await;
    refuse(
        &f,
        Dataset {
            features: rows(10),
            targets: Some(vec![2.0; 10]),
        },
        Params::LogisticRegression { c: 1.0 },
        "not a label",
    )
    .await;
    refuse(
        &f,
        Dataset {
            features: rows(10),
            targets: None,
        },
        Params::Kmeans {
            k: 20,
            n_init: 1,
            seed: 0,
        },
        "k must be",
    )
    .await;
    let collinear = Dataset {
        features: (0..20).map(|i| vec![i as f64, 2.0 * i as f64]).collect(),
        targets: Some((0..20).map(|i| i as f64).collect()),
    };
    let job = f
        .train(TrainRequest {
            name: None,
            model: Params::LinearRegression,
            dataset: collinear,
            test_fraction: 0.2,
        })
        .await
        .expect("accepted");
    let job = f.wait(&job.id).await;
    assert_eq!(job.state, JobState::Failed);
    assert!(job.error.expect("why").contains("collinear"));

    // A long k-means, cancelled: it stops between iterations and says so.
    let big = Dataset {
        features: (0..40_000)
            .map(|i| vec![(i % 997) as f64, (i % 113) as f64, (i % 7) as f64])
            .collect(),
        targets: None,
    };
    let job = f
        .train(TrainRequest {
            name: None,
            model: Params::Kmeans {
                k: 60,
                n_init: 100,
                seed: 1,
            },
            dataset: big,
            test_fraction: 0.0,
        })
        .await
        .expect("accepted");
    let cancelled = f
        .ask(|reply| Request::Cancel {
            owner: "alice".into(),
            id: job.id.clone(),
            reply,
        })
        .await
        .expect("cancelled");
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(cancelled.model.is_none());
}
