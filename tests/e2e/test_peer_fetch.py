"""Serving that outlives its model store, on the real node: with the store stopped, new pods of a version
that has Ready pods fetch from those peers (sha256-checked) through the version's peer Service; only
pods holding the ModelDeployment's token can read the files."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from localcluster.harness import ClusterHandle, wait_for
from localcluster.models import make_model
from tests.e2e.conftest import ModelStore, OperatorProcess
from tests.e2e.helpers import get, model_deployment, model_version, wait_mv_phase, wait_ready, wait_until
from tests.e2e.test_real_node import ROWS, infer, pods

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def ready_pods(cluster: ClusterHandle, ns: str, md: str) -> list[dict[str, Any]]:
    return [p for p in pods(cluster, ns, md) if not p["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]


def fetch_result(pod: dict[str, Any]) -> dict[str, Any]:
    """The init container's JSON result (its termination message): how many files a peer sent."""
    init = pod["status"]["initContainerStatuses"][0]
    return dict(json.loads(init["state"]["terminated"]["message"]))


def token(cluster: ClusterHandle, ns: str, md: str) -> str:
    secret = cluster.kubectl_json("get", "secret", f"{md}-peer-token", "-n", ns)
    return base64.b64decode(secret["data"]["token"]).decode()


def assert_answers_correctly(pod: dict[str, Any], data: bytes) -> None:
    resp = infer(f"http://{pod['status']['podIP']}:8080", ROWS)
    assert resp.status_code == 200, resp.text
    expected = ort.InferenceSession(data).run(None, {"x": np.asarray(ROWS, dtype=np.float32)})[0]
    out = resp.json()["outputs"][0]
    np.testing.assert_allclose(np.asarray(out["data"], dtype=np.float32).reshape(out["shape"]), expected, rtol=1e-6)


def test_with_the_store_stopped_scale_out_and_a_replaced_pod_come_from_peers(
        cluster: ClusterHandle, namespace: str, own_store: ModelStore, operator: OperatorProcess) -> None:
    """Scale-out from one pod: the lone pod has no peer Service, so scaling out adds one to the template and
    replaces that pod (surge first); every new pod, the lone pod's successor included, fetches from peers."""
    data = make_model(scale=1.25)
    store = own_store
    art = store.publish("peer.onnx", data)
    cluster.apply(model_version("v1", art), namespace)
    wait_mv_phase(cluster, namespace, "v1", "Ready", timeout=180)
    cluster.apply(model_deployment("web", "v1", replicas=1, kwok=False), namespace)
    wait_ready(cluster, namespace, "web", timeout=240)
    first = {p["metadata"]["name"] for p in ready_pods(cluster, namespace, "web")}
    store.stop()
    with pytest.raises(httpx.HTTPError):
        httpx.get(art.uri, timeout=3)

    cluster.kubectl("scale", "md", "web", "-n", namespace, "--replicas=3")

    def scaled_out() -> list[dict[str, Any]] | None:
        ready = ready_pods(cluster, namespace, "web")
        names = {p["metadata"]["name"] for p in ready}
        return ready if len(ready) == 3 and not names & first else None
    serving = wait_for("3 pods Ready, the lone pod replaced", scaled_out, timeout=240)
    wait_until(cluster, "md", namespace, "web", "3/3 Ready", lambda o: o["status"].get("readyText") == "3/3"
               and o["status"].get("phase") == "Ready", timeout=120)
    for pod in serving:
        assert_answers_correctly(pod, data)
    assert [fetch_result(p)["peerFiles"] for p in serving] == [1, 1, 1]

    victim = serving[0]["metadata"]["name"]
    cluster.kubectl("delete", "pod", victim, "-n", namespace, "--wait=false")
    replacement = wait_for("a replacement pod Ready", lambda: next(
        (p for p in ready_pods(cluster, namespace, "web") if p["metadata"]["name"] not in
         {s["metadata"]["name"] for s in serving}), None), timeout=180)
    assert fetch_result(replacement)["peerFiles"] == 1
    assert_answers_correctly(replacement, data)
    md = get(cluster, "md", namespace, "web")
    assert not any(v.get("stuckReason") for v in md["status"]["versions"])


def test_only_pods_of_the_same_model_deployment_can_read_the_files(
        cluster: ClusterHandle, namespace: str, models: ModelStore, operator: OperatorProcess) -> None:
    data = make_model(scale=0.75)
    cluster.apply(model_version("v1", models.publish(f"peer-auth-{namespace}.onnx", data)), namespace)
    wait_mv_phase(cluster, namespace, "v1", "Ready", timeout=180)
    cluster.apply(model_deployment("web", "v1", replicas=1, kwok=False), namespace)
    cluster.apply(model_deployment("other", "v1", replicas=2, kwok=False), namespace)
    wait_ready(cluster, namespace, "web", timeout=240)
    wait_ready(cluster, namespace, "other", timeout=240)
    ip = ready_pods(cluster, namespace, "web")[0]["status"]["podIP"]
    url = f"http://{ip}:8090/v1/files/model.onnx"

    anonymous = httpx.get(url, timeout=5)
    other_token = httpx.get(url, headers={"Authorization": f"Bearer {token(cluster, namespace, 'other')}"}, timeout=5)
    own_token = httpx.get(url, headers={"Authorization": f"Bearer {token(cluster, namespace, 'web')}"}, timeout=5)

    assert (anonymous.status_code, other_token.status_code, own_token.status_code) == (401, 403, 200)
    assert hashlib.sha256(own_token.content).hexdigest() == hashlib.sha256(data).hexdigest()
    assert token(cluster, namespace, "web") != token(cluster, namespace, "other")
    # the user-facing Service has no peer port; each version's peer Service selects only its own pods
    ports = {p["name"] for p in get(cluster, "service", namespace, "web")["spec"]["ports"]}
    assert ports == {"http", "grpc"}
    # a lone pod (web) serves its files to peers, but has no peer Service to fetch from: no ClusterIP spent
    assert cluster.kubectl("get", "service", "web-v1-peer", "-n", namespace, check=False) == ""
    assert "--peer" not in ready_pods(cluster, namespace, "web")[0]["spec"]["initContainers"][0]["args"]
    peer_svc = get(cluster, "service", namespace, "other-v1-peer")
    assert peer_svc["spec"]["selector"]["serving.onnx-operator.io/deployment"] == "other"
    pod_spec = ready_pods(cluster, namespace, "other")[0]["spec"]
    fetch_args = pod_spec["initContainers"][0]["args"]
    assert fetch_args[fetch_args.index("--peer") + 1] == f"http://{peer_svc['spec']['clusterIP']}:8090"
    assert pod_spec["automountServiceAccountToken"] is False
