"""Stuck pods say why, on the real node: a failed model fetch (the URL and the error), an OOM kill and an
image that cannot be pulled are named per version in status, conditions, Events and `kubectl model
status`; a rollback at the progress deadline carries the cause; a stuck verification pod shows on its
ModelVersion."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from localcluster.harness import ClusterHandle
from localcluster.models import make_model
from localcluster.prober import Prober
from tests.e2e.conftest import ModelStore, OperatorProcess
from tests.e2e.helpers import (
    condition,
    model_deployment,
    model_version,
    service_url,
    wait_mv_phase,
    wait_ready,
    wait_service_answers,
    wait_until,
)
from tests.e2e.test_kubectl_model import kubectl_model

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
MISSING_IMAGE = "localhost/onnx-operator/missing:0.0.0"  # nothing may reach for a public registry


def version_status(md: dict[str, Any], version: str) -> dict[str, Any]:
    return next((v for v in md.get("status", {}).get("versions", []) if v["name"] == version), {})


def stuck_as(version: str, reason: str) -> Any:
    return lambda o: version_status(o, version).get("stuckReason") == reason


def warning_events(cluster: ClusterHandle, ns: str, name: str, reason: str) -> list[dict[str, Any]]:
    return list(cluster.kubectl_json("get", "events", "-n", ns, "--field-selector",
                                     f"involvedObject.name={name},reason={reason},type=Warning")["items"])


def test_a_version_that_cannot_fetch_rolls_back_at_the_deadline_naming_the_url_while_stable_serves(
        cluster: ClusterHandle, namespace: str, own_store: ModelStore, operator: OperatorProcess,
        capsys: pytest.CaptureFixture[str]) -> None:
    store = own_store
    cluster.apply(model_version("v1", store.publish("stuck-1.onnx", make_model())), namespace)
    v2 = store.publish("stuck-2.onnx", make_model(scale=2.0))
    cluster.apply(model_version("v2", v2, version="2.0.0"), namespace)
    wait_mv_phase(cluster, namespace, "v1", "Ready", timeout=180)
    wait_mv_phase(cluster, namespace, "v2", "Ready", timeout=180)
    cluster.apply(model_deployment("web", "v1", replicas=2, kwok=False, progressDeadlineSeconds=60), namespace)
    wait_ready(cluster, namespace, "web", timeout=240)
    url = service_url(cluster, namespace, "web")
    wait_service_answers(url)
    prober = Prober(url, "linear", rate=20.0, max_seconds=400, timeout=5.0)
    prober.start()
    try:
        store.stop()  # v2 has no Ready pod anywhere: nothing but the store could help

        cluster.apply(model_deployment("web", "v2", replicas=2, kwok=False, progressDeadlineSeconds=60), namespace)
        stuck = wait_until(cluster, "md", namespace, "web", "v2 stuck on ModelFetchFailed",
                           stuck_as("v2", "ModelFetchFailed"), timeout=120)
        cli = kubectl_model(cluster, "status", "web", "-n", namespace).stdout
        rolled = wait_until(cluster, "md", namespace, "web", "rolled back",
                            lambda o: condition(o, "RolledBack").get("status") == "True", timeout=180)
        time.sleep(2)  # a little traffic after the rollback too
    finally:
        report = prober.stop()
    with capsys.disabled():
        print(f"\n[prober: fetch failure rollback] {report.summary()}; answered by {dict(report.versions)}")

    v2_status = version_status(stuck, "v2")
    assert v2_status["stuckPods"] >= 1 and v2.uri in v2_status["lastError"]
    assert "Connect" in v2_status["lastError"] or "refused" in v2_status["lastError"]
    assert condition(stuck, "Progressing")["reason"] == "ModelFetchFailed"
    assert v2.uri in condition(stuck, "Progressing")["message"]
    assert "ModelFetchFailed" in cli and v2.uri in cli
    events = warning_events(cluster, namespace, "web", "ModelFetchFailed")
    assert events and v2.uri in events[0]["message"]
    message = condition(rolled, "RolledBack")["message"]
    assert condition(rolled, "RolledBack")["reason"] == "ProgressDeadlineExceeded"
    assert "ModelFetchFailed" in message and v2.uri in message
    assert rolled["status"]["servingVersion"] == "v1"
    assert report.failed == 0, report.describe_failures()
    assert set(report.versions) == {"1.0.0"} and report.total > 100


def test_a_memory_limit_below_the_model_is_named_oom_killed(
        cluster: ClusterHandle, namespace: str, models: ModelStore, operator: OperatorProcess) -> None:
    cluster.apply(model_version("v1", models.model(f"oom-{namespace}.onnx")), namespace)
    wait_mv_phase(cluster, namespace, "v1", "Ready", timeout=180)

    cluster.apply(model_deployment("web", "v1", replicas=1, kwok=False,
                                   resources={"limits": {"memory": "40Mi"}, "requests": {"memory": "40Mi"}}),
                  namespace)

    md = wait_until(cluster, "md", namespace, "web", "OOMKilled", stuck_as("v1", "OOMKilled"), timeout=180)
    assert "memory limit" in version_status(md, "v1")["lastError"]
    assert condition(md, "Ready")["reason"] == "OOMKilled"
    assert warning_events(cluster, namespace, "web", "OOMKilled")


def test_an_image_that_cannot_be_pulled_is_named_on_the_model_version_and_the_deployment(
        cluster: ClusterHandle, namespace: str, models: ModelStore, operator: OperatorProcess,
        operator_kubeconfig: Path, tmp_path: Path) -> None:
    cluster.apply(model_version("v1", models.model(f"pull-{namespace}.onnx")), namespace)
    wait_mv_phase(cluster, namespace, "v1", "Ready", timeout=180)
    operator.stop()
    broken = OperatorProcess(operator_kubeconfig, tmp_path / "operator.log", MISSING_IMAGE)
    broken.start()
    try:
        cluster.apply(model_version("v2", models.model(f"pull2-{namespace}.onnx", scale=2.0), version="2.0.0"),
                      namespace)
        cluster.apply(model_deployment("web", "v1", replicas=1, kwok=False), namespace)

        mv = wait_until(cluster, "mv", namespace, "v2", "Verified reason ImagePullBackOff",
                        lambda o: condition(o, "Verified").get("reason") == "ImagePullBackOff", timeout=180)
        md = wait_until(cluster, "md", namespace, "web", "ImagePullBackOff", stuck_as("v1", "ImagePullBackOff"),
                        timeout=180)
    finally:
        broken.stop()
        operator.start()

    assert mv["status"]["phase"] == "Verifying" and MISSING_IMAGE in condition(mv, "Verified")["message"]
    assert warning_events(cluster, namespace, "v2", "ImagePullBackOff")
    assert MISSING_IMAGE in version_status(md, "v1")["lastError"]
    assert condition(md, "Progressing")["reason"] == "ImagePullBackOff"
