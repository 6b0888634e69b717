"""JSON schemas for kubeconform, one file per kind, from the running API server's OpenAPI v3
(so manifests are checked against this cluster's Kubernetes version and its installed CRDs)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

# kubeconform's file name template for these files
SCHEMA_LOCATION = "{{ .ResourceKind }}-{{ .Group }}-{{ .ResourceAPIVersion }}.json"


def _strict(node: Any) -> Any:
    """Objects with declared properties reject unknown fields (what kubeconform -strict would check)."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out and \
                not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


def write_schemas(get_raw: Callable[[str], str], dest: Path) -> int:
    """`get_raw(path)` reads a raw API path (e.g. via kubectl get --raw); returns files written."""
    dest.mkdir(parents=True, exist_ok=True)
    index = json.loads(get_raw("/openapi/v3"))["paths"]
    count = 0
    for path, ref in index.items():
        if not (path.startswith("api/") or path.startswith("apis/")) or path.count("/") < 1:
            continue
        doc = json.loads(get_raw("/openapi/v3/" + path + "?" + ref["serverRelativeURL"].split("?", 1)[-1]))
        components = _strict(doc.get("components", {}))
        for schema in components.get("schemas", {}).values():
            for gvk in schema.get("x-kubernetes-group-version-kind", []):
                # kubeconform names the core group after its version: service-v1-v1.json
                name = f"{gvk['kind'].lower()}-{gvk['group'] or gvk['version']}-{gvk['version']}"
                (dest / f"{name}.json").write_text(json.dumps({**schema, "components": components}))
                count += 1
    return count
