from typing import Any

from onnx_operator.cli.render import progress_bar, render_history, render_status

STEPS = [{"weight": 25, "pause": "2m"}, {"weight": 50}, {"weight": 100}]


def canary_md(rollout: dict[str, Any], **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web", "namespace": "ns"},
            "spec": {"modelVersion": "v2", "strategy": {"type": "Canary", "canary": {"steps": STEPS}}},
            "status": {"phase": "Progressing", "desiredVersion": "v2", "servingVersion": "v1", "rollout": rollout,
                       **status}}


def test_progress_bar_fills_in_proportion_and_clamps() -> None:
    assert progress_bar(0.5, 4) == "[##--]"
    assert progress_bar(2.0, 4) == "[####]" and progress_bar(-1, 4) == "[----]"


def test_canary_status_shows_step_weight_and_the_pause_once_ready() -> None:
    rollout = {"version": "v2", "from": "v1", "stepIndex": 0, "stepCount": 3, "weight": 25,
               "stepReadyAt": "2026-01-01T00:00:00Z"}

    lines = render_status(canary_md(rollout))

    assert any("step 1/3" in line and "25%" in line for line in lines)
    assert any("holding 25% for 2m from 2026-01-01T00:00:00Z" in line for line in lines)


def test_canary_status_without_ready_pods_shows_no_pause_clock() -> None:
    lines = render_status(canary_md({"version": "v2", "from": "v1", "stepIndex": 0, "stepCount": 3, "weight": 25}))

    assert not any("holding" in line for line in lines)


def test_a_step_waiting_for_promotion_says_how_to_promote() -> None:
    rollout = {"version": "v2", "from": "v1", "stepIndex": 1, "stepCount": 3, "weight": 50,
               "awaitingPromotion": True}

    lines = render_status(canary_md(rollout))

    assert any("kubectl model promote web" in line for line in lines)


def test_gates_show_their_values_and_no_data() -> None:
    rollout = {"version": "v2", "from": "v1", "stepIndex": 0, "stepCount": 3, "weight": 25,
               "gates": [{"name": "SuccessRate", "passed": True, "value": 0.995, "threshold": 0.99},
                         {"name": "LatencyP99Ms", "passed": True, "value": None, "threshold": 250}]}

    lines = render_status(canary_md(rollout))

    assert "  PASS  SuccessRate: 0.995 (threshold 0.99)" in lines
    assert "  PASS  LatencyP99Ms: no data (threshold 250)" in lines


def test_history_without_rollouts_says_so() -> None:
    assert render_history({"metadata": {"name": "web"}, "status": {}}) == ["no rollouts recorded for web"]
