"""Hostile or malformed requests get 4xx, never 500 or a crash, and memory stays bounded."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx_server.app import BodyBudget
from onnx_server.errors import Busy

from localcluster.models import make_model
from tests.runtime.conftest import ServerProcess, model_dir

FOUR_MIB = 4 << 20


def peak_rss_mib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) // 1024  # type: ignore[union-attr]


def binary_request(rows: int) -> tuple[bytes, dict[str, str]]:
    data = np.ones((rows, 4), dtype=np.float32).tobytes()
    head = json.dumps({"inputs": [{"name": "x", "shape": [rows, 4], "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(data)}}],
                       "parameters": {"binary_data_output": True}}).encode()
    return head + data, {"Inference-Header-Content-Length": str(len(head))}


@pytest.fixture(scope="module")
def small_body_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(model_dir(tmp_path_factory.mktemp("bounds"), make_model()), "--max-body-bytes", str(FOUR_MIB))
    yield srv
    srv.stop()


def test_many_large_bodies_at_once_keep_memory_bounded(small_body_server: ServerProcess) -> None:
    body, headers = binary_request(FOUR_MIB // 16 - 64)
    assert httpx.post(small_body_server.infer_url, content=body, headers=headers, timeout=60).status_code == 200
    before = peak_rss_mib(small_body_server.proc.pid)
    codes: list[int] = []

    def call() -> None:
        resp = httpx.post(small_body_server.infer_url, content=body, headers=headers, timeout=120)
        codes.append(resp.status_code)
    threads = [threading.Thread(target=call) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert codes == [200] * 32
    # 32 bodies of 4 MiB held at once would add well over 128 MiB; the budget holds two at a time
    assert peak_rss_mib(small_body_server.proc.pid) - before < 80


def test_deeply_nested_json_is_a_bad_request(small_body_server: ServerProcess) -> None:
    resp = httpx.post(small_body_server.infer_url, content=b"[" * 200_000 + b"]" * 200_000)
    assert resp.status_code == 400 and "nested too deeply" in resp.json()["error"]


def test_data_nested_deeper_than_its_shape_is_a_bad_request_naming_the_field(
        small_body_server: ServerProcess) -> None:
    data: Any = [1.0, 2.0, 3.0, 4.0]
    for _ in range(500):
        data = [data]
    resp = httpx.post(small_body_server.infer_url, json={"inputs": [
        {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": data}]})
    assert resp.status_code == 400
    assert "inputs[0].data is nested" in resp.json()["error"]


def test_data_nested_as_its_shape_or_flat_gives_the_same_answer(small_body_server: ServerProcess) -> None:
    rows = [[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 2.0, 0.0]]
    flat = [v for row in rows for v in row]
    answers = [httpx.post(small_body_server.infer_url, json={"inputs": [
        {"name": "x", "shape": [2, 4], "datatype": "FP32", "data": data}]}) for data in (rows, flat)]
    assert [r.status_code for r in answers] == [200, 200]
    assert answers[0].json()["outputs"] == answers[1].json()["outputs"]


@pytest.mark.parametrize(("body", "fragment"), [
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4}],
      "outputs": [{"name": "y", "parameters": [1]}]}, "outputs[0].parameters must be an object"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4}], "parameters": "binary"},
     "request.parameters must be an object"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4, "parameters": 3}]},
     "inputs[0].parameters must be an object"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1e39, 0, 0, 0]}]}, "FP32 values"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, None, 2, 3]}]}, "null"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4}],
      "outputs": [{"name": "y"}, {"name": "y"}]}, "twice"),
])
def test_malformed_parameters_and_values_get_400(small_body_server: ServerProcess, body: dict[str, Any],
                                                 fragment: str) -> None:
    resp = httpx.post(small_body_server.infer_url, json=body)
    assert resp.status_code == 400
    assert fragment in resp.json()["error"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["name", "shape", "datatype", "data", "parameters", "binary_data_size", "inputs",
                         "outputs", "id", "binary_data", "binary_data_output"]), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.fixed_dictionaries({"inputs": st.lists(json_values, max_size=3)},
                                 optional={"outputs": json_values, "parameters": json_values, "id": json_values}))
def test_arbitrary_documents_never_cause_a_server_error(small_body_server: ServerProcess, doc: dict[str, Any]) -> None:
    resp = httpx.post(small_body_server.infer_url, json=doc)
    assert resp.status_code in (200, 400), resp.text
    assert resp.status_code == 200 or "error" in resp.json()


def test_the_body_budget_refuses_when_nothing_is_released_in_time() -> None:
    async def scenario() -> None:
        budget = BodyBudget(capacity=100, wait_s=0.05)
        async with budget.reserve(80):
            with pytest.raises(Busy):
                async with budget.reserve(30):
                    pass
        async with budget.reserve(100):
            assert budget.used == 100
        assert budget.used == 0

    asyncio.run(scenario())
