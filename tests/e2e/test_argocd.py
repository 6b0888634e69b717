"""Argo CD integration: the Lua health checks and actions (run by a real Lua interpreter, lupa) on
statuses of real objects from the local control plane, and no drift after a server-side apply."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lupa import LuaRuntime

from localcluster.harness import ClusterHandle
from tests.e2e.conftest import Artifact, ModelStore
from tests.e2e.helpers import (
    ACTION,
    get,
    model_deployment,
    model_version,
    rollout,
    wait_condition,
    wait_mv_phase,
    wait_ready,
    wait_until,
)

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("operator")]
REPO = Path(__file__).resolve().parents[2]
LUA = REPO / "examples" / "argocd" / "lua"
STEPS = {"type": "Canary", "canary": {"steps": [{"weight": 50}, {"weight": 100}]}}


def to_lua(lua: LuaRuntime, value: Any) -> Any:
    if isinstance(value, dict):
        return lua.table_from({k: to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, v) for v in value])
    return value


def from_lua(value: Any) -> Any:
    if type(value).__name__ == "_LuaTable":
        keys = list(value.keys())
        if keys and all(isinstance(k, int) for k in keys):
            return [from_lua(value[k]) for k in sorted(keys)]
        return {k: from_lua(v) for k, v in value.items()}
    return value


def run_lua(script: str, obj: dict[str, Any]) -> Any:
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = to_lua(lua, obj)
    return from_lua(lua.execute((LUA / script).read_text()))


def health(obj: dict[str, Any]) -> str:
    script = "modeldeployment-health.lua" if obj["kind"] == "ModelDeployment" else "modelversion-health.lua"
    return str(run_lua(script, obj)["status"])


def test_health_follows_the_operators_conditions(cluster: ClusterHandle, namespace: str, models: ModelStore) -> None:
    cluster.apply(model_version("v1", models.model("argo-1.onnx")), namespace)
    cluster.apply(model_version("v2", models.model("argo-2.onnx", scale=2.0), version="2.0.0"), namespace)
    cluster.apply(model_version("bad", Artifact(models.model("argo-3.onnx").uri, "0" * 64)), namespace)
    cluster.apply(model_deployment("web", "v1", replicas=2, strategy=STEPS), namespace)

    ready = wait_ready(cluster, namespace, "web")
    assert health(ready) == "Healthy"
    assert health(wait_mv_phase(cluster, namespace, "v1", "Ready")) == "Healthy"
    assert health(wait_mv_phase(cluster, namespace, "bad", "Failed")) == "Degraded"

    newer_spec = copy.deepcopy(ready)
    newer_spec["metadata"]["generation"] += 1  # what Argo CD sees right after a sync, before the operator
    assert health(newer_spec) == "Progressing"

    wait_mv_phase(cluster, namespace, "v2", "Ready")
    cluster.apply(model_deployment("web", "v2", replicas=2, strategy=STEPS), namespace)
    waiting = wait_until(cluster, "md", namespace, "web", "awaiting promotion",
                         lambda o: (o["status"].get("rollout") or {}).get("awaitingPromotion"))
    assert health(waiting) == "Suspended"

    cluster.apply(model_deployment("web", "bad", replicas=2, strategy=STEPS), namespace)
    degraded = wait_condition(cluster, namespace, "web", "Degraded")
    assert health(degraded) == "Degraded"


def test_actions_drive_the_rollout(cluster: ClusterHandle, namespace: str, models: ModelStore) -> None:
    cluster.apply(model_version("v1", models.model("act-1.onnx")), namespace)
    cluster.apply(model_version("v2", models.model("act-2.onnx", scale=2.0), version="2.0.0"), namespace)
    cluster.apply(model_deployment("web", "v1", replicas=2, strategy=STEPS), namespace)
    idle = wait_ready(cluster, namespace, "web")
    assert run_lua("modeldeployment-actions-discovery.lua", idle)["promote"]["disabled"] is True
    wait_mv_phase(cluster, namespace, "v2", "Ready")
    cluster.apply(model_deployment("web", "v2", replicas=2, strategy=STEPS), namespace)
    waiting = wait_until(cluster, "md", namespace, "web", "awaiting promotion",
                         lambda o: (o["status"].get("rollout") or {}).get("awaitingPromotion"))
    actions = run_lua("modeldeployment-actions-discovery.lua", waiting)
    assert actions["promote"]["disabled"] is False and actions["resume"]["disabled"] is True

    promoted = run_lua("modeldeployment-action-promote.lua", waiting)
    value = promoted["metadata"]["annotations"][ACTION]
    assert value.startswith("promote@")
    cluster.kubectl("annotate", "md", "web", "-n", namespace, f"{ACTION}={value}", "--overwrite")

    assert wait_ready(cluster, namespace, "web")["status"]["servingVersion"] == "v2"
    assert "version" not in rollout(cluster, namespace, "web")


def test_no_drift_after_server_side_apply_and_reconcile(cluster: ClusterHandle, namespace: str) -> None:
    examples = str(REPO / "examples" / "basic")
    cluster.kubectl("apply", "--server-side", "-n", namespace, "-f", examples)
    wait_until(cluster, "md", namespace, "iris", "reconciled", lambda o: o.get("status", {}).get("observedGeneration"))
    wait_until(cluster, "mv", namespace, "iris-1-0-0", "reconciled",
               lambda o: o.get("status", {}).get("phase") in ("Ready", "Failed"))

    out = subprocess.run([cluster.kubectl_bin, f"--kubeconfig={cluster.kubeconfig}", "diff", "--server-side",
                          "-n", namespace, "-f", examples], capture_output=True, text=True, check=False)

    assert out.returncode == 0, f"drift:\n{out.stdout}{out.stderr}"
    spec = get(cluster, "md", namespace, "iris")["spec"]
    assert spec["progressDeadlineSeconds"] == 600, "defaults come from the CRD schema, not the operator"


def test_argocd_cm_patch_embeds_the_lua_files() -> None:
    out = subprocess.run([sys.executable, str(REPO / "examples/argocd/generate.py"), "--check"], check=False)
    assert out.returncode == 0, "run `python examples/argocd/generate.py`"
