"""Metric gates: read the canary's and the stable's numbers from Prometheus (the only I/O here)."""

from __future__ import annotations

import logging

import httpx

from onnx_operator.api import ModelDeployment, ModelVersion
from onnx_operator.handlers.context import Context
from onnx_operator.rollout.gates import GateQuery, gate_queries, judge
from onnx_operator.rollout.progressive import GateResult
from onnx_operator.rollout.rolling import Observed

LOG = logging.getLogger(__name__)


def query_prometheus(base_url: str, promql: str, timeout: float = 10) -> float | None:
    """One instant query; None when there is no data yet (no traffic), raises on HTTP errors."""
    resp = httpx.get(f"{base_url.rstrip('/')}/api/v1/query", params={"query": promql}, timeout=timeout)
    resp.raise_for_status()
    data = resp.json()["data"]["result"]
    if not data:
        return None
    value = float(data[0]["value"][1])
    return None if value != value else value  # NaN: no requests in the window


def evaluate_gates(ctx: Context, md: ModelDeployment, mv: ModelVersion,
                   observed: dict[str, Observed]) -> list[GateResult]:
    """Gates apply to a Canary whose current step's pods are ready and that has analysis set."""
    canary = md.spec.strategy.canary
    rollout = md.status.rollout or {}
    if (md.spec.strategy.type != "Canary" or canary is None or canary.analysis is None
            or rollout.get("version") != mv.name or mv.name not in observed or not observed[mv.name].ready):
        return []
    if not ctx.config.prometheus_url:
        LOG.warning("%s/%s has metric gates but the operator has no --prometheus-url", md.namespace, md.name)
        return []
    results = []
    for q in gate_queries(canary.analysis, mv):
        try:
            value = query_prometheus(ctx.config.prometheus_url, q.promql)
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            LOG.warning("Gate %s of %s/%s not evaluated: %s", q.name, md.namespace, md.name, exc)
            continue
        results.append(judge(q, value))
    return results


__all__ = ["GateQuery", "evaluate_gates", "query_prometheus"]
