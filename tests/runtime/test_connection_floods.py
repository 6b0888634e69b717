"""Connection floods against an onnx-server whose soft and hard descriptor limits are both 1,024: slow
headers, slow bodies and idle connections, 1,500 each, on REST; slow handshakes on gRPC. The server keeps
answering honest clients, closes the flood by the stated timeouts, and drains fast on SIGTERM."""

from __future__ import annotations

import contextlib
import resource
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from localcluster.harness import wait_for
from localcluster.models import make_model
from tests.runtime.conftest import ServerProcess, model_dir
from tests.runtime.test_server import X, expected, infer_json

pytestmark = pytest.mark.slow
FLOOD = 1500
HEADER_TIMEOUT, BODY_TIMEOUT, IDLE_TIMEOUT = 2.0, 2.0, 3.0
LIMITS = ("--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT),
          "--idle-timeout", str(IDLE_TIMEOUT), "--min-body-rate", "65536")
NOFILE_1024 = ("prlimit", "--nofile=1024:1024")


@pytest.fixture(scope="module", autouse=True)
def enough_descriptors_here() -> Iterator[None]:
    """The test process itself holds the flood's 1,500 sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(model_dir(tmp_path, make_model()), *LIMITS, wrapper=NOFILE_1024)
    yield srv
    srv.stop()


def close_now(socks: list[socket.socket]) -> None:
    """Closes with a reset (SO_LINGER 0): thousands of flood sockets left in TIME_WAIT would hold loopback
    ports that later tests pick as free."""
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()


class Flood:
    """`count` connections to `port`, each sent `first` and then nothing more, opened as fast as the
    server takes them (each connect bounded by 2 s)."""

    def __init__(self, port: int, first: bytes, count: int = FLOOD) -> None:
        self.socks: list[socket.socket] = []
        self.refused = 0
        for _ in range(count):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                if first:
                    sock.sendall(first)
                sock.setblocking(False)
                self.socks.append(sock)
            except OSError:
                self.refused += 1
        self.opened_at = time.monotonic()

    def open_count(self) -> int:
        """Flood connections the server has not closed yet (no EOF, no response)."""
        still = 0
        for sock in self.socks:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                still += 1
                continue
            except OSError:
                continue
            if not data:
                continue
            still += 0  # the server answered (408 or 503) and closes
        return still

    def close(self) -> None:
        close_now(self.socks)


def answered_quickly(srv: ServerProcess) -> httpx.Response:
    """One honest request on a new connection, within 1 s."""
    return httpx.post(srv.infer_url, json=infer_json(X), timeout=1.0, headers={"connection": "close"})


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def check_flood(srv: ServerProcess, flood: Flood, timeout: float, what: str) -> None:
    held, rss = flood.open_count(), rss_mb(srv.proc.pid)
    during = answered_quickly(srv)  # the cap keeps the server answering: 200, or 503 with Retry-After
    assert during.status_code == 200 or (during.status_code == 503 and during.headers["retry-after"]), during.text
    wait_for(f"the {what} flood closed by its timeout", lambda: flood.open_count() == 0,
             timeout=timeout + 5, interval=0.25)
    cleared = time.monotonic() - flood.opened_at
    after = answered_quickly(srv)
    print(f"\n[{what}] {len(flood.socks)} connected ({flood.refused} refused), {held} held by the server, "
          f"RSS {rss:.0f} MB; during: HTTP {during.status_code}; all closed {cleared:.1f}s after the flood "
          f"(timeout {timeout:g}s); after: HTTP {after.status_code} in {after.elapsed.total_seconds() * 1000:.0f} ms")
    assert after.status_code == 200
    assert cleared <= timeout + 3, f"the {what} flood outlived its timeout"


def test_slow_headers_are_cut_at_the_header_timeout(server: ServerProcess) -> None:
    flood = Flood(server.port, b"POST /v2/models/linear/infer HTTP/1.1\r\nHost: x\r\n")
    try:
        check_flood(server, flood, HEADER_TIMEOUT, "slow headers")
    finally:
        flood.close()


def test_slow_bodies_are_cut_at_the_body_timeout(server: ServerProcess) -> None:
    head = (b"POST /v2/models/linear/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n{")
    flood = Flood(server.port, head)
    try:
        check_flood(server, flood, BODY_TIMEOUT + 100000 / 65536, "slow bodies")
    finally:
        flood.close()


def test_idle_connections_make_room_at_the_cap_and_close_at_the_idle_timeout(server: ServerProcess) -> None:
    flood = Flood(server.port, b"")
    try:
        # idle connections are evicted oldest first at the cap: an honest client is answered at once
        first = answered_quickly(server)
        assert first.status_code == 200, first.text
        check_flood(server, flood, IDLE_TIMEOUT, "idle")
    finally:
        flood.close()
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'reason="evicted"' in metrics and 'reason="idle_timeout"' in metrics


def test_an_honest_slow_upload_at_the_minimum_rate_succeeds(server: ServerProcess) -> None:
    rows = np.tile(np.asarray(X, dtype=np.float32), (6400, 1))  # 12,800 x 4 FP32: 204,800 bytes
    blob = rows.tobytes()
    head = (b'{"inputs": [{"name": "x", "shape": [12800, 4], "datatype": "FP32", '
            b'"parameters": {"binary_data_size": %d}}]}' % len(blob))
    body = head + blob

    def slowly() -> Iterator[bytes]:
        for i in range(0, len(body), 8192):  # 80 KiB/s, above the 64 KiB/s minimum
            time.sleep(0.1)
            yield body[i:i + 8192]

    started = time.monotonic()
    resp = httpx.post(server.infer_url, content=slowly(), timeout=30,
                      headers={"Inference-Header-Content-Length": str(len(head)),
                               "Content-Type": "application/octet-stream", "Content-Length": str(len(body))})
    took = time.monotonic() - started
    assert resp.status_code == 200, resp.text
    assert took > BODY_TIMEOUT, "the upload was not slower than the base body timeout"
    out = np.asarray(resp.json()["outputs"][0]["data"], dtype=np.float32).reshape(-1, 2)
    np.testing.assert_allclose(out[:2], expected(X), rtol=1e-5)


def test_sigterm_during_a_flood_exits_when_the_requests_in_flight_are_done(tmp_path: Path) -> None:
    srv = ServerProcess(model_dir(tmp_path, make_model()), *LIMITS, "--max-batch-size", "8",
                        "--max-delay-ms", "1500", "--grace-seconds", "25", wrapper=NOFILE_1024)
    head = (b"POST /v2/models/linear/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n{")
    in_flight: dict[str, httpx.Response] = {}
    t = threading.Thread(target=lambda: in_flight.setdefault(
        "r", httpx.post(srv.infer_url, json=infer_json(X), timeout=10)))
    flood: Flood | None = None
    try:
        t.start()
        wait_for("the request to wait in its batch", lambda: 'onnx_server_in_flight_requests{model="linear",'
                 'modeldeployment="",protocol="rest",version="1.0.0"} 1.0' in httpx.get(f"{srv.url}/metrics").text,
                 timeout=10, interval=0.05)
        flood = Flood(srv.port, head, count=300)
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        srv.proc.wait(timeout=20)
        took = time.monotonic() - started
        t.join(timeout=10)
    finally:
        if flood is not None:
            flood.close()
        srv.stop()
    print(f"\n[drain] exited {took:.1f}s after SIGTERM with 300 slow bodies open (grace 25 s)")
    assert in_flight["r"].status_code == 200
    assert took < 8, "the slow bodies held the grace period"


def test_grpc_slow_handshakes_are_cut_and_calls_keep_being_answered(server: ServerProcess) -> None:
    """At the gRPC cap new connections are closed at once (UNAVAILABLE, which clients retry); the slow
    handshakes holding the cap are cut at the handshake deadline (--header-timeout), then calls go through."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"  # the connection preface, without the SETTINGS frame
    flood = Flood(int(server.grpc_port or 0), preface[:10])
    tensor = grpcclient.InferInput("x", [2, 4], "FP32")
    tensor.set_data_from_numpy(np.asarray(X, dtype=np.float32))

    def answered() -> list[np.ndarray] | None:
        client = grpcclient.InferenceServerClient(server.grpc_target)
        try:
            return [client.infer("linear", [tensor], client_timeout=1).as_numpy("y")]
        except grpcclient.InferenceServerException:
            return None
        finally:
            client.close()
    try:
        out = wait_for("a gRPC call answered after the flood", answered, timeout=HEADER_TIMEOUT + 10, interval=0.1)
        after = time.monotonic() - flood.opened_at
        left = flood.open_count()
    finally:
        flood.close()
    print(f"\n[grpc slow handshakes] {len(flood.socks)} connected ({flood.refused} refused); a call answered "
          f"{after:.1f}s after the flood (handshake deadline {HEADER_TIMEOUT:g}s), {left} flood connections left")
    np.testing.assert_allclose(out[0], expected(X), rtol=1e-5)
    assert after <= HEADER_TIMEOUT + 3, "the slow handshakes held the gRPC port past their deadline"


