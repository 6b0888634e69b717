"""Why pods are stuck, from pod statuses as the kubelet writes them (shapes taken from the real node)."""

import json
from typing import Any

from onnx_operator.api import parse_model_deployment
from onnx_operator.cli.render import render_status
from onnx_operator.rollout.progressive import decide
from onnx_operator.rollout.rolling import Observed
from onnx_operator.rollout.status import compute_status, stuck_events
from onnx_operator.rollout.stuck import StuckPods, pod_problem, stuck_pods, termination_text

URL = "http://198.18.0.254:30080/m.onnx"
FETCH_MESSAGE = json.dumps({"reason": "FetchFailed", "message": f"GET {URL}: ConnectError('[Errno 111] "
                            "Connection refused') (gave up after 4 attempts)"})


def pod(phase: str = "Pending", ready: bool = False, init: list[dict[str, Any]] | None = None,
        containers: list[dict[str, Any]] | None = None, conditions: list[dict[str, Any]] | None = None,
        created: str = "2026-01-01T00:00:00Z", version: str = "v1") -> dict[str, Any]:
    conds = [{"type": "Ready", "status": "True" if ready else "False"}, *(conditions or [])]
    return {"metadata": {"name": "p", "creationTimestamp": created,
                         "labels": {"serving.onnx-operator.io/version": version}},
            "status": {"phase": phase, "conditions": conds, "initContainerStatuses": init or [],
                       "containerStatuses": containers or []}}


def fetch_failed(at: str = "2026-01-01T00:01:00Z", message: str = FETCH_MESSAGE, running: bool = True) -> dict:
    term = {"exitCode": 3, "reason": "Error", "message": message, "finishedAt": at}
    state = {"running": {}} if running else {"waiting": {"reason": "CrashLoopBackOff"}}
    return {"name": "fetch-model", "state": state, "lastState": {"terminated": term}, "restartCount": 2}


def waiting(name: str, reason: str, message: str = "") -> dict:
    return {"name": name, "image": "localhost/nope:1", "state": {"waiting": {"reason": reason, "message": message}},
            "lastState": {}, "restartCount": 0}


def test_failed_fetch_names_the_url_and_the_error_from_the_termination_message() -> None:
    problem = pod_problem(pod(init=[fetch_failed(running=False)]))

    assert problem is not None and problem.reason == "ModelFetchFailed"
    assert URL in problem.message and "Connection refused" in problem.message


def test_fetch_failure_without_a_json_message_uses_the_log_tail() -> None:
    term = {"exitCode": 1, "message": "Traceback ...\nRuntimeError: disk full"}
    assert termination_text(term) == "RuntimeError: disk full"
    assert termination_text({"exitCode": 137}) == "exited 137 (Error)"


def test_a_checksum_mismatch_keeps_its_own_reason_in_the_message() -> None:
    message = json.dumps({"reason": "ChecksumMismatch", "message": f"{URL}: sha256 is ab, expected cd"})
    problem = pod_problem(pod(init=[fetch_failed(message=message)]))
    assert problem is not None and problem.message.startswith("ChecksumMismatch: ")


def test_image_pull_back_off_in_either_container_names_the_image() -> None:
    for status in (pod(init=[waiting("fetch-model", "ImagePullBackOff", "Back-off pulling image")]),
                   pod(containers=[waiting("server", "ErrImagePull", "failed to resolve reference")]),
                   pod(containers=[waiting("server", "ErrImageNeverPull")])):
        problem = pod_problem(status)
        assert problem is not None and problem.reason == "ImagePullBackOff"
        assert "localhost/nope:1" in problem.message


def test_oom_killed_server_is_named_even_while_it_restarts() -> None:
    server = {"name": "server", "state": {"running": {}}, "restartCount": 1,
              "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": "T"}}}
    problem = pod_problem(pod(phase="Running", containers=[server]))
    assert problem is not None and problem.reason == "OOMKilled" and "memory limit" in problem.message


def test_crash_loop_carries_the_last_exit() -> None:
    server = {"name": "server", "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "restartCount": 3,
              "lastState": {"terminated": {"exitCode": 7, "message": json.dumps(
                  {"reason": "InvalidModel", "message": "not an ONNX model"}), "finishedAt": "T"}}}
    problem = pod_problem(pod(phase="Running", containers=[server]))
    assert problem is not None and problem.reason == "CrashLoopBackOff"
    assert problem.message == "container server: InvalidModel: not an ONNX model"


