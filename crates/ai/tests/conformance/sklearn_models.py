"""Trains scikit-learn models of each kind the ai service promises on generated data, converts them
with skl2onnx's defaults, and writes into OUT_DIR, for each model NAME:

    NAME.onnx          the converted model
    NAME.json          {"input": "...", "shape": [n, f], "x": [...], "kind": "regressor"|"classifier",
                        "sklearn": {"label": [...]} or {"value": [...]},
                        "sklearn_proba": [...] (classifiers), "onnxruntime": {OUTPUT: {"shape", "data"}}}

Usage: python3 sklearn_models.py OUT_DIR. Deterministic (fixed seeds); needs numpy, scikit-learn,
skl2onnx, onnx and onnxruntime (scripts/test installs them). Classifiers are converted twice: with
skl2onnx's default ZipMap output (`NAME`) and with `zipmap=False` (`NAME_nozipmap`).
"""

import json
import os
import sys
import warnings

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.neural_network import MLPClassifier, MLPRegressor

warnings.filterwarnings("ignore")


def data(kind, classes, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    score = x[:, 0] * 1.5 - x[:, 1] + 0.5 * x[:, 2] * x[:, 3] + rng.normal(scale=0.3, size=300)
    if kind == "regressor":
        return x, score.astype(np.float64)
    edges = np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1])
    return x, np.digitize(score, edges).astype(np.int64)


def plain(v):
    """Exact JSON values: floats as their double, NaN/infinities as the service's strings."""
    out = []
    for e in np.asarray(v).reshape(-1).tolist():
        if isinstance(e, float) and not np.isfinite(e):
            e = "NaN" if np.isnan(e) else ("Infinity" if e > 0 else "-Infinity")
        out.append(e)
    return out


def onnxruntime_outputs(path, name, x):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    answer = {}
    for out_name, value in zip(names, session.run(None, {name: x})):
        if isinstance(value, list):  # ZipMap: a list of {label: probability}
            keys = list(value[0].keys())
            value = np.array([[row[k] for k in keys] for row in value], dtype=np.float32)
        value = np.asarray(value)
        answer[out_name] = {"shape": list(value.shape), "data": plain(value)}
    return answer


MODELS = [
    ("linear_regression", "regressor", 0, LinearRegression()),
    ("logistic_regression", "classifier", 3, LogisticRegression(max_iter=1000)),
    ("logistic_regression_binary", "classifier", 2, LogisticRegression(max_iter=1000)),
    ("mlp_regressor", "regressor", 0, MLPRegressor(hidden_layer_sizes=(16,), max_iter=500, random_state=0)),
    ("mlp_classifier", "classifier", 3, MLPClassifier(hidden_layer_sizes=(16,), max_iter=500, random_state=0)),
    ("random_forest_regressor", "regressor", 0, RandomForestRegressor(n_estimators=10, max_depth=5, random_state=0)),
    ("random_forest_classifier", "classifier", 3, RandomForestClassifier(n_estimators=10, max_depth=5, random_state=0)),
    ("gradient_boosting_regressor", "regressor", 0, GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0)),
    ("gradient_boosting_classifier", "classifier", 3, GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0)),
    ("gradient_boosting_classifier_binary", "classifier", 2, GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0)),
]


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for seed, (name, kind, classes, model) in enumerate(MODELS):
        x, y = data(kind, classes, seed)
        model.fit(x, y)
        test = x[:40]
        variants = [(name, None)]
        if kind == "classifier":
            variants.append((name + "_nozipmap", {id(model): {"zipmap": False}}))
        for variant, options in variants:
            onx = to_onnx(model, x[:1], options=options)
            path = os.path.join(out_dir, variant + ".onnx")
            with open(path, "wb") as f:
                f.write(onx.SerializeToString())
            input_name = onx.graph.input[0].name
            case = {
                "input": input_name,
                "kind": kind,
                "shape": list(test.shape),
                "x": plain(test.astype(np.float64)),
                "onnxruntime": onnxruntime_outputs(path, input_name, test),
            }
            if kind == "classifier":
                case["sklearn"] = {"label": plain(model.predict(test))}
                case["sklearn_proba"] = plain(model.predict_proba(test))
            else:
                case["sklearn"] = {"value": plain(model.predict(test))}
            with open(os.path.join(out_dir, variant + ".json"), "w") as f:
                json.dump(case, f)
    print(len(os.listdir(out_dir)) // 2, "models written to", out_dir)


if __name__ == "__main__":
    main(sys.argv[1])
