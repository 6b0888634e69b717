"""Progressive delivery against the local control plane: canary steps, blue/green, automatic rollback,
operator crashes mid-rollout."""

from __future__ import annotations

import itertools
import random
import signal
import time

import pytest

from localcluster.harness import ClusterHandle, wait_for
from tests.e2e.conftest import ModelStore, OperatorProcess
from tests.e2e.helpers import (
    act,
    condition,
    get,
    model_deployment,
    replicas_by_version,
    rollout,
    serving_deployments,
    two_versions,
    wait_ready,
    wait_until,
)

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("operator")]
CANARY = {"type": "Canary", "canary": {"steps": [{"weight": 25, "pause": "2s"}, {"weight": 50}, {"weight": 100}]}}


def test_canary_walks_its_steps_and_waits_for_promotion(
        cluster: ClusterHandle, namespace: str, models: ModelStore) -> None:
    two_versions(cluster, namespace, models, "canary")
    cluster.apply(model_deployment("web", "v1", replicas=4, strategy=CANARY), namespace)
    wait_ready(cluster, namespace, "web")

    cluster.apply(model_deployment("web", "v2", replicas=4, strategy=CANARY), namespace)

    wait_for("step 1 at 25%", lambda: replicas_by_version(cluster, namespace, "web") == {"v1": 3, "v2": 1})
    wait_for("step 2 at 50% after the pause", lambda: rollout(cluster, namespace, "web").get("stepIndex") == 1)
    wait_for("the 50% split", lambda: replicas_by_version(cluster, namespace, "web") == {"v1": 2, "v2": 2})
    md = wait_until(cluster, "md", namespace, "web", "paused for promotion",
                    lambda o: o["status"].get("phase") == "Paused")
    assert md["status"]["servingVersion"] == "v1"
    time.sleep(3)
    assert rollout(cluster, namespace, "web").get("stepIndex") == 1, "a step without pause waits for promote"

    act(cluster, namespace, "web", "promote")

    md = wait_ready(cluster, namespace, "web")
    assert md["status"]["servingVersion"] == "v2"
    assert replicas_by_version(cluster, namespace, "web") == {"v2": 4}
    assert md["status"]["history"][-1]["result"] == "Succeeded"
    assert md["status"]["history"][-1]["version"] == "v2"


def test_canary_that_never_becomes_ready_is_rolled_back(
        cluster: ClusterHandle, namespace: str, models: ModelStore) -> None:
    two_versions(cluster, namespace, models, "broken")
    base = {"replicas": 3, "strategy": CANARY, "progressDeadlineSeconds": 10}
    cluster.apply(model_deployment("web", "v1", **base), namespace)
    wait_ready(cluster, namespace, "web")

    cluster.apply(model_deployment("web", "v2", **base, podAnnotations={"kwok.onnx-operator.io/fail": "not-ready"}),
                  namespace)

    stable_sizes = []

    def rolled_back() -> bool:
        stable_sizes.append(replicas_by_version(cluster, namespace, "web").get("v1", 0))
        return condition(get(cluster, "md", namespace, "web"), "RolledBack").get("status") == "True"
    wait_for("the rollback", rolled_back, timeout=90)
    assert min(stable_sizes) == 3, f"stable dropped below its size while the canary was never ready: {stable_sizes}"
    md = get(cluster, "md", namespace, "web")
    status = md["status"]
    assert condition(md, "RolledBack")["reason"] == "ProgressDeadlineExceeded"
    assert condition(md, "Degraded")["status"] == "True"
    assert status["desiredVersion"] == "v2" and status["servingVersion"] == "v1"
    assert status["failedVersions"][-1]["name"] == "v2" and status["failedVersions"][-1]["digest"].startswith("sha256:")
    assert md["spec"]["modelVersion"] == "v2", "the operator never rewrites the spec"
    wait_for("all traffic on stable", lambda: replicas_by_version(cluster, namespace, "web") == {"v1": 3})
    events = cluster.kubectl_json("get", "events", "-n", namespace, "--field-selector", "reason=RolledBack")["items"]
    assert events and "v2 rolled back to v1" in events[0]["message"]
    time.sleep(3)
    assert replicas_by_version(cluster, namespace, "web") == {"v1": 3}, "a rolled-back version is not retried"


