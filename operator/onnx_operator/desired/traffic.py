"""Exact traffic split through a Gateway API HTTPRoute: one Service per role, weighted backendRefs."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from onnx_operator.api import ModelDeployment
from onnx_operator.desired.common import Obj, object_meta, owner_reference
from onnx_operator.desired.names import LABEL_NAME, LABEL_VERSION, bounded_name, serving_labels
from onnx_operator.desired.serving import service_ports

ROLES = ("stable", "canary")


def role_service_name(md_name: str, role: str) -> str:
    return bounded_name(md_name, role)


def desired_role_service(md: ModelDeployment, role: str, version: str) -> Obj:
    """`<md>-stable` / `<md>-canary`: the pods of one version, for weighted backendRefs."""
    labels = {LABEL_NAME: "onnx-model", **serving_labels(md.name)}
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": object_meta(role_service_name(md.name, role), md.namespace, labels,
                                owner_reference("ModelDeployment", md.metadata)),
        "spec": {"selector": {**serving_labels(md.name), LABEL_VERSION: version}, "ports": service_ports(md)},
    }


def weighted_rules(route: dict[str, Any], md_name: str, canary_weight: int) -> list[dict[str, Any]]:
    """The route's rules with every rule's backendRefs set to stable/canary at the given weights.

    Everything else in the route (matches, filters, parentRefs, other fields of the rules) is kept.
    """
    rules = copy.deepcopy((route.get("spec") or {}).get("rules") or [{}])
    weights = {"stable": 100 - canary_weight, "canary": canary_weight}
    for rule in rules:
        rule["backendRefs"] = [{"group": "", "kind": "Service", "name": role_service_name(md_name, role),
                                "port": 80, "weight": weights[role]} for role in ROLES]
    return rules


@dataclass(frozen=True)
class TrafficSplit:
    """Which version is stable and which is canary, and the canary's percent of the traffic."""

    stable: str
    canary: str
    canary_weight: int


def traffic_split(md: ModelDeployment, rollout: dict[str, Any] | None, serving: str | None,
                  ready: dict[str, int]) -> TrafficSplit:
    """During a rollout, the version it started from is stable and the new one canary; otherwise both
    roles name the serving version. Canary weight: the step's weight (Canary), all or nothing (BlueGreen,
    at the switch), else the new version's share of Ready pods."""
    rollout = rollout or {}
    new = md.spec.model_version
    if not rollout.get("version"):
        stable = serving or new
        return TrafficSplit(stable, stable, 0)
    stable = str(rollout["from"]) if rollout.get("from") else (serving or new)
    if md.spec.strategy.type == "Canary":
        weight = int(rollout.get("weight", 0))
    elif md.spec.strategy.type == "BlueGreen":
        weight = 100 if rollout.get("switchedAt") else 0
    else:
        total = sum(ready.values())
        weight = round(100 * ready.get(new, 0) / total) if total else 0
    return TrafficSplit(stable, new, weight)


def intended_weights(md: ModelDeployment, versions: list[str], ready: dict[str, int], active: str | None,
                     rollout: dict[str, Any] | None, serving: str | None) -> dict[str, int]:
    """Percent of requests each version should answer: all on the active version (the Service selects
    only it), the route's exact weights with spec.traffic.httpRoute, else each version's share of Ready
    pods (kube-proxy spreads connections evenly over Ready endpoints, so weights round to whole pods)."""
    if active is not None:
        return {v: 100 if v == active else 0 for v in versions}
    if md.spec.traffic and md.spec.traffic.http_route and (rollout or {}).get("version"):
        split = traffic_split(md, rollout, serving, ready)
        weights = {split.stable: 100 - split.canary_weight, split.canary: split.canary_weight}
        return {v: weights.get(v, 0) for v in versions}
    total = sum(ready.get(v, 0) for v in versions)
    return {v: round(100 * ready.get(v, 0) / total) if total else 0 for v in versions}
