"""ModelDeployment status as a pure function of the spec, the previous status and observations."""

from __future__ import annotations

from dataclasses import dataclass

from onnx_operator.api import ModelDeployment, ModelDeploymentStatus, set_condition
from onnx_operator.api import conditions as r
from onnx_operator.api.modeldeployment import VersionStatus
from onnx_operator.rollout.rolling import Observed


@dataclass(frozen=True)
class Problem:
    """Why the desired version cannot be rolled out now (Degraded, or still Progressing)."""

    reason: str
    message: str
    degraded: bool = True


def compute_status(md: ModelDeployment, observed: list[Observed], desired_replicas: int,
                   problem: Problem | None, complete: bool, selector: str, url: str,
                   now: str) -> ModelDeploymentStatus:
    prev = md.status
    desired = md.spec.model_version
    gen = md.generation
    by_version = {o.version: o for o in observed}
    new = by_version.get(desired)
    new_ready = new.ready if new else 0
    serving = desired if (complete and new is not None and new.ready > 0) else (
        prev.serving_version if prev.serving_version in by_version else None)
    conds = list(prev.conditions)
    if problem is not None:
        conds = set_condition(conds, "Degraded", problem.degraded, problem.reason, problem.message, gen, now)
        conds = set_condition(conds, "Progressing", not problem.degraded, problem.reason, problem.message, gen, now)
    else:
        conds = set_condition(conds, "Degraded", False, r.AS_EXPECTED, "", gen, now)
        if complete and new_ready >= desired_replicas:
            conds = set_condition(conds, "Progressing", False, r.ROLLOUT_COMPLETE,
                                  f"{desired} serves all traffic", gen, now)
        else:
            conds = set_condition(conds, "Progressing", True, r.ROLLOUT_IN_PROGRESS,
                                  f"{new_ready}/{desired_replicas} pods of {desired} ready", gen, now)
    ready = problem is None and complete and new is not None and new_ready >= desired_replicas
    conds = set_condition(conds, "Ready", ready, r.REPLICAS_READY if ready else (
        problem.reason if problem else r.REPLICAS_NOT_READY),
        f"{new_ready}/{desired_replicas} pods of {desired} ready", gen, now)
    if problem is not None and problem.degraded:
        phase = "Degraded"
    elif ready:
        phase = "Ready"
    else:
        phase = "Progressing"
    total = sum(o.replicas for o in observed)
    return prev.model_copy(update={
        "phase": phase,
        "conditions": conds,
        "observed_generation": gen,
        "desired_version": desired,
        "serving_version": serving,
        "versions": [VersionStatus(name=o.version, replicas=o.replicas, ready_replicas=o.ready,
                                   weight=_weight(o, observed)) for o in sorted(observed, key=lambda o: o.version)],
        "replicas": total,
        "ready_replicas": sum(o.ready for o in observed),
        "ready_text": f"{new_ready}/{desired_replicas}",
        "selector": selector,
        "url": url,
    })


def _weight(o: Observed, observed: list[Observed]) -> int:
    """Share of ready serving pods (the Service spreads requests over ready endpoints)."""
    ready = sum(x.ready for x in observed)
    return round(100 * o.ready / ready) if ready else 0
