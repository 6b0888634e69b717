"""The split pods really served: intended weights, observed shares, and the under-served canary."""

from __future__ import annotations

from typing import Any

from onnx_operator.api import parse_model_deployment
from onnx_operator.cli.render import render_status
from onnx_operator.desired.traffic import TrafficSplit, intended_weights, traffic_split
from onnx_operator.rollout.progressive import Decision
from onnx_operator.rollout.rolling import Observed
from onnx_operator.rollout.share import UNDER_SERVED, observed_shares, served_rate_query, track_share
from onnx_operator.rollout.status import compute_status

READY = "2026-01-01T00:00:00Z"
AGE = 30.0
INTERVAL = 30.0


def at(seconds: int) -> str:
    return f"2026-01-01T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}Z"


def md(strategy: dict[str, Any] | None = None, traffic: dict[str, Any] | None = None,
       status: dict[str, Any] | None = None) -> Any:
    steps = [{"weight": 50}, {"weight": 100}]
    spec: dict[str, Any] = {"modelVersion": "v2", "replicas": 4,
                            "strategy": strategy or {"type": "Canary", "canary": {"steps": steps}}}
    if traffic:
        spec["traffic"] = traffic
    return parse_model_deployment({"metadata": {"name": "web", "namespace": "ns", "uid": "u", "generation": 1},
                                   "spec": spec, "status": status or {}})


CANARY = {"version": "v2", "from": "v1", "strategy": "Canary", "stepIndex": 0, "stepCount": 2, "weight": 50}


def test_the_rate_query_reads_only_this_model_deployments_series_in_its_namespace() -> None:
    q = served_rate_query("web", "prod")
    assert q == ('sum by (version) (rate(onnx_server_requests_total{modeldeployment="web",'
                 'namespace=~"prod|"}[1m]))')


def test_observed_shares_are_keyed_by_model_version_from_the_runtime_version_label() -> None:
    shares = observed_shares({"1.0.0": 30.0, "2.0.0": 10.0, "9.9.9": 100.0}, {"v1": "1.0.0", "v2": "2.0.0"})
    assert shares == {"v1": 0.75, "v2": 0.25}


def test_no_traffic_or_indistinguishable_versions_claim_nothing() -> None:
    assert observed_shares({}, {"v1": "1.0.0", "v2": "2.0.0"}) == {}
    assert observed_shares({"1.0.0": 5.0}, {"v1": "1.0.0", "v1b": "1.0.0"}) == {}


def test_a_low_share_is_not_judged_before_the_pods_were_ready_for_two_ages_and_a_window() -> None:
    state: dict[str, Any] = {}
    settled = int(2 * AGE + 60)
    assert track_share(state, "v2", 0.5, {"v2": 0.0}, READY, AGE, INTERVAL, at(settled - 1)) is None
    assert "shareLowSince" not in state
    assert track_share(state, "v2", 0.5, {"v2": 0.0}, READY, AGE, INTERVAL, at(settled)) is None
    assert state["shareLowSince"] == at(settled)


def test_a_share_below_half_for_three_intervals_is_said_with_the_figures() -> None:
    state: dict[str, Any] = {}
    start = int(2 * AGE + 60)
    for t in (start, start + 30, start + 60):
        assert track_share(state, "v2", 0.5, {"v2": 0.1, "v1": 0.9}, READY, AGE, INTERVAL, at(t)) is None
    why = track_share(state, "v2", 0.5, {"v2": 0.1, "v1": 0.9}, READY, AGE, INTERVAL, at(start + 90))
    assert why is not None and why.startswith(f"v2 answered 10% of requests since {at(start)}")
    assert "less than half of its intended 50%" in why and "spec.traffic.httpRoute" in why


def test_recovering_share_clears_the_clock() -> None:
    state: dict[str, Any] = {"shareLowSince": at(100)}
    assert track_share(state, "v2", 0.5, {"v2": 0.3}, READY, AGE, INTERVAL, at(1000)) is None
    assert "shareLowSince" not in state


def test_without_connection_age_the_hint_names_the_setting() -> None:
    state: dict[str, Any] = {"shareLowSince": at(60)}
    why = track_share(state, "v2", 0.5, {"v2": 0.0}, READY, 0, INTERVAL, at(600))
    assert why is not None and "spec.runtime.maxConnectionAgeSeconds" in why


