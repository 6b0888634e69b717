"""--max-connection-age: keep-alive (REST) and HTTP/2 (gRPC) connections end cleanly after their age,
so kube-proxy can place their clients anew, and no request is lost to it."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from localcluster.models import make_model
from localcluster.prober import ClientMix, Report
from tests.runtime.conftest import ServerProcess, model_dir
from tests.runtime.test_prober import RoundRobin
from tests.runtime.test_server import X, expected, infer_json

AGE = 0.3  # seconds: short, so that a few seconds of traffic cross many ages


@pytest.fixture(scope="module")
def aged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(model_dir(tmp_path_factory.mktemp("aged"), make_model()), "--max-connection-age", str(AGE))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def slow_aged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Every request waits 1 s for a batch: in flight across its connection's age."""
    srv = ServerProcess(model_dir(tmp_path_factory.mktemp("slow"), make_model()), "--max-connection-age", str(AGE),
                        "--max-batch-size", "64", "--max-delay-ms", "1000")
    yield srv
    srv.stop()


def raw_request(sock: socket.socket, port: int) -> None:
    body = httpx.Request("POST", "http://x", json=infer_json(X)).read()
    sock.sendall(b"POST /v2/models/linear/infer HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (port, len(body), body))


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """(head, body) of one response with Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                  if line.startswith(b"content-length"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside a response body"
        rest += chunk
    return head, rest[:length]


def test_a_connection_older_than_the_age_gets_connection_close_then_is_closed(aged: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", aged.port), timeout=10) as sock:
        opened = time.monotonic()
        heads = []
        for _ in range(200):  # bounded: ~5 ms apart, the age (+10%) passes within ~70 of them
            raw_request(sock, aged.port)
            head, body = read_response(sock)
            assert head.startswith(b"HTTP/1.1 200"), head
            heads.append((time.monotonic() - opened, head.lower()))
            if b"connection: close" in head.lower():
                break
            time.sleep(0.005)
        closing_at = next(at for at, head in heads if b"connection: close" in head)
        assert AGE * 0.9 <= closing_at <= AGE * 1.1 + 0.5, heads
        assert all(b"connection: close" not in head for _, head in heads[:-1])
        # the answer is whole and right, then the server ends the connection (EOF, not a reset)
        answer = np.asarray(httpx.Response(200, content=body).json()["outputs"][0]["data"], dtype=np.float32)
        np.testing.assert_allclose(answer.reshape(2, 2), expected(X), rtol=1e-5)
        sock.settimeout(5)
        assert sock.recv(1) == b""


def test_an_idle_connection_is_never_closed_under_its_client_by_the_age(aged: ServerProcess) -> None:
    """Past its age an idle connection stays open: the client's next request is answered on it (with
    Connection: close), so a POST sent at that moment is never lost."""
    with socket.create_connection(("127.0.0.1", aged.port), timeout=10) as sock:
        raw_request(sock, aged.port)
        assert b"connection: close" not in read_response(sock)[0].lower()
        time.sleep(AGE * 1.1 + 0.4)  # idle across the age, within uvicorn's 5 s keep-alive timeout
        raw_request(sock, aged.port)
        head, _ = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head.lower()


def test_a_request_in_flight_when_the_age_passes_completes(slow_aged: ServerProcess) -> None:
    with httpx.Client(timeout=10) as client:
        started = time.monotonic()
        first = client.post(slow_aged.infer_url, json=infer_json(X))
        assert time.monotonic() - started > AGE * 1.1  # it was in flight when the age passed
        assert first.status_code == 200 and first.headers.get("connection") != "close"
        second = client.post(slow_aged.infer_url, json=infer_json(X))
        assert second.status_code == 200 and second.headers["connection"] == "close"
        np.testing.assert_allclose(np.asarray(second.json()["outputs"][0]["data"]).reshape(2, 2), expected(X),
                                   rtol=1e-5)


def client_port(response: httpx.Response) -> int:
    return int(response.extensions["network_stream"].get_extra_info("client_addr")[1])


def test_a_pool_sending_continuously_through_many_ages_loses_nothing(aged: ServerProcess) -> None:
    """3 threads on one httpx pool and one tritonclient.http client, 3 s each without pause."""
    failures: list[str] = []
    counts = Counter[str]()
    lock = threading.Lock()
    deadline = time.monotonic() + 3

    def pooled(client: httpx.Client) -> None:
        for _ in range(5000):  # bounded in count and time
            if time.monotonic() > deadline:
                return
            try:
                resp = client.post(aged.infer_url, json=infer_json(X), extensions={"trace": count_connects})
                ok = resp.status_code == 200 and len(resp.json()["outputs"][0]["data"]) == 4
                with lock:
                    counts["pooled"] += 1
                    if not ok:
                        failures.append(f"HTTP {resp.status_code}: {resp.text[:200]}")
            except httpx.HTTPError as exc:
                with lock:
                    failures.append(f"{type(exc).__name__}: {exc}")

    def count_connects(event: str, _: object) -> None:
        if event == "connection.connect_tcp.complete":
            with lock:
                counts["connections"] += 1

    def triton() -> None:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{aged.port}")
        tensor = httpclient.InferInput("x", [2, 4], "FP32")
        tensor.set_data_from_numpy(np.asarray(X, dtype=np.float32))
        try:
            for _ in range(5000):
                if time.monotonic() > deadline:
                    return
                try:
                    out = client.infer("linear", [tensor]).as_numpy("y")
                    with lock:
                        counts["triton"] += 1
                        if out is None or out.shape != (2, 2):
                            failures.append(f"tritonclient.http: wrong answer {out!r}")
                except Exception as exc:
                    with lock:
                        failures.append(f"tritonclient.http {type(exc).__name__}: {exc}")
        finally:
            client.close()

    before = aged_count(aged)
    with httpx.Client(timeout=10, limits=httpx.Limits(max_connections=3)) as client:
        threads = [threading.Thread(target=pooled, args=(client,)) for _ in range(3)]
        threads.append(threading.Thread(target=triton))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert failures == [], failures[:5]
    assert counts["pooled"] > 100 and counts["triton"] > 30, counts
    # 3 s / 0.3 s: each pooled connection was replaced several times
    assert counts["connections"] >= 9, counts
    assert aged_count(aged) - before >= 12


def aged_count(srv: ServerProcess) -> float:
    text = httpx.get(f"{srv.url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("onnx_server_connections_closed_total{") and 'reason="max_age"' in line)


def test_age_zero_keeps_connections_open(tmp_path: Path) -> None:
    srv = ServerProcess(model_dir(tmp_path, make_model()), "--max-connection-age", "0")
    try:
        with httpx.Client(timeout=10) as client:
            ports = {client_port(client.post(srv.infer_url, json=infer_json(X))) for _ in range(3)}
            time.sleep(0.5)
            ports.add(client_port(client.post(srv.infer_url, json=infer_json(X))))
        assert len(ports) == 1
    finally:
        srv.stop()


def infer_request() -> pb.ModelInferRequest:
    raw = np.asarray(X, dtype=np.float32)
    return pb.ModelInferRequest(model_name="linear", inputs=[
        pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[2, 4])],
        raw_input_contents=[raw.tobytes()])


class ReadyCounter:
    """Counts a channel's transitions to READY: each is a new HTTP/2 connection."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.states: list[grpc.ChannelConnectivity] = []
        channel.subscribe(self.states.append, try_to_connect=True)

    @property
    def connections(self) -> int:
        return sum(1 for s in self.states if s == grpc.ChannelConnectivity.READY)


