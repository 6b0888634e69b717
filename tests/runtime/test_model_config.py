"""Triton's model configuration endpoint (GET /v2/models/{name}/config), read by perf_analyzer and tritonclient."""

from __future__ import annotations

import httpx
from onnx_server.model_config import triton_model_config
from onnx_server.protocol import TensorMeta

from tests.runtime.conftest import ServerProcess


def test_a_batchable_model_reports_its_batch_size_and_dims_without_the_batch(batching_server: ServerProcess) -> None:
    resp = httpx.get(f"{batching_server.url}/v2/models/linear/config", timeout=5)

    assert resp.status_code == 200
    config = resp.json()
    assert config["name"] == "linear" and config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 16
    assert config["input"][0] | {"name": "x", "data_type": "TYPE_FP32", "dims": [4]} == config["input"][0]
    assert config["output"][0]["dims"] == [2] and config["output"][0]["data_type"] == "TYPE_FP32"
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 50_000


def test_the_versioned_config_path_answers_and_an_unknown_model_is_404(server: ServerProcess) -> None:
    versioned = httpx.get(f"{server.url}/v2/models/linear/versions/1.0.0/config", timeout=5)
    unknown = httpx.get(f"{server.url}/v2/models/other/config", timeout=5)

    assert versioned.status_code == 200 and "dynamic_batching" not in versioned.json()
    assert unknown.status_code == 404 and "other" in unknown.json()["error"]


def test_a_model_without_a_batch_dimension_keeps_full_dims_and_batch_size_zero() -> None:
    config = triton_model_config("fixed", [TensorMeta("x", "FP32", [2, 3])], [TensorMeta("s", "BYTES", [-1])],
                                 max_batch_size=0, max_queue_delay_us=5000)

    assert config["max_batch_size"] == 0 and "dynamic_batching" not in config
    assert config["input"][0]["dims"] == [2, 3]
    assert config["output"][0] | {"dims": [-1], "data_type": "TYPE_STRING"} == config["output"][0]
