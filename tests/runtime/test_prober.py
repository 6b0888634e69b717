"""The traffic prober against real onnx-server processes on loopback."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.harness import wait_for
from localcluster.models import make_model
from localcluster.prober import Prober, percentile
from tests.runtime.conftest import ServerProcess, model_dir


class RoundRobin:
    """A tiny loopback TCP balancer: each new connection goes to the next backend (as kube-proxy
    spreads connections over a Service's endpoints)."""

    def __init__(self, ports: list[int]) -> None:
        self.ports, self.turn = ports, 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.sock.accept()
            except TimeoutError:
                continue
            port = self.ports[self.turn % len(self.ports)]
            self.turn += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=5)
            except OSError:
                client.close()  # a dead backend: the client sees its connection dropped
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(30)
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed.set()
        self.thread.join(timeout=5)
        self.sock.close()


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    root = tmp_path_factory.mktemp("prober")
    v1 = ServerProcess(model_dir(root / "v1", make_model()), version="1.0.0")
    v2 = ServerProcess(model_dir(root / "v2", make_model(scale=2.0)), version="2.0.0")
    yield v1, v2
    v1.stop()
    v2.stop()


def test_prober_sees_the_version_split_behind_a_round_robin_with_no_failures(
        two_versions: tuple[ServerProcess, ServerProcess]) -> None:
    v1, v2 = two_versions
    balancer = RoundRobin([v1.port, v2.port])
    lines: list[str] = []
    try:
        report = Prober(balancer.url, "linear", rate=40, max_requests=80, max_seconds=10,
                        on_summary=lines.append).start().wait()
    finally:
        balancer.close()

    print(report.summary())
    assert report.total == 80 and report.failed == 0, report.describe_failures()
    assert report.versions == {"1.0.0": 40, "2.0.0": 40}
    assert all(w.failed == 0 and sum(w.versions.values()) > 0 for w in report.windows(0.5))
    assert 0 < report.p50_ms <= report.p99_ms
    assert lines and "80 sent, 0 failed" in lines[-1] and "1.0.0" in lines[-1] and "2.0.0" in lines[-1]


def test_a_server_killed_mid_run_shows_as_connection_failures(tmp_path: Path) -> None:
    doomed = ServerProcess(model_dir(tmp_path / "doomed", make_model()), version="9.0.0")
    prober = Prober(doomed.url, "linear", rate=20, max_requests=60, max_seconds=10).start()
    try:
        wait_for("some answers", lambda: prober.report().versions["9.0.0"] >= 10, timeout=10)
    finally:
        doomed.stop()

    report = prober.wait()

    print(report.summary())
    assert report.total == 60
    assert report.versions["9.0.0"] >= 10 and report.failed > 0
    assert report.failed + report.versions["9.0.0"] == 60
    assert {s.error for s in report.failures} <= {"connect", "transport RemoteProtocolError",
                                                  "transport ReadError"}
    first_failure = report.failures[0].sent
    assert all(not s.ok for s in report.samples if s.sent > first_failure + 1), "a dead server never answers"


def test_a_slow_answer_past_the_timeout_is_a_failure(tmp_path: Path) -> None:
    slow = ServerProcess(model_dir(tmp_path / "slow", make_model()), "--max-batch-size", "8", "--max-delay-ms", "400",
                         version="3.0.0")
    try:
        # alone in its batch, each request waits the whole 400 ms batching delay
        report = Prober(slow.url, "linear", rate=2, max_requests=3, timeout=0.1).start().wait()
    finally:
        slow.stop()

    assert report.total == 3 and report.failed == 3
    assert {s.error for s in report.failures} == {"timeout"} and all(s.status is None for s in report.failures)


def test_a_non_200_answer_is_a_failure_with_its_status(two_versions: tuple[ServerProcess, ServerProcess]) -> None:
    report = Prober(two_versions[0].url, "no-such-model", rate=20, max_requests=4).start().wait()

    assert report.failed == 4 and {s.status for s in report.failures} == {404}
    assert report.failures[0].error == "http 404"


def test_the_time_bound_stops_the_prober_before_its_count(two_versions: tuple[ServerProcess, ServerProcess]) -> None:
    report = Prober(two_versions[0].url, "linear", rate=20, max_requests=10_000, max_seconds=1.0).start().wait()

    assert report.total == 20 and report.failed == 0


def test_stop_ends_a_running_prober_early(two_versions: tuple[ServerProcess, ServerProcess]) -> None:
    prober = Prober(two_versions[1].url, "linear", rate=50, max_seconds=60).start()
    wait_for("some answers", lambda: prober.report().total >= 10, timeout=10)

    report = prober.stop()

    assert not prober.running and 10 <= report.total < 100
    assert report.versions["2.0.0"] == report.total


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"rate": 0}, "rate"), ({"max_requests": 0}, "max_requests"), ({"max_seconds": -1}, "max_seconds"),
    ({"timeout": 0}, "timeout"), ({"workers": 0}, "workers"),
])
def test_bad_prober_settings_are_rejected_naming_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=f"prober {field} must be"):
        Prober("http://127.0.0.1:1", "m", **kwargs)  # type: ignore[arg-type]


def test_a_target_that_is_not_an_http_url_is_rejected() -> None:
    with pytest.raises(ValueError, match="prober base_url must be an http"):
        Prober("127.0.0.1:8080", "m")


def test_percentile_is_nearest_rank() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert percentile([], 99) == 0.0
