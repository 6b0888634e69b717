"""The Grafana dashboard the chart ships: serving (per model and version), rollouts (per ModelDeployment) and
the operator itself. Plain dicts in Grafana's dashboard JSON model (schemaVersion 39); `python -m monitoring`
writes it, and the tests check it against the typed models of grafana-foundation-sdk and run every query
against a real Prometheus.

Queries use the dashboard's variables: $namespace, $modeldeployment, $model, $version (multi-value regexes),
$datasource, and Grafana's $__rate_interval."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
DS: Obj = {"type": "prometheus", "uid": "${datasource}"}
UID = "onnx-operator"
SERVING = 'namespace=~"$namespace", modeldeployment=~"$modeldeployment", model=~"$model", version=~"$version"'
MD = 'namespace=~"$namespace", modeldeployment=~"$modeldeployment"'
RATE = "[$__rate_interval]"
NOT_2XX = ', code!~"2.."'
WIDTH = 24


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # timeseries, stat, state-timeline
    unit: str
    queries: tuple[Query, ...]
    description: str
    width: int = 8


def requests(selector: str = SERVING, extra: str = "") -> str:
    return f"rate(onnx_server_requests_total{{{selector}{extra}}}{RATE})"


def quantile(q: float, metric: str) -> str:
    return (f"histogram_quantile({q}, sum by (le, namespace, model, version) "
            f"(rate({metric}_bucket{{{SERVING}}}{RATE})))")


SERVING_PANELS = (
    Panel("Request rate", "timeseries", "reqps", (Query(
        f"sum by (namespace, model, version) ({requests()})", "{{model}} {{version}}"),),
        "Inference requests per second (REST and gRPC), per model and version."),
    Panel("Error ratio by code", "timeseries", "percentunit", (Query(
        f"sum by (namespace, model, version, code) ({requests(extra=NOT_2XX)}) / ignoring (code) "
        f"group_left sum by (namespace, model, version) ({requests()})", "{{model}} {{version}} {{code}}"),),
        "Share of requests answered with each non-2xx code (4xx: the request or the model refused it; "
        "5xx: the server failed; 499: the client went away)."),
    Panel("Latency p50 / p99", "timeseries", "s", (
        Query(quantile(0.5, "onnx_server_request_duration_seconds"), "p50 {{model}} {{version}}"),
        Query(quantile(0.99, "onnx_server_request_duration_seconds"), "p99 {{model}} {{version}}")),
        "End-to-end request time at the server, from the request duration histogram."),
    Panel("Batch size", "timeseries", "none", (Query(
        f"sum by (namespace, model, version) (rate(onnx_server_batch_size_sum{{{SERVING}}}{RATE})) / "
        f"sum by (namespace, model, version) (rate(onnx_server_batch_size_count{{{SERVING}}}{RATE}))",
        "mean rows {{model}} {{version}}"),),
        "Mean rows per onnxruntime run (1 without dynamic batching)."),
    Panel("In-flight requests", "timeseries", "none", (Query(
        f"sum by (namespace, model, version) (onnx_server_in_flight_requests{{{SERVING}}})",
        "{{model}} {{version}}"),),
        "Requests being served right now, summed over pods."),
    Panel("Model load time", "timeseries", "s", (Query(
        f"max by (namespace, model, version, pod) (onnx_server_model_load_seconds{{{SERVING}}})",
        "{{version}} {{pod}}"),),
        "Seconds each serving pod took to load and warm up its model."),
    Panel("Payload logging", "timeseries", "eps", (
        Query(f"sum by (namespace, model, version) (rate(onnx_server_payload_log_events_total{{{SERVING}}}{RATE}))",
              "sent {{model}} {{version}}"),
        Query(f"sum by (namespace, model, version, reason) "
              f"(rate(onnx_server_payload_log_dropped_total{{{SERVING}}}{RATE}))",
              "dropped {{reason}} {{model}} {{version}}")),
        "Payload-log events delivered to the sink and dropped (full queue, failing sink), per second.", 24),
)

ROLLOUT_PANELS = (
    Panel("Phase", "state-timeline", "none", (Query(
        f"max by (namespace, modeldeployment, phase) (onnx_operator_modeldeployment_phase{{{MD}}}) == 1",
        "{{modeldeployment}} {{phase}}"),),
        "The ModelDeployment's phase (Progressing, Paused, Ready, Degraded)."),
    Panel("Canary step", "timeseries", "none", (
        Query(f"max by (namespace, modeldeployment) (onnx_operator_modeldeployment_rollout_step{{{MD}}})",
              "step {{modeldeployment}}"),
        Query(f"max by (namespace, modeldeployment) (onnx_operator_modeldeployment_rollout_steps{{{MD}}})",
              "of {{modeldeployment}}")),
        "1-based step of the running canary and its number of steps (0: no canary running)."),
    Panel("Degraded", "timeseries", "none", (Query(
        f"max by (namespace, modeldeployment) (onnx_operator_modeldeployment_degraded{{{MD}}})",
        "{{modeldeployment}}"),),
        "1 while the Degraded condition is True (a rollback, a failed verification, a missing version)."),
    Panel("Intended share per ModelVersion", "timeseries", "percentunit", (Query(
        f"max by (namespace, modeldeployment, modelversion) "
        f"(onnx_operator_modeldeployment_weight_percent{{{MD}}}) / 100", "{{modeldeployment}} {{modelversion}}"),),
        "The traffic share the operator intends for each served ModelVersion (status.versions[].weight)."),
    Panel("Observed share per version", "timeseries", "percentunit", (Query(
        f"sum by (namespace, modeldeployment, version) ({requests(MD)}) / ignoring (version) group_left "
        f"sum by (namespace, modeldeployment) ({requests(MD)})", "{{modeldeployment}} {{version}}"),),
        "Each version's request rate over the sum over versions: the split the serving pods really saw."),
    Panel("Rollbacks", "timeseries", "none", (Query(
        f"sum by (namespace, modeldeployment) (increase(onnx_operator_modeldeployment_rollbacks_total{{{MD}}}"
        f"{RATE}))", "{{modeldeployment}}"),),
        "Rollouts that ended back on the stable version (rolled back by a gate or deadline, or aborted)."),
    Panel("Gates inconclusive for", "timeseries", "s", (Query(
        f"time() - max by (namespace, modeldeployment) "
        f"(onnx_operator_modeldeployment_gates_inconclusive_since_timestamp_seconds{{{MD}}})",
        "{{modeldeployment}}"),),
        "How long a running canary's metric gates have had too little data to judge (the step holds)."),
    Panel("Ready replicas", "timeseries", "none", (
        Query(f"max by (namespace, modeldeployment) (onnx_operator_modeldeployment_replicas{{{MD}}})",
              "desired {{modeldeployment}}"),
        Query(f"max by (namespace, modeldeployment) (onnx_operator_modeldeployment_ready_replicas{{{MD}}})",
              "ready {{modeldeployment}}")),
        "Serving pods of all versions and how many of them are Ready.", 16),
)

OPERATOR_PANELS = (
    Panel("Leader", "timeseries", "none", (
        Query("sum(onnx_operator_leader)", "acting leaders"),
        Query("max by (instance) (onnx_operator_leader)", "{{instance}}")),
        "Replicas holding the leader Lease and acting: exactly 1 is healthy."),
    Panel("Reconcile rate", "timeseries", "ops", (Query(
        f"sum by (kind, result) (rate(onnx_operator_reconciles_total{RATE}))", "{{kind}} {{result}}"),),
        "Reconciles per second by kind (md: ModelDeployment, mv: ModelVersion) and result."),
    Panel("Reconcile errors", "timeseries", "ops", (Query(
        f'sum by (kind) (rate(onnx_operator_reconciles_total{{result="error"}}{RATE}))', "{{kind}}"),),
        "Reconciles that raised (retried after a back-off); the operator log says why."),
)

ROWS = (("Serving: $model $version", SERVING_PANELS), ("Rollouts: $modeldeployment", ROLLOUT_PANELS),
        ("Operator", OPERATOR_PANELS))


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> Obj:
    targets = [{"refId": chr(ord("A") + i), "expr": q.expr, "legendFormat": q.legend, "datasource": DS}
               for i, q in enumerate(panel.queries)]
    out: Obj = {"type": panel.kind, "id": panel_id, "title": panel.title, "description": panel.description,
                "datasource": DS, "gridPos": {"x": x, "y": y, "w": panel.width, "h": 8}, "targets": targets,
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []}}
    if panel.kind == "timeseries":
        out["options"] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                          "tooltip": {"mode": "multi", "sort": "none"}}
    return out


def _variable(name: str, label: str, query: str) -> Obj:
    return {"type": "query", "name": name, "label": label, "datasource": DS, "refresh": 2, "sort": 1,
            "includeAll": True, "multi": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"},
            "query": {"query": query, "refId": f"{name}-values"}}


def dashboard() -> Obj:
    panels: list[Obj] = []
    y = 0
    for title, row in ROWS:
        panels.append({"type": "row", "id": len(panels) + 1, "title": title, "collapsed": False,
                       "gridPos": {"x": 0, "y": y, "w": WIDTH, "h": 1}, "panels": []})
        y, x = y + 1, 0
        for panel in row:
            if x + panel.width > WIDTH:
                y, x = y + 8, 0
            panels.append(_panel(panel, len(panels) + 1, x, y))
            x += panel.width
        y += 8
    variables = [
        {"type": "datasource", "name": "datasource", "label": "Prometheus", "query": "prometheus",
         "current": {"text": "default", "value": "default"}},
        _variable("namespace", "Namespace", "label_values(onnx_server_requests_total, namespace)"),
        _variable("model", "Model", 'label_values(onnx_server_requests_total{namespace=~"$namespace"}, model)'),
        _variable("version", "Version", 'label_values(onnx_server_requests_total{namespace=~"$namespace", '
                  'model=~"$model"}, version)'),
        _variable("modeldeployment", "ModelDeployment", 'label_values(onnx_operator_modeldeployment_phase'
                  '{namespace=~"$namespace"}, modeldeployment)'),
    ]
    return {"uid": UID, "title": "ONNX models", "tags": ["onnx-operator"], "editable": True, "schemaVersion": 39,
            "graphTooltip": 1, "refresh": "30s", "time": {"from": "now-1h", "to": "now"},
            "templating": {"list": variables}, "panels": panels}


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel, in dashboard order."""
    return [(p.title, q.expr) for _, row in ROWS for p in row for q in p.queries]


def expand(expr: str, variables: dict[str, str], rate_interval: str = "1m") -> str:
    """The query Grafana would send: $__rate_interval and the dashboard's variables (regexes) filled in."""
    out = expr.replace("$__rate_interval", rate_interval)
    for name in sorted(variables, key=len, reverse=True):  # $modeldeployment before $model
        out = out.replace(f"${name}", variables[name])
    return out
