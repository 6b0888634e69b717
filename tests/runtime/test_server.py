"""The runtime server over real HTTP: protocol, errors and bounds, batching, metrics, shutdown."""

from __future__ import annotations

import functools
import gzip
import json
import signal
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx_server.dataplane import INLINE_RUN_SECONDS, DataPlane
from onnx_server.settings import ServerSettings

from localcluster.harness import wait_for
from localcluster.models import iris_model, make_model
from tests.runtime.conftest import ServerProcess, model_dir

X = [[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 2.0, 0.0]]


@functools.cache
def reference() -> ort.InferenceSession:
    return ort.InferenceSession(make_model(), providers=["CPUExecutionProvider"])


def expected(x: list[list[float]]) -> np.ndarray:
    return reference().run(None, {"x": np.asarray(x, dtype=np.float32)})[0]


def infer_json(x: list[list[float]]) -> dict:
    return {"id": "r1", "inputs": [{"name": "x", "shape": [len(x), 4], "datatype": "FP32",
                                    "data": [v for row in x for v in row]}]}


def test_metadata_reports_the_models_real_signature(server: ServerProcess) -> None:
    meta = httpx.get(f"{server.url}/v2/models/linear").json()
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]
    assert httpx.get(f"{server.url}/v2/models/linear/versions/1.0.0").status_code == 200
    assert httpx.get(f"{server.url}/v2/models/linear/ready").json()["ready"] is True
    assert httpx.get(f"{server.url}/v2").json()["extensions"] == ["binary_tensor_data"]


def test_json_inference_matches_onnxruntime(server: ServerProcess) -> None:
    resp = httpx.post(server.infer_url, json=infer_json(X))
    assert resp.status_code == 200
    body = resp.json()
    assert body["id"] == "r1" and body["model_name"] == "linear" and body["model_version"] == "1.0.0"
    [out] = body["outputs"]
    assert out["shape"] == [2, 2] and out["datatype"] == "FP32"
    np.testing.assert_allclose(np.asarray(out["data"]).reshape(2, 2), expected(X), rtol=1e-6)


def test_a_large_json_request_is_answered_as_onnxruntime_does_whichever_reader_takes_it(server: ServerProcess) -> None:
    """300 rows (24 KB of JSON): flat, it is read into a buffer (JsonReader); nested as the shape, by orjson. Both
    answer the same; a string among the numbers gets the same 400 either way."""
    rows = np.random.default_rng(5).standard_normal((300, 4)).round(6).tolist()
    flat = infer_json(rows)
    nested = {"inputs": [{**flat["inputs"][0], "data": rows}]}
    answers = [httpx.post(server.infer_url, json=doc) for doc in (flat, nested)]
    assert [a.status_code for a in answers] == [200, 200]
    for answer in answers:
        np.testing.assert_allclose(np.asarray(answer.json()["outputs"][0]["data"]).reshape(300, 2), expected(rows),
                                   rtol=1e-6)
    flat["inputs"][0]["data"][17] = "0.5"
    nested["inputs"][0]["data"][4] = [0.5, 1.0, "0.5", 2.0]
    refused = [httpx.post(server.infer_url, json=doc) for doc in (flat, nested)]
    assert [r.status_code for r in refused] == [400, 400]
    assert refused[0].json()["error"] == refused[1].json()["error"] and "string" in refused[0].json()["error"]


def test_binary_tensor_extension_in_and_out(server: ServerProcess) -> None:
    data = np.asarray(X, dtype=np.float32).tobytes()
    head = json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(data)}}],
                       "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    resp = httpx.post(server.infer_url, content=head + data,
                      headers={"Inference-Header-Content-Length": str(len(head)),
                               "Content-Type": "application/octet-stream"})
    assert resp.status_code == 200
    n = int(resp.headers["inference-header-content-length"])
    meta = json.loads(resp.content[:n])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 16
    values = np.frombuffer(resp.content[n:], dtype=np.float32).reshape(2, 2)
    np.testing.assert_allclose(values, expected(X), rtol=1e-6)


