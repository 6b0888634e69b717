"""RollingUpdate handover between versions, as a pure function of what is observed."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from onnx_operator.rollout.stuck import StuckPods


@dataclass(frozen=True)
class Observed:
    """One version's Deployment as seen in the cluster."""

    version: str
    replicas: int
    ready: int
    updated: bool = True  # status.observedGeneration caught up with metadata.generation
    stuck: StuckPods | None = None  # why some of its pods are not becoming Ready


@dataclass(frozen=True)
class HandoverPlan:
    new_replicas: int
    old_replicas: dict[str, int] = field(default_factory=dict)
    delete: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.old_replicas and not self.delete


def resolve(value: int | str, total: int, round_up: bool) -> int:
    """An int-or-percent against `total` (surge rounds up, unavailability down, as Deployments do)."""
    if isinstance(value, int):
        return value
    text = value.strip()
    if text.endswith("%"):
        frac = float(text[:-1]) / 100 * total
        return math.ceil(frac) if round_up else math.floor(frac)
    return int(text)


def plan_handover(replicas: int, max_surge: int | str, max_unavailable: int | str,
                  new: Observed | None, old: list[Observed]) -> HandoverPlan:
    """New pods come up (within the surge); old pods go only as new ones become Ready, so ready pods
    never drop below `replicas - maxUnavailable`; old Deployments go once the new one is all Ready."""
    surge = resolve(max_surge, replicas, round_up=True)
    unavailable = resolve(max_unavailable, replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        surge = 1  # as the Deployment controller requires, something must give
    new_ready = new.ready if new else 0
    live_old = [o for o in old if o.replicas > 0]
    if new is not None and new.updated and new_ready >= replicas:
        return HandoverPlan(replicas, {}, tuple(o.version for o in old))
    # old may keep only what the ready floor needs, and never grows
    budget = max(0, replicas - unavailable - new_ready)
    old_targets: dict[str, int] = {}
    for o in sorted(live_old, key=lambda o: o.version):
        keep = min(o.replicas, budget)
        old_targets[o.version] = keep
        budget -= keep
    for o in old:
        old_targets.setdefault(o.version, 0)
    new_target = max(0, min(replicas, replicas + surge - sum(old_targets.values())))
    if new_target == 0 and replicas > 0:
        new_target = 1
    return HandoverPlan(new_target, old_targets, ())
