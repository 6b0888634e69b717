"""The docs' field reference, generated from the API models (`make docs`).

    python -m onnx_operator.api.reference --write docs/reference.md   # replace the marked section
    python -m onnx_operator.api.reference --check docs/reference.md   # exit 1 when it is stale

Fields that take Kubernetes' own types (nodeSelector, tolerations, affinity) link to the Kubernetes
API reference instead of being expanded field by field.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from onnx_operator.api.modeldeployment import ModelDeploymentSpec
from onnx_operator.api.modelversion import ModelVersionSpec

START, END = "<!-- reference:start -->", "<!-- reference:end -->"
POD_SCHEDULING = "https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#scheduling"
# spec path -> the type column: Kubernetes' own shapes, documented where Kubernetes documents them
KUBERNETES_TYPES = {
    "spec.nodeSelector": f"map of str, as [a Pod's nodeSelector]({POD_SCHEDULING})",
    "spec.tolerations": f"list of [Toleration]({POD_SCHEDULING}) (Kubernetes)",
    "spec.affinity": f"[Affinity]({POD_SCHEDULING}) (Kubernetes)",
}


def _type_name(annotation: Any) -> tuple[str, type[BaseModel] | None]:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        if len(args) == 1:
            return _type_name(args[0])
        return " or ".join(_type_name(a)[0] for a in args), None
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return " \\| ".join(str(a) for a in typing.get_args(annotation)), None
    if origin is list:
        inner, model = _type_name(args[0])
        return f"list of {inner}", model
    if origin is dict:
        return f"map of {_type_name(args[1])[0]}", None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object", annotation
    return getattr(annotation, "__name__", str(annotation)), None


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        path = f"{prefix}.{field.alias or name}"
        type_name, nested = _type_name(field.annotation)
        if path in KUBERNETES_TYPES:
            type_name, nested = KUBERNETES_TYPES[path], None
        if field.default is not PydanticUndefined and field.default is not None and not isinstance(
                field.default, BaseModel):
            default = f"`{field.default}`"
        else:
            default = "required" if field.is_required() else ""
        rows.append(f"| `{path}` | {type_name} | {default} | {(field.description or '').replace('|', '/')} |")
        if nested is not None:
            rows += _rows(nested, path + ("[]" if type_name.startswith("list") else ""))
    return rows


def render_reference() -> str:
    out = []
    for kind, model in (("ModelVersion", ModelVersionSpec), ("ModelDeployment", ModelDeploymentSpec)):
        out += [f"## {kind}", "", "| field | type | default | description |", "|---|---|---|---|",
                *_rows(model, "spec"), ""]
    return "\n".join(out).rstrip() + "\n"


def splice(readme: str) -> str:
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{render_reference()}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path)
    group.add_argument("--check", type=Path)
    args = parser.parse_args(argv)
    path = args.write or args.check
    text = path.read_text()
    if START not in text or END not in text:
        print(f"{path} has no {START} ... {END} section", file=sys.stderr)
        return 1
    if args.write:
        path.write_text(splice(text))
        return 0
    if splice(text) != text:
        print(f"{path}: the field reference is stale (run `make docs`)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
