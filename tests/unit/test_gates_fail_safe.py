"""Gates fail safe: no data, too few requests or no Prometheus hold the step, never pass it."""

from typing import Any

from onnx_operator.api import parse_model_deployment, parse_model_version
from onnx_operator.api.modeldeployment import Analysis, MetricQuery
from onnx_operator.cli.render import render_status
from onnx_operator.rollout.gates import (
    GATES_HAD_NO_DATA,
    GATES_INCONCLUSIVE,
    GateQuery,
    GateResult,
    gate_queries,
    judge,
    request_count_query,
    too_few_requests,
)
from onnx_operator.rollout.progressive import decide
from onnx_operator.rollout.rolling import Observed
from onnx_operator.rollout.status import compute_status

T0, T1, T5M, T11M = ("2026-01-01T00:00:00Z", "2026-01-01T00:00:30Z", "2026-01-01T00:05:00Z",
                     "2026-01-01T00:11:00Z")
ANALYSIS = {"successRate": 0.99, "latencyP99Ms": 100}
STEPS = [{"weight": 10, "pause": "1m"}, {"weight": 50}, {"weight": 100}]
NO_DATA = GateResult("SuccessRate", "Inconclusive", None, 0.99,
                     "SuccessRate inconclusive: 3 requests to the new version in the last 1m, fewer than "
                     "spec.strategy.canary.analysis.minRequests (20)")
GOOD = GateResult("SuccessRate", "Passed", 1.0, 0.99, "SuccessRate 1 within 0.99")


def md(status: dict[str, Any], steps: list[dict[str, Any]] | None = None) -> Any:
    return parse_model_deployment({
        "metadata": {"name": "web", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"modelVersion": "v2", "replicas": 10, "progressDeadlineSeconds": 600,
                 "strategy": {"type": "Canary", "canary": {"steps": steps or STEPS, "analysis": ANALYSIS}}},
        "status": status})


def obs(**ready: int) -> dict[str, Observed]:
    return {v: Observed(v, n, n) for v, n in ready.items()}


def step(index: int = 0, **extra: Any) -> dict[str, Any]:
    return {"version": "v2", "from": "v1", "stepIndex": index, "stepStartedAt": T0, "stepReadyAt": T0,
            "startedAt": T0, **extra}


def test_min_requests_defaults_to_twenty() -> None:
    analysis = md({}).spec.strategy.canary.analysis

    assert analysis.min_requests == 20


def test_too_few_requests_in_the_window_names_the_count_and_the_field() -> None:
    assert too_few_requests(19.4, 20) == ("19 requests to the new version in the last 1m, fewer than "
                                          "spec.strategy.canary.analysis.minRequests (20)")
    assert too_few_requests(None, 20) is not None and too_few_requests(None, 20).startswith("0 requests")
    assert too_few_requests(20.0, 20) is None


def test_a_gate_without_data_is_inconclusive_and_says_why() -> None:
    result = judge(GateQuery("LatencyP99Ms", "q", maximum=100), None)

    assert result.verdict == "Inconclusive" and not result.passed and not result.failed
    assert "no data" in result.message and result.wire()["passed"] is False


def test_an_inconclusive_gate_holds_a_step_whose_pause_is_over() -> None:
    d = decide(md({"servingVersion": "v1", "rollout": step()}), obs(v1=9, v2=1), 10, None, [NO_DATA], None, T5M)

    assert d.rollout["stepIndex"] == 0 and d.replicas == {"v2": 1, "v1": 9}
    assert d.rollout["gatesInconclusiveSince"] == T5M and d.rolled_back is None
    assert d.events == [("Warning", GATES_INCONCLUSIVE, f"v2 holds: {NO_DATA.message}")], "one Event as it begins"


def test_the_final_step_does_not_complete_on_inconclusive_gates() -> None:
    state = step(2, stepCount=3)
    d = decide(md({"servingVersion": "v1", "rollout": state}), obs(v1=0, v2=10), 10, None, [NO_DATA], None, T1)

    assert not d.complete and d.serving == "v1" and d.rollout["version"] == "v2"


def test_gates_with_evidence_release_the_hold_and_the_step_advances() -> None:
    held = step(gatesInconclusiveSince=T1)
    d = decide(md({"servingVersion": "v1", "rollout": held}), obs(v1=9, v2=1), 10, None, [GOOD], None, T5M)

    assert d.rollout["stepIndex"] == 1 and "gatesInconclusiveSince" not in d.rollout
    assert d.rollout["gates"][0]["verdict"] == "Passed"


