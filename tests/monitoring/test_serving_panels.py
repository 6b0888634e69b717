"""The dashboard's serving panels against real onnx-server processes on 127.0.0.1 and a real Prometheus: two
versions of one ModelDeployment (1.0.0 answers, 4.0.0 rejects every real input), payload logging on, traffic to
both; every panel that reads serving series must show data. (The rollout and operator panels need the operator
and a cluster: tests/e2e/test_observability.py runs all of them on the real node.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from localcluster.harness import wait_for
from localcluster.models import make_model, make_model_rejecting_real_input
from localcluster.prober import DEFAULT_BODY
from monitoring.dashboard import expand, panel_queries
from tests.monitoring.conftest import tool
from tests.payload_sink import EventSink
from tests.prometheus import Prometheus, static_scrape_config
from tests.runtime.conftest import ServerProcess, model_dir

SERVING = [(title, expr) for title, expr in panel_queries() if "onnx_operator_" not in expr]
VARIABLES = {"namespace": ".*", "modeldeployment": "web", "model": "linear", "version": ".*"}


@pytest.fixture(scope="module")
def sink() -> Iterator[EventSink]:
    s = EventSink()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, sink: EventSink) -> Iterator[list[ServerProcess]]:
    logging = ("--model-deployment", "web", "--payload-log-url", sink.url, "--payload-log-sample-rate", "0.5")
    good = ServerProcess(model_dir(tmp_path_factory.mktemp("v1"), make_model()), *logging, version="1.0.0")
    bad = ServerProcess(model_dir(tmp_path_factory.mktemp("v4"), make_model_rejecting_real_input()), *logging,
                        version="4.0.0")
    yield [good, bad]
    good.stop(), bad.stop()


@pytest.fixture(scope="module")
def story(servers: list[ServerProcess], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus,
                                                                                                      float, float]]:
    targets = [s.url.removeprefix("http://") for s in servers]
    prom = Prometheus(Path(tmp_path_factory.mktemp("prom")), [static_scrape_config(targets)], binary=tool("prometheus"))
    try:
        start = time.time()
        with httpx.Client(timeout=10) as client:
            for _ in range(40):  # ~20 s of traffic to both versions, 3 of 4 requests to 1.0.0
                for srv in (servers[0], servers[0], servers[0], servers[1]):
                    client.post(srv.infer_url, json=DEFAULT_BODY)
                time.sleep(0.5)
        wait_for("both servers' last requests scraped", lambda: sum(float(s["value"][1]) for s in prom.query(
            'onnx_server_requests_total{modeldeployment="web"}')) == 160, timeout=30)
        yield prom, start, time.time()
    finally:
        prom.stop()


@pytest.mark.parametrize(("title", "expr"), SERVING, ids=[t for t, _ in SERVING])
def test_serving_panel_shows_data(story: tuple[Prometheus, float, float], title: str, expr: str) -> None:
    prom, start, end = story

    series = prom.query_range(expand(expr, VARIABLES, "5s"), start, end, step=1.0)

    assert series, f"{title}: no data"
    assert any(v[1] not in ("NaN", "+Inf", "-Inf") for s in series for v in s["values"]), f"{title}: only NaN"


def test_observed_share_follows_the_traffic_split(story: tuple[Prometheus, float, float]) -> None:
    prom, start, end = story
    [(_, expr)] = [(t, e) for t, e in SERVING if t == "Observed share per version"]

    series = prom.query_range(expand(expr, VARIABLES, "10s"), start, end, step=1.0)

    shares = {s["metric"]["version"]: float(s["values"][len(s["values"]) // 2][1]) for s in series}
    assert shares == pytest.approx({"1.0.0": 0.75, "4.0.0": 0.25}, abs=0.1)


def test_error_panel_shows_the_rejecting_versions_400s(story: tuple[Prometheus, float, float]) -> None:
    prom, start, end = story
    [(_, expr)] = [(t, e) for t, e in SERVING if t == "Error ratio by code"]

    series = prom.query_range(expand(expr, VARIABLES, "10s"), start, end, step=1.0)

    assert {(s["metric"]["version"], s["metric"]["code"]) for s in series} == {("4.0.0", "400")}
    assert max(float(v[1]) for s in series for v in s["values"]) == pytest.approx(1.0)