def test_grpc_channel_gets_goaway_after_the_age_and_loses_no_call(aged: ServerProcess) -> None:
    channel = grpc.insecure_channel(aged.grpc_target)
    ready = ReadyCounter(channel)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    failures, calls = [], 0
    deadline = time.monotonic() + 3
    try:
        for _ in range(20000):
            if time.monotonic() > deadline:
                break
            try:
                out = stub.ModelInfer(infer_request(), timeout=10)
                calls += 1
                got = np.frombuffer(out.raw_output_contents[0], dtype=np.float32).reshape(2, 2)
                np.testing.assert_allclose(got, expected(X), rtol=1e-5)
            except grpc.RpcError as exc:
                failures.append(f"{exc.code()}: {exc.details()}")
    finally:
        channel.close()
    assert failures == [], failures[:5]
    assert calls > 100
    assert ready.connections >= 5, ready.states  # 3 s / (0.3 s +/- 10%): reconnected several times


def test_grpc_call_in_flight_across_the_age_completes(slow_aged: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(slow_aged.grpc_target)
    tensor = grpcclient.InferInput("x", [2, 4], "FP32")
    tensor.set_data_from_numpy(np.asarray(X, dtype=np.float32))
    try:
        for _ in range(3):  # each call waits ~1 s for its batch, longer than the age
            started = time.monotonic()
            out = client.infer("linear", [tensor], client_timeout=10).as_numpy("y")
            assert time.monotonic() - started > AGE * 1.1
            np.testing.assert_allclose(out, expected(X), rtol=1e-5)
    finally:
        client.close()


def spread(age: str, tmp: Path) -> dict[str, Report]:
    """v1 and v2 behind round-robin TCP balancers (REST and gRPC), all four kinds of client for 3 s."""
    servers = [ServerProcess(model_dir(tmp / f"v{i}", make_model(scale=float(i))), "--max-connection-age", age,
                             version=f"{i}.0.0") for i in (1, 2)]
    rest = RoundRobin([s.port for s in servers])
    grpc_lb = RoundRobin([int(s.grpc_port or 0) for s in servers])
    try:
        mix = ClientMix(rest.url, grpc_lb.url.removeprefix("http://"), "linear", rate=30, max_seconds=3).start()
        for prober in mix.probers.values():
            prober.wait(timeout=10)
        return mix.stop().reports
    finally:
        rest.close()
        grpc_lb.close()
        for s in servers:
            s.stop()


def test_every_kind_of_client_reaches_both_backends_when_connections_age(tmp_path: Path) -> None:
    reports = spread(str(AGE), tmp_path)

    for kind, report in reports.items():
        assert report.failed == 0, f"{kind}: {report.describe_failures()}"
        assert report.total >= 80, f"{kind}: {report.summary()}"
        assert set(report.versions) == {"1.0.0", "2.0.0"}, f"{kind} stayed on one backend: {report.summary()}"


def test_without_connection_age_single_connection_clients_stay_pinned(tmp_path: Path) -> None:
    reports = spread("0", tmp_path)

    assert all(r.failed == 0 for r in reports.values())
    for kind in ("triton-http", "triton-grpc"):
        assert len(reports[kind].versions) == 1, f"{kind}: {reports[kind].summary()}"
