"""Metric gates on the real node under live traffic: a real Prometheus finds the serving pods through
Kubernetes service discovery (the scrape config the README documents), the operator judges the canary
from what it scraped, and a prober sends requests through the Service from before the change until
after the rollback. The stable version never fails a request; the only failures allowed are answers
of the failing version itself, and each test prints how many there were."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.harness import ClusterHandle, wait_for
from localcluster.models import make_model_rejecting_real_input
from localcluster.prober import CLIENTS, MixReport
from tests.e2e.conftest import ModelStore, OperatorProcess, running_operator
from tests.e2e.helpers import (
    condition,
    model_version,
    replicas_by_version,
    wait_condition,
    wait_mv_phase,
    wait_until,
)
from tests.e2e.test_live_traffic import Traffic
from tests.e2e.test_live_traffic import traffic as live_traffic
from tests.prometheus import Prometheus, kubernetes_sd_scrape_config
from tests.runtime.conftest import free_port

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("operator")]
traffic = live_traffic  # the fixture: `web` on v1 under a prober, as in the live-traffic tests


def gated(**analysis: object) -> dict[str, object]:
    """A canary holding 50% for 30 s, judged every 5 s."""
    return {"type": "Canary", "canary": {"steps": [{"weight": 50, "pause": "30s"}, {"weight": 100}],
                                         "analysis": {"intervalSeconds": 5, **analysis}}}


@pytest.fixture(scope="module")
def prometheus_port() -> int:
    """The operator's --prometheus-url points here; each test starts its own Prometheus on it."""
    return free_port()


