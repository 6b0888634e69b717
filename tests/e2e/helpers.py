"""Shared e2e helpers: manifests, reads and bounded waits on our resources."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from localcluster import kwok as kwok_nodes
from localcluster.harness import ClusterHandle, wait_for
from localcluster.prober import DEFAULT_BODY
from tests.e2e.conftest import Artifact

GROUP = "serving.onnx-operator.io/v1alpha1"
MD_LABEL = "serving.onnx-operator.io/deployment"
ACTION = "serving.onnx-operator.io/action"


def model_version(name: str, art: Artifact, version: str = "1.0.0", **spec: Any) -> str:
    return json.dumps({
        "apiVersion": GROUP, "kind": "ModelVersion", "metadata": {"name": name},
        "spec": {"model": "linear", "version": version, "source": {"uri": art.uri, "sha256": art.sha256}, **spec},
    })


def model_deployment(name: str, mv: str, replicas: int = 2, kwok: bool = True, **spec: Any) -> str:
    """`kwok=True` places the serving pods on kwok nodes (simulated: fast, failure injection);
    `kwok=False` leaves them to the scheduler, i.e. the real node."""
    placement = kwok_nodes.PLACEMENT if kwok else {}
    return json.dumps({
        "apiVersion": GROUP, "kind": "ModelDeployment", "metadata": {"name": name},
        "spec": {"modelVersion": mv, "replicas": replicas, **placement, **spec},
    })


def get(cluster: ClusterHandle, kind: str, ns: str, name: str) -> dict[str, Any]:
    return dict(cluster.kubectl_json("get", kind, name, "-n", ns))


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), {})


def serving_deployments(cluster: ClusterHandle, ns: str, md: str) -> list[dict[str, Any]]:
    return list(cluster.kubectl_json("get", "deployments", "-n", ns, "-l", f"{MD_LABEL}={md}")["items"])


def wait_until(cluster: ClusterHandle, kind: str, ns: str, name: str, what: str,
               check: Callable[[dict[str, Any]], Any], timeout: float = 120) -> dict[str, Any]:
    """Polls the object until `check(obj)` is truthy; returns the object."""
    def probe() -> dict[str, Any] | None:
        obj = get(cluster, kind, ns, name)
        return obj if check(obj) else None
    return wait_for(f"{kind}/{name}: {what}", probe, timeout=timeout)


def wait_ready(cluster: ClusterHandle, ns: str, md: str, timeout: float = 120) -> dict[str, Any]:
    return wait_until(cluster, "md", ns, md, "Ready", lambda o: o.get("status", {}).get("observedGeneration")
                      == o["metadata"]["generation"] and condition(o, "Ready").get("status") == "True", timeout)


def wait_condition(cluster: ClusterHandle, ns: str, md: str, type_: str, timeout: float = 120) -> dict[str, Any]:
    return wait_until(cluster, "md", ns, md, f"{type_}=True", lambda o: condition(o, type_).get("status") == "True",
                      timeout)


def wait_mv_phase(cluster: ClusterHandle, ns: str, mv: str, phase: str, timeout: float = 120) -> dict[str, Any]:
    return wait_until(cluster, "mv", ns, mv, phase, lambda o: o.get("status", {}).get("phase") == phase, timeout)


def replicas_by_version(cluster: ClusterHandle, ns: str, md: str) -> dict[str, int]:
    return {d["metadata"]["labels"]["serving.onnx-operator.io/version"]: d["spec"].get("replicas", 0)
            for d in serving_deployments(cluster, ns, md)}


def act(cluster: ClusterHandle, ns: str, md: str, verb: str) -> None:
    cluster.kubectl("annotate", "md", md, "-n", ns, f"{ACTION}={verb}@{uuid.uuid4().hex[:8]}", "--overwrite")


def rollout(cluster: ClusterHandle, ns: str, md: str) -> dict[str, Any]:
    return dict(get(cluster, "md", ns, md)["status"].get("rollout") or {})


def serving_v1_with_v2_verified(cluster: ClusterHandle, ns: str, models: Any, prefix: str, replicas: int,
                                **spec: Any) -> None:
    """ModelVersions v1 and v2 (different weights), a ModelDeployment serving v1, v2 verified."""
    two_versions(cluster, ns, models, prefix)
    cluster.apply(model_deployment("web", "v1", replicas=replicas, **spec), ns)
    wait_ready(cluster, ns, "web")


def two_versions(cluster: ClusterHandle, ns: str, models: Any, prefix: str) -> None:
    """ModelVersions v1 and v2 (different weights), both verified."""
    cluster.apply(model_version("v1", models.model(f"{prefix}-1.onnx")), ns)
    cluster.apply(model_version("v2", models.model(f"{prefix}-2.onnx", scale=2.0), version="2.0.0"), ns)
    wait_mv_phase(cluster, ns, "v1", "Ready")
    wait_mv_phase(cluster, ns, "v2", "Ready")


def service_url(cluster: ClusterHandle, ns: str, service: str, timeout: float = 60,
                interval: float = 0.25) -> str:
    """`http://<ClusterIP>` of a Service (reached through kube-proxy), once it has an IP in the Service range."""
    ip = wait_for(f"Service {service}'s ClusterIP", lambda: cluster.kubectl(
        "get", "service", service, "-n", ns, "-o", "jsonpath={.spec.clusterIP}", check=False), timeout, interval)
    assert str(ip).startswith("198.19."), f"Service IP {ip} outside the Service range 198.19.0.0/16"
    return f"http://{ip}"


def wait_service_answers(url: str, model: str = "linear", in_a_row: int = 20, within: float = 0.9,
                         timeout: float = 60) -> None:
    """Until a brand-new Service has answered `in_a_row` requests in a row, each on a new connection within
    `within` seconds: kube-proxy has written its rules. Ready pods do not mean that: until the rules exist a
    SYN to the ClusterIP is rejected, and a connect() in progress takes that as a soft error and resends the
    SYN a second later (or, when conntrack recorded "no NAT" for it, never gets through: docs/rollouts.md).
    A zero-failure window opens after this."""
    def answered() -> bool:
        with httpx.Client(timeout=within, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            return all(client.post(f"{url}/v2/models/{model}/infer", json=DEFAULT_BODY).status_code == 200
                       for _ in range(in_a_row))

    wait_for(f"the Service answering {in_a_row} in a row within {within:g}s each", answered, timeout=timeout,
             interval=0.5)
