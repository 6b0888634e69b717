"""Exact canary weights through a Gateway API HTTPRoute (the Gateway API CRDs from their Go module)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from localcluster.harness import ClusterHandle, wait_for
from tests.e2e.conftest import ModelStore
from tests.e2e.helpers import act, get, model_deployment, serving_v1_with_v2_verified, wait_ready

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("operator")]
GATEWAY_API = "v1.3.0"
STEPS = {"type": "Canary", "canary": {"steps": [{"weight": 30}, {"weight": 100}]}}
TRAFFIC = {"httpRoute": {"name": "web-route"}}


@pytest.fixture(scope="module")
def gateway_api(cluster: ClusterHandle) -> None:
    env = dict(os.environ, GOFLAGS="-mod=mod", GOTOOLCHAIN="local")
    out = subprocess.run(["go", "mod", "download", "-json", f"sigs.k8s.io/gateway-api@{GATEWAY_API}"],
                         cwd=tempfile.mkdtemp(), env=env, capture_output=True, text=True, check=True, timeout=600)
    crds = Path(json.loads(out.stdout)["Dir"]) / "config" / "crd" / "standard"
    cluster.kubectl("apply", "--server-side", "-f", str(crds))
    cluster.wait_crds_established("httproutes.gateway.networking.k8s.io")


def route(cluster: ClusterHandle, ns: str) -> list[tuple[str, int]]:
    rules = get(cluster, "httproute", ns, "web-route")["spec"]["rules"]
    return [(r["name"], r["weight"]) for r in rules[0]["backendRefs"]]


def selector_version(cluster: ClusterHandle, ns: str, service: str) -> Any:
    return get(cluster, "service", ns, service)["spec"]["selector"].get("serving.onnx-operator.io/version")


def test_canary_weights_are_exact_on_the_http_route(
        cluster: ClusterHandle, namespace: str, models: ModelStore, gateway_api: None) -> None:
    cluster.apply(json.dumps({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "web-route"},
        "spec": {"parentRefs": [{"name": "public"}], "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/v2/models/linear"}}],
             "backendRefs": [{"name": "web", "port": 80}]}]}}), namespace)
    serving_v1_with_v2_verified(cluster, namespace, models, "route", replicas=3, strategy=STEPS, traffic=TRAFFIC)
    wait_for("all traffic on stable", lambda: route(cluster, namespace) == [("web-stable", 100), ("web-canary", 0)])

    cluster.apply(model_deployment("web", "v2", replicas=3, strategy=STEPS, traffic=TRAFFIC), namespace)

    wait_for("30% to the canary", lambda: route(cluster, namespace) == [("web-stable", 70), ("web-canary", 30)])
    assert selector_version(cluster, namespace, "web-stable") == "v1"
    assert selector_version(cluster, namespace, "web-canary") == "v2"
    rules = get(cluster, "httproute", namespace, "web-route")["spec"]["rules"]
    assert rules[0]["matches"][0]["path"]["value"] == "/v2/models/linear", "the rest of the route is kept"

    act(cluster, namespace, "web", "promote")

    wait_ready(cluster, namespace, "web")
    wait_for("all traffic on v2", lambda: route(cluster, namespace) == [("web-stable", 100), ("web-canary", 0)]
             and selector_version(cluster, namespace, "web-stable") == "v2")