@pytest.mark.parametrize(("body", "fragment"), [
    ({"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [1] * 5}]}, "does not fit"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "INT64", "data": [1] * 4}]}, "takes FP32"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}]}, "needs 4"),
    ({"inputs": [{"name": "x", "shape": [1000000000, 4], "datatype": "FP32", "data": [1]}]}, "the limit is"),
    ({"inputs": [{"name": "x", "shape": [-1, 4], "datatype": "FP32", "data": [1]}]}, "non-negative"),
    ({"inputs": [{"name": "nope", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4}]}, "not an input"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ["a", "b", "c", "d"]}]}, "FP32 values"),
    ({"inputs": []}, "non-empty"),
    ({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1] * 4}],
      "outputs": [{"name": "zzz"}]}, "unknown outputs"),
])
def test_bad_requests_get_400_with_a_reason(server: ServerProcess, body: dict, fragment: str) -> None:
    resp = httpx.post(server.infer_url, json=body)
    assert resp.status_code == 400
    assert fragment in resp.json()["error"]


def test_malformed_json_and_unknown_model(server: ServerProcess) -> None:
    bad = httpx.post(server.infer_url, content=b"{not json")
    assert bad.status_code == 400 and "malformed JSON" in bad.json()["error"]
    missing = httpx.post(f"{server.url}/v2/models/other/infer", json=infer_json(X))
    assert missing.status_code == 404 and "not served here" in missing.json()["error"]
    wrong_version = httpx.get(f"{server.url}/v2/models/linear/versions/9")
    assert wrong_version.status_code == 404


def test_the_inference_paths_answer_as_routes_do(server: ServerProcess) -> None:
    """Inference POSTs bypass the router (onnx_server.app.RestApp): the paths around them still answer as
    Starlette's routes do, and a versioned POST is checked against the served version."""
    assert httpx.get(server.infer_url).status_code == 405
    versioned = httpx.post(f"{server.url}/v2/models/linear/versions/{server.version}/infer", json=infer_json(X))
    assert versioned.status_code == 200 and versioned.json()["model_version"] == server.version
    other = httpx.post(f"{server.url}/v2/models/linear/versions/9/infer", json=infer_json(X))
    assert other.status_code == 404 and "version '9'" in other.json()["error"]
    assert httpx.post(f"{server.url}/v2/models//infer", json=infer_json(X)).status_code == 404
    slash = httpx.post(f"{server.infer_url}/", json=infer_json(X))
    assert slash.status_code == 307 and slash.headers["location"].endswith("/infer")  # as before: the router redirects
    answer = httpx.post(server.infer_url, json=infer_json(X))
    assert answer.headers["content-type"] == "application/json"
    assert int(answer.headers["content-length"]) == len(answer.content)


def test_binary_sizes_that_do_not_match_are_rejected(server: ServerProcess) -> None:
    head = json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 999}}]}).encode()
    resp = httpx.post(server.infer_url, content=head + b"\0" * 32,
                      headers={"Inference-Header-Content-Length": str(len(head))})
    assert resp.status_code == 400
    over = httpx.post(server.infer_url, content=b"{}", headers={"Inference-Header-Content-Length": "99"})
    assert over.status_code == 400


def test_oversized_body_is_refused_before_being_read(server: ServerProcess) -> None:
    declared = httpx.post(server.infer_url, content=b"x" * 70000)
    assert declared.status_code == 413 and "limit" in declared.json()["error"]

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(100):
            yield b"y" * 4096
    streamed = httpx.post(server.infer_url, content=chunks())
    assert streamed.status_code == 413


