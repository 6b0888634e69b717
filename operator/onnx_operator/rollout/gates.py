"""Metric gates without PromQL: the queries built from `analysis`, and how a value is judged."""

from __future__ import annotations

from dataclasses import dataclass

from onnx_operator.api import ModelVersion
from onnx_operator.api.modeldeployment import Analysis
from onnx_operator.rollout.progressive import GateResult

WINDOW = "1m"


@dataclass(frozen=True)
class GateQuery:
    name: str
    promql: str
    minimum: float | None = None
    maximum: float | None = None


def _selector(mv: ModelVersion, extra: str = "") -> str:
    return f'model="{mv.spec.model}",version="{mv.spec.version}"{extra}'


def gate_queries(analysis: Analysis, mv: ModelVersion) -> list[GateQuery]:
    """The runtime server labels its metrics with model and version, so no relabelling is needed."""
    out = []
    if analysis.success_rate is not None:
        total = f"sum(rate(onnx_server_requests_total{{{_selector(mv)}}}[{WINDOW}]))"
        not_5xx = _selector(mv, ',code!~"5.."')
        good = f"sum(rate(onnx_server_requests_total{{{not_5xx}}}[{WINDOW}]))"
        out.append(GateQuery("SuccessRate", f"{good} / {total}", minimum=analysis.success_rate))
    if analysis.latency_p99_ms is not None:
        out.append(GateQuery("LatencyP99Ms", "1000 * histogram_quantile(0.99, sum by (le) (rate("
                             f"onnx_server_request_duration_seconds_bucket{{{_selector(mv)}}}[{WINDOW}])))",
                             maximum=float(analysis.latency_p99_ms)))
    for q in analysis.queries:
        promql = q.query.replace("{{version}}", mv.spec.version).replace("{{model}}", mv.spec.model)
        out.append(GateQuery(f"Query:{q.name}", promql, minimum=q.min, maximum=q.max))
    return out


def judge(q: GateQuery, value: float | None) -> GateResult:
    """No data (no traffic yet) passes: a gate fails only on evidence."""
    threshold = q.minimum if q.minimum is not None else (q.maximum or 0.0)
    if value is None:
        return GateResult(q.name, True, None, threshold, f"{q.name}: no data yet")
    if q.minimum is not None and value < q.minimum:
        return GateResult(q.name, False, value, q.minimum, f"{q.name} {value:.4g} is below the minimum {q.minimum:g}")
    if q.maximum is not None and value > q.maximum:
        return GateResult(q.name, False, value, q.maximum, f"{q.name} {value:.4g} is above the maximum {q.maximum:g}")
    return GateResult(q.name, True, value, threshold, f"{q.name} {value:.4g} within {threshold:g}")
