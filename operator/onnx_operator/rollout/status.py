"""ModelDeployment status as a pure function of the spec, the previous status and observations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from onnx_operator.api import ModelDeployment, ModelDeploymentStatus, set_condition
from onnx_operator.api import conditions as r
from onnx_operator.api.modeldeployment import VersionStatus
from onnx_operator.rollout.gates import GATES_INCONCLUSIVE, inconclusive_message
from onnx_operator.rollout.rolling import Observed
from onnx_operator.rollout.share import UNDER_SERVED

if TYPE_CHECKING:
    from onnx_operator.rollout.progressive import Decision


@dataclass(frozen=True)
class Problem:
    """Why the desired version cannot be rolled out now (Degraded, or still Progressing)."""

    reason: str
    message: str
    degraded: bool = True


def compute_status(md: ModelDeployment, observed: list[Observed], desired_replicas: int,
                   problem: Problem | None, decision: Decision | None, selector: str, url: str,
                   now: str, weights: dict[str, int] | None = None,
                   shares: dict[str, float] | None = None) -> ModelDeploymentStatus:
    """`weights`: each version's intended percent (default: by Ready pods, all on the active one);
    `shares`: what each answered, read during a rollout (absent: nothing claimed)."""
    prev = md.status
    desired = md.spec.model_version
    gen = md.generation
    by_version = {o.version: o for o in observed}
    new = by_version.get(desired)
    new_ready = new.ready if new else 0
    if decision is not None:
        serving = decision.serving if decision.serving in by_version else None
        complete = decision.complete
    else:
        serving = prev.serving_version if prev.serving_version in by_version else None
        complete = False
    rolled_back = decision.rolled_back if decision else None
    rollout = (decision.rollout if decision else prev.rollout) or None
    conds = list(prev.conditions)
    stuck = stuck_summary(observed, desired)
    if problem is not None:
        conds = set_condition(conds, "Degraded", problem.degraded, problem.reason, problem.message, gen, now)
        conds = set_condition(conds, "Progressing", not problem.degraded, problem.reason, problem.message, gen, now)
    elif rolled_back is not None:
        conds = set_condition(conds, "Degraded", True, rolled_back[0], rolled_back[1], gen, now)
        conds = set_condition(conds, "Progressing", False, "RolledBack", rolled_back[1], gen, now)
    else:
        conds = set_condition(conds, "Degraded", False, r.AS_EXPECTED, "", gen, now)
        if complete:
            conds = set_condition(conds, "Progressing", False, r.ROLLOUT_COMPLETE,
                                  f"{desired} serves all traffic", gen, now)
        else:
            progress = _progress(desired, rollout, new_ready, desired_replicas, shares or {})
            if rollout and rollout.get("underServed"):
                unsure = f"; {inconclusive_message(rollout)}" if rollout.get("gatesInconclusiveSince") else ""
                conds = set_condition(conds, "Progressing", True, UNDER_SERVED,
                                      f"{progress}: {rollout['underServed']}{unsure}", gen, now)
            elif rollout and rollout.get("gatesInconclusiveSince"):
                conds = set_condition(conds, "Progressing", True, GATES_INCONCLUSIVE,
                                      f"{progress} holds: {inconclusive_message(rollout)}", gen, now)
            elif stuck is not None:
                conds = set_condition(conds, "Progressing", True, stuck[0], f"{progress}; {stuck[1]}", gen, now)
            else:
                conds = set_condition(conds, "Progressing", True, r.ROLLOUT_IN_PROGRESS, progress, gen, now)
    if rolled_back is not None or any(c.type == "RolledBack" for c in conds):
        conds = set_condition(conds, "RolledBack", rolled_back is not None,
                              rolled_back[0] if rolled_back else r.AS_EXPECTED,
                              rolled_back[1] if rolled_back else "", gen, now)
    ready = problem is None and rolled_back is None and complete and new_ready >= desired_replicas
    not_ready = problem.reason if problem else (rolled_back[0] if rolled_back else (
        stuck[0] if stuck else r.REPLICAS_NOT_READY))
    conds = set_condition(conds, "Ready", ready, r.REPLICAS_READY if ready else not_ready,
                          f"{new_ready}/{desired_replicas} pods of {desired} ready"
                          + (f"; {stuck[1]}" if stuck and not ready else ""), gen, now)
    if (problem is not None and problem.degraded) or rolled_back is not None:
        phase = "Degraded"
    elif ready:
        phase = "Ready"
    elif rollout and (rollout.get("paused") or rollout.get("awaitingPromotion")):
        phase = "Paused"
    else:
        phase = "Progressing"
    return prev.model_copy(update={
        "phase": phase,
        "conditions": conds,
        "observed_generation": gen,
        "desired_version": desired,
        "serving_version": serving,
        "versions": [VersionStatus(name=o.version, replicas=o.replicas, ready_replicas=o.ready,
                                   weight=weights[o.version] if weights and o.version in weights
                                   else _weight(o, observed, decision),
                                   observed_share=(shares or {}).get(o.version),
                                   stuck_reason=o.stuck.reason if o.stuck else None,
                                   stuck_pods=o.stuck.count if o.stuck else None,
                                   last_error=o.stuck.message if o.stuck else None)
                     for o in sorted(observed, key=lambda o: o.version)],
        "replicas": sum(o.replicas for o in observed),
        "ready_replicas": sum(o.ready for o in observed),
        "ready_text": f"{new_ready}/{desired_replicas}",
        "selector": selector,
        "url": url,
        "rollout": rollout,
        "history": decision.history if decision else prev.history,
        "failed_versions": decision.failed if decision else prev.failed_versions,
    })


def _progress(desired: str, rollout: dict[str, object] | None, ready: int, replicas: int,
              shares: dict[str, float]) -> str:
    served = f", answering {shares[desired]:.0%} of requests" if desired in shares else ""
    if rollout and "stepIndex" in rollout and rollout.get("strategy") == "Canary":
        return (f"{desired}: step {int(rollout['stepIndex']) + 1}/{rollout.get('stepCount')} "  # type: ignore[call-overload]
                f"at weight {rollout.get('weight')}%{served}")
    return f"{ready}/{replicas} pods of {desired} ready{served}"


def _weight(o: Observed, observed: list[Observed], decision: Decision | None) -> int:
    """Share of traffic: all of it on the active version (blue/green), else by ready pods."""
    if decision is not None and decision.active is not None:
        return 100 if o.version == decision.active else 0
    ready = sum(x.ready for x in observed)
    return round(100 * o.ready / ready) if ready else 0


def stuck_summary(observed: list[Observed], desired: str) -> tuple[str, str] | None:
    """(reason, message) naming every version with stuck pods; the reason is the desired version's cause
    when it has one."""
    stuck = sorted((o for o in observed if o.stuck), key=lambda o: (o.version != desired, o.version))
    if not stuck:
        return None
    return stuck[0].stuck.reason, "; ".join(f"{o.version}: {o.stuck.describe()}" for o in stuck)  # type: ignore[union-attr]


def stuck_events(previous: list[VersionStatus], observed: list[Observed]) -> list[tuple[str, str, str]]:
    """A Warning Event per version whose pods became stuck, or stuck for another reason, since the last
    status (not one per reconcile)."""
    before = {v.name: v.stuck_reason for v in previous}
    return [("Warning", o.stuck.reason, f"{o.version}: {o.stuck.describe()}")
            for o in sorted(observed, key=lambda o: o.version)
            if o.stuck is not None and before.get(o.version) != o.stuck.reason]
