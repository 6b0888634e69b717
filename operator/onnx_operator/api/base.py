"""Shared pieces of the API models: camelCase JSON, int-or-string, rules checked on one object."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, JsonValue, model_validator
from pydantic.alias_generators import to_camel

GROUP = "serving.onnx-operator.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


class RuleViolation(ValueError):
    """A `Rule` failed; `path` is the offending field relative to the object the rule is on."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


@dataclass(frozen=True)
class Rule:
    """A rule checkable on one object: `cel` for the API server (x-kubernetes-validations) and
    `violation`, its Python twin for the parse boundary, returning the failing relative path or None.
    `violation` is None only for transition rules (oldSelf), which one object cannot check."""

    cel: str
    message: str
    violation: Callable[[Any], str | None] | None
    field_path: str | None = None

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


def _add_rules(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    rules: tuple[Rule, ...] = getattr(cls, "rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [r.schema() for r in rules]


class ApiModel(BaseModel):
    """camelCase on the wire; unknown fields ignored (the API server prunes them anyway).
    A model's `rules` become its CEL validations and are checked the same way when parsing."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore",
                              json_schema_extra=_add_rules)
    rules: ClassVar[tuple[Rule, ...]] = ()

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    @model_validator(mode="after")
    def _check_rules(self) -> ApiModel:
        for rule in self.rules:
            path = rule.violation(self) if rule.violation else None
            if path is not None:
                raise RuleViolation(path, rule.message)
        return self


class Resource(ApiModel):
    """A parsed custom resource: metadata kept as received, with the names handlers need."""

    metadata: dict[str, object] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def namespace(self) -> str:
        return str(self.metadata["namespace"])

    @property
    def generation(self) -> int:
        return int(str(self.metadata.get("generation", 0)))


def _int_or_string(pattern: str, minimum: int | None, expected: str) -> BeforeValidator:
    """Accepts an int (>= minimum) or a string matching `pattern`; else names what is allowed."""
    matcher = re.compile(pattern)

    def check(value: object) -> object:
        ok_int = isinstance(value, int) and not isinstance(value, bool) and (minimum is None or value >= minimum)
        if not (ok_int or (isinstance(value, str) and matcher.match(value))):
            raise ValueError(f"{value!r} is not allowed: use {expected}")
        return value

    return BeforeValidator(check)


_PERCENT = r"^[0-9]+%$"
# maxSurge / maxUnavailable, as a Deployment takes them
IntOrPercent = Annotated[
    int | str, _int_or_string(_PERCENT, 0, "a whole number >= 0 or a percentage such as '25%'"),
    Field(json_schema_extra={"x-kubernetes-int-or-string": True, "pattern": _PERCENT, "minimum": 0})]
# the resource.Quantity grammar, as Kubernetes validates it
_QUANTITY = (r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
             r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
Quantity = Annotated[int | str, _int_or_string(_QUANTITY, None, "a quantity such as 500m, 2 or 1Gi"),
                     Field(json_schema_extra={"x-kubernetes-int-or-string": True, "pattern": _QUANTITY})]


def keyed_by(key: str) -> dict[str, JsonValue]:
    """Schema of a list whose items are unique by `key` (as condition lists are by type)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]}


DNSName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
