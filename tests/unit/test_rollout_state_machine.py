from typing import Any

from onnx_operator.api import parse_model_deployment
from onnx_operator.rollout.gates import GateQuery, GateResult, judge
from onnx_operator.rollout.progressive import canary_replicas, decide, parse_action
from onnx_operator.rollout.rolling import Observed
from onnx_operator.rollout.timeutil import parse_duration

T0, T1, T5M = "2026-01-01T00:00:00Z", "2026-01-01T00:00:30Z", "2026-01-01T00:05:00Z"
STEPS = [{"weight": 10, "pause": "1m"}, {"weight": 50}, {"weight": 100}]


def md(status: dict[str, Any], strategy: dict[str, Any] | None = None, **spec: Any) -> Any:
    return parse_model_deployment({
        "metadata": {"name": "web", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"modelVersion": "v2", "replicas": 10, "progressDeadlineSeconds": 120,
                 "strategy": strategy or {"type": "Canary", "canary": {"steps": STEPS}}, **spec},
        "status": status})


def obs(**ready: int) -> dict[str, Observed]:
    return {v: Observed(v, n, n) for v, n in ready.items()}


def test_canary_replicas_round_up() -> None:
    assert [canary_replicas(w, 10) for w in (1, 10, 55, 100)] == [1, 1, 6, 10]
    assert canary_replicas(10, 3) == 1


def test_canary_starts_at_the_first_step_weight() -> None:
    d = decide(md({"servingVersion": "v1"}), obs(v1=10), 10, "sha256:x", [], None, T0)
    assert d.replicas == {"v2": 1, "v1": 10}, "stable keeps its size until canary pods are Ready"
    assert d.rollout["stepIndex"] == 0 and d.rollout["from"] == "v1"
    assert d.events[0][1] == "RolloutStarted" and d.serving == "v1"


def test_step_with_pause_advances_after_the_pause_once_ready() -> None:
    state = {"version": "v2", "from": "v1", "stepIndex": 0, "stepStartedAt": T0, "stepReadyAt": T0, "startedAt": T0}
    early = decide(md({"servingVersion": "v1", "rollout": dict(state)}), obs(v1=9, v2=1), 10, None, [], None, T1)
    late = decide(md({"servingVersion": "v1", "rollout": dict(state)}), obs(v1=9, v2=1), 10, None, [], None, T5M)
    assert early.rollout["stepIndex"] == 0 and early.requeue == 30
    assert late.rollout["stepIndex"] == 1 and late.replicas == {"v2": 5, "v1": 9}
    assert "stepReadyAt" not in late.rollout, "the next step's pause starts when its own pods are Ready"


def test_pause_counts_from_when_the_step_became_ready_not_from_when_it_started() -> None:
    state = {"version": "v2", "from": "v1", "stepIndex": 0, "stepStartedAt": T0, "startedAt": T0}
    not_ready = decide(md({"servingVersion": "v1", "rollout": dict(state)}), {"v1": Observed("v1", 10, 10),
                       "v2": Observed("v2", 1, 0)}, 10, None, [], None, T1)
    assert "stepReadyAt" not in not_ready.rollout and not_ready.replicas == {"v2": 1, "v1": 10}

    first_ready = decide(md({"servingVersion": "v1", "rollout": not_ready.rollout}), obs(v1=10, v2=1), 10, None, [],
                         None, T5M)

    assert first_ready.rollout["stepIndex"] == 0 and first_ready.rollout["stepReadyAt"] == T5M
    assert first_ready.replicas == {"v2": 1, "v1": 9}, "the 10% split is served for the whole pause"
    assert first_ready.requeue == 60


def test_step_without_pause_waits_for_promotion() -> None:
    state = {"version": "v2", "from": "v1", "stepIndex": 1, "stepStartedAt": T0, "startedAt": T0}
    held = decide(md({"servingVersion": "v1", "rollout": state}), obs(v1=5, v2=5), 10, None, [], None, T5M)
    promoted = decide(md({"servingVersion": "v1", "rollout": state}), obs(v1=5, v2=5), 10, None, [],
                      ("promote", "promote@1"), T5M)
    assert held.rollout["stepIndex"] == 1
    assert promoted.rollout["stepIndex"] == 2 and promoted.rollout["lastAction"] == "promote@1"


def test_promote_full_before_the_last_step_is_ready_restarts_the_step_clock() -> None:
    state = {"version": "v2", "from": "v1", "stepIndex": 0, "stepStartedAt": T0, "stepReadyAt": T0, "startedAt": T0}
    jumped = decide(md({"servingVersion": "v1", "rollout": state}), obs(v1=9, v2=1), 10, None, [],
                    ("promote-full", "pf@1"), T1)
    assert jumped.rollout["stepIndex"] == 2 and jumped.replicas == {"v2": 10, "v1": 9}
    assert jumped.rollout["stepStartedAt"] == T1 and "stepReadyAt" not in jumped.rollout
    assert not jumped.complete and jumped.rollout.get("lastAction") is None


