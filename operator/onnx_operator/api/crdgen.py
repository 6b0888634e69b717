"""Generate the CustomResourceDefinitions from the API models (the single source of truth).

    python -m onnx_operator.api.crdgen --out crds/ --out charts/onnx-operator/crds/      # write
    python -m onnx_operator.api.crdgen --check crds/ --check charts/onnx-operator/crds/  # exit 1 on a difference
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from onnx_operator.api.base import GROUP, VERSION, Resource
from onnx_operator.api.modeldeployment import ModelDeployment
from onnx_operator.api.modelversion import ModelVersion

_KEEP = {"type", "description", "default", "enum", "minimum", "maximum", "exclusiveMinimum",
         "exclusiveMaximum", "pattern", "minLength", "maxLength", "minItems", "maxItems", "format",
         "maxProperties", "x-kubernetes-validations", "x-kubernetes-int-or-string",
         "x-kubernetes-preserve-unknown-fields", "nullable", "x-kubernetes-list-type",
         "x-kubernetes-list-map-keys"}


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Turns a pydantic JSON schema into a Kubernetes structural schema (no $ref, no nullable anyOf)."""
    if "$ref" in node:
        merged = {**defs[node["$ref"].split("/")[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
        return structural(merged, defs)
    if "allOf" in node and len(node["allOf"]) == 1:
        return structural({**node["allOf"][0], **{k: v for k, v in node.items() if k != "allOf"}}, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if node.get("x-kubernetes-int-or-string") or rest.get("x-kubernetes-int-or-string"):
            return {k: v for k, v in rest.items() if k in _KEEP}
        if len(options) == 1:
            return structural({**options[0], **rest}, defs)
        if all(o.get("x-kubernetes-int-or-string") for o in options):
            return structural({**options[0], **rest}, defs)
        raise ValueError(f"cannot express anyOf {node['anyOf']} structurally")
    if node.get("x-kubernetes-int-or-string"):
        return {k: v for k, v in node.items() if k in _KEEP - {"type"}}
    out = {k: v for k, v in node.items() if k in _KEEP}
    if "const" in node:
        out["enum"] = [node["const"]]
    if node.get("type") == "object" or "properties" in node:
        out["type"] = "object"
        if "properties" in node:
            out["properties"] = {k: structural(v, defs) for k, v in node["properties"].items()}
        if node.get("required"):
            out["required"] = list(node["required"])
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            out["additionalProperties"] = structural(extra, defs)
        elif not node.get("properties") and not node.get("x-kubernetes-preserve-unknown-fields"):
            out["x-kubernetes-preserve-unknown-fields"] = True
    if node.get("type") == "array":
        items = node.get("items", {})
        out["items"] = structural(items, defs) if items else {"type": "object",
                                                              "x-kubernetes-preserve-unknown-fields": True}
    if out.get("x-kubernetes-preserve-unknown-fields") and "type" not in out:
        out["type"] = "object"
    if "default" in out and out["default"] is None:
        del out["default"]
    return out


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return structural(raw, raw.get("$defs", {}))


def _crd(resource: type[Resource], plural: str, short: str, columns: list[dict[str, Any]],
         subresources: dict[str, Any], description: str) -> dict[str, Any]:
    kind = resource.__name__
    spec, status = (resource.model_fields[f].annotation for f in ("spec", "status"))
    assert isinstance(spec, type) and isinstance(status, type)
    root: dict[str, Any] = {"type": "object", "description": description, "required": ["spec"]}
    if resource.rules:
        root["x-kubernetes-validations"] = [r.schema() for r in resource.rules]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "onnx-operator"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                      "singular": kind.lower(), "shortNames": [short], "categories": ["models"]},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {
                    **root,
                    "properties": {
                        "apiVersion": {"type": "string"}, "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": schema_of(spec), "status": schema_of(status),
                    },
                }},
                "subresources": subresources,
                "additionalPrinterColumns": columns,
            }],
        },
    }


def generate_crds() -> dict[str, dict[str, Any]]:
    age = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    mv = _crd(ModelVersion, "modelversions", "mv", [
        {"name": "Model", "type": "string", "jsonPath": ".spec.model"},
        {"name": "Version", "type": "string", "jsonPath": ".spec.version"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Digest", "type": "string", "jsonPath": ".status.digest", "priority": 1},
        age,
    ], {"status": {}}, "ModelVersion is one immutable, verified ONNX model artifact.")
    md = _crd(ModelDeployment, "modeldeployments", "md", [
        {"name": "Desired", "type": "string", "jsonPath": ".status.desiredVersion"},
        {"name": "Serving", "type": "string", "jsonPath": ".status.servingVersion"},
        {"name": "Ready", "type": "string", "jsonPath": ".status.readyText"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        age,
    ], {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas",
                                "labelSelectorPath": ".status.selector"}},
        "ModelDeployment serves a ModelVersion and rolls out new ones safely.")
    return {f"{GROUP}_modelversions.yaml": mv, f"{GROUP}_modeldeployments.yaml": md}


def render(crd: dict[str, Any]) -> str:
    return "# GENERATED by `make crds` from operator/onnx_operator/api; do not edit.\n" + yaml.safe_dump(
        crd, sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path, action="append", help="folder to write the CRD files to (repeatable)")
    group.add_argument("--check", type=Path, action="append", help="folder whose CRD files must match (repeatable)")
    args = parser.parse_args(argv)
    texts = {name: render(crd) for name, crd in generate_crds().items()}
    stale = []
    for folder in args.out or []:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            (folder / name).write_text(text)
    for folder in args.check or []:
        stale += [str(folder / name) for name, text in texts.items()
                  if not (folder / name).exists() or (folder / name).read_text() != text]
    if stale:
        print("out of date (run `make crds`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
