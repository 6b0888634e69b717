"""Small, real ONNX models built with the onnx helpers (no downloads)."""

from __future__ import annotations

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