def test_gates_still_inconclusive_at_the_progress_deadline_roll_back_saying_they_had_no_data() -> None:
    held = step(gatesInconclusiveSince=T0)
    d = decide(md({"servingVersion": "v1", "rollout": held}), obs(v1=9, v2=1), 10, None, [NO_DATA], None, T11M)

    assert d.replicas == {"v1": 10} and d.serving == "v1"
    reason, message = d.rolled_back
    assert reason == GATES_HAD_NO_DATA
    assert "gates had no data for 600s" in message and "fewer than spec.strategy.canary.analysis.minRequests" \
        in message
    assert d.history[-1]["result"] == "RolledBack" and d.failed[-1]["reason"] == GATES_HAD_NO_DATA


def test_a_failed_gate_rolls_back_even_when_another_is_inconclusive() -> None:
    bad = GateResult("LatencyP99Ms", "Failed", 400.0, 100, "LatencyP99Ms 400 is above the maximum 100")
    d = decide(md({"servingVersion": "v1", "rollout": step()}), obs(v1=9, v2=1), 10, None, [NO_DATA, bad], None,
               T1)

    assert d.rolled_back is not None and d.rolled_back[0] == "LatencyP99Ms"


def test_a_users_promotion_passes_over_inconclusive_gates_and_restarts_their_clock() -> None:
    held = step(1, gatesInconclusiveSince=T0)
    d = decide(md({"servingVersion": "v1", "rollout": held}), obs(v1=5, v2=5), 10, None, [NO_DATA],
               ("promote", "promote@1"), T5M)

    assert d.rollout["stepIndex"] == 2 and "gatesInconclusiveSince" not in d.rollout


def test_no_gates_evaluated_this_time_keeps_the_hold() -> None:
    held = step(gatesInconclusiveSince=T1, gates=[NO_DATA.wire()])
    d = decide(md({"servingVersion": "v1", "rollout": held}), obs(v1=9, v2=1), 10, None, [], None, T5M)

    assert d.rollout["stepIndex"] == 0 and d.rollout["gatesInconclusiveSince"] == T1 and d.events == []


def test_status_is_progressing_with_a_reason_naming_the_gate_and_why() -> None:
    spec = md({"servingVersion": "v1", "rollout": step()})
    d = decide(spec, obs(v1=9, v2=1), 10, None, [NO_DATA], None, T5M)

    status = compute_status(spec, list(obs(v1=9, v2=1).values()), 10, None, d, "sel", "url", T5M)

    progressing = next(c for c in status.conditions if c.type == "Progressing")
    assert progressing.status == "True" and progressing.reason == GATES_INCONCLUSIVE
    assert "SuccessRate inconclusive: 3 requests" in progressing.message
    assert status.phase == "Progressing"


def test_kubectl_model_status_shows_inconclusive_gates_and_the_hold() -> None:
    rollout = step(stepCount=3, weight=10, gatesInconclusiveSince=T1, gates=[NO_DATA.wire()])
    body = {"metadata": {"name": "web", "namespace": "ns"},
            "spec": {"strategy": {"type": "Canary", "canary": {"steps": STEPS}}},
            "status": {"rollout": rollout}}

    lines = render_status(body)

    assert "  INCONCLUSIVE  SuccessRate: no data (threshold 0.99)" in lines
    assert any("fewer than spec.strategy.canary.analysis.minRequests (20)" in line for line in lines)
    assert any(line.startswith(f"holding since {T1}: gates without data never pass") for line in lines)


def test_gates_read_only_the_new_versions_namespace_or_series_without_one() -> None:
    mv = parse_model_version({"metadata": {"name": "v2", "namespace": "prod"}, "spec": {
        "model": "fraud", "version": "2.0.0", "source": {"uri": "https://m.example/x.onnx", "sha256": "a" * 64}}})
    custom = MetricQuery(name="errors", query='x{ns="{{namespace}}",m="{{model}}",v="{{version}}"}', max=1)
    queries = gate_queries(Analysis(successRate=0.99, latencyP99Ms=100, queries=[custom]), mv, "scoring")

    selector = 'model="fraud",version="2.0.0",modeldeployment="scoring",namespace=~"prod|"'
    assert selector in request_count_query(mv, "scoring")
    assert [q.promql.count(selector) for q in queries[:2]] == [2, 1]
    assert queries[2].promql == 'x{ns="prod",m="fraud",v="2.0.0"}'
