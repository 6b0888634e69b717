"""The local cluster provides what the operator relies on (real API server, kwok nodes, a real node)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from localcluster import kwok
from localcluster.harness import ClusterHandle, wait_for
from localcluster.realnode import NAME as REAL_NODE

pytestmark = pytest.mark.cluster


def deployment(name: str, replicas: int, annotations: dict[str, str] | None = None) -> str:
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations or {}},
                "spec": {"containers": [{"name": "main", "image": "example.invalid/app:1"}], **kwok.PLACEMENT},
            },
        },
    })


def ready_replicas(cluster: ClusterHandle, ns: str, name: str) -> int:
    return int(cluster.kubectl_json("get", "deployment", name, "-n", ns).get("status", {}).get("readyReplicas", 0))


def pods(cluster: ClusterHandle, ns: str, selector: str) -> list[dict]:
    return list(cluster.kubectl_json("get", "pods", "-n", ns, "-l", selector)["items"])


def pod_ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def test_nodes_are_three_tainted_kwok_nodes_and_one_real_node(cluster: ClusterHandle) -> None:
    nodes = {n["metadata"]["name"]: n for n in cluster.kubectl_json("get", "nodes")["items"]}

    assert sorted(nodes) == sorted([f"kwok-node-{i}" for i in range(3)] + [REAL_NODE])
    assert all(any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
               for n in nodes.values())
    assert all(n["spec"]["taints"][0]["key"] == kwok.TAINT["key"] for name, n in nodes.items() if name != REAL_NODE)
    real = nodes[REAL_NODE]
    assert not real["spec"].get("taints")
    assert {a["type"]: a["address"] for a in real["status"]["addresses"]}["InternalIP"] == "198.18.0.254"
    assert real["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")


def test_three_replica_deployment_becomes_ready_with_service_endpoints(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apply(deployment("web", 3), namespace)
    cluster.kubectl("expose", "deployment", "web", "--port=80", "-n", namespace)

    wait_for("3 ready replicas", lambda: ready_replicas(cluster, namespace, "web") == 3, timeout=90)
    slices = lambda: cluster.kubectl_json(  # noqa: E731
        "get", "endpointslices", "-n", namespace, "-l", "kubernetes.io/service-name=web")["items"]
    wait_for("3 ready endpoints", lambda: sum(
        1 for s in slices() for e in s.get("endpoints") or [] if e["conditions"].get("ready")) == 3, timeout=60)


@pytest.mark.parametrize("mode", ["not-ready", "crash"])
def test_pod_marked_to_fail_stays_not_ready(cluster: ClusterHandle, namespace: str, mode: str) -> None:
    cluster.apply(deployment("good", 1), namespace)
    cluster.apply(deployment("bad", 1, {"kwok.onnx-operator.io/fail": mode}), namespace)

    wait_for("the healthy pod to be ready", lambda: ready_replicas(cluster, namespace, "good") == 1, timeout=60)
    bad = wait_for("the failing pod to be Running", lambda: [
        p for p in pods(cluster, namespace, "app=bad") if p.get("status", {}).get("phase") == "Running"], timeout=60)
    time.sleep(3)  # give kwok time to (wrongly) make it ready; it must not
    bad = pods(cluster, namespace, "app=bad")
    assert bad and not any(pod_ready(p) for p in bad)
    state = bad[0]["status"]["containerStatuses"][0]["state"]
    if mode == "crash":
        assert state["waiting"]["reason"] == "CrashLoopBackOff"
    else:
        assert "running" in state
    assert ready_replicas(cluster, namespace, "bad") == 0


CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.test.onnx-operator.io}
spec:
  group: test.onnx-operator.io
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: "self.min <= self.max"
              message: "spec.min must be less than or equal to spec.max"
            properties:
              min: {type: integer}
              max: {type: integer}
              replicas: {type: integer, minimum: 0}
          status:
            type: object
            properties:
              replicas: {type: integer}
"""


@pytest.fixture(scope="module")
def widget_crd(cluster: ClusterHandle) -> str:
    cluster.apply(CRD)
    cluster.wait_crds_established("widgets.test.onnx-operator.io")
    return "widgets.test.onnx-operator.io"


def widget(name: str, lo: int, hi: int) -> str:
    return json.dumps({"apiVersion": "test.onnx-operator.io/v1", "kind": "Widget", "metadata": {"name": name},
                       "spec": {"min": lo, "max": hi, "replicas": 1}})