class H2Flood:
    """`count` HTTP/2 connections to a gRPC port that complete the connection preface and then either sit
    idle or open one ModelInfer stream and never send its message."""

    def __init__(self, port: int, count: int, open_stream: bool) -> None:
        self.socks: list[socket.socket] = []
        for _ in range(count):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError:
                continue
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            if open_stream:
                conn.send_headers(1, [(":method", "POST"), (":scheme", "http"), (":authority", "x"),
                                      (":path", "/inference.GRPCInferenceService/ModelInfer"),
                                      ("content-type", "application/grpc"), ("te", "trailers")])
            with contextlib.suppress(OSError):
                sock.sendall(conn.data_to_send())
            sock.setblocking(False)
            self.socks.append(sock)
        self.opened_at = time.monotonic()

    def open_count(self) -> int:
        """Connections the server has not closed (frames it sent, SETTINGS or GOAWAY, are read and dropped)."""
        still = 0
        for sock in self.socks:
            try:
                while sock.recv(65536):
                    pass
            except BlockingIOError:
                still += 1
            except OSError:
                pass
        return still

    def close(self) -> None:
        close_now(self.socks)


@pytest.mark.parametrize("open_stream", [False, True], ids=["idle-channels", "open-streams"])
def test_grpc_idle_channels_and_open_streams_are_bounded(tmp_path: Path, open_stream: bool) -> None:
    """Idle HTTP/2 connections get GOAWAY after the idle timeout; a stream that never sends its message
    is bounded by the connection age plus its grace. Calls are answered once they are gone."""
    srv = ServerProcess(model_dir(tmp_path, make_model()), *LIMITS, "--max-connection-age", "2",
                        "--grace-seconds", "2", wrapper=NOFILE_1024)
    flood = H2Flood(int(srv.grpc_port or 0), FLOOD, open_stream)
    bound = (2 * 1.1 + 2) if open_stream else IDLE_TIMEOUT
    tensor = grpcclient.InferInput("x", [2, 4], "FP32")
    tensor.set_data_from_numpy(np.asarray(X, dtype=np.float32))
    try:
        wait_for("the flood's connections closed", lambda: flood.open_count() == 0, timeout=bound + 10,
                 interval=0.25)
        cleared = time.monotonic() - flood.opened_at
        client = grpcclient.InferenceServerClient(srv.grpc_target)
        try:
            out = client.infer("linear", [tensor], client_timeout=2).as_numpy("y")
        finally:
            client.close()
    finally:
        flood.close()
        srv.stop()
    kind = "open streams" if open_stream else "idle channels"
    print(f"\n[grpc {kind}] {len(flood.socks)} connected; all closed {cleared:.1f}s after the flood (bound {bound:g}s)")
    np.testing.assert_allclose(out, expected(X), rtol=1e-5)
    assert cleared <= bound + 4
