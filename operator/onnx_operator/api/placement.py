"""Where serving pods may run: the Kubernetes scheduling fields a ModelDeployment passes to its pods.

The shapes are Kubernetes' own (core/v1 Toleration, Affinity), with the API server's rules on them
checked at admission (CEL) and at parse time, so a bad placement fails on `kubectl apply` and names
the field instead of leaving pods Pending.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from onnx_operator.api.base import ApiModel, Rule

LABEL_KEY = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
             r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
SelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]
# a label value (its size bound also keeps the API server's CEL cost estimate within budget)
LabelValue = Annotated[str, Field(max_length=63)]


def _values_rule(with_numbers: bool) -> tuple[Rule, ...]:
    """In/NotIn need values, Exists/DoesNotExist take none (and Gt/Lt one integer, for nodes)."""
    rules = [
        Rule("!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)",
             "spec.affinity: values must be non-empty when operator is In or NotIn",
             lambda s: "values" if s.operator in ("In", "NotIn") and not s.values else None),
        Rule("!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || size(self.values) == 0",
             "spec.affinity: values must be empty when operator is Exists or DoesNotExist",
             lambda s: "values" if s.operator in ("Exists", "DoesNotExist") and s.values else None),
    ]
    if with_numbers:
        rules.append(Rule(
            "!(self.operator in ['Gt', 'Lt']) || "
            "(has(self.values) && size(self.values) == 1 && self.values[0].matches('^-?[0-9]+$'))",
            "spec.affinity: values must be exactly one integer when operator is Gt or Lt",
            lambda s: "values" if s.operator in ("Gt", "Lt") and not (
                s.values and len(s.values) == 1 and s.values[0].lstrip("-").isdigit()) else None))
    return tuple(rules)


class Toleration(ApiModel):
    rules = (
        Rule("self.operator != 'Exists' || !has(self.value) || self.value == ''",
             "spec.tolerations: value must be empty when operator is Exists",
             lambda s: "value" if s.operator == "Exists" and s.value else None),
        Rule("(has(self.key) && self.key != '') || self.operator == 'Exists'",
             "spec.tolerations: operator must be Exists when key is empty (it tolerates every taint)",
             lambda s: "operator" if not s.key and s.operator != "Exists" else None),
        Rule("!has(self.tolerationSeconds) || self.effect == 'NoExecute'",
             "spec.tolerations: tolerationSeconds is only allowed with effect NoExecute",
             lambda s: "tolerationSeconds" if s.toleration_seconds is not None and s.effect != "NoExecute"
             else None),
    )

    key: str | None = Field(None, max_length=316, pattern=LABEL_KEY,
                            description="Taint key to tolerate; empty with operator Exists tolerates all.")
    operator: Literal["Exists", "Equal"] = Field("Equal", description="Equal (default) or Exists.")
    value: str | None = Field(None, max_length=63, description="Taint value (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to tolerate; empty matches all effects.")
    toleration_seconds: int | None = Field(None, ge=0, le=31536000,
                                           description="With NoExecute: how long the pod stays once tainted.")


class NodeSelectorRequirement(ApiModel):
    rules = _values_rule(with_numbers=True)

    key: str = Field(min_length=1, max_length=316, description="Node label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
    values: list[LabelValue] | None = Field(None, max_length=64)


class NodeSelectorTerm(ApiModel):
    match_expressions: list[NodeSelectorRequirement] | None = Field(None, max_length=32)
    match_fields: list[NodeSelectorRequirement] | None = Field(None, max_length=32)


class NodeSelector(ApiModel):
    node_selector_terms: list[NodeSelectorTerm] = Field(min_length=1, max_length=32,
                                                        description="Terms ORed; a term's expressions ANDed.")


class PreferredSchedulingTerm(ApiModel):
    weight: int = Field(ge=1, le=100)
    preference: NodeSelectorTerm


class NodeAffinity(ApiModel):
    required_during_scheduling_ignored_during_execution: NodeSelector | None = None
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] | None = Field(
        None, max_length=32)


class LabelSelectorRequirement(ApiModel):
    rules = _values_rule(with_numbers=False)

    key: str = Field(min_length=1, max_length=316, pattern=LABEL_KEY)
    operator: SelectorOperator
    values: list[LabelValue] | None = Field(None, max_length=64)


class LabelSelector(ApiModel):
    match_labels: dict[str, str] | None = Field(None, json_schema_extra={"maxProperties": 32})
    match_expressions: list[LabelSelectorRequirement] | None = Field(None, max_length=32)


class PodAffinityTerm(ApiModel):
    label_selector: LabelSelector | None = None
    namespaces: list[str] | None = Field(None, max_length=32)
    namespace_selector: LabelSelector | None = None
    topology_key: str = Field(min_length=1, max_length=316, pattern=LABEL_KEY,
                              description="Node label that defines 'the same place', e.g. kubernetes.io/hostname.")


class WeightedPodAffinityTerm(ApiModel):
    weight: int = Field(ge=1, le=100)
    pod_affinity_term: PodAffinityTerm


class PodAffinity(ApiModel):
    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] | None = Field(
        None, max_length=32)
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] | None = Field(
        None, max_length=32)


class Affinity(ApiModel):
    node_affinity: NodeAffinity | None = None
    pod_affinity: PodAffinity | None = None
    pod_anti_affinity: PodAffinity | None = None