@pytest.fixture(scope="module")
def operator(cluster: ClusterHandle, crds: None, operator_kubeconfig: Path, prometheus_port: int,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    yield from running_operator(cluster, operator_kubeconfig, tmp_path_factory,
                                "--prometheus-url", f"http://127.0.0.1:{prometheus_port}")


@pytest.fixture
def prometheus(cluster: ClusterHandle, namespace: str, prometheus_port: int, prometheus_bin: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Prometheus with Kubernetes discovery of this test's namespace, as a user's Prometheus would run."""
    prom = Prometheus(tmp_path_factory.mktemp("prometheus"), [kubernetes_sd_scrape_config(
        Path(cluster.kubeconfig), [namespace])], binary=str(prometheus_bin), port=prometheus_port)
    yield prom
    prom.stop()


def scraped_pods(prom: Prometheus, namespace: str) -> set[str]:
    return {t["metric"]["pod"] for t in prom.query(f'up{{job="onnx-serving",namespace="{namespace}"}} == 1')}


# the share of the version's answers that were not 200, from this ModelDeployment's series only
ERROR_RATIO = {"name": "error-ratio", "max": 0.05, "query": (
    'sum(rate(onnx_server_requests_total{modeldeployment="{{modeldeployment}}",version="{{version}}",'
    'code!="200"}[1m])) / sum(rate(onnx_server_requests_total{modeldeployment="{{modeldeployment}}",'
    'version="{{version}}"}[1m]))')}


def erring_version(cluster: ClusterHandle, namespace: str, models: ModelStore) -> None:
    """ModelVersion `erring` (4.0.0) verified: it warms up and reports Ready, then rejects every real
    input, so its pods take traffic and fail it."""
    cluster.apply(model_version("erring", models.publish(f"erring-{namespace}.onnx",
                                                         make_model_rejecting_real_input()), version="4.0.0"),
                  namespace)
    wait_mv_phase(cluster, namespace, "erring", "Ready")


def rolled_back_by_gate(cluster: ClusterHandle, namespace: str, traffic: Traffic, prometheus: Prometheus,
                        version: str, strategy: dict[str, object], name: str,
                        kinds: tuple[str, ...] = CLIENTS) -> tuple[dict[str, Any], MixReport, float, float]:
    """`web` on v1 under the clients, then `version` rolled out until its gate rolls it back and its pods are
    gone; returns the ModelDeployment at the rollback, the clients' report, and (on the clients' clock)
    when the change was applied and when the rollback was seen."""
    mix = traffic.start_web(2, kinds=kinds, strategy=strategy)
    wait_for("v1's two pods discovered and scraped", lambda: len(scraped_pods(prometheus, namespace)) == 2,
             timeout=60)
    before = mix.elapsed()
    traffic.apply_web(version, 2, strategy=strategy)
    md = wait_condition(cluster, namespace, "web", "RolledBack", timeout=240)
    rolled_back_at = mix.elapsed()
    wait_for(f"the {version} pods gone", lambda: replicas_by_version(cluster, namespace, "web") == {"v1": 2},
             timeout=120)
    return md, traffic.finish(mix, name), before, rolled_back_at


def test_slow_canary_on_the_real_node_is_rolled_back_by_its_latency_gate(
        cluster: ClusterHandle, namespace: str, models: ModelStore, traffic: Traffic, prometheus: Prometheus) -> None:
    # a request to 3.0.0 waits up to 400 ms for a batch of 8 that 12 requests a second never fill
    cluster.apply(model_version("slow", models.model(f"live-slow-{namespace}.onnx", scale=3.0), version="3.0.0",
                                runtime={"batching": {"maxBatchSize": 8, "maxDelayMs": 400}}), namespace)
    wait_mv_phase(cluster, namespace, "slow", "Ready")
    md, report, _, _ = rolled_back_by_gate(cluster, namespace, traffic, prometheus, "slow",
                                           gated(latencyP99Ms=250, successRate=0.99), "latency gate rollback")
    slow = [s.latency for s in report.samples if s.version == "3.0.0"]
    traffic.say(f"[prober: latency gate] {len(slow)} requests answered by the slow 3.0.0, none failed; "
                f"their median latency {1000 * sorted(slow)[len(slow) // 2]:.0f} ms" if slow else
                "[prober: latency gate] no request reached 3.0.0")
    rolled = condition(md, "RolledBack")
    assert rolled["reason"] == "LatencyP99Ms", rolled
    assert "above the maximum 250" in rolled["message"]
    assert md["status"]["servingVersion"] == "v1"
    assert report.failed == 0, report.describe_failures()
    assert slow, "the gate judged pods that no request of the prober reached"


def test_canary_answering_with_errors_is_rolled_back_by_a_query_gate_and_only_its_answers_fail(
        cluster: ClusterHandle, namespace: str, models: ModelStore, traffic: Traffic, prometheus: Prometheus) -> None:
    erring_version(cluster, namespace, models)
    md, report, before, rolled_back_at = rolled_back_by_gate(
        cluster, namespace, traffic, prometheus, "erring", gated(queries=[ERROR_RATIO]), "error gate rollback")
    failed = report.failures
    rejected = [s for s in failed if s.status == 400 and "rejected the input" in (s.reason or "")]
    traffic.say(f"[prober: error gate] {len(failed)} failed requests of {report.total} sent; {len(rejected)} of "
                f"them 4.0.0's HTTP 400 'the model rejected the input'")
    rolled = condition(md, "RolledBack")
    assert rolled["reason"] == "Query:error-ratio", rolled
    assert md["status"]["servingVersion"] == "v1"
    assert failed, "the erring version answered no request: the gate judged nothing the prober sent"
    assert len(rejected) == len(failed), "a failure other than the erring version's answers: " + \
        report.describe_failures()
    assert all(before < s.sent < rolled_back_at + 15 for s in failed), "a failure outside the canary's life"
    assert set(report.versions) == {"1.0.0"}, "only v1 answers successfully"


GRPC_ONLY = ("triton-grpc",)


def test_grpc_only_traffic_gives_a_good_canary_the_requests_to_pass_its_gates(
        cluster: ClusterHandle, namespace: str, traffic: Traffic, prometheus: Prometheus) -> None:
    """One tritonclient.grpc channel is all the traffic: GOAWAY after the connection age places it anew,
    so the canary's gates see requests and pass (no GatesHadNoData), and status shows the served split."""
    strategy = gated(successRate=0.99)
    mix = traffic.start_web(2, kinds=GRPC_ONLY, strategy=strategy)
    wait_for("v1's two pods discovered and scraped", lambda: len(scraped_pods(prometheus, namespace)) == 2,
             timeout=60)

    traffic.apply_web("v2", 2, strategy=strategy)
    during = wait_until(cluster, "md", namespace, "web", "the canary's served share in status", lambda o: any(
        v["name"] == "v2" and (v.get("observedShare") or 0) > 0 for v in o["status"].get("versions", [])),
        timeout=180)
    md = wait_until(cluster, "md", namespace, "web", "v2 serving everything", lambda o: o["status"].get(
        "servingVersion") == "v2" and condition(o, "Ready").get("status") == "True", timeout=300)

    report = traffic.finish(mix, "gRPC-only, gated canary")
    shares = {v["name"]: v.get("observedShare") for v in during["status"]["versions"]}
    traffic.say(f"[clients: gRPC-only gates] observed shares during the 50% step {shares}")
    assert report.failed == 0, report.describe_failures()
    assert md["status"]["history"][-1]["result"] == "Succeeded", md["status"]["history"][-1]
    assert all(h.get("reason", "").split(":")[0] != "GatesHadNoData" for h in md["status"]["history"])
    assert "answering" in condition(during, "Progressing")["message"]
    assert abs(sum(s or 0 for s in shares.values()) - 1) < 0.02
    assert all("observedShare" not in v for v in md["status"]["versions"]), "no split is claimed at rest"


def test_grpc_only_traffic_rolls_back_an_erring_canary_by_its_gate(
        cluster: ClusterHandle, namespace: str, models: ModelStore, traffic: Traffic, prometheus: Prometheus) -> None:
    erring_version(cluster, namespace, models)
    md, report, _, _ = rolled_back_by_gate(cluster, namespace, traffic, prometheus, "erring",
                                           gated(queries=[ERROR_RATIO]), "gRPC-only, erring canary", kinds=GRPC_ONLY)
    rejected = [s for s in report.failures if s.status == 400 and "rejected the input" in (s.reason or "")]
    traffic.say(f"[clients: gRPC-only error gate] {report.failed} failed of {report.total}, {len(rejected)} of "
                "them 4.0.0's INVALID_ARGUMENT")
    assert condition(md, "RolledBack")["reason"] == "Query:error-ratio", condition(md, "RolledBack")
    assert report.failed > 0 and len(rejected) == report.failed, report.describe_failures()
    assert set(report.versions) == {"1.0.0"}
