"""Small, real ONNX models built with the onnx helpers (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_model(scale: float = 1.0, features: int = 4, outputs: int = 2) -> bytes:
    """y = x @ W * scale + b, with a dynamic batch dimension: input `x` [-1, features] FP32."""
    rng = np.random.default_rng(7)
    weights = (rng.standard_normal((features, outputs)) * scale).astype(np.float32)
    bias = np.arange(outputs, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", outputs])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def iris_model(retrained: bool = False) -> bytes:
    """scikit-learn's logistic regression on iris, as shipped inside the onnxruntime wheel (nobody here
    made it); `retrained=True` scales its coefficients, standing in for a retrained next version."""
    import onnxruntime.datasets

    model = onnx.load(onnxruntime.datasets.get_example("logreg_iris.onnx"))
    if retrained:
        node = next(n for n in model.graph.node if n.op_type == "LinearClassifier")
        coefficients = next(a for a in node.attribute if a.name == "coefficients")
        coefficients.floats[:] = [c * 1.25 for c in coefficients.floats]
    return bytes(model.SerializeToString())


def make_failing_model(input_name: str = "x", features: int = 4) -> bytes:
    """Loads (so verification passes) but every run fails: a Reshape to a size no input has.
    Serving pods of it never become Ready: their warm-up run fails."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", [input_name, "shape"], ["y"])],
        "fails-at-run",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.array([features * 1000 + 7], dtype=np.int64), "shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())

def make_external_data_model(folder: Path, features: int = 64, outputs: int = 8,
                             location: str = "weights.bin", seed: int = 7) -> Path:
    """y = x @ W + b with W [features, outputs] FP32 kept in `location` beside model.onnx (external data).
    W is written in row chunks, so models of several GB need little memory to generate."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = max(1, (64 << 20) // (4 * outputs))
    with (folder / location).open("wb") as out:
        for start in range(0, features, rows):
            out.write(rng.standard_normal((min(rows, features - start), outputs), dtype=np.float32).tobytes())
    weights = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[features, outputs],
                          data_location=TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", "0"), ("length", str(4 * features * outputs))):
        entry = weights.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", outputs])],
        initializer=[weights, numpy_helper.from_array(np.arange(outputs, dtype=np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    return folder / "model.onnx"


def external_weights(folder: Path, features: int, outputs: int, location: str = "weights.bin") -> np.ndarray:
    return np.fromfile(folder / location, dtype=np.float32).reshape(features, outputs)


def make_model_rejecting_real_input(scale: float = 1.0, features: int = 4, outputs: int = 2) -> bytes:
    """make_model()'s y = x @ W * scale + b, plus a Gather indexed by max|x| into a one-element table:
    the all-zero warm-up input passes (pods become Ready), any input with a value of 1 or more fails
    to run (a version that answers every real request with an error)."""
    linear = onnx.load_from_string(make_model(scale, features, outputs))
    graph = linear.graph
    graph.node[-1].output[0] = "linear_y"
    graph.node.extend([
        helper.make_node("Abs", ["x"], ["abs_x"]),
        helper.make_node("ReduceMax", ["abs_x"], ["max_x"], keepdims=0),
        helper.make_node("Cast", ["max_x"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "index"], ["picked"]),
        helper.make_node("Add", ["linear_y", "picked"], ["y"]),
    ])
    graph.initializer.append(numpy_helper.from_array(np.zeros(1, dtype=np.float32), "table"))
    onnx.checker.check_model(linear)
    return bytes(linear.SerializeToString())