def test_a_handled_action_is_not_applied_twice() -> None:
    state = {"version": "v2", "from": "v1", "stepIndex": 1, "stepStartedAt": T0, "startedAt": T0,
             "lastAction": "promote@1"}
    d = decide(md({"servingVersion": "v1", "rollout": state}), obs(v1=5, v2=5), 10, None, [],
               ("promote", "promote@1"), T5M)
    assert d.rollout["stepIndex"] == 1


def test_final_step_completes_the_rollout() -> None:
    state = {"version": "v2", "from": "v1", "stepIndex": 2, "stepStartedAt": T0, "startedAt": T0}
    d = decide(md({"servingVersion": "v1", "rollout": state}), obs(v1=0, v2=10), 10, None, [], None, T1)
    assert d.complete and d.serving == "v2" and d.replicas == {"v2": 10}
    assert d.history[-1]["result"] == "Succeeded"


def test_canary_not_ready_by_the_deadline_rolls_back() -> None:
    state = {"version": "v2", "from": "v1", "stepIndex": 0, "stepStartedAt": T0, "startedAt": T0, "digest": "d2"}
    d = decide(md({"servingVersion": "v1", "rollout": state}), {"v1": Observed("v1", 9, 9), "v2": Observed("v2", 1, 0)},
               10, None, [], None, T5M)
    assert d.replicas == {"v1": 10} and d.serving == "v1"
    assert d.rolled_back[0] == "ProgressDeadlineExceeded"
    assert d.failed[-1]["name"] == "v2" and d.failed[-1]["digest"] == "d2"
    assert d.rollout == {"blockedVersion": "v2", "lastAction": None}


def test_a_failing_gate_rolls_back_with_its_values() -> None:
    state = {"version": "v2", "from": "v1", "stepIndex": 0, "stepStartedAt": T0, "startedAt": T0}
    gate = GateResult("SuccessRate", "Failed", 0.5, 0.99, "SuccessRate 0.5 is below the minimum 0.99")
    d = decide(md({"servingVersion": "v1", "rollout": state}), obs(v1=9, v2=1), 10, None, [gate], None, T1)
    assert d.rolled_back == ("SuccessRate", "v2 rolled back to v1: SuccessRate 0.5 is below the minimum 0.99")
    assert d.history[-1]["result"] == "RolledBack"


def test_a_rolled_back_version_is_not_retried_until_the_spec_changes() -> None:
    status = {"servingVersion": "v1", "rollout": {"blockedVersion": "v2"},
              "failedVersions": [{"name": "v2", "reason": "SuccessRate", "message": "low"}]}
    same = decide(md(status), obs(v1=10), 10, None, [], None, T5M)
    other = decide(md(status, modelVersion="v3"), obs(v1=10), 10, None, [], None, T5M)
    assert same.replicas == {"v1": 10} and same.rolled_back is not None
    assert other.replicas["v3"] == 1 and other.rolled_back is None


def test_abort_returns_all_traffic_to_stable() -> None:
    state = {"version": "v2", "from": "v1", "stepIndex": 1, "stepStartedAt": T0, "startedAt": T0}
    d = decide(md({"servingVersion": "v1", "rollout": state}), obs(v1=5, v2=5), 10, None, [], ("abort", "abort@9"), T1)
    assert d.replicas == {"v1": 10} and d.history[-1]["result"] == "Aborted"


def test_pause_holds_the_step_until_resumed() -> None:
    state = {"version": "v2", "from": "v1", "stepIndex": 0, "stepStartedAt": T0, "stepReadyAt": T0, "startedAt": T0}
    paused = decide(md({"servingVersion": "v1", "rollout": state}), obs(v1=9, v2=1), 10, None, [],
                    ("pause", "pause@1"), T5M)
    assert paused.rollout["paused"] and paused.rollout["stepIndex"] == 0
    resumed = decide(md({"servingVersion": "v1", "rollout": paused.rollout}), obs(v1=9, v2=1), 10, None, [],
                     ("resume", "resume@2"), T5M)
    assert resumed.rollout["stepIndex"] == 1


def test_blue_green_previews_then_switches_on_promotion_and_keeps_old_warm() -> None:
    strategy = {"type": "BlueGreen", "blueGreen": {"scaleDownDelaySeconds": 60}}
    start = decide(md({"servingVersion": "v1"}, strategy), obs(v1=10), 10, None, [], None, T0)
    assert start.replicas == {"v2": 10, "v1": 10} and start.active == "v1" and start.preview == "v2"
    ready = obs(v1=10, v2=10)
    switched = decide(md({"servingVersion": "v1", "rollout": start.rollout}, strategy), ready, 10, None, [],
                      ("promote", "p@1"), T1)
    assert switched.active == "v2" and switched.serving == "v2" and switched.replicas["v1"] == 10
    done = decide(md({"servingVersion": "v2", "rollout": switched.rollout}, strategy), ready, 10, None, [], None, T5M)
    assert done.complete and done.replicas == {"v2": 10}


