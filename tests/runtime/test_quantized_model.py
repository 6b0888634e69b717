"""An INT8 model made with onnxruntime.quantization (QDQ) serves like any other: same outputs as
onnxruntime in-process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from tests.runtime.conftest import ServerProcess

FEATURES, HIDDEN, OUTPUTS = 16, 32, 4


def float_model(path: Path) -> None:
    rng = np.random.default_rng(11)
    w1 = rng.standard_normal((FEATURES, HIDDEN), dtype=np.float32)
    w2 = rng.standard_normal((HIDDEN, OUTPUTS), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "W2"], ["y"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", OUTPUTS])],
        initializer=[numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


class Calibration(CalibrationDataReader):
    def __init__(self) -> None:
        rng = np.random.default_rng(5)
        self.batches = iter([{"x": rng.uniform(-1, 1, (8, FEATURES)).astype(np.float32)} for _ in range(8)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


@pytest.fixture(scope="module")
def int8_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("int8")
    float_model(root / "float.onnx")
    (root / "served").mkdir()
    quantize_static(str(root / "float.onnx"), str(root / "served" / "model.onnx"), Calibration(),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    srv = ServerProcess(root / "served", name="int8")
    yield srv
    srv.stop()


def test_the_served_model_is_int8_qdq(int8_server: ServerProcess) -> None:
    model = onnx.load(str(Path(int8_server.log).parent / "model.onnx"))
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    zero_points = {i.name: i for i in model.graph.initializer}
    assert quantize and all(zero_points[n.input[2]].data_type == TensorProto.INT8 for n in quantize)


def test_an_int8_model_serves_the_outputs_of_onnxruntime_in_process(int8_server: ServerProcess) -> None:
    x = np.random.default_rng(3).uniform(-1, 1, (5, FEATURES)).astype(np.float32)
    session = ort.InferenceSession(str(Path(int8_server.log).parent / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    expected = session.run(["y"], {"x": x})[0]

    resp = httpx.post(int8_server.infer_url, json={"inputs": [
        {"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}, timeout=10)

    out = resp.json()["outputs"][0]
    assert resp.status_code == 200 and out["shape"] == [5, OUTPUTS]
    np.testing.assert_allclose(np.array(out["data"], dtype=np.float32).reshape(5, OUTPUTS), expected, rtol=1e-6)
