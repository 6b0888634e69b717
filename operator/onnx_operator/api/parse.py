"""Parse a resource body once, at the boundary, naming the field path in any error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from onnx_operator.api.base import RuleViolation
from onnx_operator.api.modeldeployment import ModelDeployment
from onnx_operator.api.modelversion import ModelVersion

M = TypeVar("M", bound=BaseModel)


class InvalidSpec(ValueError):
    """The object does not match the API; `field` is the path, e.g. spec.strategy.canary.steps[1].weight."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(_message(field, problem))
        self.field, self.problem = field, problem


def _message(field: str, problem: str) -> str:
    """`field: problem`, where a rule message naming a parent of `field` names `field` itself instead."""
    if problem.startswith(field):
        return problem
    head, sep, rest = problem.partition(":")
    if sep and field.startswith(head):
        return f"{field}:{rest}"
    return f"{field}: {problem}"


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _parse(model: type[M], body: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(dict(body))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _path(tuple(first["loc"]))
        cause = (first.get("ctx") or {}).get("error")
        if isinstance(cause, RuleViolation):
            raise InvalidSpec(f"{field}.{cause.path}" if field else cause.path, cause.message) from exc
        raise InvalidSpec(field, first["msg"].removeprefix("Value error, ")) from exc


def parse_model_version(body: Mapping[str, Any]) -> ModelVersion:
    return _parse(ModelVersion, body)


def parse_model_deployment(body: Mapping[str, Any]) -> ModelDeployment:
    return _parse(ModelDeployment, body)
