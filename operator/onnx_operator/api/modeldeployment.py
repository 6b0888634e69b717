"""ModelDeployment: which ModelVersion serves, at what scale, and how a new one rolls out."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field

from onnx_operator.api.base import ApiModel, DNSName, IntOrPercent, Quantity, Resource, Rule, keyed_by
from onnx_operator.api.conditions import Condition
from onnx_operator.api.modelversion import RuntimeSettings
from onnx_operator.api.placement import Affinity, Toleration

StrategyType = Literal["RollingUpdate", "Canary", "BlueGreen"]
DURATION = r"^([0-9]+(ms|s|m|h))+$"


class Autoscaling(ApiModel):
    rules = (Rule(
        "self.minReplicas <= self.maxReplicas",
        "spec.autoscaling.minReplicas must be less than or equal to spec.autoscaling.maxReplicas",
        lambda s: "minReplicas" if s.min_replicas > s.max_replicas else None,
    ),)

    min_replicas: int = Field(1, ge=1, le=1000, description="Fewest replicas the HPA keeps.")
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas the HPA may create.")
    target_cpu_utilization_percentage: int = Field(80, ge=1, le=100, alias="targetCPUUtilizationPercentage",
                                                   description="HPA CPU target.")


class Resources(ApiModel):
    requests: dict[str, Quantity] | None = Field(None, description="e.g. {cpu: 500m, memory: 512Mi}")
    limits: dict[str, Quantity] | None = Field(None, description="e.g. {memory: 1Gi}")


def _is_zero(value: int | str) -> bool:
    return value in (0, "0%")


class RollingUpdate(ApiModel):
    rules = (Rule(
        # int-or-string fields are dyn in CEL: compare each type on its own
        "!((type(self.maxSurge) == int ? self.maxSurge == 0 : self.maxSurge == '0%') && "
        "(type(self.maxUnavailable) == int ? self.maxUnavailable == 0 : self.maxUnavailable == '0%'))",
        "spec.strategy.rollingUpdate: maxSurge and maxUnavailable must not both be 0 "
        "(the handover could never start)",
        lambda s: "maxSurge" if _is_zero(s.max_surge) and _is_zero(s.max_unavailable) else None,
    ),)

    max_surge: IntOrPercent = Field("100%", description="Extra pods of the new version during handover.")
    max_unavailable: IntOrPercent = Field(0, description="Ready pods the handover may give up (int or %).")


class CanaryStep(ApiModel):
    weight: int = Field(ge=1, le=100, description="Percent of traffic (replicas) on the new version.")
    pause: str | None = Field(None, pattern=DURATION, description="How long to hold this step once its "
                              "pods are Ready (e.g. 2m); absent: hold until promoted.")


class MetricQuery(ApiModel):
    rules = (Rule(
        "has(self.max) || has(self.min)",
        "spec.strategy.canary.analysis.queries: each query needs max, min or both (the gate's bounds)",
        lambda s: "max" if s.max is None and s.min is None else None,
    ),)

    name: str = Field(min_length=1, max_length=63)
    query: str = Field(min_length=1, max_length=4096,
                       description="PromQL; {{model}}, {{version}}, {{namespace}} and {{modeldeployment}} (the "
                       "ModelDeployment's name, a label of every runtime series) are substituted.")
    max: float | None = Field(None, description="Fail the gate when the result is above this.")
    min: float | None = Field(None, description="Fail the gate when the result is below this.")


def _no_gate(a: Analysis) -> str | None:
    return "successRate" if a.success_rate is None and a.latency_p99_ms is None and not a.queries else None


class Analysis(ApiModel):
    rules = (Rule(
        "has(self.successRate) || has(self.latencyP99Ms) || (has(self.queries) && size(self.queries) > 0)",
        "spec.strategy.canary.analysis: set successRate, latencyP99Ms or queries (an analysis without a "
        "gate judges nothing; minRequests applies to the gates)",
        _no_gate,
    ),)

    success_rate: float | None = Field(None, ge=0, le=1, description="Minimum fraction of non-5xx responses.")
    latency_p99_ms: int | None = Field(None, ge=1, description="Maximum p99 latency in ms.")
    interval_seconds: int = Field(30, ge=5, le=3600, description="How often gates are evaluated.")
    queries: list[MetricQuery] = Field(default_factory=list, max_length=10, description="Raw PromQL gates.")
    min_requests: int = Field(20, ge=1, le=1_000_000, description="Fewest requests to the new version in a "
                              "gate's 1m window for it to be judged; with fewer (or no data, or Prometheus "
                              "unreachable) the gate is inconclusive and the step holds.")


def _first_not_increasing(steps: list[CanaryStep]) -> str | None:
    bad = [i for i in range(1, len(steps)) if steps[i].weight <= steps[i - 1].weight]
    return f"steps[{bad[0]}].weight" if bad else None


class Canary(ApiModel):
    rules = (
        Rule("self.steps.all(a, self.steps.exists_one(b, b.weight == a.weight)) && "
             "self.steps.map(s, s.weight).isSorted()",
             "spec.strategy.canary.steps: weights must be strictly increasing",
             lambda s: _first_not_increasing(s.steps), ".steps"),
        Rule("self.steps[size(self.steps) - 1].weight == 100",
             "spec.strategy.canary.steps: the last step must have weight 100",
             lambda s: f"steps[{len(s.steps) - 1}].weight" if s.steps[-1].weight != 100 else None, ".steps"),
    )

    steps: list[CanaryStep] = Field(min_length=1, max_length=20, description="Traffic steps, ending at 100.")
    analysis: Analysis | None = Field(None, description="Metric gates; a failing gate rolls back, "
                                     "one without data holds the step until the progress deadline.")


class BlueGreen(ApiModel):
    scale_down_delay_seconds: int = Field(30, ge=0, le=86400, description="How long the old version stays warm.")
    auto_promote: bool = Field(False, description="Switch traffic as soon as the preview is Ready.")


class Strategy(ApiModel):
    rules = (
        Rule("!has(self.canary) || self.type == 'Canary'",
             "spec.strategy.canary is only allowed when spec.strategy.type is Canary",
             lambda s: "canary" if s.canary is not None and s.type != "Canary" else None),
        Rule("self.type != 'Canary' || has(self.canary)",
             "spec.strategy.canary (with steps) is required when spec.strategy.type is Canary",
             lambda s: "canary" if s.type == "Canary" and s.canary is None else None),
        Rule("!has(self.blueGreen) || self.type == 'BlueGreen'",
             "spec.strategy.blueGreen is only allowed when spec.strategy.type is BlueGreen",
             lambda s: "blueGreen" if s.blue_green is not None and s.type != "BlueGreen" else None),
        Rule("!has(self.rollingUpdate) || self.type == 'RollingUpdate'",
             "spec.strategy.rollingUpdate is only allowed when spec.strategy.type is RollingUpdate",
             lambda s: "rollingUpdate" if s.rolling_update is not None and s.type != "RollingUpdate" else None),
    )

    type: StrategyType = Field("RollingUpdate", description="RollingUpdate (default), Canary or BlueGreen.")
    rolling_update: RollingUpdate | None = None
    canary: Canary | None = None
    blue_green: BlueGreen | None = None


class HTTPRouteRef(ApiModel):
    name: DNSName = Field(description="Gateway API HTTPRoute in the same namespace.")


class Traffic(ApiModel):
    http_route: HTTPRouteRef | None = Field(None, description="Exact canary weights through this HTTPRoute.")


class ModelDeploymentSpec(ApiModel):
    model_version: str = Field(min_length=1, max_length=63,
                               pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                               description="Name of the ModelVersion (same namespace) to serve.")
    replicas: int = Field(1, ge=0, le=1000, description="Serving pods (ignored while autoscaling is set).")
    autoscaling: Autoscaling | None = Field(None, description="One HPA per served version.")
    resources: Resources | None = Field(None, description="Requests/limits of the serving container.")
    runtime: RuntimeSettings | None = Field(None, description="Overrides the ModelVersion's runtime defaults.")
    strategy: Strategy = Field(default_factory=Strategy, description="How a new version rolls out.",
                               json_schema_extra={"default": {"type": "RollingUpdate"}})
    progress_deadline_seconds: int = Field(600, ge=10, le=86400,
                                           description="Roll back when the new version is not Ready by then.")
    traffic: Traffic | None = None
    pod_annotations: dict[str, str] | None = Field(None, description="Extra annotations on serving pods.",
                                                   json_schema_extra={"maxProperties": 32})
    node_selector: dict[str, str] | None = Field(None, description="Node labels serving pods must match.",
                                                 json_schema_extra={"maxProperties": 32})
    tolerations: list[Toleration] | None = Field(None, max_length=32, description="Taints serving pods tolerate.")
    affinity: Affinity | None = Field(None, description="Node and pod (anti-)affinity of serving pods.")


class VersionStatus(ApiModel):
    name: str
    replicas: int = 0
    ready_replicas: int = 0
    weight: int = Field(0, description="Intended percent of traffic: all on the active version (blue/green), "
                        "else the version's share of Ready pods.")
    observed_share: float | None = Field(None, ge=0, le=1, description="During a rollout, the fraction of this "
                                         "ModelDeployment's requests this version answered in the last minute, "
                                         "read from Prometheus (absent without one).")
    stuck_reason: str | None = Field(None, description="Why pods of this version are not becoming Ready: "
                                     "ModelFetchFailed, ImagePullBackOff, OOMKilled, CrashLoopBackOff, "
                                     "Unschedulable or CreateContainerError.")
    stuck_pods: int | None = Field(None, description="How many of its pods are stuck for stuckReason.")
    last_error: str | None = Field(None, description="The latest error of stuckReason (for a failed model "
                                   "fetch: the URL and the error).")


class ModelDeploymentStatus(ApiModel):
    phase: str | None = Field(None, description="Pending, Progressing, Ready, Degraded.")
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=keyed_by("type"))
    observed_generation: int | None = None
    desired_version: str | None = None
    serving_version: str | None = None
    versions: list[VersionStatus] = Field(default_factory=list, json_schema_extra=keyed_by("name"))
    replicas: int | None = None
    ready_replicas: int | None = None
    ready_text: str | None = Field(None, description="ready/desired, for kubectl get.")
    selector: str | None = Field(None, description="Label selector of serving pods (scale subresource).")
    url: str | None = None
    rollout: dict[str, Any] | None = Field(None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    history: list[dict[str, Any]] = Field(default_factory=list, json_schema_extra={
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}})
    failed_versions: list[dict[str, Any]] = Field(default_factory=list, json_schema_extra={
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}})


_DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


def _bad_service_name(metadata: dict[str, object]) -> str | None:
    name = str(metadata.get("name", "x"))
    return None if len(name) <= 63 and re.match(_DNS_LABEL, name) else "metadata.name"


class ModelDeployment(Resource):
    rules = (Rule(
        f"size(self.metadata.name) <= 63 && self.metadata.name.matches('{_DNS_LABEL}')",
        "metadata.name must be a DNS-1035 label (at most 63 lowercase letters, digits and '-', starting "
        "with a letter): it names the ModelDeployment's Service",
        lambda s: _bad_service_name(s.metadata),
    ),)

    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus = Field(default_factory=ModelDeploymentStatus)
