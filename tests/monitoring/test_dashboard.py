"""The dashboard: Grafana's dashboard model (the typed models grafana-foundation-sdk generates from Grafana's
published schema) keeps every field we write, the layout and variables hold together, every query is PromQL a
real Prometheus accepts, and the chart ships it in a ConfigMap Grafana's sidecar finds."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from monitoring.dashboard import dashboard, expand, panel_queries
from tests.monitoring.conftest import CHART, render, tool
from tests.prometheus import Prometheus

VARIABLES = {"namespace": ".*", "model": ".*", "version": ".*", "modeldeployment": ".*"}


def encoded(value: Any) -> Any:
    return value.to_json() if hasattr(value, "to_json") else value


def missing(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """Paths of `ours` the typed model lost or changed (an unknown field, a wrong type, a bad value)."""
    theirs = encoded(theirs)
    if isinstance(ours, dict):
        if not isinstance(theirs, dict):
            return [path or "/"]
        return [p for k, v in ours.items() for p in (missing(v, theirs[k], f"{path}/{k}") if k in theirs
                                                      else [f"{path}/{k}"])]
    if isinstance(ours, list):
        if not isinstance(theirs, list) or len(theirs) != len(ours):
            return [path]
        return [p for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) for p in missing(a, b, f"{path}/{i}")]
    return [] if ours == theirs else [f"{path}: {ours!r} != {theirs!r}"]


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def test_grafana_dashboard_model_keeps_every_field() -> None:
    register_default_plugins()
    ours = dashboard()

    theirs = json.loads(json.dumps(Dashboard.from_json(ours).to_json(), default=encoded))

    assert missing(ours, theirs) == []


def test_the_check_catches_a_field_grafana_does_not_know() -> None:
    register_default_plugins()
    ours = dashboard()
    ours["panels"][1]["gridPosition"] = {"x": 0}

    theirs = json.loads(json.dumps(Dashboard.from_json(ours).to_json(), default=encoded))

    assert missing(ours, theirs) == ["/panels/1/gridPosition"]


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    everything = dashboard()["panels"]
    cells: set[tuple[int, int]] = set()
    for p in everything:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
    assert len({p["id"] for p in everything}) == len(everything)


def test_every_query_uses_only_defined_variables_and_the_datasource_variable() -> None:
    board = dashboard()
    defined = {v["name"] for v in board["templating"]["list"]} | {"__rate_interval"}
    for p in panels():
        assert p["description"] and p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            used = set(re.findall(r"\$(\w+)", t["expr"]))
            assert used <= defined, f"{p['title']}: {used - defined}"


def test_dashboard_covers_serving_rollouts_and_the_operator() -> None:
    titles = {p["title"] for p in panels()}

    assert {"Request rate", "Error ratio by code", "Latency p50 / p99", "Batch size", "In-flight requests",
            "Model load time", "Phase", "Canary step", "Intended share per ModelVersion",
            "Observed share per version", "Rollbacks", "Leader", "Reconcile rate", "Reconcile errors"} <= titles
    assert [v["name"] for v in dashboard()["templating"]["list"]] == [
        "datasource", "namespace", "model", "version", "modeldeployment"]


@pytest.fixture(scope="module")
def empty_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    prom = Prometheus(tmp_path_factory.mktemp("prom"), [], binary=tool("prometheus"))
    yield prom
    prom.stop()


@pytest.mark.parametrize(("title", "expr"), panel_queries(), ids=[t for t, _ in panel_queries()])
def test_every_panel_query_is_promql_prometheus_accepts(empty_prometheus: Prometheus, title: str,
                                                       expr: str) -> None:
    resp = httpx.get(f"{empty_prometheus.url}/api/v1/query", params={"query": expand(expr, VARIABLES)}, timeout=10)

    assert resp.status_code == 200 and resp.json()["status"] == "success", resp.text


def test_chart_ships_the_dashboard_in_a_sidecar_configmap(helm: str) -> None:
    [cm] = render(helm, {"dashboards": {"enabled": True, "annotations": {"grafana_folder": "Models"}}},
                  show="templates/dashboard-configmap.yaml")

    assert cm["kind"] == "ConfigMap" and cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Models"}
    assert json.loads(cm["data"]["onnx-operator.json"]) == dashboard()
    assert json.loads((CHART / "files/dashboard.json").read_text()) == dashboard()


def test_dashboard_label_and_namespace_follow_values(helm: str) -> None:
    [cm] = render(helm, {"dashboards": {"enabled": True, "label": "my_dashboards", "labelValue": "yes",
                                        "namespace": "grafana"}}, show="templates/dashboard-configmap.yaml")

    assert cm["metadata"]["labels"]["my_dashboards"] == "yes" and cm["metadata"]["namespace"] == "grafana"


def test_dashboard_file_is_what_the_generator_writes(tmp_path: Path) -> None:
    assert (CHART / "files/dashboard.json").read_text() == json.dumps(dashboard(), indent=2) + "\n"
