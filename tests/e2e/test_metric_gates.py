"""Metric gates read from a real Prometheus scraping real runtime-server processes on loopback."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from localcluster.harness import ClusterHandle, wait_for
from localcluster.models import make_model
from tests.e2e.conftest import ModelStore, OperatorProcess, running_operator
from tests.e2e.helpers import (
    condition,
    get,
    model_deployment,
    model_version,
    replicas_by_version,
    wait_condition,
    wait_mv_phase,
    wait_ready,
    wait_until,
)
from tests.prometheus import Prometheus, static_scrape_config
from tests.runtime.conftest import ServerProcess, model_dir

pytestmark = [pytest.mark.cluster]
# 300 ms sits between the buckets a fast server lands in, even on a loaded host (its p99 reached the
# 100-250 ms bucket), and the 400 ms floor the slow server's batching delay puts on every request
GATED = {"type": "Canary", "canary": {
    "steps": [{"weight": 50, "pause": "20s"}, {"weight": 100}],
    "analysis": {"latencyP99Ms": 300, "successRate": 0.95, "intervalSeconds": 5}}}


class Traffic:
    """Steady inference requests to each server until stopped (bounded in time)."""

    def __init__(self, servers: list[ServerProcess], limit_seconds: float = 240) -> None:
        self.stop_at = time.monotonic() + limit_seconds
        self.running = True
        self.threads = [threading.Thread(target=self._loop, args=(s,), daemon=True) for s in servers]
        for t in self.threads:
            t.start()

    def _loop(self, srv: ServerProcess) -> None:
        body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        with httpx.Client(timeout=10) as client:
            while self.running and time.monotonic() < self.stop_at:
                client.post(srv.infer_url, json=body)
                time.sleep(0.02)

    def stop(self) -> None:
        self.running = False
        for t in self.threads:
            t.join(timeout=15)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """Stable 1.0.0 (fast), canary 2.0.0 (fast), canary 3.0.0 (slowed by a 400 ms batching delay)."""
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed: `make deps` installs the Debian package")
    root = tmp_path_factory.mktemp("gates")
    data = make_model()
    web = ("--model-deployment", "web")  # the gates read the series of the ModelDeployment they judge
    servers = {
        "1.0.0": ServerProcess(model_dir(root / "s1", data), *web, version="1.0.0"),
        "2.0.0": ServerProcess(model_dir(root / "s2", data), *web, version="2.0.0"),
        "3.0.0": ServerProcess(model_dir(root / "s3", data), *web, "--max-batch-size", "8", "--max-delay-ms", "400",
                               version="3.0.0"),
    }
    prom = Prometheus(root / "prometheus", [static_scrape_config([f"127.0.0.1:{s.port}" for s in servers.values()])])
    traffic = Traffic(list(servers.values()))
    wait_for("latency data in prometheus", lambda: httpx.get(f"{prom.url}/api/v1/query", params={
        "query": 'sum(rate(onnx_server_requests_total{version="3.0.0"}[1m]))'}).json()["data"]["result"], timeout=60)
    yield {"prometheus": prom, "servers": servers}
    traffic.stop()
    prom.stop()
    for s in servers.values():
        s.stop()


@pytest.fixture(scope="module")
def operator(cluster: ClusterHandle, crds: None, operator_kubeconfig: Path, fleet: dict[str, object],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    prom = fleet["prometheus"]
    assert isinstance(prom, Prometheus)
    yield from running_operator(cluster, operator_kubeconfig, tmp_path_factory, "--prometheus-url", prom.url)


def rollout_to(cluster: ClusterHandle, ns: str, models: ModelStore, version: str, **spec: object) -> None:
    cluster.apply(model_version("stable", models.model(f"g-{ns}-1.onnx"), version="1.0.0"), ns)
    cluster.apply(model_version("next", models.model(f"g-{ns}-2.onnx", scale=2.0), version=version), ns)
    cluster.apply(model_deployment("web", "stable", replicas=2, strategy=GATED, **spec), ns)
    wait_ready(cluster, ns, "web")
    wait_mv_phase(cluster, ns, "next", "Ready")
    cluster.apply(model_deployment("web", "next", replicas=2, strategy=GATED, **spec), ns)


def test_slow_canary_is_rolled_back_by_the_latency_gate(
        cluster: ClusterHandle, namespace: str, models: ModelStore, operator: OperatorProcess) -> None:
    rollout_to(cluster, namespace, models, "3.0.0")

    md = wait_condition(cluster, namespace, "web", "RolledBack", timeout=90)

    rolled = condition(md, "RolledBack")
    assert rolled["reason"] == "LatencyP99Ms"
    assert "above the maximum 300" in rolled["message"]
    assert md["status"]["servingVersion"] == "stable"
    wait_for("stable at full size", lambda: replicas_by_version(cluster, namespace, "web") == {"stable": 2})


def test_healthy_canary_passes_its_gates_and_completes(
        cluster: ClusterHandle, namespace: str, models: ModelStore, operator: OperatorProcess) -> None:
    rollout_to(cluster, namespace, models, "2.0.0")

    seen_gates = wait_for("gates evaluated", lambda: (get(cluster, "md", namespace, "web")["status"].get(
        "rollout") or {}).get("gates"), timeout=60)
    assert {g["name"] for g in seen_gates} == {"SuccessRate", "LatencyP99Ms"}
    assert all(g["passed"] for g in seen_gates)

    md = wait_ready(cluster, namespace, "web", timeout=120)
    assert md["status"]["servingVersion"] == "next"


def test_canary_without_traffic_holds_on_inconclusive_gates_then_rolls_back_at_the_deadline(
        cluster: ClusterHandle, namespace: str, models: ModelStore, operator: OperatorProcess) -> None:
    # no server answers as 4.0.0, so Prometheus has no requests of it: nothing to judge
    rollout_to(cluster, namespace, models, "4.0.0", progressDeadlineSeconds=30)

    held = wait_until(cluster, "md", namespace, "web", "Progressing=GatesInconclusive",
                      lambda o: condition(o, "Progressing").get("reason") == "GatesInconclusive", 90)
    rolled = condition(wait_condition(cluster, namespace, "web", "RolledBack", timeout=120), "RolledBack")

    progressing = condition(held, "Progressing")
    assert progressing["status"] == "True"
    assert "SuccessRate inconclusive: 0 requests to the new version" in progressing["message"]
    assert held["status"]["rollout"]["stepIndex"] == 0, "the step held: no weight was added without evidence"
    assert rolled["reason"] == "GatesHadNoData" and "the gates had no data for 30s" in rolled["message"]
    wait_for("stable at full size", lambda: replicas_by_version(cluster, namespace, "web") == {"stable": 2})
