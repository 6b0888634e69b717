"""The rollout state machine: (spec, status, observations, now) -> (next rollout state, targets).

All rollout state lives in ModelDeployment.status (`rollout`, `history`, `failedVersions`), so a
restarted operator continues where the last one stopped and the step index never goes back.
No I/O here: the handler observes (Deployments, metric gates) and applies what this returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from onnx_operator.api import ModelDeployment
from onnx_operator.rollout.gates import (
    GATES_HAD_NO_DATA,
    GATES_INCONCLUSIVE,
    GateResult,
    hold_on_gates,
    inconclusive_message,
)
from onnx_operator.rollout.rolling import Observed, plan_handover
from onnx_operator.rollout.timeutil import parse_duration, seconds_between

HISTORY_LIMIT = 10
ACTIONS = ("promote", "promote-full", "abort", "pause", "resume")

# reasons a rollout ends
SUCCEEDED = "Succeeded"
ROLLED_BACK = "RolledBack"
ABORTED = "Aborted"
SUPERSEDED = "Superseded"
DEADLINE = "ProgressDeadlineExceeded"


@dataclass
class Decision:
    """What the handler applies: replicas per version (absent = delete), Service routing, events."""

    replicas: dict[str, int]
    active: str | None  # version the main Service selects; None = every version (replica split)
    preview: str | None = None  # version the preview Service selects (BlueGreen)
    rollout: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    serving: str | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)
    rolled_back: tuple[str, str] | None = None  # (reason, message) of the last rollback, if any
    requeue: float | None = None
    complete: bool = False
    pending_action: str | None = None  # the annotation value a promotion marks handled when carried out


def parse_action(value: str | None) -> tuple[str, str] | None:
    """`promote@<id>` -> ("promote", "promote@<id>"); unknown verbs are ignored (the CLI validates)."""
    if not value:
        return None
    verb = value.split("@", 1)[0].strip()
    return (verb, value) if verb in ACTIONS else None


def canary_replicas(weight: int, replicas: int) -> int:
    """The canary gets ceil(weight% x replicas) pods (at least one while weight > 0)."""
    return min(replicas, max(1, math.ceil(weight * replicas / 100))) if weight > 0 else 0


def _finish(d: Decision, md: ModelDeployment, state: dict[str, Any], result: str, reason: str, now: str) -> None:
    entry = {"version": state["version"], "digest": state.get("digest"), "from": state.get("from"),
             "strategy": state.get("strategy"), "startedAt": state.get("startedAt"), "finishedAt": now,
             "result": result, "reason": reason}
    d.history = ([*md.status.history, entry])[-HISTORY_LIMIT:]


def _rollback(d: Decision, md: ModelDeployment, state: dict[str, Any], stable: str | None, replicas: int,
              reason: str, message: str, now: str, result: str = ROLLED_BACK) -> Decision:
    version = state["version"]
    _finish(d, md, state, result, f"{reason}: {message}", now)
    d.failed = ([f for f in md.status.failed_versions if f.get("name") != version]
                + [{"name": version, "digest": state.get("digest"), "reason": reason, "message": message,
                    "at": now}])[-HISTORY_LIMIT:]
    d.replicas = {stable: replicas} if stable else {}
    d.active, d.preview, d.serving = stable, None, stable
    d.rollout = {"blockedVersion": version, "lastAction": state.get("lastAction")}
    d.rolled_back = (reason, f"{version} rolled back to {stable or 'nothing'}: {message}")
    d.events.append(("Warning", "RolledBack", d.rolled_back[1]))
    return d


def decide(md: ModelDeployment, observed: dict[str, Observed], replicas: int, digest: str | None,
           gates: list[GateResult], action: tuple[str, str] | None, now: str) -> Decision:
    """One step of the state machine for a ModelDeployment whose desired version is verified."""
    spec, status = md.spec, md.status
    desired = spec.model_version
    prev = dict(status.rollout or {})
    state = prev if prev.get("version") == desired else {}
    # during a rollout the version it started from stays stable, even after a blue/green switch
    stable_name = state.get("from") if state else status.serving_version
    if not state and prev.get("from") == desired:
        # back to the version an unfinished rollout started from (e.g. within a blue/green scale-down
        # delay): no new rollout; it serves again at once, from its still-warm pods
        stable_name = desired
    stable = stable_name if stable_name in observed else None
    handled = prev.get("lastAction")
    act = action[0] if action and action[1] != handled else None
    d = Decision(replicas={}, active=None, history=list(status.history), failed=list(status.failed_versions),
                 serving=stable, pending_action=action[1] if action else None)
    if prev.get("version") and prev["version"] != desired:  # the spec moved on mid-rollout
        _finish(d, md, prev, SUPERSEDED, f"spec.modelVersion changed to {desired}", now)
    if prev.get("blockedVersion") == desired:
        d.replicas = {stable: replicas} if stable else {}
        d.active, d.rollout = stable, prev
        d.rolled_back = next(((f["reason"], f"{desired} was rolled back: {f.get('message', '')}")
                              for f in reversed(status.failed_versions) if f.get("name") == desired),
                             ("RolledBack", f"{desired} was rolled back"))
        return d
    if stable is None or stable == desired:
        return _steady(d, md, desired, replicas, observed, now, state, stable)
    if not state:
        state = {"version": desired, "from": stable, "digest": digest, "strategy": spec.strategy.type,
                 "startedAt": now, "stepIndex": 0, "stepStartedAt": now, "paused": False}
        # an action written before this rollout began is not meant for it
        handled = action[1] if action else handled
        act = None
        d.events.append(("Normal", "RolloutStarted", f"rolling out {desired} over {stable} ({spec.strategy.type})"))
    if handled is not None:
        state.setdefault("lastAction", handled)
    promoting = act in ("promote", "promote-full")
    if act and not promoting:  # a promotion is marked handled only once it is carried out
        state["lastAction"] = action[1] if action else None
        if act == "abort":
            return _rollback(d, md, state, stable, replicas, ABORTED, "aborted by a user", now, result=ABORTED)
        if act == "pause":
            state["paused"] = True
        elif act == "resume":
            state["paused"] = False
    new = observed.get(desired)
    started = str(state.get("stepStartedAt", now))
    new_ready = new.ready if new else 0
    strategy = spec.strategy.type
    target_new = replicas if strategy != "Canary" else _canary_target(md, state, replicas)
    if new_ready < target_new and seconds_between(started, now) > spec.progress_deadline_seconds:
        cause = f": {new.stuck.describe()}" if new and new.stuck else ""
        return _rollback(d, md, state, stable, replicas, DEADLINE,
                         f"{new_ready}/{target_new} pods of {desired} ready after "
                         f"{spec.progress_deadline_seconds}s{cause}", now)
    unsure_since = hold_on_gates(state, gates, now)
    failing = [g for g in gates if g.failed]
    if failing:
        g = failing[0]
        return _rollback(d, md, state, stable, replicas, g.name, g.message, now)
    if unsure_since == now and gates:
        d.events.append(("Warning", GATES_INCONCLUSIVE, f"{desired} holds: {inconclusive_message(state)}"))
    if unsure_since and seconds_between(unsure_since, now) > spec.progress_deadline_seconds:
        return _rollback(d, md, state, stable, replicas, GATES_HAD_NO_DATA,
                         f"the gates had no data for {spec.progress_deadline_seconds}s "
                         f"(spec.progressDeadlineSeconds): {inconclusive_message(state)}", now)
    if strategy == "Canary":
        d = _canary(d, md, state, stable, replicas, observed, act, now)
    elif strategy == "BlueGreen":
        d = _blue_green(d, md, state, stable, replicas, observed, act, now)
    else:
        d = _rolling(d, md, state, stable, replicas, observed, now)
    if new_ready < target_new and not d.complete and not d.rolled_back:
        # look again when the readiness deadline passes, even if nothing else changes
        left = spec.progress_deadline_seconds - seconds_between(started, now) + 1
        d.requeue = min(d.requeue if d.requeue is not None else left, max(1.0, left))
    return d


def _steady(d: Decision, md: ModelDeployment, desired: str, replicas: int, observed: dict[str, Observed],
            now: str, state: dict[str, Any], stable: str | None) -> Decision:
    """Nothing to roll out: the desired version serves at full size, every other one goes."""
    new = observed.get(desired)
    d.replicas = {desired: replicas}
    d.active = desired if md.spec.strategy.type == "BlueGreen" else None
    if new and new.ready > 0:
        d.serving = desired
    d.rollout = {k: v for k, v in (md.status.rollout or {}).items() if k == "lastAction"} or None
    d.complete = bool(new and new.updated and new.ready >= replicas)
    if state and d.complete and stable == desired:
        _finish(d, md, state, SUCCEEDED, "", now)
    return d


def _succeed(d: Decision, md: ModelDeployment, state: dict[str, Any], replicas: int, now: str) -> Decision:
    version = state["version"]
    _finish(d, md, state, SUCCEEDED, "all gates passed", now)
    d.replicas = {version: replicas}
    d.serving, d.active, d.preview = version, version if md.spec.strategy.type == "BlueGreen" else None, None
    last = d.pending_action or state.get("lastAction")  # nothing left for a pending action to act on
    d.rollout = {"lastAction": last} if last else None
    d.complete = True
    d.events.append(("Normal", "RolloutSucceeded", f"{version} serves all traffic"))
    return d


def _rolling(d: Decision, md: ModelDeployment, state: dict[str, Any], stable: str | None, replicas: int,
             observed: dict[str, Observed], now: str) -> Decision:
    desired = state["version"]
    rolling = md.spec.strategy.rolling_update
    plan = plan_handover(replicas, rolling.max_surge if rolling else "100%",
                         rolling.max_unavailable if rolling else 0, observed.get(desired),
                         [o for v, o in observed.items() if v != desired])
    if plan.complete or plan.delete:
        return _succeed(d, md, state, replicas, now)
    d.replicas = {desired: plan.new_replicas, **plan.old_replicas}
    d.rollout = state
    return d


def _canary_target(md: ModelDeployment, state: dict[str, Any], replicas: int) -> int:
    steps = md.spec.strategy.canary.steps if md.spec.strategy.canary else []
    index = min(int(state.get("stepIndex", 0)), len(steps) - 1) if steps else 0
    return canary_replicas(steps[index].weight if steps else 100, replicas)


def _enter_step(state: dict[str, Any], now: str) -> None:
    """A new step's deadline counts from now, its pause from when its own pods are Ready."""
    state["stepStartedAt"] = now
    state.pop("stepReadyAt", None)
    state.pop("gatesInconclusiveSince", None)
    state.pop("shareLowSince", None)
    state.pop("underServed", None)


