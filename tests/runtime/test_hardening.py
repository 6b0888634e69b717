"""Every field of an inference request, given a value of the wrong JSON type or a wrong value, gets a 4xx
whose reason names the field, and the next good request on the SAME keep-alive connection succeeds."""

from __future__ import annotations

import copy
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx_server.app import guarded
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from localcluster.harness import wait_for
from localcluster.models import make_model
from tests.runtime.conftest import ServerProcess, free_port, model_dir

GOOD = {"id": "r1", "parameters": {"binary_data_output": False},
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0],
                    "parameters": {}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": False}}]}


class KeepAlive:
    """One HTTP/1.1 connection, reused for every request (a closed connection fails the next call)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        head = {"Host": f"127.0.0.1:{self.port}", "Content-Length": str(len(body)),
                "Content-Type": "application/json", **(headers or {})}
        self.sock.sendall(f"POST {path} HTTP/1.1\r\n".encode()
                          + "".join(f"{k}: {v}\r\n" for k, v in head.items()).encode("latin-1") + b"\r\n" + body)
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        raw_head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = raw_head.decode("latin-1").split("\r\n")
        fields = dict(line.lower().split(": ", 1) for line in lines[1:])
        assert fields.get("connection") != "close", f"the server closed the connection after {lines[0]}"
        length = int(fields["content-length"])
        while len(self.buffer) < length:
            self._read()
        payload, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split()[1]), payload

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the keep-alive connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def hard_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(model_dir(tmp_path_factory.mktemp("hard"), make_model()), "--max-body-bytes", "65536",
                        name="m")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def connection(hard_server: ServerProcess) -> Iterator[KeepAlive]:
    conn = KeepAlive(hard_server.port)
    yield conn
    conn.close()


def assert_next_good_request_succeeds(conn: KeepAlive) -> None:
    status, payload = conn.post("/v2/models/m/infer", json.dumps(GOOD).encode())
    assert status == 200, payload
    assert json.loads(payload)["outputs"][0]["shape"] == [1, 2]


scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=5)
any_json = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=4), inner, max_size=3), max_leaves=8)


def of_type(*kinds: type) -> st.SearchStrategy[Any]:
    """JSON values whose Python type is none of `kinds` (bool counts apart from int)."""
    def wrong(v: Any) -> bool:
        return not any(type(v) is k for k in kinds)
    return any_json.filter(wrong)


# (path into GOOD, values of a type that field never takes, the fragment the 400's reason must hold)
WRONG_TYPES: list[tuple[tuple[Any, ...], st.SearchStrategy[Any], str]] = [
    (("inputs",), of_type(list), "inputs"),
    (("inputs", 0), of_type(dict), "inputs[0]"),
    (("inputs", 0, "name"), of_type(str), "inputs[0].name"),
    (("inputs", 0, "shape"), of_type(list), "inputs[0].shape"),
    (("inputs", 0, "shape", 0), of_type(int), "inputs[0].shape"),
    (("inputs", 0, "datatype"), of_type(str), "inputs[0].datatype"),
    (("inputs", 0, "data"), of_type(list), "inputs[0].data"),
    (("inputs", 0, "data", 2), of_type(int, float, bool), "inputs[0].data"),
    (("inputs", 0, "parameters"), of_type(dict, type(None)), "inputs[0].parameters"),
    (("inputs", 0, "parameters", "binary_data_size"), of_type(int, type(None)), "inputs[0].parameters"),
    (("outputs",), of_type(list, type(None)), "outputs"),
    (("outputs", 0), of_type(dict), "outputs[0]"),
    (("outputs", 0, "name"), of_type(str), "outputs[0]"),
    (("outputs", 0, "parameters"), of_type(dict, type(None)), "outputs[0].parameters"),
    (("outputs", 0, "parameters", "binary_data"), of_type(bool), "outputs[0].parameters.binary_data"),
    (("id",), of_type(str, type(None)), "id"),
    (("parameters",), of_type(dict, type(None)), "request.parameters"),
    (("parameters", "binary_data_output"), of_type(bool), "request.parameters.binary_data_output"),
]


def replaced(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(GOOD)
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=st.sampled_from(WRONG_TYPES).flatmap(lambda c: st.tuples(st.just(c), c[1])))
def test_a_wrong_type_in_any_field_gets_400_naming_it_and_the_connection_stays_usable(
        connection: KeepAlive, case: tuple[tuple[tuple[Any, ...], Any, str], Any]) -> None:
    (path, _, fragment), value = case
    status, payload = connection.post("/v2/models/m/infer", json.dumps(replaced(path, value)).encode())
    assert status == 400, (path, value, payload)
    assert fragment in json.loads(payload)["error"], (path, value, payload)
    assert_next_good_request_succeeds(connection)


FIELDS = [("inputs",), ("inputs", 0), ("inputs", 0, "name"), ("inputs", 0, "shape"), ("inputs", 0, "shape", 1),
          ("inputs", 0, "datatype"), ("inputs", 0, "data"), ("inputs", 0, "data", 0), ("inputs", 0, "parameters"),
          ("inputs", 0, "parameters", "binary_data_size"), ("outputs",), ("outputs", 0, "name"),
          ("outputs", 0, "parameters"), ("id",), ("parameters",), ("parameters", "binary_data_output")]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(FIELDS), value=any_json | st.sampled_from(["FP64", "INT64", "BYTES", "x", "y", 2**64]))
def test_any_value_in_any_field_never_gets_a_5xx_nor_closes_the_connection(
        connection: KeepAlive, path: tuple[Any, ...], value: Any) -> None:
    status, payload = connection.post("/v2/models/m/infer", json.dumps(replaced(path, value)).encode())
    assert status in (200, 400), (path, value, payload)
    assert status == 200 or json.loads(payload)["error"]
    assert_next_good_request_succeeds(connection)


def binary_body(size_field: Any) -> tuple[bytes, bytes]:
    head = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                   "parameters": {"binary_data_size": size_field}}]}).encode()
    return head, b"\x00\x00\x80\x3f" * 4


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(header=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e) | st.sampled_from("²¹³½"),
                      min_size=1, max_size=24),
       size=st.one_of(st.just(16), scalars))
def test_binary_header_and_sizes_of_any_value_get_4xx_and_the_connection_stays_usable(
        connection: KeepAlive, header: str, size: Any) -> None:
    head, blob = binary_body(size)
    status, payload = connection.post("/v2/models/m/infer", head + blob, {"Inference-Header-Content-Length": header})
    assert status in (200, 400), (header, size, payload)
    if status == 400 and not (header.isascii() and header.isdigit()):
        assert "Inference-Header-Content-Length" in json.loads(payload)["error"]
    assert_next_good_request_succeeds(connection)


def test_a_real_server_fault_gives_500_and_keeps_the_connection() -> None:
    async def boom(_: Request) -> Response:
        raise RuntimeError("a bug")

    async def fine(_: Request) -> Response:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/boom", guarded(boom), methods=["POST"]),
                            Route("/fine", guarded(fine), methods=["POST"])])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for("uvicorn to listen", lambda: server.started, timeout=20)
        conn = KeepAlive(port)
        assert conn.post("/boom", b"{}") == (500, b'{"error":"internal error"}')
        assert conn.post("/fine", b"{}") == (200, b'{"ok":true}')
        conn.close()
    finally:
        server.should_exit = True
        deadline = time.monotonic() + 10
        while thread.is_alive() and time.monotonic() < deadline:
            thread.join(0.1)
