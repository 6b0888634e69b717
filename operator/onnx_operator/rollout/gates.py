"""Metric gates without PromQL: the queries built from `analysis`, and how a value is judged.

A gate fails safe: no data, too few requests in its window or an unreachable Prometheus make it
inconclusive, never passed. An inconclusive gate holds the step; one still inconclusive at the
progress deadline rolls the rollout back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from onnx_operator.api import ModelVersion
from onnx_operator.api.modeldeployment import Analysis

WINDOW = "1m"
Verdict = Literal["Passed", "Failed", "Inconclusive"]

# condition reasons
GATES_INCONCLUSIVE = "GatesInconclusive"  # Progressing while a step holds on gates without data
GATES_HAD_NO_DATA = "GatesHadNoData"  # the rollback when they still have none at the progress deadline


@dataclass(frozen=True)
class GateResult:
    """One metric gate's latest evaluation for the canary."""

    name: str
    verdict: Verdict
    value: float | None
    threshold: float
    message: str

    @property
    def passed(self) -> bool:
        return self.verdict == "Passed"

    @property
    def failed(self) -> bool:
        return self.verdict == "Failed"

    @property
    def inconclusive(self) -> bool:
        return self.verdict == "Inconclusive"

    def wire(self) -> dict[str, Any]:
        return {"name": self.name, "verdict": self.verdict, "passed": self.passed, "value": self.value,
                "threshold": self.threshold, "message": self.message}


@dataclass(frozen=True)
class GateQuery:
    name: str
    promql: str
    minimum: float | None = None
    maximum: float | None = None

    @property
    def threshold(self) -> float:
        return self.minimum if self.minimum is not None else (self.maximum or 0.0)


def _selector(mv: ModelVersion, md_name: str, extra: str = "") -> str:
    """The new version's series of this ModelDeployment: its model, version and ModelDeployment (labels
    the runtime server sets), in its namespace. `namespace=~"ns|"` also matches series without a
    namespace label (a static scrape config), while a Kubernetes-discovered or PodMonitor series of
    another namespace is left out, and so are another ModelDeployment's pods serving the same version."""
    return (f'model="{mv.spec.model}",version="{mv.spec.version}",modeldeployment="{md_name}",'
            f'namespace=~"{_namespace(mv)}|"{extra}')


def _namespace(mv: ModelVersion) -> str:
    return str(mv.metadata.get("namespace", ""))


def request_count_query(mv: ModelVersion, md_name: str) -> str:
    """Requests the new version answered in the gates' window (compared with analysis.minRequests)."""
    return f"sum(increase(onnx_server_requests_total{{{_selector(mv, md_name)}}}[{WINDOW}]))"


def gate_queries(analysis: Analysis, mv: ModelVersion, md_name: str) -> list[GateQuery]:
    """The runtime server labels its metrics with model and version, so no relabelling is needed."""
    out = []
    if analysis.success_rate is not None:
        total = f"sum(rate(onnx_server_requests_total{{{_selector(mv, md_name)}}}[{WINDOW}]))"
        not_5xx = _selector(mv, md_name, ',code!~"5.."')
        good = f"sum(rate(onnx_server_requests_total{{{not_5xx}}}[{WINDOW}]))"
        out.append(GateQuery("SuccessRate", f"{good} / {total}", minimum=analysis.success_rate))
    if analysis.latency_p99_ms is not None:
        out.append(GateQuery("LatencyP99Ms", "1000 * histogram_quantile(0.99, sum by (le) (rate("
                             f"onnx_server_request_duration_seconds_bucket{{{_selector(mv, md_name)}}}[{WINDOW}])))",
                             maximum=float(analysis.latency_p99_ms)))
    for q in analysis.queries:
        promql = (q.query.replace("{{version}}", mv.spec.version).replace("{{model}}", mv.spec.model)
                  .replace("{{namespace}}", _namespace(mv)).replace("{{modeldeployment}}", md_name))
        out.append(GateQuery(f"Query:{q.name}", promql, minimum=q.min, maximum=q.max))
    return out


def inconclusive(q: GateQuery, why: str) -> GateResult:
    return GateResult(q.name, "Inconclusive", None, q.threshold, f"{q.name} inconclusive: {why}")


def too_few_requests(count: float | None, min_requests: int) -> str | None:
    """Why the window holds too little traffic to judge, or None when it holds enough."""
    seen = 0 if count is None else round(count)
    if seen >= min_requests:
        return None
    return (f"{seen} requests to the new version in the last {WINDOW}, fewer than "
            f"spec.strategy.canary.analysis.minRequests ({min_requests})")


def judge(q: GateQuery, value: float | None) -> GateResult:
    """No data is inconclusive: a gate passes only on evidence, and fails only on evidence."""
    if value is None:
        return inconclusive(q, f"Prometheus returned no data for {q.name} in the last {WINDOW}")
    if q.minimum is not None and value < q.minimum:
        return GateResult(q.name, "Failed", value, q.minimum,
                          f"{q.name} {value:.4g} is below the minimum {q.minimum:g}")
    if q.maximum is not None and value > q.maximum:
        return GateResult(q.name, "Failed", value, q.maximum,
                          f"{q.name} {value:.4g} is above the maximum {q.maximum:g}")
    return GateResult(q.name, "Passed", value, q.threshold, f"{q.name} {value:.4g} within {q.threshold:g}")


def hold_on_gates(state: dict[str, Any], gates: list[GateResult], now: str) -> str | None:
    """Records the latest gates in the rollout state; returns since when they have been inconclusive
    (kept across reconciles, cleared once every gate is conclusive), or None when nothing holds."""
    if gates:
        state["gates"] = [g.wire() for g in gates]
        if any(g.inconclusive for g in gates):
            state.setdefault("gatesInconclusiveSince", now)
        else:
            state.pop("gatesInconclusiveSince", None)
    since = state.get("gatesInconclusiveSince")
    return str(since) if since else None


def inconclusive_message(state: dict[str, Any]) -> str:
    """The inconclusive gates of the last evaluation, each naming why (for conditions and rollbacks)."""
    return "; ".join(str(g.get("message", g.get("name"))) for g in state.get("gates") or []
                     if g.get("verdict") == "Inconclusive") or "no gate has been evaluated yet"
