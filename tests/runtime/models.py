"""Real ONNX graphs for the runtime tests and benchmark, built with the onnx helpers (no downloads)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def _model(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def pair_model() -> bytes:
    """out = a + b, inputs `a`, `b` FP32 [batch, seq] with both dimensions dynamic."""
    return _model(helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["out"])], "pair",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "seq"]) for n in ("a", "b")],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq"])]))


def fixed_model() -> bytes:
    """y = x * 2 with a fixed shape [2, 3]: no batch dimension, so never batched."""
    return _model(helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])], "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        initializer=[numpy_helper.from_array(np.float32(2.0).reshape(()), "two")]))


TABLE = np.arange(30, dtype=np.float32).reshape(10, 3)


def lookup_model() -> bytes:
    """y = TABLE[idx]: INT64 `idx` [batch, 1]; an index outside 0..9 makes onnxruntime fail the run."""
    return _model(helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["y"], axis=0)], "lookup",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1, 3])],
        initializer=[numpy_helper.from_array(TABLE, "table")]))


def text_model() -> bytes:
    """Strings in, the same strings out, plus a sequence output that has no v2 tensor form."""
    return _model(helper.make_graph(
        [helper.make_node("Identity", ["s"], ["echo"]),
         helper.make_node("Shape", ["s"], ["n"]),
         helper.make_node("SequenceConstruct", ["n"], ["seq"])], "text",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("echo", TensorProto.STRING, ["batch"]),
         helper.make_tensor_value_info("n", TensorProto.INT64, [1]),
         helper.make_tensor_sequence_value_info("seq", TensorProto.INT64, None)]))


def small_cnn(channels: int = 16, size: int = 32, classes: int = 10, dense_head: int = 0) -> bytes:
    """Two 3x3 convolutions with ReLU, then global average pooling and a dense layer or, with
    `dense_head` > 0, a VGG-style head (flatten, dense of that width, ReLU, dense): `image` FP32
    [batch, 3, size, size] -> `logits` [batch, classes]."""
    rng = np.random.default_rng(11)

    def weights(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
    ]
    init = [weights("w1", channels, 3, 3, 3), weights("b1", channels),
            weights("w2", 2 * channels, channels, 3, 3), weights("b2", 2 * channels)]
    if dense_head:
        flat = 2 * channels * ((size + 1) // 2) ** 2
        nodes += [helper.make_node("Flatten", ["r2"], ["flat"]),
                  helper.make_node("Gemm", ["flat", "w3", "b3"], ["hidden"], transB=1),
                  helper.make_node("Relu", ["hidden"], ["r3"]),
                  helper.make_node("Gemm", ["r3", "w4", "b4"], ["logits"], transB=1)]
        init += [weights("w3", dense_head, flat), weights("b3", dense_head),
                 weights("w4", classes, dense_head), weights("b4", classes)]
    else:
        nodes += [helper.make_node("GlobalAveragePool", ["r2"], ["pooled"]),
                  helper.make_node("Flatten", ["pooled"], ["flat"]),
                  helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"], transB=1)]
        init += [weights("w3", classes, 2 * channels), weights("b3", classes)]
    return _model(helper.make_graph(
        nodes, "small_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])], initializer=init))


def half_model() -> bytes:
    """FP16 `h` [batch, 3] -> `same` (FP16, identical) and `double` (FP32, 2 * h)."""
    return _model(helper.make_graph(
        [helper.make_node("Identity", ["h"], ["same"]),
         helper.make_node("Cast", ["h"], ["wide"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["wide", "two"], ["double"])], "half",
        [helper.make_tensor_value_info("h", TensorProto.FLOAT16, ["batch", 3])],
        [helper.make_tensor_value_info("same", TensorProto.FLOAT16, ["batch", 3]),
         helper.make_tensor_value_info("double", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(np.float32(2.0).reshape(()), "two")]))


def dense_mlp(features: int, hidden: int, layers: int, classes: int = 10) -> bytes:
    """`layers` dense layers of width `hidden` with ReLU, then a dense output: `x` FP32 [batch, features]
    -> `y` [batch, classes]. At batch 1 a run reads every weight once per row, so batching amortises it."""
    rng = np.random.default_rng(5)
    nodes, init, previous, width = [], [], "x", features
    for i in range(layers):
        nodes += [helper.make_node("Gemm", [previous, f"w{i}", f"b{i}"], [f"h{i}"]),
                  helper.make_node("Relu", [f"h{i}"], [f"r{i}"])]
        scale = np.sqrt(2.0 / width)
        init += [numpy_helper.from_array((rng.standard_normal((width, hidden)) * scale).astype(np.float32), f"w{i}"),
                 numpy_helper.from_array(np.zeros(hidden, dtype=np.float32), f"b{i}")]
        previous, width = f"r{i}", hidden
    nodes.append(helper.make_node("Gemm", [previous, "wo", "bo"], ["y"]))
    init += [numpy_helper.from_array((rng.standard_normal((width, classes)) * 0.1).astype(np.float32), "wo"),
             numpy_helper.from_array(np.zeros(classes, dtype=np.float32), "bo")]
    return _model(helper.make_graph(
        nodes, "dense_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", classes])], initializer=init))