def test_blue_green_switches_at_once_and_keeps_the_old_version_warm(
        cluster: ClusterHandle, namespace: str, models: ModelStore) -> None:
    two_versions(cluster, namespace, models, "bg")
    bg = {"type": "BlueGreen", "blueGreen": {"scaleDownDelaySeconds": 5}}
    cluster.apply(model_deployment("web", "v1", replicas=2, strategy=bg), namespace)
    wait_ready(cluster, namespace, "web")

    cluster.apply(model_deployment("web", "v2", replicas=2, strategy=bg), namespace)

    preview = wait_for("the preview Service", lambda: cluster.kubectl_json(
        "get", "service", "web-preview", "-n", namespace))
    assert preview["spec"]["selector"]["serving.onnx-operator.io/version"] == "v2"
    assert get(cluster, "service", namespace, "web")["spec"]["selector"]["serving.onnx-operator.io/version"] == "v1"
    wait_for("v2 at full size", lambda: replicas_by_version(cluster, namespace, "web") == {"v1": 2, "v2": 2})
    wait_for("awaiting promotion", lambda: get(cluster, "md", namespace, "web")["status"].get("phase") == "Paused")

    act(cluster, namespace, "web", "promote")

    wait_for("the switch", lambda: get(cluster, "service", namespace, "web")["spec"]["selector"].get(
        "serving.onnx-operator.io/version") == "v2")
    assert replicas_by_version(cluster, namespace, "web") == {"v1": 2, "v2": 2}, "old stays warm after the switch"
    wait_for("old version scaled away after the delay",
             lambda: replicas_by_version(cluster, namespace, "web") == {"v2": 2}, timeout=60)
    assert wait_ready(cluster, namespace, "web")["status"]["servingVersion"] == "v2"


def test_canary_survives_operator_kills_at_random_moments(
        cluster: ClusterHandle, namespace: str, models: ModelStore, operator: OperatorProcess) -> None:
    two_versions(cluster, namespace, models, "chaos")
    steps = {"type": "Canary", "canary": {"steps": [{"weight": 20, "pause": "2s"}, {"weight": 40, "pause": "2s"},
                                                    {"weight": 60, "pause": "2s"}, {"weight": 80, "pause": "2s"},
                                                    {"weight": 100}]}}
    cluster.apply(model_deployment("web", "v1", replicas=5, strategy=steps), namespace)
    wait_ready(cluster, namespace, "web")
    cluster.apply(model_deployment("web", "v2", replicas=5, strategy=steps), namespace)
    rng = random.Random(7)
    seen: list[int] = []

    for _ in range(5):
        deadline = time.monotonic() + rng.uniform(0.5, 3.0)
        while time.monotonic() < deadline:
            step = rollout(cluster, namespace, "web").get("stepIndex")
            if step is not None:
                seen.append(int(step))
            assert len(serving_deployments(cluster, namespace, "web")) <= 2
            time.sleep(0.1)
        operator.restart(signal.SIGKILL)

    def finished() -> bool:
        step = rollout(cluster, namespace, "web").get("stepIndex")
        if step is not None:
            seen.append(int(step))
        md = get(cluster, "md", namespace, "web")
        return md["status"].get("servingVersion") == "v2" and condition(md, "Ready").get("status") == "True"
    wait_for("the rollout to complete", finished, timeout=120)
    assert replicas_by_version(cluster, namespace, "web") == {"v2": 5}
    wait_for("the rollout state cleared", lambda: "version" not in rollout(cluster, namespace, "web"))
    assert get(cluster, "md", namespace, "web")["status"]["history"][-1]["result"] == "Succeeded"
    assert seen and all(a <= b for a, b in itertools.pairwise(seen)), f"step went back: {seen}"
