"""The whole data path on the real node: ModelVersion -> verify Job -> Deployment -> pods that fetch
and serve -> Service (kube-proxy) -> inference over REST and gRPC, checked against onnxruntime in-process."""

from __future__ import annotations

import contextlib
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from onnx_operator.desired.serving import GRPC_SERVICE_PORT

from localcluster.harness import ClusterHandle, wait_for
from localcluster.models import iris_model, make_model
from localcluster.realnode import NAME as REAL_NODE
from tests.e2e.conftest import ModelStore, OperatorProcess
from tests.e2e.helpers import (
    MD_LABEL,
    get,
    model_deployment,
    model_version,
    service_url,
    wait_mv_phase,
    wait_ready,
)
from tests.grpc_infer import grpc_infer, wait_grpc_ready

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [-1.0, 0.0, 2.5, 7.0]]


def pods(cluster: ClusterHandle, ns: str, md: str) -> list[dict[str, Any]]:
    return list(cluster.kubectl_json("get", "pods", "-n", ns, "-l", f"{MD_LABEL}={md}")["items"])


def answering_pods(cluster: ClusterHandle, ns: str, md: str) -> int:
    """How many serving pods answer a readiness request on their own IP."""
    count = 0
    for pod in pods(cluster, ns, md):
        ip = pod.get("status", {}).get("podIP")
        if not ip or pod["metadata"].get("deletionTimestamp"):
            continue
        with contextlib.suppress(httpx.HTTPError):
            count += httpx.get(f"http://{ip}:8080/v2/health/ready", timeout=2).status_code == 200
    return count


def infer(url: str, rows: list[list[float]]) -> httpx.Response:
    body = {"inputs": [{"name": "x", "shape": [len(rows), 4], "datatype": "FP32",
                        "data": [v for row in rows for v in row]}]}
    return httpx.post(f"{url}/v2/models/linear/infer", json=body, timeout=10)


def test_model_version_is_verified_by_a_real_job_pod(
        cluster: ClusterHandle, namespace: str, models: ModelStore, operator: OperatorProcess) -> None:
    art = models.model("real-verify.onnx")
    cluster.apply(model_version("v1", art), namespace)

    mv = wait_mv_phase(cluster, namespace, "v1", "Ready", timeout=180)

    assert mv["status"]["digest"] == f"sha256:{art.sha256}"
    job_pods = cluster.kubectl_json("get", "pods", "-n", namespace, "-l",
                                    "app.kubernetes.io/component=verify")["items"]
    assert job_pods, "the verify Job left no pod"
    assert {p["spec"]["nodeName"] for p in job_pods} == {REAL_NODE}
    assert any(p["status"]["phase"] == "Succeeded" for p in job_pods)


def test_real_pods_serve_through_the_service_scale_and_stop(
        cluster: ClusterHandle, namespace: str, models: ModelStore, operator: OperatorProcess) -> None:
    data = make_model(scale=1.5)
    art = models.publish("real-serve.onnx", data)
    cluster.apply(model_version("v1", art), namespace)
    cluster.apply(model_deployment("web", "v1", replicas=2, kwok=False), namespace)

    wait_ready(cluster, namespace, "web", timeout=240)
    serving = pods(cluster, namespace, "web")
    assert {p["spec"]["nodeName"] for p in serving} == {REAL_NODE}
    assert all(p["status"]["podIP"].startswith("198.18.0.") for p in serving)
    url = service_url(cluster, namespace, "web")
    resp = infer(url, ROWS)

    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["model_name"] == "linear" and out["model_version"] == "1.0.0"
    expected = ort.InferenceSession(data).run(None, {"x": np.asarray(ROWS, dtype=np.float32)})[0]
    got = np.asarray(out["outputs"][0]["data"], dtype=np.float32).reshape(out["outputs"][0]["shape"])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # the same through the Service's `grpc` port (h2c), with Triton's own gRPC client
    target = f"{url.removeprefix('http://')}:{GRPC_SERVICE_PORT}"
    wait_grpc_ready(target, "linear", timeout=30)
    by_grpc = grpc_infer(target, "linear", {"x": np.asarray(ROWS, dtype=np.float32)})["y"]
    np.testing.assert_allclose(by_grpc, expected, rtol=1e-6)

    cluster.kubectl("scale", "md", "web", "-n", namespace, "--replicas=3")
    wait_for("3 pods answering", lambda: answering_pods(cluster, namespace, "web") == 3, timeout=180)
    cluster.kubectl("scale", "md", "web", "-n", namespace, "--replicas=1")
    wait_for("1 pod answering", lambda: answering_pods(cluster, namespace, "web") == 1
             and len(pods(cluster, namespace, "web")) == 1, timeout=180)

    cluster.kubectl("delete", "md", "web", "-n", namespace, "--wait=true", "--timeout=120s")
    wait_for("serving pods gone", lambda: not pods(cluster, namespace, "web"), timeout=120)
    assert not cluster.kubectl("get", "service", "web", "-n", namespace, "--ignore-not-found", "-o", "name")
    with pytest.raises(httpx.HTTPError):
        infer(url, ROWS)


def test_iris_model_nobody_here_made_serves_its_non_tensor_output(
        cluster: ClusterHandle, namespace: str, models: ModelStore, operator: OperatorProcess) -> None:
    data = iris_model()
    art = models.publish("logreg_iris.onnx", data)
    doc = model_version("iris", art)
    cluster.apply(doc.replace('"model": "linear"', '"model": "iris"'), namespace)
    cluster.apply(model_deployment("iris", "iris", replicas=1, kwok=False), namespace)
    wait_ready(cluster, namespace, "iris", timeout=240)

    rows = [[5.1, 3.5], [6.7, 3.0], [4.9, 1.0]]  # the model's input is fixed at [3, 2]
    body = {"inputs": [{"name": "float_input", "shape": [3, 2], "datatype": "FP32",
                        "data": [v for r in rows for v in r]}]}
    resp = httpx.post(f"{service_url(cluster, namespace, 'iris')}/v2/models/iris/infer", json=body, timeout=10)

    assert resp.status_code == 200, resp.text
    assert [o["name"] for o in resp.json()["outputs"]] == ["label"]  # tensors; the sequence has no v2 form
    labels = next(o for o in resp.json()["outputs"] if o["name"] == "label")
    expected = ort.InferenceSession(data).run(["label"], {"float_input": np.asarray(rows, dtype=np.float32)})[0]
    assert labels["data"] == expected.tolist()
    assert get(cluster, "md", namespace, "iris")["status"]["servingVersion"] == "iris"
    mv = get(cluster, "mv", namespace, "iris")
    assert mv["status"]["signature"]["outputs"][1]["dtype"] == "seq(map(int64,tensor(float)))"