def test_without_observations_nothing_is_claimed() -> None:
    state: dict[str, Any] = {"shareLowSince": at(60)}
    assert track_share(state, "v2", 0.5, {}, READY, AGE, INTERVAL, at(600)) is None
    assert "shareLowSince" not in state


def test_the_split_names_stable_canary_and_weight_per_strategy() -> None:
    assert traffic_split(md(), {**CANARY, "weight": 25}, "v1", {}) == TrafficSplit("v1", "v2", 25)
    blue_green = md({"type": "BlueGreen"})
    assert traffic_split(blue_green, {"version": "v2", "from": "v1"}, "v1", {}).canary_weight == 0
    assert traffic_split(blue_green, {"version": "v2", "from": "v1", "switchedAt": READY}, "v2", {}).canary_weight \
        == 100
    assert traffic_split(md({"type": "RollingUpdate"}), {"version": "v2", "from": "v1"}, "v1",
                         {"v1": 3, "v2": 1}).canary_weight == 25
    assert traffic_split(md(), None, "v1", {"v1": 4}) == TrafficSplit("v1", "v1", 0)


def test_intended_weights_follow_ready_pods_the_active_version_or_the_route() -> None:
    ready = {"v1": 2, "v2": 2}
    assert intended_weights(md(), ["v1", "v2"], ready, None, CANARY, "v1") == {"v1": 50, "v2": 50}
    assert intended_weights(md(), ["v1", "v2"], {"v1": 3, "v2": 1}, None, CANARY, "v1") == {"v1": 75, "v2": 25}
    assert intended_weights(md(), ["v1", "v2"], ready, "v1", CANARY, "v1") == {"v1": 100, "v2": 0}
    routed = md(traffic={"httpRoute": {"name": "r"}})
    assert intended_weights(routed, ["v1", "v2"], {"v1": 3, "v2": 1}, None, {**CANARY, "weight": 10}, "v1") \
        == {"v1": 90, "v2": 10}


def rollout_decision(rollout: dict[str, Any]) -> Decision:
    return Decision(replicas={"v1": 2, "v2": 2}, active=None, serving="v1", rollout=rollout)


def test_status_reports_observed_share_next_to_the_weight_and_in_the_message() -> None:
    status = compute_status(md(), [Observed("v1", 2, 2), Observed("v2", 2, 2)], 4, None,
                            rollout_decision(dict(CANARY)), "sel", "url", READY,
                            weights={"v1": 50, "v2": 50}, shares={"v1": 0.52, "v2": 0.48})
    wire = status.wire()
    assert [(v["name"], v["weight"], v["observedShare"]) for v in wire["versions"]] == \
        [("v1", 50, 0.52), ("v2", 50, 0.48)]
    progressing = next(c for c in status.conditions if c.type == "Progressing")
    assert progressing.reason == "RolloutInProgress"
    assert progressing.message == "v2: step 1/2 at weight 50%, answering 48% of requests"


def test_an_under_served_canary_is_the_progressing_reason_and_shown_by_kubectl_model() -> None:
    rollout = {**CANARY, "underServed": "v2 answered 3% of requests since T, less than half of its intended 50%"}
    status = compute_status(md(), [Observed("v1", 2, 2), Observed("v2", 2, 2)], 4, None,
                            rollout_decision(rollout), "sel", "url", READY,
                            weights={"v1": 50, "v2": 50}, shares={"v1": 0.97, "v2": 0.03})
    progressing = next(c for c in status.conditions if c.type == "Progressing")
    assert (progressing.status, progressing.reason) == ("True", UNDER_SERVED)
    assert "v2 answered 3% of requests" in progressing.message

    lines = render_status({"metadata": {"name": "web", "namespace": "ns"}, "spec": md().spec.model_dump(by_alias=True),
                           "status": status.wire()})
    assert any(line.split() == ["v2", "2", "2/2", "50%", "3%"] for line in lines), lines
    assert any(line.startswith("under-served: v2 answered 3%") for line in lines)


def test_without_a_rollout_no_share_is_reported() -> None:
    status = compute_status(md(), [Observed("v2", 4, 4)], 4, None,
                            Decision(replicas={"v2": 4}, active=None, serving="v2", complete=True),
                            "sel", "url", READY, weights={"v2": 100}, shares={})
    assert "observedShare" not in status.wire()["versions"][0]
