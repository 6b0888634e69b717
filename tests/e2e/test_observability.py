"""The chart's dashboard and alert rules against a real Prometheus, and payload logging from real serving pods.

One story on the real node produces every series the dashboard shows: `web` serves v1 under four clients with
payload logging to a sink on the node address; a canary to 4.0.0 (which rejects every real input) is rolled back
by its error gate; `held` runs a canary whose success-rate gate has no traffic to judge (inconclusive, the step
holds). A Prometheus discovers the serving pods (Kubernetes discovery), scrapes the operator (honor_labels, as the
chart's ServiceMonitor) and evaluates the plain rules file. Then each panel's query runs as Grafana would run it
(a range query over the story) and must return data; the alerts the story must raise are read from ALERTS."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localcluster.harness import ClusterHandle, wait_for
from localcluster.models import make_model_rejecting_real_input
from localcluster.prober import DEFAULT_BODY
from localcluster.realnode import NODE_IP
from monitoring.dashboard import expand, panel_queries
from tests.e2e.conftest import ModelStore, OperatorProcess, running_operator
from tests.e2e.helpers import (
    condition,
    model_deployment,
    model_version,
    replicas_by_version,
    wait_condition,
    wait_mv_phase,
    wait_ready,
    wait_until,
)
from tests.e2e.test_live_traffic import AGE, Traffic
from tests.e2e.test_live_traffic import traffic as live_traffic
from tests.payload_sink import EventSink
from tests.prometheus import Prometheus, kubernetes_sd_scrape_config, static_scrape_config
from tests.runtime.conftest import free_port

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.usefixtures("operator")]
traffic = live_traffic
REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "monitoring/onnx-operator.rules.yaml"
SAMPLE_RATE = 0.1
ERRORS = ('sum(rate(onnx_server_requests_total{modeldeployment="web",version="{{version}}",code!="200"}[1m])) / '
          'sum(rate(onnx_server_requests_total{modeldeployment="web",version="{{version}}"}[1m]))')


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    return {"prometheus": free_port(), "operator_metrics": free_port()}


@pytest.fixture(scope="module")
def operator(cluster: ClusterHandle, crds: None, operator_kubeconfig: Path, ports: dict[str, int],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    yield from running_operator(cluster, operator_kubeconfig, tmp_path_factory,
                                "--prometheus-url", f"http://127.0.0.1:{ports['prometheus']}",
                                "--metrics-port", str(ports["operator_metrics"]))


@pytest.fixture
def prometheus(cluster: ClusterHandle, namespace: str, ports: dict[str, int], prometheus_bin: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    prom = Prometheus(tmp_path_factory.mktemp("prometheus"), [
        kubernetes_sd_scrape_config(Path(cluster.kubeconfig), [namespace]),
        static_scrape_config([f"127.0.0.1:{ports['operator_metrics']}"], job="onnx-operator", honor_labels=True),
    ], binary=str(prometheus_bin), port=ports["prometheus"], rule_files=(RULES,))
    yield prom
    prom.stop()


@pytest.fixture
def sink() -> Iterator[EventSink]:
    s = EventSink(NODE_IP)  # serving pods reach the node address
    yield s
    s.stop()


def describe(series: list[dict[str, Any]]) -> str:
    """A panel's result in one line: each series' labels and its last value."""
    parts = []
    for s in series[:6]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s["metric"].items()) if k not in ("__name__", "job"))
        parts.append(f"{{{labels}}} last {float(s['values'][-1][1]):.3g}")
    more = f" (+{len(series) - 6} more)" if len(series) > 6 else ""
    return "; ".join(parts) + more


def test_every_panel_shows_data_and_the_alerts_fire_in_a_rollback_story(
        cluster: ClusterHandle, namespace: str, models: ModelStore, traffic: Traffic, prometheus: Prometheus,
        sink: EventSink) -> None:
    start = time.time()
    cluster.apply(model_version("erring", models.publish(f"obs-erring-{namespace}.onnx",
                                                         make_model_rejecting_real_input()), version="4.0.0"),
                  namespace)
    wait_mv_phase(cluster, namespace, "erring", "Ready")
    gated = {"type": "Canary", "canary": {"steps": [{"weight": 50, "pause": "30s"}, {"weight": 100}], "analysis": {
        "intervalSeconds": 5, "queries": [{"name": "error-ratio", "query": ERRORS, "max": 0.05}]}}}
    logging = {"url": sink.url, "sampleRate": SAMPLE_RATE}
    clients = traffic.start_web(2, strategy=gated, logging=logging)
    wait_for("web's pods scraped", lambda: len(prometheus.query(
        f'up{{job="onnx-serving",namespace="{namespace}"}} == 1')) == 2, timeout=60)

    # `held`: a canary whose gate gets no traffic to judge
    held = {"type": "Canary", "canary": {"steps": [{"weight": 50}, {"weight": 100}], "analysis": {
        "intervalSeconds": 5, "successRate": 0.9}}}
    cluster.apply(model_deployment("held", "v1", replicas=1, kwok=False, strategy=held), namespace)
    wait_ready(cluster, namespace, "held", timeout=240)
    cluster.apply(model_deployment("held", "v2", replicas=1, kwok=False, strategy=held), namespace)

    # the same spec but the version (what start_web set too): v1's pods keep their template
    cluster.apply(model_deployment("web", "erring", replicas=2, kwok=False, strategy=gated, logging=logging,
                                   runtime={"maxConnectionAgeSeconds": AGE}), namespace)
    md = wait_condition(cluster, namespace, "web", "RolledBack", timeout=240)
    wait_for("the erring pods gone", lambda: replicas_by_version(cluster, namespace, "web") == {"v1": 2}, timeout=120)
    wait_until(cluster, "md", namespace, "held", "its gates inconclusive", lambda o: (
        o["status"].get("rollout") or {}).get("gatesInconclusiveSince"), timeout=120)
    report = traffic.finish(clients, "observability story")
    time.sleep(3)  # the last scrapes and rule evaluations of the story
    end = time.time()

    variables = {"namespace": namespace, "modeldeployment": ".*", "model": "linear", "version": ".*"}
    shown = {}
    for title, expr in panel_queries():
        shown[f"{title}: {expr[:60]}"] = prometheus.query_range(expand(expr, variables, "15s"), start, end)
    alerts = {(a["metric"]["alertname"], a["metric"]["alertstate"], a["metric"].get("modeldeployment", ""))
              for a in prometheus.query_range(f'ALERTS{{namespace="{namespace}"}} or ALERTS{{namespace=""}}',
                                              start, end)}
    for name, series in shown.items():
        traffic.say(f"[panel] {name}... -> {len(series)} series: {describe(series)}")
    traffic.say(f"[alerts] {sorted(alerts)}")

    assert condition(md, "RolledBack")["reason"] == "Query:error-ratio"
    assert not [name for name, series in shown.items() if not series], "panels without data"
    assert ("ModelDeploymentRolledBack", "firing", "web") in alerts
    assert ("ModelDeploymentDegraded", "pending", "web") in alerts
    # pending for the moment before the operator's first scrape (absent counts as no leader), never firing
    assert ("OnnxOperatorNoLeader", "firing", "") not in alerts
    rejected = [s for s in report.failures if s.status == 400 and "rejected the input" in (s.reason or "")]
    assert len(rejected) == len(report.failures), "a failure other than 4.0.0's answers: " + \
        report.describe_failures()

    # payload logging from the real pods: every event names its origin, carries the tensors, pairs by id
    events = sink.received()
    requests = [e for e in events if e.headers["ce-type"].endswith(".request")]
    responses = [e for e in events if e.headers["ce-type"].endswith(".response")]
    traffic.say(f"[payload log] {len(requests)} request and {len(responses)} response events for "
                f"{report.total} client requests at sample rate {SAMPLE_RATE}")
    assert {(e.headers["ce-namespace"], e.headers["ce-modeldeployment"], e.headers["ce-model"]) for e in events} \
        == {(namespace, "web", "linear")}
    assert {e.headers["ce-modelversion"] for e in requests} == {"1.0.0", "4.0.0"}
    assert all(e.body["inputs"] == DEFAULT_BODY["inputs"] for e in requests)
    assert {e.headers["ce-requestid"] for e in responses} <= {e.headers["ce-requestid"] for e in requests}
    assert all(e.headers["ce-modelversion"] == "1.0.0" for e in responses), "4.0.0 answered nothing to log"
    assert len(requests) >= report.total * SAMPLE_RATE - 4, "fewer events than the counter sampler takes"