def test_unschedulable_pod_says_what_the_scheduler_said() -> None:
    cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/2 nodes are available: 2 Insufficient memory."}
    problem = pod_problem(pod(conditions=[cond]))
    assert problem is not None and problem.reason == "Unschedulable" and "Insufficient memory" in problem.message


def test_ready_starting_and_terminating_pods_are_not_stuck() -> None:
    starting = pod(init=[{"name": "fetch-model", "state": {"running": {}}, "lastState": {}, "restartCount": 0}])
    terminating = pod(init=[fetch_failed()])
    terminating["metadata"]["deletionTimestamp"] = "T"
    healthy = pod(phase="Running", ready=True, init=[fetch_failed()])
    assert [pod_problem(p) for p in (starting, terminating, healthy)] == [None, None, None]


def test_the_most_common_cause_wins_with_its_latest_error() -> None:
    old = fetch_failed(at="2026-01-01T00:01:00Z", message=json.dumps({"reason": "FetchFailed", "message": "old"}))
    new = fetch_failed(at="2026-01-01T00:02:00Z", message=json.dumps({"reason": "FetchFailed", "message": "new"}))
    pods = [pod(init=[old]), pod(init=[new]), pod(containers=[waiting("server", "ImagePullBackOff")]),
            pod(phase="Running", ready=True)]

    assert stuck_pods(pods) == StuckPods("ModelFetchFailed", 2, "new")
    assert stuck_pods([pod(phase="Running", ready=True)]) is None


def md(status: dict[str, Any] | None = None, spec: dict[str, Any] | None = None) -> Any:
    return parse_model_deployment({"metadata": {"name": "web", "namespace": "ns", "uid": "u", "generation": 1},
                                   "spec": {"modelVersion": "v1", "replicas": 4, **(spec or {})},
                                   "status": status or {}})


STUCK = StuckPods("ModelFetchFailed", 2, f"GET {URL}: refused")


def test_status_names_the_cause_per_version_in_conditions_versions_and_the_cli() -> None:
    observed = [Observed("v1", 4, 2, stuck=STUCK)]
    decision = decide(md({"servingVersion": "v1"}), {o.version: o for o in observed}, 4, "sha256:x", [], None, "T")

    status = compute_status(md({"servingVersion": "v1"}), observed, 4, None, decision, "s", "u", "T")

    conds = {c.type: c for c in status.conditions}
    assert conds["Progressing"].reason == "ModelFetchFailed" and conds["Ready"].reason == "ModelFetchFailed"
    assert f"v1: 2 pods ModelFetchFailed: GET {URL}: refused" in conds["Progressing"].message
    assert (status.versions[0].stuck_reason, status.versions[0].stuck_pods) == ("ModelFetchFailed", 2)
    text = "\n".join(render_status({"metadata": {"name": "web", "namespace": "ns"}, "spec": {},
                                    "status": status.wire()}))
    assert f"v1: 2 pods stuck, ModelFetchFailed: GET {URL}: refused" in text


def test_an_event_only_when_a_version_becomes_stuck_or_changes_cause() -> None:
    observed = [Observed("v1", 4, 2, stuck=STUCK)]
    first = stuck_events([], observed)
    status = compute_status(md(), observed, 4, None, None, "s", "u", "T")

    assert first == [("Warning", "ModelFetchFailed", f"v1: 2 pods ModelFetchFailed: GET {URL}: refused")]
    assert stuck_events(status.versions, observed) == []
    assert stuck_events(status.versions, [Observed("v1", 4, 2, stuck=StuckPods("OOMKilled", 1, "x"))])


def test_progress_deadline_rollback_message_carries_the_cause() -> None:
    started = {"version": "v2", "from": "v1", "strategy": "RollingUpdate", "startedAt": "2026-01-01T00:00:00Z",
               "stepStartedAt": "2026-01-01T00:00:00Z", "stepIndex": 0}
    model = md({"servingVersion": "v1", "rollout": started}, {"modelVersion": "v2", "progressDeadlineSeconds": 60})
    observed = {"v1": Observed("v1", 4, 4), "v2": Observed("v2", 4, 0, stuck=StuckPods("ModelFetchFailed", 4,
                                                                                      f"GET {URL}: refused"))}

    d = decide(model, observed, 4, "sha256:x", [], None, "2026-01-01T00:02:00Z")

    assert d.rolled_back is not None and d.rolled_back[0] == "ProgressDeadlineExceeded"
    assert f"0/4 pods of v2 ready after 60s: 4 pods ModelFetchFailed: GET {URL}: refused" in d.rolled_back[1]
    assert d.replicas == {"v1": 4}
