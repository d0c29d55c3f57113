"""onnxruntime on the same model tests the ai service's conformance test runs (the `onnx` package's
onnx/backend/test/data: simple, pytorch-converted, pytorch-operator), compared the same way (rtol
1e-3, atol 1e-5, NaN equal to NaN, integers and strings exactly). Prints each failure with its
reason and the count, for docs/ai.md. Usage: python3 onnxruntime_baseline.py
"""

import glob
import os

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


def load(path):
    proto = onnx.TensorProto()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    return numpy_helper.to_array(proto)


def same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc" or b.dtype.kind in "fc":
        return np.allclose(a, b, rtol=1e-3, atol=1e-5, equal_nan=True)
    return np.array_equal(a, b)


def run(directory):
    session = ort.InferenceSession(os.path.join(directory, "model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    for data_set in sorted(glob.glob(os.path.join(directory, "test_data_set_*"))):
        inputs = {n: load(os.path.join(data_set, f"input_{i}.pb")) for i, n in enumerate(names)}
        outputs = session.run(None, inputs)
        for i, got in enumerate(outputs):
            expected = load(os.path.join(data_set, f"output_{i}.pb"))
            if not same(got, expected):
                raise AssertionError(f"output {i} differs")


def main():
    total, failed = 0, []
    for kind in ["simple", "pytorch-converted", "pytorch-operator"]:
        for directory in sorted(glob.glob(os.path.join(ROOT, kind, "*"))):
            total += 1
            try:
                run(directory)
            except Exception as e:  # noqa: BLE001 - any failure is the model's result
                failed.append((os.path.basename(directory), str(e).splitlines()[0][:200]))
    for name, why in failed:
        print(f"{name}: {why}")
    print(f"onnxruntime {ort.__version__}: {total - len(failed)} of {total} pass")


if __name__ == "__main__":
    main()