def _canary(d: Decision, md: ModelDeployment, state: dict[str, Any], stable: str | None, replicas: int,
            observed: dict[str, Observed], act: str | None, now: str) -> Decision:
    assert md.spec.strategy.canary is not None
    steps = md.spec.strategy.canary.steps
    version = state["version"]
    index = min(int(state.get("stepIndex", 0)), len(steps) - 1)
    if act == "promote-full" and index != len(steps) - 1:
        index = len(steps) - 1
        _enter_step(state, now)
    step = steps[index]
    canary = canary_replicas(step.weight, replicas)
    new = observed.get(version)
    ready = bool(new and new.updated and new.ready >= canary)
    if ready and not state.get("stepReadyAt"):
        # a step's pause counts from when its weight is really served, not from when it was asked for
        state["stepReadyAt"] = now
    held = seconds_between(str(state.get("stepReadyAt", now)), now)
    advance = False
    if ready and not state.get("paused"):
        if act in ("promote", "promote-full"):
            advance = True  # a user's promotion also passes over inconclusive (never failed) gates
        elif state.get("gatesInconclusiveSince"):
            advance = False  # held until the gates have data; the handler looks again every interval
        elif step.pause is not None:
            wait = parse_duration(step.pause)
            advance = held >= wait
            if not advance:
                d.requeue = max(1.0, wait - held)
        elif index == len(steps) - 1:
            advance = True  # the final 100% step completes once ready
    if advance and act in ("promote", "promote-full"):
        state["lastAction"] = d.pending_action
    if advance and index == len(steps) - 1:
        return _succeed(d, md, state, replicas, now)
    if advance:
        index += 1
        _enter_step(state, now)
        d.events.append(("Normal", "StepAdvanced", f"{version}: step {index + 1}/{len(steps)} "
                         f"at weight {steps[index].weight}%"))
        canary = canary_replicas(steps[index].weight, replicas)
        d.requeue = 1.0
    state["awaitingPromotion"] = bool(ready and not advance and step.pause is None and index < len(steps) - 1)
    state["stepIndex"] = max(index, int(state.get("stepIndex", 0)))
    state["stepCount"] = len(steps)
    state["weight"] = steps[state["stepIndex"]].weight
    d.replicas = {version: canary}
    if stable:
        # stable gives up a pod only for a Ready canary pod: it never drops below its size for pods
        # that may never become Ready (surge first, as a rolling update does)
        d.replicas[stable] = replicas - min(canary, new.ready if new else 0)
    d.rollout = state
    return d


