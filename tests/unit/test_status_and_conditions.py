import pytest
from onnx_operator.api import parse_model_deployment, set_condition
from onnx_operator.config import ConfigError, load_config
from onnx_operator.rollout.progressive import Decision
from onnx_operator.rollout.rolling import Observed
from onnx_operator.rollout.status import Problem, compute_status


def md(status: dict | None = None) -> object:
    return parse_model_deployment({"metadata": {"name": "web", "namespace": "ns", "uid": "u", "generation": 2},
                                   "spec": {"modelVersion": "v2", "replicas": 3}, "status": status or {}})


def test_unchanged_condition_keeps_its_transition_time() -> None:
    first = set_condition([], "Ready", True, "ReplicasReady", "3/3", 1, "T1")
    again = set_condition(first, "Ready", True, "ReplicasReady", "3/3", 1, "T2")
    flipped = set_condition(again, "Ready", False, "ReplicasNotReady", "2/3", 1, "T3")
    assert again == first
    assert flipped[0].last_transition_time == "T3"


def done(serving: str = "v2") -> Decision:
    return Decision(replicas={serving: 3}, active=None, serving=serving, complete=True)


def test_status_is_ready_only_when_every_desired_pod_is_ready() -> None:
    busy = compute_status(md(), [Observed("v2", 3, 2)], 3, None, done(), "sel", "url", "T")
    done_ = compute_status(md(), [Observed("v2", 3, 3)], 3, None, done(), "sel", "url", "T")
    assert (busy.phase, done_.phase) == ("Progressing", "Ready")
    assert done_.ready_text == "3/3" and done_.serving_version == "v2" and done_.observed_generation == 2


def test_recomputing_an_unchanged_status_gives_the_same_status() -> None:
    first = compute_status(md(), [Observed("v2", 3, 3)], 3, None, done(), "sel", "url", "T1")
    second = compute_status(md(first.wire()), [Observed("v2", 3, 3)], 3, None, done(), "sel", "url", "T2")
    assert second.wire() == first.wire()


def test_a_version_missing_from_the_cluster_is_not_reported_as_serving() -> None:
    status = compute_status(md({"servingVersion": "v1"}), [Observed("v2", 3, 1)], 3, None,
                            Decision(replicas={"v2": 3}, active=None, serving="v1"), "s", "u", "T")
    assert status.serving_version is None and status.phase == "Progressing"


def test_rollback_degrades_and_records_the_reason() -> None:
    decision = Decision(replicas={"v1": 3}, active=None, serving="v1",
                        rolled_back=("ProgressDeadlineExceeded", "v2 0/1"))
    status = compute_status(md(), [Observed("v1", 3, 3)], 3, None, decision, "s", "u", "T")
    conds = {c.type: c for c in status.conditions}
    assert status.phase == "Degraded" and conds["RolledBack"].status == "True"
    assert conds["Degraded"].reason == "ProgressDeadlineExceeded" and status.serving_version == "v1"


def test_problem_degrades_with_its_reason() -> None:
    status = compute_status(md(), [], 3, Problem("ModelVersionNotFound", "no v2"), None, "s", "u", "T")
    degraded = next(c for c in status.conditions if c.type == "Degraded")
    assert (status.phase, degraded.status, degraded.reason) == ("Degraded", "True", "ModelVersionNotFound")


def test_settings_come_from_flags_then_environment() -> None:
    config = load_config(["--namespaces", "a, b"], {"ONNX_OPERATOR_RUNTIME_IMAGE": "img:2"})
    assert config.namespaces == ["a", "b"] and config.runtime_image == "img:2"


def test_bad_setting_names_the_flag_and_variable() -> None:
    with pytest.raises(ConfigError, match="--serving-port / ONNX_OPERATOR_SERVING_PORT"):
        load_config(["--serving-port", "80"], {})


def test_version_still_verifying_is_progressing_not_degraded() -> None:
    waiting = Problem("ModelVersionNotReady", "v2 is Verifying", degraded=False)

    status = compute_status(md(), [], 3, waiting, None, "s", "u", "T")

    conds = {c.type: (c.status, c.reason) for c in status.conditions}
    assert status.phase == "Progressing"
    assert conds["Progressing"] == ("True", "ModelVersionNotReady") and conds["Degraded"][0] == "False"


def test_old_version_stays_serving_until_the_handover_completes() -> None:
    midway = Decision(replicas={"v1": 1, "v2": 3}, active=None, serving="v1")

    status = compute_status(md({"servingVersion": "v1"}), [Observed("v1", 1, 1), Observed("v2", 3, 2)], 3, None,
                            midway, "s", "u", "T")

    ready = next(c for c in status.conditions if c.type == "Ready")
    assert (status.serving_version, status.desired_version, status.ready_text) == ("v1", "v2", "2/3")
    assert (ready.status, ready.reason) == ("False", "ReplicasNotReady")
    assert [(v.name, v.replicas, v.ready_replicas) for v in status.versions] == [("v1", 1, 1), ("v2", 3, 2)]


def test_reason_or_message_change_keeps_the_transition_time() -> None:
    first = set_condition([], "Ready", False, "ReplicasNotReady", "1/3", 1, "T1")

    later = set_condition(first, "Ready", False, "ModelVersionNotFound", "no v2", 2, "T2")

    assert (later[0].reason, later[0].last_transition_time, later[0].observed_generation) == (
        "ModelVersionNotFound", "T1", 2)


def test_setting_one_condition_keeps_the_others_in_place() -> None:
    conds = set_condition(set_condition([], "Ready", True, "ReplicasReady", "", 1, "T1"), "Degraded", False,
                          "AsExpected", "", 1, "T1")

    updated = set_condition(conds, "Ready", False, "ReplicasNotReady", "", 1, "T2")

    assert [c.type for c in updated] == ["Ready", "Degraded"] and updated[1] == conds[1]


def test_verify_settings_come_from_the_environment() -> None:
    config = load_config([], {"ONNX_OPERATOR_VERIFY_BACKOFF_LIMIT": "0", "ONNX_OPERATOR_VERIFY_JOB_TTL_SECONDS": "60"})

    assert (config.verify_backoff_limit, config.verify_job_ttl_seconds) == (0, 60)


def test_config_defaults_match_the_documented_ones() -> None:
    config = load_config([], {})

    assert (config.runtime_image, config.namespaces, config.field_manager, config.serving_port, config.log_format) == (
        "onnx-operator/runtime:0.1.0", [], "onnx-operator", 8080, "text")