def test_compression_bombs_are_bounded(server: ServerProcess) -> None:
    bomb = gzip.compress(b" " * 10_000_000)
    resp = httpx.post(server.infer_url, content=bomb, headers={"Content-Encoding": "gzip"})
    assert resp.status_code == 413 and "decompressed" in resp.json()["error"]
    small = gzip.compress(json.dumps(infer_json(X)).encode())
    ok = httpx.post(server.infer_url, content=small, headers={"Content-Encoding": "gzip"})
    assert ok.status_code == 200


def test_metrics_count_requests_by_code(server: ServerProcess) -> None:
    httpx.post(server.infer_url, json=infer_json(X))
    httpx.post(server.infer_url, content=b"{broken")
    text = httpx.get(f"{server.url}/metrics").text
    labels = 'model="linear",modeldeployment="",protocol="rest",version="1.0.0"'
    assert f'onnx_server_requests_total{{code="200",{labels}}}' in text
    assert f'onnx_server_requests_total{{code="400",{labels}}}' in text
    for name in ("onnx_server_request_duration_seconds_bucket", "onnx_server_queue_duration_seconds_bucket",
                 "onnx_server_inference_duration_seconds_bucket", "onnx_server_batch_size_bucket",
                 "onnx_server_in_flight_requests"):
        assert name in text


def test_concurrent_requests_are_batched_and_answered_correctly(batching_server: ServerProcess) -> None:
    rows = [[[float(i), float(i + 1), float(-i), 1.0]] for i in range(24)]
    results: dict[int, list[float]] = {}

    def call(i: int) -> None:
        resp = httpx.post(batching_server.infer_url, json=infer_json(rows[i]), timeout=30)
        results[i] = resp.json()["outputs"][0]["data"]
    threads = [threading.Thread(target=call, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    for i in range(24):
        np.testing.assert_allclose(results[i], expected(rows[i]).reshape(-1), rtol=1e-6)
    text = httpx.get(f"{batching_server.url}/metrics").text
    sizes = [line for line in text.splitlines() if line.startswith("onnx_server_batch_size_sum")]
    counts = [line for line in text.splitlines() if line.startswith("onnx_server_batch_size_count")]
    total_rows, runs = float(sizes[0].split()[-1]), float(counts[0].split()[-1])
    assert total_rows / runs > 1.5, "requests arriving together share onnxruntime runs"


def test_sigterm_finishes_in_flight_requests_then_exits(tmp_path: Path) -> None:
    srv = ServerProcess(model_dir(tmp_path, make_model()), "--max-batch-size", "4", "--max-delay-ms", "1500")
    result: dict[str, int] = {}
    t = threading.Thread(target=lambda: result.setdefault(
        "code", httpx.post(srv.infer_url, json=infer_json(X[:1]), timeout=30).status_code))
    t.start()
    wait_for("the request to wait in the batch queue", lambda: 'onnx_server_in_flight_requests{model="linear",'
             'modeldeployment="",protocol="rest",version="1.0.0"} 1.0' in httpx.get(f"{srv.url}/metrics").text,
             timeout=10, interval=0.05)

    srv.proc.send_signal(signal.SIGTERM)

    t.join(timeout=30)
    assert result.get("code") == 200
    # uvicorn re-raises SIGTERM once in-flight work is done, as the default handler would
    assert srv.proc.wait(timeout=30) in (0, -signal.SIGTERM)


def test_a_model_that_does_not_load_fails_before_listening(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "model.onnx").write_bytes(b"garbage")
    proc = subprocess.run([sys.executable, "-m", "onnx_server.cli", "serve", "--model-dir", str(tmp_path),
                           "--name", "m", "--version", "1", "--port", "0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 7 and "InvalidModel" in proc.stdout


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.lists(st.integers(min_value=-3, max_value=2**40), max_size=6),
       dtype=st.sampled_from(["FP32", "FP64", "INT64", "BOOL", "UINT8", "NOPE"]),
       data=st.lists(st.one_of(st.floats(allow_nan=True), st.integers(), st.text(max_size=3), st.none()), max_size=12))
def test_no_input_ever_causes_a_server_error(server: ServerProcess, shape: list[int], dtype: str, data: list) -> None:
    body = json.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": dtype, "data": data}]})  # NaN allowed
    resp = httpx.post(server.infer_url, content=body.encode())
    assert resp.status_code in (200, 400), resp.text
    assert resp.status_code == 200 or "error" in resp.json()


def test_header_length_must_be_a_number(server: ServerProcess) -> None:
    resp = httpx.post(server.infer_url, content=b"{}", headers={"Inference-Header-Content-Length": "abc"})
    assert resp.status_code == 400


def test_struct_packed_fp32_matches(server: ServerProcess) -> None:
    data = struct.pack("<4f", 1, 2, 3, 4)
    head = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                   "parameters": {"binary_data_size": 16}}]}).encode()
    resp = httpx.post(server.infer_url, content=head + data,
                      headers={"Inference-Header-Content-Length": str(len(head))})
    assert resp.status_code == 200
    np.testing.assert_allclose(resp.json()["outputs"][0]["data"], expected([[1, 2, 3, 4]]).reshape(-1), rtol=1e-6)


