"""Per-object timelines of the operator bench, read from the API server's audit events (pure functions).

For each ModelDeployment `md<i>` of a run:
- applied:  the bench's apply of the ModelDeployment (request received);
- children: the operator's first write of its Deployment (the child objects exist from here);
- deployment_ready: kube-controller-manager's last status write of that Deployment before ...
- ready:    the operator's last status write of the ModelDeployment (the one that says Ready: the
            run ends at rest, so nothing writes after it).
The operator's own time is (children - applied) + (ready - deployment_ready): queueing, reconciling
and writing on both ends; the cluster's time is deployment_ready - children (ReplicaSet, scheduling,
kwok's pod start, status propagation).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Event = dict[str, Any]
READ_VERBS = ("get", "list", "watch")
DEPLOYMENT_CONTROLLER = "system:serviceaccount:kube-system:deployment-controller"


def stamp(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class AuditReader:
    """Reads the audit log incrementally (each call returns the events appended since the last),
    keeping only lines that mention one of `needles` (cheap filter before JSON parsing)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def skip_to_end(self) -> None:
        self.offset = self.path.stat().st_size

    def read(self, needles: Iterable[str]) -> list[Event]:
        keys = tuple(needles)
        out = []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line being written stays for the next call
        self.offset += end
        for line in data[:end].decode().splitlines():
            if any(k in line for k in keys):
                out.append(json.loads(line))
        return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _ref(e: Event) -> dict[str, Any]:
    return dict(e.get("objectRef") or {})


def _user(e: Event) -> str:
    return str((e.get("user") or {}).get("username", ""))


def in_namespace(events: Iterable[Event], namespace: str) -> Iterator[Event]:
    return (e for e in events if _ref(e).get("namespace") == namespace)


def by_user(events: Iterable[Event], user: str) -> list[Event]:
    return [e for e in events if _user(e) == user]


def is_write(e: Event) -> bool:
    return e.get("verb") not in READ_VERBS


@dataclass(frozen=True)
class Timeline:
    name: str
    applied: float
    children: float
    deployment_ready: float
    ready: float

    @property
    def apply_to_ready(self) -> float:
        return self.ready - self.applied

    @property
    def operator_seconds(self) -> float:
        return (self.children - self.applied) + (self.ready - self.deployment_ready)

    @property
    def cluster_seconds(self) -> float:
        return self.deployment_ready - self.children


def timelines(events: list[Event], namespace: str, operator: str, applier: str,
              deployment_of: dict[str, str]) -> list[Timeline]:
    """One Timeline per ModelDeployment in `deployment_of` (its name -> its Deployment's name) that
    has every step in `events`; `applier` is the user that applied the ModelDeployments."""
    applied: dict[str, float] = {}
    children: dict[str, float] = {}
    ready: dict[str, float] = {}
    dep_status: dict[str, list[float]] = {}
    owner = {dep: md for md, dep in deployment_of.items()}
    for e in in_namespace(events, namespace):
        ref, user, verb = _ref(e), _user(e), e.get("verb")
        if verb in READ_VERBS or (e.get("responseStatus") or {}).get("code", 200) >= 300:
            continue
        name, resource, sub = ref.get("name"), ref.get("resource"), ref.get("subresource")
        t = stamp(e["stageTimestamp"])
        if resource == "modeldeployments" and user == applier and not sub and name in deployment_of:
            applied.setdefault(name, stamp(e["requestReceivedTimestamp"]))
        elif resource == "modeldeployments" and user == operator and sub == "status" and name in deployment_of:
            ready[name] = max(ready.get(name, t), t)
        elif resource == "deployments" and name in owner:
            if user == operator and not sub:
                children.setdefault(owner[name], t)
            elif user == DEPLOYMENT_CONTROLLER and sub == "status":
                dep_status.setdefault(owner[name], []).append(t)
    out = []
    for md, t_ready in ready.items():
        if md not in applied or md not in children:
            continue
        before = [t for t in dep_status.get(md, []) if t <= t_ready]
        out.append(Timeline(md, applied[md], children[md], max(before) if before else children[md], t_ready))
    return out


def summary(lines: list[Timeline]) -> dict[str, float]:
    """p50/p99/max of apply-to-Ready and of the operator's and the cluster's shares (seconds)."""
    out: dict[str, float] = {}
    for label, values in (("apply_to_ready", [t.apply_to_ready for t in lines]),
                          ("operator", [t.operator_seconds for t in lines]),
                          ("cluster", [t.cluster_seconds for t in lines])):
        out[f"{label}_p50_s"] = percentile(values, 50)
        out[f"{label}_p99_s"] = percentile(values, 99)
        out[f"{label}_max_s"] = max(values) if values else math.nan
    return out
