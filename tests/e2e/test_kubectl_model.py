"""`kubectl model` as kubectl finds it: a `kubectl-model` plugin on PATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from localcluster.harness import ClusterHandle, wait_for
from tests.e2e.conftest import ModelStore
from tests.e2e.helpers import get, model_deployment, model_version, rollout, wait_mv_phase, wait_ready, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("operator")]
STEPS = {"type": "Canary", "canary": {"steps": [{"weight": 50}, {"weight": 100}]}}


def kubectl_model(cluster: ClusterHandle, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
               KUBECONFIG=str(cluster.kubeconfig))
    return subprocess.run([cluster.kubectl_bin, "model", *args],
                          capture_output=True, text=True, env=env, check=False, timeout=60)


@pytest.fixture()
def canary_in_progress(cluster: ClusterHandle, namespace: str, models: ModelStore) -> str:
    cluster.apply(model_version("v1", models.model("cli-1.onnx")), namespace)
    cluster.apply(model_version("v2", models.model("cli-2.onnx", scale=2.0), version="2.0.0"), namespace)
    cluster.apply(model_deployment("web", "v1", replicas=2, strategy=STEPS), namespace)
    wait_ready(cluster, namespace, "web")
    wait_mv_phase(cluster, namespace, "v2", "Ready")
    cluster.apply(model_deployment("web", "v2", replicas=2, strategy=STEPS), namespace)
    wait_for("the canary to wait for promotion", lambda: rollout(cluster, namespace, "web").get("awaitingPromotion"))
    return namespace


def test_status_shows_versions_step_and_what_to_do_next(cluster: ClusterHandle, canary_in_progress: str) -> None:
    out = kubectl_model(cluster, "status", "web", "-n", canary_in_progress)
    assert out.returncode == 0, out.stderr
    assert "step 1/2" in out.stdout and "50%" in out.stdout and "[" in out.stdout
    assert "kubectl model promote web" in out.stdout
    assert "v1" in out.stdout and "v2" in out.stdout


def test_promote_then_history_records_the_rollout(cluster: ClusterHandle, canary_in_progress: str) -> None:
    ns = canary_in_progress
    out = kubectl_model(cluster, "promote", "web", "-n", ns)
    assert out.returncode == 0 and "promote requested for v2" in out.stdout

    watched = kubectl_model(cluster, "status", "web", "-n", ns, "--watch", "--interval", "0.5", "--timeout", "60")

    assert watched.returncode == 0
    md = wait_ready(cluster, ns, "web")
    assert md["status"]["servingVersion"] == "v2"
    history = kubectl_model(cluster, "history", "web", "-n", ns)
    assert "v2" in history.stdout and "Succeeded" in history.stdout


def test_pause_resume_and_abort(cluster: ClusterHandle, canary_in_progress: str) -> None:
    ns = canary_in_progress
    assert kubectl_model(cluster, "pause", "web", "-n", ns).returncode == 0
    wait_for("paused", lambda: rollout(cluster, ns, "web").get("paused"))
    again = kubectl_model(cluster, "pause", "web", "-n", ns)
    assert again.returncode == 1 and "already paused" in again.stderr
    assert kubectl_model(cluster, "resume", "web", "-n", ns).returncode == 0
    wait_for("resumed", lambda: rollout(cluster, ns, "web").get("paused") is False)

    assert kubectl_model(cluster, "abort", "web", "-n", ns).returncode == 0

    md = wait_until(cluster, "md", ns, "web", "aborted",
                    lambda o: (o["status"].get("rollout") or {}).get("blockedVersion"))
    assert md["status"]["servingVersion"] == "v1" and md["status"]["history"][-1]["result"] == "Aborted"
    nothing = kubectl_model(cluster, "promote", "web", "-n", ns)
    assert nothing.returncode == 1 and "no rollout in progress" in nothing.stderr


def test_rollback_to_patches_the_spec_and_checks_the_version(cluster: ClusterHandle, canary_in_progress: str) -> None:
    ns = canary_in_progress
    missing = kubectl_model(cluster, "rollback", "web", "--to", "v9", "-n", ns)
    assert missing.returncode == 1 and 'modelversion "v9" not found' in missing.stderr

    out = kubectl_model(cluster, "rollback", "web", "--to", "v1", "-n", ns)

    assert out.returncode == 0 and "spec.modelVersion set to v1" in out.stdout
    assert get(cluster, "md", ns, "web")["spec"]["modelVersion"] == "v1"
    md = wait_ready(cluster, ns, "web")
    assert md["status"]["servingVersion"] == "v1"


def test_unknown_model_deployment_is_a_clear_error(cluster: ClusterHandle, namespace: str) -> None:
    out = kubectl_model(cluster, "status", "nope", "-n", namespace)
    assert out.returncode == 1 and 'modeldeployment "nope" not found' in out.stderr