def test_cel_rule_rejects_bad_object_with_its_message(cluster: ClusterHandle, namespace: str, widget_crd: str) -> None:
    with pytest.raises(RuntimeError, match=r"spec\.min must be less than or equal to spec\.max"):
        cluster.apply(widget("bad", 5, 1), namespace)
    assert cluster.kubectl("get", "widgets", "-n", namespace, "-o", "name") == ""


def test_scale_subresource_scales_a_custom_resource(cluster: ClusterHandle, namespace: str, widget_crd: str) -> None:
    cluster.apply(widget("w", 1, 2), namespace)

    cluster.kubectl("scale", "widget/w", "--replicas=4", "-n", namespace)

    assert cluster.kubectl_json("get", "widget", "w", "-n", namespace)["spec"]["replicas"] == 4
    scale = json.loads(cluster.kubectl(
        "get", "--raw", f"/apis/test.onnx-operator.io/v1/namespaces/{namespace}/widgets/w/scale"))
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 4


def test_deleting_an_owner_garbage_collects_its_children(cluster: ClusterHandle, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    uid = cluster.kubectl_json("get", "configmap", "owner", "-n", namespace)["metadata"]["uid"]
    cluster.apply(json.dumps({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "child", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]},
    }), namespace)

    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)

    wait_for("the child to be collected", lambda: cluster.kubectl(
        "get", "configmap", "child", "-n", namespace, "--ignore-not-found", "-o", "name") == "", timeout=60)


def test_audit_log_records_a_write_made_by_a_test(cluster: ClusterHandle, namespace: str) -> None:
    marker = f"audit-{uuid.uuid4().hex[:8]}"

    cluster.kubectl("create", "configmap", marker, "-n", namespace)

    def logged() -> list[dict]:
        return [e for e in cluster.audit_events() if e.get("verb") == "create"
                and e.get("objectRef", {}).get("name") == marker]
    events = wait_for("the audit event", logged, timeout=30)
    assert events[0]["user"]["username"] == "admin"
    assert events[0]["objectRef"]["namespace"] == namespace


def job(name: str, code: int, image: str) -> str:
    script = f"import sys; open(sys.argv[1], 'w').write('exit {code}'); sys.exit({code})"
    return json.dumps({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": image,
            "command": ["python3", "-c", script, "/dev/termination-log"]}]}}},
    })


def test_job_pods_run_in_containers_on_the_real_node(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apply(job("ok", 0, cluster.runtime_image), namespace)
    cluster.apply(job("fails", 3, cluster.runtime_image), namespace)

    cluster.kubectl("wait", "--for=condition=Complete", "job/ok", "-n", namespace, "--timeout=90s")
    cluster.kubectl("wait", "--for=condition=Failed", "job/fails", "-n", namespace, "--timeout=90s")
    terminated = pods(cluster, namespace, "job-name=fails")[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert terminated["message"] == "exit 3"
    assert {p["spec"]["nodeName"] for p in pods(cluster, namespace, "job-name")} == {REAL_NODE}


def test_pod_reaches_the_api_server_through_the_kubernetes_service(cluster: ClusterHandle, namespace: str) -> None:
    script = ("import ssl, urllib.request; ctx = ssl.create_default_context(cafile="
              "'/var/run/secrets/kubernetes.io/serviceaccount/ca.crt'); "
              "print(urllib.request.urlopen('https://198.19.0.1/healthz', context=ctx, timeout=5).read().decode())")
    cluster.apply(json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"}, "spec": {
        "restartPolicy": "Never", "containers": [{"name": "main", "image": cluster.runtime_image,
                                                  "command": ["python3", "-c", script]}]}}), namespace)

    pod = wait_for("the probe pod to finish", lambda: (lambda p: p if p.get("status", {}).get("phase") in (
        "Succeeded", "Failed") else None)(cluster.kubectl_json("get", "pod", "probe", "-n", namespace)), timeout=90)

    assert pod["status"]["phase"] == "Succeeded", cluster.kubectl("logs", "probe", "-n", namespace, check=False)
    assert pod["status"]["podIP"].startswith("198.18.0.")
    assert cluster.kubectl("logs", "probe", "-n", namespace).strip() == "ok"


def test_hpa_objects_are_accepted_and_processed(cluster: ClusterHandle, namespace: str) -> None:
    cluster.apply(deployment("scaled", 1), namespace)
    cluster.kubectl("autoscale", "deployment", "scaled", "--min=1", "--max=3", "--cpu-percent=50", "-n", namespace)

    hpa = wait_for("the HPA controller to act", lambda: cluster.kubectl_json(
        "get", "hpa", "scaled", "-n", namespace).get("status", {}).get("conditions"), timeout=60)
    assert {c["type"] for c in hpa} >= {"AbleToScale"}
