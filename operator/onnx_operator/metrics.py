"""The operator's own Prometheus metrics: reconciles, errors, durations, rollouts by result, and one set of
series per ModelDeployment (phase, step, degraded, intended weight per ModelVersion, rollbacks) that the
chart's dashboard and alert rules read. Only the acting leader reconciles, so only it exports those."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from onnx_operator.rollout.timeutil import parse_time

RECONCILES = Counter("onnx_operator_reconciles", "Reconciles by kind and result (ok, error)", ["kind", "result"])
RECONCILE_SECONDS = Histogram("onnx_operator_reconcile_duration_seconds", "Reconcile duration", ["kind"],
                              buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
ROLLOUTS = Counter("onnx_operator_rollouts", "Finished rollouts by strategy and result "
                   "(Succeeded, RolledBack, Aborted, Superseded)", ["strategy", "result"])
LEADER = Gauge("onnx_operator_leader", "1 while this replica holds the leader Lease and acts, else 0")

MD = ["namespace", "modeldeployment"]
PHASES = ("Pending", "Progressing", "Paused", "Ready", "Degraded")
MD_PHASE = Gauge("onnx_operator_modeldeployment_phase", "1 for the ModelDeployment's phase, 0 for the others",
                 [*MD, "phase"])
MD_DEGRADED = Gauge("onnx_operator_modeldeployment_degraded", "1 while the Degraded condition is True", MD)
MD_STEP = Gauge("onnx_operator_modeldeployment_rollout_step", "1-based canary step of the running rollout "
                "(0: no canary step running)", MD)
MD_STEPS = Gauge("onnx_operator_modeldeployment_rollout_steps", "Steps of the running canary (0: none)", MD)
MD_WEIGHT = Gauge("onnx_operator_modeldeployment_weight_percent", "Intended share of traffic per served "
                  "ModelVersion, in percent", [*MD, "modelversion"])
MD_INCONCLUSIVE = Gauge("onnx_operator_modeldeployment_gates_inconclusive_since_timestamp_seconds",
                        "Since when the running canary's gates have been inconclusive (absent: they are not)", MD)
MD_REPLICAS = Gauge("onnx_operator_modeldeployment_replicas", "Serving pods of all versions (status.replicas)", MD)
MD_READY = Gauge("onnx_operator_modeldeployment_ready_replicas", "Ready serving pods of all versions", MD)
MD_ROLLBACKS = Counter("onnx_operator_modeldeployment_rollbacks", "Rollouts of each ModelDeployment that ended "
                       "back on the stable version (RolledBack by a gate or deadline, or Aborted)", MD)


@dataclass(frozen=True)
class ModelDeploymentSeries:
    """What one ModelDeployment's status exports."""

    phase: str
    degraded: bool
    step: int
    steps: int
    replicas: int
    ready_replicas: int
    weights: dict[str, int]  # ModelVersion name -> percent
    inconclusive_since: float | None  # unix seconds


def status_series(status: dict[str, Any]) -> ModelDeploymentSeries:
    """The series values of a ModelDeployment's (wire) status."""
    conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    rollout = status.get("rollout") or {}
    canary = bool(rollout.get("version")) and "stepIndex" in rollout and rollout.get("strategy") == "Canary"
    since = rollout.get("gatesInconclusiveSince") if rollout.get("version") else None
    return ModelDeploymentSeries(
        phase=str(status.get("phase") or "Pending"),
        degraded=conds.get("Degraded") == "True",
        step=int(rollout["stepIndex"]) + 1 if canary else 0,
        steps=int(rollout.get("stepCount", 0)) if canary else 0,
        replicas=int(status.get("replicas") or 0),
        ready_replicas=int(status.get("readyReplicas") or 0),
        weights={str(v["name"]): int(v.get("weight", 0)) for v in status.get("versions") or []},
        inconclusive_since=parse_time(str(since)).timestamp() if since else None,
    )


_lock = threading.Lock()
_weights: dict[tuple[str, str], set[str]] = {}  # the modelversion labels exported per ModelDeployment


def record_model_deployment(namespace: str, name: str, status: dict[str, Any]) -> None:
    series = status_series(status)
    key = (namespace, name)
    with _lock:
        for phase in {*PHASES, series.phase}:
            MD_PHASE.labels(namespace, name, phase).set(1 if phase == series.phase else 0)
        MD_DEGRADED.labels(namespace, name).set(1 if series.degraded else 0)
        MD_STEP.labels(namespace, name).set(series.step)
        MD_STEPS.labels(namespace, name).set(series.steps)
        MD_REPLICAS.labels(namespace, name).set(series.replicas)
        MD_READY.labels(namespace, name).set(series.ready_replicas)
        MD_ROLLBACKS.labels(namespace, name)  # the series exists from 0, so increase() sees the first rollback
        for gone in _weights.get(key, set()) - set(series.weights):
            MD_WEIGHT.remove(namespace, name, gone)
        for version, weight in series.weights.items():
            MD_WEIGHT.labels(namespace, name, version).set(weight)
        _weights[key] = set(series.weights)
        if series.inconclusive_since is not None:
            MD_INCONCLUSIVE.labels(namespace, name).set(series.inconclusive_since)
        else:
            _remove(MD_INCONCLUSIVE, namespace, name)


def forget_model_deployment(namespace: str, name: str) -> None:
    """A deleted ModelDeployment: its series go."""
    with _lock:
        _forget(namespace, name)


def forget_all_model_deployments() -> None:
    """On losing the lead: the new leader exports them now."""
    with _lock:
        for namespace, name in list(_weights):
            _forget(namespace, name)


def _forget(namespace: str, name: str) -> None:
    for phase in PHASES:
        _remove(MD_PHASE, namespace, name, phase)
    for gauge in (MD_DEGRADED, MD_STEP, MD_STEPS, MD_REPLICAS, MD_READY, MD_INCONCLUSIVE, MD_ROLLBACKS):
        _remove(gauge, namespace, name)
    for version in _weights.pop((namespace, name), set()):
        _remove(MD_WEIGHT, namespace, name, version)


def _remove(metric: Gauge | Counter, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)


def serve_metrics(port: int) -> None:
    start_http_server(port, addr="0.0.0.0")
