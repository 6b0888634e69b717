"""Pieces every serving and verification pod shares."""

from __future__ import annotations

from typing import Any

from onnx_operator.api import API_VERSION

Obj = dict[str, Any]
TERMINATION_LOG = "/dev/termination-log"  # where onnx-server writes its JSON result for the pod's status

RESTRICTED_CONTAINER: Obj = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_POD: Obj = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "fsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def owner_reference(kind: str, metadata: dict[str, object]) -> Obj:
    return {"apiVersion": API_VERSION, "kind": kind, "name": metadata["name"], "uid": metadata["uid"],
            "controller": True, "blockOwnerDeletion": True}


def object_meta(name: str, namespace: str, labels: dict[str, str], owner: Obj,
                annotations: dict[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": namespace, "labels": dict(labels), "ownerReferences": [owner]}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta
