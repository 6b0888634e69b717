"""The operator core against the local control plane: ModelVersion verification and
ModelDeployment reconciliation into serving workloads."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest

from localcluster.harness import ClusterHandle, wait_for
from tests.e2e.conftest import OPERATOR_USER, Artifact, ModelStore, OperatorProcess
from tests.e2e.helpers import (
    MD_LABEL,
    condition,
    get,
    model_deployment,
    model_version,
    serving_deployments,
    serving_v1_with_v2_verified,
    wait_condition,
    wait_mv_phase,
    wait_ready,
    wait_until,
)

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("operator")]

def test_model_version_is_verified_in_cluster(cluster: ClusterHandle, namespace: str, models: ModelStore) -> None:
    art = models.model("verified.onnx")

    cluster.apply(model_version("v1", art), namespace)

    mv = wait_mv_phase(cluster, namespace, "v1", "Ready")
    assert mv["status"]["digest"] == f"sha256:{art.sha256}"
    assert mv["status"]["sizeBytes"] > 0
    assert [i["name"] for i in mv["status"]["signature"]["inputs"]] == ["x"]
    assert mv["status"]["signature"]["inputs"][0]["shape"] == [-1, 4]
    assert condition(mv, "Verified")["status"] == "True"


def test_checksum_mismatch_fails_closed(cluster: ClusterHandle, namespace: str, models: ModelStore) -> None:
    art = models.model("tampered.onnx")
    wrong = Artifact(art.uri, "0" * 64)

    cluster.apply(model_version("bad", wrong), namespace)
    cluster.apply(model_deployment("web", "bad"), namespace)

    mv = wait_mv_phase(cluster, namespace, "bad", "Failed")
    assert condition(mv, "Verified")["reason"] == "ChecksumMismatch"
    md = wait_condition(cluster, namespace, "web", "Degraded")
    assert condition(md, "Ready")["status"] == "False"
    assert serving_deployments(cluster, namespace, "web") == []


def test_model_deployment_becomes_ready_with_service_and_owned_workloads(
        cluster: ClusterHandle, namespace: str, models: ModelStore) -> None:
    cluster.apply(model_version("v1", models.model("ready.onnx")), namespace)

    cluster.apply(model_deployment("web", "v1", replicas=3), namespace)

    md = wait_ready(cluster, namespace, "web")
    status = md["status"]
    assert status["servingVersion"] == "v1" and status["desiredVersion"] == "v1"
    assert status["readyReplicas"] == 3
    assert status["url"] == f"http://web.{namespace}.svc.cluster.local"
    [dep] = serving_deployments(cluster, namespace, "web")
    assert dep["metadata"]["ownerReferences"][0]["uid"] == md["metadata"]["uid"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    main = pod["containers"][0]
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    svc = get(cluster, "service", namespace, "web")
    assert svc["spec"]["selector"] == {MD_LABEL: "web"} or MD_LABEL in svc["spec"]["selector"]
    printed = cluster.kubectl("get", "md", "web", "-n", namespace)
    assert "3/3" in printed and "v1" in printed


def test_scale_subresource_scales_serving_pods(cluster: ClusterHandle, namespace: str, models: ModelStore) -> None:
    cluster.apply(model_version("v1", models.model("scale.onnx")), namespace)
    cluster.apply(model_deployment("web", "v1", replicas=1), namespace)
    wait_ready(cluster, namespace, "web")

    cluster.kubectl("scale", "md/web", "--replicas=4", "-n", namespace)

    md = wait_until(cluster, "md", namespace, "web", "4 ready", lambda o: o["status"].get("readyReplicas") == 4
                    and condition(o, "Ready").get("status") == "True")
    assert md["spec"]["replicas"] == 4


def total_ready(cluster: ClusterHandle, ns: str, md: str) -> int:
    return sum(int(d.get("status", {}).get("readyReplicas", 0)) for d in serving_deployments(cluster, ns, md))


def test_version_change_hands_over_without_dropping_below_replicas(
        cluster: ClusterHandle, namespace: str, models: ModelStore) -> None:
    serving_v1_with_v2_verified(cluster, namespace, models, "handover", replicas=3)

    cluster.apply(model_deployment("web", "v2", replicas=3), namespace)

    lowest = 3
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        lowest = min(lowest, total_ready(cluster, namespace, "web"))
        md = get(cluster, "md", namespace, "web")
        if (md["status"].get("servingVersion") == "v2" and condition(md, "Ready").get("status") == "True"
                and len(serving_deployments(cluster, namespace, "web")) == 1):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"handover did not finish: {md.get('status')}")
    assert lowest >= 3, f"ready pods dropped to {lowest} during the handover"
    [dep] = serving_deployments(cluster, namespace, "web")
    assert dep["metadata"]["labels"]["serving.onnx-operator.io/version"] == "v2"


def test_missing_version_degrades_and_leaves_serving_untouched(
        cluster: ClusterHandle, namespace: str, models: ModelStore) -> None:
    cluster.apply(model_version("v1", models.model("m1.onnx")), namespace)
    cluster.apply(model_deployment("web", "v1", replicas=2), namespace)
    wait_ready(cluster, namespace, "web")

    cluster.apply(model_deployment("web", "does-not-exist", replicas=2), namespace)

    md = wait_condition(cluster, namespace, "web", "Degraded")
    assert condition(md, "Degraded")["reason"] == "ModelVersionNotFound"
    assert "does-not-exist" in condition(md, "Degraded")["message"]
    assert md["status"]["servingVersion"] == "v1"
    [dep] = serving_deployments(cluster, namespace, "web")
    assert dep["status"]["readyReplicas"] == 2


def test_model_version_spec_is_immutable(cluster: ClusterHandle, namespace: str, models: ModelStore) -> None:
    cluster.apply(model_version("v1", models.model("imm.onnx")), namespace)

    with pytest.raises(RuntimeError, match="create a new ModelVersion"):
        cluster.kubectl("patch", "mv", "v1", "-n", namespace, "--type=merge", "-p",
                        json.dumps({"spec": {"version": "9.9.9"}}))


def test_deleting_a_model_deployment_removes_its_workloads(
        cluster: ClusterHandle, namespace: str, models: ModelStore) -> None:
    cluster.apply(model_version("v1", models.model("del.onnx")), namespace)
    cluster.apply(model_deployment("web", "v1"), namespace)
    wait_ready(cluster, namespace, "web")

    cluster.kubectl("delete", "md", "web", "-n", namespace)

    wait_for("workloads collected", lambda: serving_deployments(cluster, namespace, "web") == []
             and not cluster.kubectl("get", "service", "web", "-n", namespace, "--ignore-not-found", "-o", "name"),
             timeout=60)


def test_autoscaling_creates_an_hpa_and_leaves_replicas_to_it(
        cluster: ClusterHandle, namespace: str, models: ModelStore) -> None:
    cluster.apply(model_version("v1", models.model("hpa.onnx")), namespace)

    cluster.apply(model_deployment("web", "v1", replicas=2, autoscaling={
        "minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70}), namespace)

    wait_ready(cluster, namespace, "web")
    [hpa] = cluster.kubectl_json("get", "hpa", "-n", namespace)["items"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    [dep] = cluster.kubectl_json("get", "deployments", "-n", namespace, "-l", f"{MD_LABEL}=web",
                                 "--show-managed-fields")["items"]
    applied = [m for m in dep["metadata"]["managedFields"] if m["manager"] == "onnx-operator"
               and m["operation"] == "Apply"]
    assert applied, "the operator applies its Deployments server-side"
    assert "f:replicas" not in json.dumps(applied[0]["fieldsV1"].get("f:spec", {})), \
        "the operator must not own spec.replicas when an HPA scales"


def test_no_api_writes_at_rest(cluster: ClusterHandle, namespace: str, models: ModelStore) -> None:
    cluster.apply(model_version("v1", models.model("rest.onnx")), namespace)
    for i in range(20):
        cluster.apply(model_deployment(f"md{i}", "v1", replicas=1), namespace)
    for i in range(20):
        wait_ready(cluster, namespace, f"md{i}", timeout=180)
    time.sleep(5)  # let the last events settle

    since = time.time()
    time.sleep(30)

    # namespaces of earlier tests may still be terminating: only this namespace is at rest
    writes = [w for w in cluster.writes_by(OPERATOR_USER, since)
              if w.get("objectRef", {}).get("namespace") == namespace]
    assert writes == [], [(w["verb"], w["objectRef"]) for w in writes[:10]]


def test_operator_restart_mid_handover_converges(
        cluster: ClusterHandle, namespace: str, models: ModelStore, operator: OperatorProcess) -> None:
    serving_v1_with_v2_verified(cluster, namespace, models, "restart", replicas=3)

    cluster.apply(model_deployment("web", "v2", replicas=3), namespace)
    wait_for("the handover to start", lambda: len(serving_deployments(cluster, namespace, "web")) == 2)
    operator.restart(signal.SIGKILL)

    md = wait_ready(cluster, namespace, "web")
    assert md["status"]["servingVersion"] == "v2"
    wait_for("exactly one Deployment", lambda: len(serving_deployments(cluster, namespace, "web")) == 1)


def test_examples_are_accepted_by_the_api_server(cluster: ClusterHandle, namespace: str) -> None:
    from pathlib import Path

    out = cluster.kubectl("apply", "--server-side", "--dry-run=server", "-n", namespace,
                          "-f", str(Path(__file__).resolve().parents[2] / "examples" / "basic"))
    assert "modelversion.serving.onnx-operator.io/iris-1-0-0 serverside-applied" in out
    assert "modeldeployment.serving.onnx-operator.io/iris serverside-applied" in out


@pytest.mark.parametrize(("spec", "message"), [
    ({"replicas": -1}, "spec.replicas"),
    ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
     "spec.autoscaling.minReplicas must be less than or equal to spec.autoscaling.maxReplicas"),
    ({"strategy": {"type": "RollingUpdate", "canary": {"steps": [{"weight": 100}]}}},
     "spec.strategy.canary is only allowed when spec.strategy.type is Canary"),
    ({"strategy": {"type": "Canary"}}, "spec.strategy.canary (with steps) is required"),
    ({"strategy": {"type": "Canary", "canary": {"steps": [{"weight": 50}, {"weight": 20}, {"weight": 100}]}}},
     "weights must be strictly increasing"),
    ({"strategy": {"type": "Canary", "canary": {"steps": [{"weight": 10}]}}}, "the last step must have weight 100"),
])
def test_invalid_model_deployment_is_rejected_naming_the_field(
        cluster: ClusterHandle, namespace: str, spec: dict[str, Any], message: str) -> None:
    with pytest.raises(RuntimeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cluster.apply(model_deployment("bad", "v1", **spec), namespace)


def test_phase_changes_emit_events(cluster: ClusterHandle, namespace: str, models: ModelStore) -> None:
    cluster.apply(model_version("v1", models.model("events.onnx")), namespace)
    cluster.apply(model_deployment("web", "v1", replicas=1), namespace)
    wait_ready(cluster, namespace, "web")

    events = cluster.kubectl_json("get", "events", "-n", namespace)["items"]

    md_reasons = {e["reason"] for e in events if e["involvedObject"]["kind"] == "ModelDeployment"}
    mv_reasons = {e["reason"] for e in events if e["involvedObject"]["kind"] == "ModelVersion"}
    assert "ReplicasReady" in md_reasons
    assert "Verified" in mv_reasons


def test_the_charts_rbac_is_enough_for_the_operator(cluster: ClusterHandle, namespace: str, models: ModelStore) -> None:
    cluster.apply(model_version("v1", models.model("rbac-1.onnx")), namespace)
    cluster.apply(model_version("v2", models.model("rbac-2.onnx", scale=2.0), version="2.0.0"), namespace)
    cluster.apply(model_deployment("web", "v1", replicas=2, autoscaling={"minReplicas": 2, "maxReplicas": 3}),
                  namespace)
    wait_ready(cluster, namespace, "web")
    wait_mv_phase(cluster, namespace, "v2", "Ready")

    cluster.apply(model_deployment("web", "v2", replicas=2), namespace)
    wait_until(cluster, "md", namespace, "web", "v2 serving", lambda o: o["status"].get("servingVersion") == "v2"
               and condition(o, "Ready").get("status") == "True")

    calls = [e for e in cluster.audit_events() if e.get("user", {}).get("username") == OPERATOR_USER
             and e.get("objectRef", {}).get("namespace") == namespace]
    assert calls, "the operator runs as the chart's ServiceAccount"
    forbidden = [(e["verb"], e["objectRef"].get("resource"), e["responseStatus"].get("message"))
                 for e in calls if e.get("responseStatus", {}).get("code") == 403]
    assert forbidden == []
