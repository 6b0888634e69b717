"""Why pods are not becoming Ready, as pure functions of their statuses (no I/O).

A pod that waits for nothing it will get by itself is stuck: its model fetch failed, its image cannot be
pulled, it was OOM-killed, it crash-loops, or no node can take it. Each cause is a stable CamelCase reason
with the last error a user can act on (for a failed fetch: the URL and the error, from the fetch
container's termination message).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

MODEL_FETCH_FAILED = "ModelFetchFailed"
IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
OOM_KILLED = "OOMKilled"
CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
UNSCHEDULABLE = "Unschedulable"
CONTAINER_CONFIG_ERROR = "CreateContainerError"
# kubelet's waiting reasons of an image that is not there and cannot be pulled
IMAGE_PULL_WAITING = {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
                      "RegistryUnavailable", "ImageInspectError"}
CONFIG_WAITING = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
MESSAGE_LIMIT = 600

Obj = dict[str, Any]


@dataclass(frozen=True)
class PodProblem:
    """One pod's cause, its last error, and when that error was seen (RFC 3339, for 'last')."""

    reason: str
    message: str
    at: str = ""


@dataclass(frozen=True)
class StuckPods:
    """A version's stuck pods: the most common cause, how many pods have it, and its latest error."""

    reason: str
    count: int
    message: str

    def describe(self) -> str:
        return f"{self.count} pod{'s' if self.count != 1 else ''} {self.reason}: {self.message}"


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def termination_text(term: Obj) -> str:
    """A terminated container's error: the JSON `{"reason", "message"}` onnx-server writes, else the raw
    message (with FallbackToLogsOnError: the log's tail), else the exit code."""
    raw = str(term.get("message") or "").strip()
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if isinstance(data, dict) and data.get("message"):
        reason = str(data.get("reason") or "")
        text = str(data["message"])
        return _short(text if reason in ("", "FetchFailed") else f"{reason}: {text}")
    exit_code = term.get("exitCode")
    return _short(raw.splitlines()[-1] if raw else f"exited {exit_code} ({term.get('reason') or 'Error'})")


def _container_problem(cs: Obj, fetcher: bool) -> PodProblem | None:
    state, last = cs.get("state") or {}, cs.get("lastState") or {}
    waiting = state.get("waiting") or {}
    reason = str(waiting.get("reason") or "")
    if reason in IMAGE_PULL_WAITING:
        return PodProblem(IMAGE_PULL_BACK_OFF, _short(f"{cs.get('image')}: {waiting.get('message') or reason}"))
    if reason in CONFIG_WAITING:
        return PodProblem(CONTAINER_CONFIG_ERROR, _short(str(waiting.get("message") or reason)))
    term = state.get("terminated") or last.get("terminated")
    if not term or int(term.get("exitCode") or 0) == 0:
        return None
    at = str(term.get("finishedAt") or "")
    if term.get("reason") == "OOMKilled":
        return PodProblem(OOM_KILLED, f"container {cs.get('name')} exceeded its memory limit "
                          f"(exit {term.get('exitCode')})", at)
    if fetcher:
        return PodProblem(MODEL_FETCH_FAILED, termination_text(term), at)
    if reason == "CrashLoopBackOff" or state.get("terminated") or cs.get("restartCount"):
        return PodProblem(CRASH_LOOP_BACK_OFF, f"container {cs.get('name')}: {termination_text(term)}", at)
    return None


def pod_problem(pod: Obj, fetchers: frozenset[str] = frozenset({"fetch-model"})) -> PodProblem | None:
    """Why this pod is stuck, or None (Ready, still starting, or going away). `fetchers` are the containers
    whose failure is a failed model fetch."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp") or status.get("phase") == "Succeeded":
        return None
    conds = {c.get("type"): c for c in status.get("conditions") or []}
    if (conds.get("Ready") or {}).get("status") == "True":
        return None
    scheduled = conds.get("PodScheduled") or {}
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return PodProblem(UNSCHEDULABLE, _short(str(scheduled.get("message") or "no node fits the pod")),
                          str(scheduled.get("lastTransitionTime") or ""))
    # init containers run first: their failure is the cause even if the main container reports too
    for group in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(group) or []:
            found = _container_problem(cs, cs.get("name") in fetchers)
            if found is not None:
                return found if found.at else PodProblem(found.reason, found.message,
                                                         str(meta.get("creationTimestamp") or ""))
    return None


def stuck_pods(pods: list[Obj], fetchers: frozenset[str] = frozenset({"fetch-model"})) -> StuckPods | None:
    """The most common cause among `pods` (ties: the most recent), with the latest error of that cause."""
    problems = [p for p in (pod_problem(pod, fetchers) for pod in pods) if p is not None]
    if not problems:
        return None
    counts = Counter(p.reason for p in problems)
    latest = max(problems, key=lambda p: (counts[p.reason], p.at))
    last = max((p for p in problems if p.reason == latest.reason), key=lambda p: p.at)
    return StuckPods(latest.reason, counts[latest.reason], last.message)