def test_a_non_tensor_output_asked_for_by_name_gets_a_400_saying_what_it_is(tmp_path: Path) -> None:
    srv = ServerProcess(model_dir(tmp_path / "iris", iris_model()), name="iris")
    try:
        body = {"inputs": [{"name": "float_input", "shape": [3, 2], "datatype": "FP32", "data": [1.0] * 6}],
                "outputs": [{"name": "probabilities"}]}
        resp = httpx.post(f"{srv.url}/v2/models/iris/infer", json=body)
        labels = httpx.post(f"{srv.url}/v2/models/iris/infer", json={**body, "outputs": [{"name": "label"}]})
    finally:
        srv.stop()

    assert resp.status_code == 400
    assert "probabilities is a seq(map(int64,tensor(float)))" in resp.json()["error"]
    assert "tensor outputs are ['label']" in resp.json()["error"]
    assert labels.status_code == 200, labels.text


class Responses:
    """HTTP/1.1 responses read off one kept connection, each by its Content-Length (none after a HEAD request:
    `to_head`); bytes past a response are the next one's."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.data = sock, b""

    def _more(self, where: str) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"the connection closed {where} ({self.data[:200]!r})"
        self.data += chunk

    def next(self, to_head: bool = False) -> tuple[bytes, bytes]:
        while b"\r\n\r\n" not in self.data:
            self._more("before a response head")
        head, _, rest = self.data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
                       if line.lower().startswith(b"content-length:")), 0)
        if to_head or head.startswith(b"HTTP/1.1 100 ") or head.split(b" ")[1] in (b"204", b"304"):
            length = 0
        self.data = rest
        while len(self.data) < length:
            self._more("inside a body")
        body, self.data = self.data[:length], self.data[length:]
        return head, body

    def done(self) -> None:
        assert self.data == b"", f"bytes no request asked for: {self.data[:200]!r}"


def test_a_kept_connection_gets_every_response_whole_and_on_time(server: ServerProcess) -> None:
    """A response's head goes out with its body in one write (connections.OneWrite). Each response still
    arrives before the client's next request: a HEAD (no body bytes), a `100 Continue` (before the body is
    sent), and a body longer than one buffer."""
    x = np.random.default_rng(5).standard_normal((4000, 4)).astype(np.float32)
    blob = x.tobytes()
    big = json.dumps({"inputs": [{"name": "x", "shape": [4000, 4], "datatype": "FP32",
                                  "parameters": {"binary_data_size": len(blob)}}]}).encode()
    small = json.dumps(infer_json(X)).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        responses = Responses(sock)
        for _ in range(2):
            sock.sendall(b"HEAD /v2/health/live HTTP/1.1\r\nhost: t\r\n\r\n")
            head, body = responses.next(to_head=True)  # times out (an error) if held for a later response
            assert head.startswith(b"HTTP/1.1 200") and body == b""
            responses.done()
            sock.sendall(b"POST /v2/models/linear/infer HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
                         b"expect: 100-continue\r\ncontent-length: %d\r\n\r\n" % len(small))
            head, _ = responses.next()
            assert head.startswith(b"HTTP/1.1 100 Continue"), head
            sock.sendall(small)
            head, body = responses.next()
            assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["id"] == "r1"
            sock.sendall(b"POST /v2/models/linear/infer HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
                         b"inference-header-content-length: %d\r\ncontent-length: %d\r\n\r\n"
                         % (len(big), len(big) + len(blob)) + big + blob)
            head, body = responses.next()
            assert head.startswith(b"HTTP/1.1 200") and len(body) > 64 << 10
            [out] = json.loads(body)["outputs"]
            np.testing.assert_allclose(np.asarray(out["data"]).reshape(4000, 2), expected(x.tolist()), rtol=1e-5)
        # pipelined: three requests in one segment get three whole answers, in order
        bodies = [json.dumps({**infer_json([row]), "id": f"p{i}"}).encode() for i, row in enumerate(X + X[:1])]
        sock.sendall(b"".join(b"POST /v2/models/linear/infer HTTP/1.1\r\nhost: t\r\ncontent-type: application/json"
                              b"\r\ncontent-length: %d\r\n\r\n%s" % (len(b), b) for b in bodies))
        assert [json.loads(responses.next()[1])["id"] for _ in bodies] == ["p0", "p1", "p2"]
        responses.done()


def test_many_kept_connections_answered_at_once_each_get_their_own_answers(server: ServerProcess) -> None:
    """Responses completed in one turn of the server's event loop are sent together (connections.WriteBatch):
    32 keep-alive clients sending at once each get every answer of their own, whole."""
    def client(k: int) -> list[str]:
        got = []
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            responses = Responses(sock)
            for i in range(40):
                body = json.dumps({**infer_json([[float(k), float(i), 0.0, 1.0]]), "id": f"{k}-{i}"}).encode()
                sock.sendall(b"POST /v2/models/linear/infer HTTP/1.1\r\nhost: t\r\ncontent-type: "
                             b"application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                head, answer = responses.next()
                responses.done()
                assert head.startswith(b"HTTP/1.1 200"), head
                doc = json.loads(answer)
                np.testing.assert_allclose(np.asarray(doc["outputs"][0]["data"]),
                                           expected([[float(k), float(i), 0.0, 1.0]]).reshape(-1), rtol=1e-6)
                got.append(doc["id"])
        return got
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(client, range(32)))
    assert results == [[f"{k}-{i}" for i in range(40)] for k in range(32)]


def test_a_stalled_run_does_not_send_the_next_requests_off_the_event_loop(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Small runs stay on the event loop by their measured time per element; one run stalled by the scheduler
    (a CPU quota, a busy core) moves that estimate at most 1.6x instead of sending the next requests to the
    run thread."""
    plane = DataPlane(ServerSettings(model_dir=model_dir(tmp_path, make_model()), name="linear", version="1",
                                     threads=1))
    plane.load()
    assert plane.model is not None
    feeds, steady, run = plane.model.warmup_feeds(), plane._seconds_per_element, plane.model.run

    def stalled(f: dict[str, np.ndarray], o: list[str] | None = None) -> dict[str, np.ndarray]:
        time.sleep(0.05)
        return run(f, o)
    monkeypatch.setattr(plane.model, "run", stalled)
    plane._timed_run(feeds, None)
    assert steady < plane._seconds_per_element <= 1.6 * steady
    assert plane._seconds_per_element * 4 < INLINE_RUN_SECONDS  # the next 4-element request still runs inline
