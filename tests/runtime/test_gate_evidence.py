"""Gates judged from a real Prometheus scraping a real onnx-server on loopback: no evidence, no pass."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from onnx_operator.api import parse_model_version
from onnx_operator.api.modeldeployment import Analysis
from onnx_operator.handlers.gates import read_gates, request_count_query

from localcluster.harness import wait_for
from localcluster.models import make_model
from localcluster.prober import Prober
from tests.prometheus import Prometheus, static_scrape_config
from tests.runtime.conftest import ServerProcess, free_port, model_dir

GATES = Analysis(successRate=0.95, latencyP99Ms=1000)
MD = "web"  # the ModelDeployment the server says it serves


def version(v: str) -> object:
    return parse_model_version({"metadata": {"name": f"linear-{v}", "namespace": "ns"}, "spec": {
        "model": "linear", "version": v, "source": {"uri": "https://m.example/x.onnx", "sha256": "a" * 64}}})


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Prometheus]]:
    root = tmp_path_factory.mktemp("evidence")
    server = ServerProcess(model_dir(root / "srv", make_model()), "--model-deployment", MD, version="5.0.0")
    prom = Prometheus(root / "prom", [static_scrape_config([f"127.0.0.1:{server.port}"])])
    wait_for("the server scraped", lambda: prom.query('up{job="onnx-server"} == 1'), timeout=30)
    yield server, prom
    prom.stop()
    server.stop()


def test_gates_without_a_prometheus_url_are_inconclusive() -> None:
    results = read_gates(None, GATES, version("5.0.0"), MD)  # type: ignore[arg-type]

    assert [r.verdict for r in results] == ["Inconclusive", "Inconclusive"]
    assert "no Prometheus URL (--prometheus-url)" in results[0].message


def test_gates_with_prometheus_unreachable_are_inconclusive_with_the_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    results = read_gates(url, GATES, version("5.0.0"), MD)  # type: ignore[arg-type]

    assert {r.verdict for r in results} == {"Inconclusive"}
    assert f"Prometheus at {url} could not be queried: ConnectError" in results[0].message


def test_a_version_with_no_requests_is_inconclusive_not_passed(scraped: tuple[ServerProcess, Prometheus]) -> None:
    _, prom = scraped

    results = read_gates(prom.url, GATES, version("6.0.0"), MD)  # type: ignore[arg-type]

    assert {r.verdict for r in results} == {"Inconclusive"}
    assert "0 requests to the new version in the last 1m, fewer than " \
        "spec.strategy.canary.analysis.minRequests (20)" in results[0].message


def test_gates_are_judged_once_the_window_holds_min_requests(scraped: tuple[ServerProcess, Prometheus]) -> None:
    server, prom = scraped
    report = Prober(server.url, "linear", rate=20, max_requests=40, max_seconds=5).start().wait()
    assert report.failed == 0, report.describe_failures()
    count = request_count_query(version("5.0.0"), MD)  # type: ignore[arg-type]
    wait_for("the requests in prometheus", lambda: float((prom.query(count) or [{"value": [0, "0"]}])[0]["value"][1])
             >= 20, timeout=30)

    judged = read_gates(prom.url, GATES, version("5.0.0"), MD)  # type: ignore[arg-type]
    too_few = read_gates(prom.url, Analysis(successRate=0.95, minRequests=100_000),
                         version("5.0.0"), MD)  # type: ignore[arg-type]
    other = read_gates(prom.url, GATES, version("5.0.0"), "another-md")  # type: ignore[arg-type]

    assert [(r.name, r.verdict) for r in judged] == [("SuccessRate", "Passed"), ("LatencyP99Ms", "Passed")]
    assert judged[0].value == 1.0
    assert too_few[0].inconclusive and "fewer than spec.strategy.canary.analysis.minRequests (100000)" \
        in too_few[0].message
    assert {r.verdict for r in other} == {"Inconclusive"}, \
        "another ModelDeployment serving the same version in the same namespace is not judged from these pods"

