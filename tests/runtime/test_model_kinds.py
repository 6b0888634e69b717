"""Models of other shapes than the linear one: several inputs, no batch dimension, failing runs, strings."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.runtime.conftest import ServerProcess, model_dir
from tests.runtime.models import TABLE, fixed_model, lookup_model, pair_model, text_model

BATCHING = ("--max-batch-size", "16", "--max-delay-ms", "100")


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(data: bytes, name: str, *extra: str) -> ServerProcess:
        srv = ServerProcess(model_dir(tmp_path_factory.mktemp(name), data), *extra, name=name)
        started.append(srv)
        return srv
    yield start
    for srv in started:
        srv.stop()


def together(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Runs the calls at the same time (so the batcher sees them together); results in call order."""
    results: list[httpx.Response | None] = [None] * len(calls)

    def run(i: int) -> None:
        results[i] = calls[i]()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def batch_stats(srv: ServerProcess) -> tuple[float, float]:
    """(rows, runs) of onnxruntime calls so far, from /metrics."""
    lines = httpx.get(f"{srv.url}/metrics").text.splitlines()
    value = {ln.split("{")[0]: float(ln.split()[-1]) for ln in lines if ln.startswith("onnx_server_batch_size_")}
    return value["onnx_server_batch_size_sum"], value["onnx_server_batch_size_count"]


def pair(seq: int, value: float) -> dict[str, Any]:
    return {"inputs": [{"name": n, "shape": [1, seq], "datatype": "FP32", "data": [value] * seq} for n in "ab"]}


def test_requests_with_different_sequence_lengths_are_batched_apart(serve: Callable[..., ServerProcess]) -> None:
    srv = serve(pair_model(), "pair", *BATCHING)
    lengths = [3, 5, 3, 5, 3, 5, 3, 5]

    responses = together([lambda i=i, n=n: httpx.post(srv.infer_url, json=pair(n, float(i)), timeout=30)
                          for i, n in enumerate(lengths)])

    for i, (n, resp) in enumerate(zip(lengths, responses, strict=True)):
        assert resp.status_code == 200, resp.text
        out = resp.json()["outputs"][0]
        assert out["shape"] == [1, n] and out["data"] == [2.0 * i] * n
    _, runs = batch_stats(srv)
    assert runs < len(lengths), "same-length requests still share runs"


def test_a_model_without_a_batch_dimension_is_never_batched(serve: Callable[..., ServerProcess]) -> None:
    srv = serve(fixed_model(), "fixed", *BATCHING)
    body = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]}

    responses = together([lambda: httpx.post(srv.infer_url, json=body, timeout=30)] * 6)

    assert [r.json()["outputs"][0]["data"] for r in responses] == [[2, 4, 6, 8, 10, 12]] * 6
    rows, runs = batch_stats(srv)
    assert rows / runs == 2, "each run holds exactly one request's two fixed rows"


def test_a_request_that_fails_in_a_batch_does_not_fail_the_others(serve: Callable[..., ServerProcess]) -> None:
    srv = serve(lookup_model(), "lookup", *BATCHING)
    indices = [1, 2, 99, 3, 4, 5]

    responses = together([lambda i=i: httpx.post(srv.infer_url, timeout=30, json={"inputs": [
        {"name": "idx", "shape": [1, 1], "datatype": "INT64", "data": [i]}]}) for i in indices])

    for i, resp in zip(indices, responses, strict=True):
        if i == 99:
            assert resp.status_code == 400 and "rejected the input" in resp.json()["error"]
        else:
            assert resp.status_code == 200 and resp.json()["outputs"][0]["data"] == TABLE[i].tolist()


def test_string_tensors_and_non_tensor_outputs(serve: Callable[..., ServerProcess]) -> None:
    srv = serve(text_model(), "text")
    meta = httpx.get(f"{srv.url}/v2/models/text").json()
    body: dict[str, Any] = {"inputs": [{"name": "s", "shape": [2], "datatype": "BYTES", "data": ["héllo", ""]}]}

    default = httpx.post(srv.infer_url, json=body)
    asked = httpx.post(srv.infer_url, json={**body, "outputs": [{"name": "seq"}]})

    assert meta["inputs"] == [{"name": "s", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in meta["outputs"]] == ["echo", "n", "seq"]
    assert default.status_code == 200
    assert {o["name"]: o["data"] for o in default.json()["outputs"]} == {"echo": ["héllo", ""], "n": [2]}
    assert asked.status_code == 400 and "seq" in asked.json()["error"]


def test_binary_int64_input_round_trips(serve: Callable[..., ServerProcess]) -> None:
    srv = serve(lookup_model(), "lookup-binary")
    data = np.asarray([[7], [0]], dtype=np.int64).tobytes()
    head = (b'{"inputs":[{"name":"idx","shape":[2,1],"datatype":"INT64","parameters":{"binary_data_size":16}}],'
            b'"parameters":{"binary_data_output":true}}')

    resp = httpx.post(srv.infer_url, content=head + data, headers={"Inference-Header-Content-Length": str(len(head))})

    assert resp.status_code == 200
    n = int(resp.headers["inference-header-content-length"])
    values = np.frombuffer(resp.content[n:], dtype=np.float32).reshape(2, 1, 3)
    np.testing.assert_array_equal(values[:, 0], TABLE[[7, 0]])
