"""Exact traffic split through a Gateway API HTTPRoute: one Service per role, weighted backendRefs."""

from __future__ import annotations

import copy
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