def _blue_green(d: Decision, md: ModelDeployment, state: dict[str, Any], stable: str | None, replicas: int,
                observed: dict[str, Observed], act: str | None, now: str) -> Decision:
    assert md.spec.strategy.blue_green is not None or md.spec.strategy.type == "BlueGreen"
    bg = md.spec.strategy.blue_green
    version = state["version"]
    new = observed.get(version)
    ready = bool(new and new.updated and new.ready >= replicas)
    if state.get("switchedAt"):
        delay = bg.scale_down_delay_seconds if bg else 30
        waited = seconds_between(str(state["switchedAt"]), now)
        if waited >= delay:
            return _succeed(d, md, state, replicas, now)
        d.replicas = {version: replicas, **({stable: replicas} if stable else {})}
        d.active, d.serving, d.rollout = version, version, state
        d.requeue = max(1.0, delay - waited)
        return d
    if ready and not state.get("paused") and (act in ("promote", "promote-full") or (bg and bg.auto_promote)):
        if act in ("promote", "promote-full"):
            state["lastAction"] = d.pending_action
        state["switchedAt"] = now
        state["awaitingPromotion"] = False
        d.events.append(("Normal", "Switched", f"the Service now sends all traffic to {version}"))
        d.replicas = {version: replicas, **({stable: replicas} if stable else {})}
        d.active, d.serving, d.rollout = version, version, state
        d.requeue = float(bg.scale_down_delay_seconds if bg else 30)
        return d
    state["awaitingPromotion"] = ready and not (bg and bg.auto_promote)
    d.replicas = {version: replicas, **({stable: replicas} if stable else {})}
    d.active, d.preview, d.rollout = stable, version, state
    return d