def test_spec_change_mid_rollout_supersedes_it() -> None:
    state = {"version": "v2", "from": "v1", "stepIndex": 1, "stepStartedAt": T0, "startedAt": T0}
    d = decide(md({"servingVersion": "v1", "rollout": state}, modelVersion="v3"), obs(v1=5, v2=5), 10, None, [],
               None, T1)
    assert d.history[-1]["result"] == "Superseded" and d.rollout["version"] == "v3"
    assert "v2" not in d.replicas


def test_actions_and_durations_parse() -> None:
    assert parse_action("promote@abc") == ("promote", "promote@abc")
    assert parse_action("explode@1") is None and parse_action(None) is None
    assert parse_duration("1h30m") == 5400 and parse_duration("500ms") == 0.5


def test_gates_are_inconclusive_without_data_and_judged_only_on_evidence() -> None:
    q = GateQuery("SuccessRate", "x", minimum=0.99)
    assert judge(q, None).inconclusive and not judge(q, None).passed
    assert judge(q, 0.995).passed
    assert judge(q, 0.9).failed
    assert judge(GateQuery("LatencyP99Ms", "y", maximum=100), 250).failed


def test_an_unready_canary_is_looked_at_again_when_its_deadline_passes() -> None:
    state = {"version": "v2", "from": "v1", "stepIndex": 0, "stepStartedAt": T0, "startedAt": T0}
    d = decide(md({"servingVersion": "v1", "rollout": state}), {"v1": Observed("v1", 9, 9), "v2": Observed("v2", 1, 0)},
               10, None, [], None, T1)
    assert d.requeue == 91  # deadline 120 s, 30 s elapsed


def test_a_promotion_before_the_step_is_ready_waits_until_it_is() -> None:
    state = {"version": "v2", "from": "v1", "stepIndex": 1, "stepStartedAt": T0, "startedAt": T0}
    not_ready = {"v1": Observed("v1", 5, 5), "v2": Observed("v2", 5, 3)}
    early = decide(md({"servingVersion": "v1", "rollout": state}), not_ready, 10, None, [], ("promote", "p@1"), T1)
    assert early.rollout["stepIndex"] == 1 and early.rollout.get("lastAction") is None
    later = decide(md({"servingVersion": "v1", "rollout": early.rollout}), obs(v1=5, v2=5), 10, None, [],
                   ("promote", "p@1"), T1)
    assert later.rollout["stepIndex"] == 2 and later.rollout["lastAction"] == "p@1"


def test_an_action_written_before_a_rollout_starts_is_ignored() -> None:
    d = decide(md({"servingVersion": "v1"}), obs(v1=10), 10, None, [], ("promote-full", "old@1"), T0)
    assert d.rollout["stepIndex"] == 0 and d.rollout["lastAction"] == "old@1"


def test_stable_shrinks_only_for_ready_canary_pods() -> None:
    state = {"version": "v2", "from": "v1", "stepIndex": 1, "stepStartedAt": T0, "startedAt": T0}
    seen = {"v1": Observed("v1", 10, 10), "v2": Observed("v2", 5, 2)}
    partly = decide(md({"servingVersion": "v1", "rollout": state}), seen, 10, None, [], None, T1)
    assert partly.replicas == {"v2": 5, "v1": 8}


def test_going_back_to_the_blue_green_stable_inside_the_delay_switches_at_once() -> None:
    bg = {"type": "BlueGreen", "blueGreen": {"scaleDownDelaySeconds": 120}}
    switched = {"version": "v2", "from": "v1", "stepIndex": 0, "startedAt": T0, "switchedAt": T0}
    back = md({"servingVersion": "v2", "rollout": switched}, bg)
    back.spec.model_version = "v1"

    d = decide(back, obs(v1=10, v2=10), 10, None, [], None, T1)

    assert d.active == "v1" and d.serving == "v1", "the Service selects the warm stable pods right away"
    assert d.replicas == {"v1": 10}
    assert d.history[-1]["version"] == "v2" and d.history[-1]["result"] == "Superseded"
    assert d.preview is None


def test_going_back_to_the_canary_stable_is_not_a_new_rollout() -> None:
    state = {"version": "v2", "from": "v1", "stepIndex": 1, "stepStartedAt": T0, "startedAt": T0}
    back = md({"servingVersion": "v1", "rollout": state})
    back.spec.model_version = "v1"

    d = decide(back, obs(v1=5, v2=5), 10, None, [], None, T1)

    assert d.replicas == {"v1": 10} and d.serving == "v1"
    assert not any(e[1] == "RolloutStarted" for e in d.events)
