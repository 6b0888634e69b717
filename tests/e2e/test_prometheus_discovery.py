"""The documented kubernetes_sd scrape config end to end: a Prometheus built with Kubernetes discovery
finds a serving pod through this control plane's API (our labels, server-side) and scrapes the port
and path its annotations name. No pod here runs on a real node, so the pod is an object bound to no
node whose status says it runs at 127.0.0.1, where a real onnx-server listens: the only traffic is
loopback (never point a Prometheus at kwok pods: their IPs are made up)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from onnx_operator.api import ModelVersion, parse_model_version
from onnx_operator.api.modeldeployment import Analysis
from onnx_operator.handlers.gates import read_gates

from localcluster.harness import ClusterHandle, wait_for
from localcluster.models import make_model
from localcluster.prober import Prober
from tests.prometheus import Prometheus, kubernetes_sd_scrape_config
from tests.runtime.conftest import ServerProcess, model_dir

pytestmark = [pytest.mark.cluster]
SERVING = {"app.kubernetes.io/managed-by": "onnx-operator", "app.kubernetes.io/component": "serving"}


def loopback_pod(name: str, port: int, labels: dict[str, str], scrape: str = "true") -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": name, "labels": labels,
        "annotations": {"prometheus.io/scrape": scrape, "prometheus.io/port": str(port),
                        "prometheus.io/path": "/metrics"}},
        "spec": {"nodeName": "no-such-node",  # no kubelet or kwok acts on it
                 "containers": [{"name": "server", "image": "none.invalid/none:0",
                                 "ports": [{"name": "http", "containerPort": port}]}]}})


def say_running_at_loopback(cluster: ClusterHandle, ns: str, name: str) -> None:
    cluster.kubectl("patch", "pod", name, "-n", ns, "--subresource=status", "--type=merge", "-p", json.dumps(
        {"status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}}))


def version_in(namespace: str) -> ModelVersion:
    """linear 7.0.0, the version the test's server reports, as a ModelVersion of `namespace`."""
    return parse_model_version({"metadata": {"name": "linear-7", "namespace": namespace}, "spec": {
        "model": "linear", "version": "7.0.0", "source": {"uri": "https://m.example/x.onnx", "sha256": "a" * 64}}})


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(model_dir(tmp_path / "srv", make_model()), "--model-deployment", "web", version="7.0.0")
    yield srv
    srv.stop()


def test_prometheus_discovers_serving_pods_by_label_and_scrapes_what_their_annotations_name(
        cluster: ClusterHandle, namespace: str, server: ServerProcess, prometheus_bin: Path, tmp_path: Path) -> None:
    cluster.apply(loopback_pod("serving", server.port, SERVING), namespace)
    cluster.apply(loopback_pod("opted-out", server.port, SERVING, scrape="false"), namespace)
    cluster.apply(loopback_pod("not-ours", server.port, {"app": "other"}), namespace)
    for pod in ("serving", "opted-out", "not-ours"):
        say_running_at_loopback(cluster, namespace, pod)
    prom = Prometheus(tmp_path / "prom", [kubernetes_sd_scrape_config(Path(cluster.kubeconfig), [namespace])],
                      binary=str(prometheus_bin))
    try:
        up = wait_for("the serving pod scraped", lambda: prom.query('up{job="onnx-serving"} == 1'), timeout=30)
        report = Prober(server.url, "linear", rate=20, max_requests=30, max_seconds=5).start().wait()
        gates = wait_for("gates judged from the discovered pod", lambda: [g for g in read_gates(
            prom.url, Analysis(successRate=0.95), version_in(namespace), "web") if not g.inconclusive], timeout=30)
        elsewhere = read_gates(prom.url, Analysis(successRate=0.95), version_in("other-team"), "web")
    finally:
        prom.stop()

    assert [(t["metric"]["namespace"], t["metric"]["pod"]) for t in up] == [(namespace, "serving")], \
        "only the labelled pod that did not opt out is scraped"
    assert up[0]["metric"]["instance"] == f"127.0.0.1:{server.port}"
    assert report.failed == 0
    assert gates[0].passed and gates[0].value == 1.0
    assert [g.verdict for g in elsewhere] == ["Inconclusive"], \
        "the same model and version in another namespace is not judged from this namespace's pods"
