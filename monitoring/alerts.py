"""The alert rules the chart ships: one Prometheus rule group, written twice by `python -m monitoring`: as a
plain rules file with the default thresholds (for a Prometheus without prometheus-operator) and as the chart's
PrometheusRule body with each threshold a Helm value (`alerts.*` in values.yaml)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any

import yaml

Obj = dict[str, Any]
GROUP = "onnx-operator"
RUNBOOK = "docs/observability.md#alerts"


@dataclass(frozen=True)
class Thresholds:
    """Each alert's knob, named as its Helm value; the defaults are the chart's `alerts.*` values."""

    errorRatio: str = "0.05"
    latencyP99Seconds: str = "0.5"
    degradedFor: str = "5m"
    notReadyFor: str = "10m"
    gatesInconclusiveSeconds: str = "600"
    noLeaderFor: str = "2m"
    payloadLogDropsFor: str = "10m"
    window: str = "5m"


DEFAULTS = Thresholds()
TOKENS = Thresholds(**{f.name: f"@@{f.name}@@" for f in fields(Thresholds)})
PROMETHEUS_TEMPLATE = re.compile(r"\{\{.*?\}\}")
SERVING_BY = "namespace, modeldeployment, model, version"
MD_BY = "namespace, modeldeployment"


def _alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str) -> Obj:
    rule: Obj = {"alert": name, "expr": expr}
    if for_ != "0m":
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {"summary": summary, "description": description, "runbook_url": RUNBOOK}
    return rule


def rules(t: Thresholds = DEFAULTS) -> Obj:
    """The rule group with thresholds `t` (numbers, or Helm expressions)."""
    requests = f"sum by ({SERVING_BY}) (rate(onnx_server_requests_total[{t.window}]))"
    return {"groups": [{"name": GROUP, "rules": [
        _alert("ModelDeploymentDegraded",
               f"max by ({MD_BY}) (onnx_operator_modeldeployment_degraded) == 1", t.degradedFor, "warning",
               "ModelDeployment {{ $labels.namespace }}/{{ $labels.modeldeployment }} is Degraded",
               "Its Degraded condition has been True for " + t.degradedFor + ": `kubectl model status "
               "{{ $labels.modeldeployment }} -n {{ $labels.namespace }}` says why."),
        _alert("ModelDeploymentRolledBack",
               f"sum by ({MD_BY}) (increase(onnx_operator_modeldeployment_rollbacks_total[{t.window}])) > 0",
               "0m", "warning",
               "ModelDeployment {{ $labels.namespace }}/{{ $labels.modeldeployment }} rolled back",
               "A rollout ended back on the stable version within the last " + t.window + " (a failing "
               "gate, the progress deadline, or an abort); status.failedVersions has the reason."),
        _alert("ModelErrorRatioHigh",
               f'sum by ({SERVING_BY}) (rate(onnx_server_requests_total{{code=~"5.."}}[{t.window}])) / '
               f"{requests} > {t.errorRatio}", t.window, "critical",
               "{{ $labels.model }} {{ $labels.version }} in {{ $labels.namespace }} fails "
               "{{ $value | humanizePercentage }} of its requests",
               "More than " + t.errorRatio + " of the requests answered with a 5xx for " + t.window + "."),
        _alert("ModelLatencyP99High",
               f"histogram_quantile(0.99, sum by (le, {SERVING_BY}) "
               f"(rate(onnx_server_request_duration_seconds_bucket[{t.window}]))) > {t.latencyP99Seconds}",
               t.window, "warning",
               "{{ $labels.model }} {{ $labels.version }} in {{ $labels.namespace }}: p99 latency "
               "{{ $value | humanizeDuration }}",
               "The p99 request time has been above " + t.latencyP99Seconds + " s for " + t.window + "."),
        _alert("ModelServingPodsNotReady",
               f"max by ({MD_BY}) (onnx_operator_modeldeployment_replicas) - "
               f"max by ({MD_BY}) (onnx_operator_modeldeployment_ready_replicas) > 0", t.notReadyFor, "warning",
               "{{ $value }} serving pods of {{ $labels.namespace }}/{{ $labels.modeldeployment }} not Ready",
               "Some serving pods have not been Ready for " + t.notReadyFor + " (a rollout may be stuck; "
               "`kubectl describe pods` shows why)."),
        _alert("OnnxOperatorNoLeader", "(sum(onnx_operator_leader) or vector(0)) < 1", t.noLeaderFor, "critical",
               "No onnx-operator replica is leading",
               "No replica has held the leader Lease for " + t.noLeaderFor + " (or none is scraped): "
               "ModelDeployments and ModelVersions are not reconciled."),
        _alert("ModelDeploymentGatesInconclusive",
               f"time() - max by ({MD_BY}) (onnx_operator_modeldeployment_gates_inconclusive_since_timestamp_seconds)"
               f" > {t.gatesInconclusiveSeconds}", "0m", "warning",
               "Canary of {{ $labels.namespace }}/{{ $labels.modeldeployment }} cannot be judged",
               "Its metric gates have had too little data for more than " + t.gatesInconclusiveSeconds +
               " s (no traffic, too few requests, or Prometheus unreachable); the step holds until the "
               "progress deadline rolls it back."),
        _alert("ModelPayloadLogDropping",
               f"sum by ({SERVING_BY}) (rate(onnx_server_payload_log_dropped_total[{t.window}])) > 0",
               t.payloadLogDropsFor, "info",
               "{{ $labels.model }} {{ $labels.version }} in {{ $labels.namespace }} drops payload-log events",
               "The payload-log sink has been slow or down for " + t.payloadLogDropsFor + "; inference is "
               "unaffected, the sampled payloads are lost."),
    ]}]}


def plain_rules_file() -> str:
    """The rules file with the default thresholds, for `rule_files:` of any Prometheus."""
    return yaml.safe_dump(rules(DEFAULTS), sort_keys=False, width=1000)


def helm_rules_file() -> str:
    """The same group for the chart's PrometheusRule, read through `tpl`: each threshold is its Helm value and
    Prometheus' own {{ $labels... }} templates are escaped from Helm."""
    text = yaml.safe_dump(rules(TOKENS)["groups"], sort_keys=False, width=1000)
    text = PROMETHEUS_TEMPLATE.sub(lambda m: "{{`" + m.group(0) + "`}}", text)
    for name in asdict(TOKENS):
        text = text.replace(f"@@{name}@@", f"{{{{ .Values.alerts.{name} }}}}")
    return text
