"""Metric gates: read the canary's and the stable's numbers from Prometheus (the only I/O here)."""

from __future__ import annotations

import logging
from typing import Any

import httpx

from onnx_operator.api import ModelDeployment, ModelVersion
from onnx_operator.api.modeldeployment import Analysis
from onnx_operator.handlers.context import Context
from onnx_operator.rollout.gates import (
    GateQuery,
    GateResult,
    gate_queries,
    inconclusive,
    judge,
    request_count_query,
    too_few_requests,
)
from onnx_operator.rollout.rolling import Observed
from onnx_operator.rollout.share import observed_shares, served_rate_query

LOG = logging.getLogger(__name__)
QUERY_ERRORS = (httpx.HTTPError, KeyError, ValueError, TypeError, IndexError)


def _instant_query(base_url: str, promql: str, timeout: float) -> list[dict[str, Any]]:
    resp = httpx.get(f"{base_url.rstrip('/')}/api/v1/query", params={"query": promql}, timeout=timeout)
    resp.raise_for_status()
    return list(resp.json()["data"]["result"])


def _number(sample: dict[str, Any]) -> float | None:
    value = float(sample["value"][1])
    return None if value != value else value  # NaN: no requests in the window


def query_prometheus(base_url: str, promql: str, timeout: float = 10) -> float | None:
    """One instant query; None when there is no data yet (no traffic), raises on HTTP errors."""
    data = _instant_query(base_url, promql, timeout)
    return _number(data[0]) if data else None


def query_by_label(base_url: str, promql: str, label: str, timeout: float = 10) -> dict[str, float]:
    """One instant query returning a vector: each series' value keyed by its `label`."""
    out = {}
    for sample in _instant_query(base_url, promql, timeout):
        value = _number(sample)
        if value is not None:
            out[str(sample["metric"].get(label, ""))] = value
    return out


def read_shares(url: str | None, md: ModelDeployment, spec_versions: dict[str, str]) -> dict[str, float]:
    """Each served ModelVersion's share of this ModelDeployment's requests in the last minute; empty
    without Prometheus, without traffic, or when Prometheus cannot be read (nothing is claimed)."""
    if not url:
        return {}
    try:
        rates = query_by_label(url, served_rate_query(md.name, md.namespace), "version")
    except QUERY_ERRORS as exc:
        LOG.warning("Observed split of %s/%s not read: %s", md.namespace, md.name, exc)
        return {}
    return observed_shares(rates, spec_versions)


def evaluate_gates(ctx: Context, md: ModelDeployment, mv: ModelVersion,
                   observed: dict[str, Observed]) -> list[GateResult]:
    """Gates apply to a Canary whose current step's pods are ready and that has analysis set.
    Whatever keeps a gate from being judged (no Prometheus, an error, too little traffic) makes it
    inconclusive, so the step holds instead of passing on no evidence."""
    canary = md.spec.strategy.canary
    rollout = md.status.rollout or {}
    if (md.spec.strategy.type != "Canary" or canary is None or canary.analysis is None
            or rollout.get("version") != mv.name or mv.name not in observed or not observed[mv.name].ready):
        return []
    url = ctx.config.prometheus_url
    if not url:
        LOG.warning("%s/%s has metric gates but the operator has no --prometheus-url", md.namespace, md.name)
    return read_gates(url, canary.analysis, mv, md.name)


def read_gates(url: str | None, analysis: Analysis, mv: ModelVersion, md_name: str) -> list[GateResult]:
    """The new version's gates judged from Prometheus at `url`: first its request count in the window
    (fewer than analysis.minRequests and nothing is judged), then one instant query per gate."""
    queries = gate_queries(analysis, mv, md_name)
    if not url:
        return [inconclusive(q, "the operator has no Prometheus URL (--prometheus-url)") for q in queries]
    try:
        why = too_few_requests(query_prometheus(url, request_count_query(mv, md_name)), analysis.min_requests)
    except QUERY_ERRORS as exc:
        LOG.warning("Gates of %s not evaluated: %s", mv.name, exc)
        return [inconclusive(q, _unreadable(url, exc)) for q in queries]
    if why is not None:
        return [inconclusive(q, why) for q in queries]
    return [_judge_live(url, q) for q in queries]

def _unreadable(url: str, exc: Exception) -> str:
    return f"Prometheus at {url} could not be queried: {type(exc).__name__}: {exc}"


def _judge_live(url: str, q: GateQuery) -> GateResult:
    try:
        return judge(q, query_prometheus(url, q.promql))
    except QUERY_ERRORS as exc:
        return inconclusive(q, _unreadable(url, exc))


__all__ = ["GateQuery", "evaluate_gates", "query_by_label", "query_prometheus", "read_gates", "read_shares"]
