import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from operator_timeline import DEPLOYMENT_CONTROLLER, percentile, timelines

NS = "bench"
T0 = 1767225600.0  # 2026-01-01T00:00:00Z


def event(user: str, verb: str, resource: str, name: str, second: float, sub: str | None = None,
          code: int = 200) -> dict[str, Any]:
    ts = f"2026-01-01T00:00:{second:09.6f}Z"
    ref = {"namespace": NS, "resource": resource, "name": name, **({"subresource": sub} if sub else {})}
    return {"user": {"username": user}, "verb": verb, "objectRef": ref, "requestReceivedTimestamp": ts,
            "stageTimestamp": ts, "responseStatus": {"code": code}}


def test_the_operators_time_and_the_clusters_time_add_up_to_apply_to_ready() -> None:
    events = [
        event("admin", "patch", "modeldeployments", "md0", 1.0),
        event("op", "patch", "deployments", "md0-v1", 3.0),
        event(DEPLOYMENT_CONTROLLER, "update", "deployments", "md0-v1", 4.0, sub="status"),
        event(DEPLOYMENT_CONTROLLER, "update", "deployments", "md0-v1", 7.0, sub="status"),
        event("op", "patch", "modeldeployments", "md0", 3.5, sub="status"),
        event("op", "patch", "modeldeployments", "md0", 7.5, sub="status"),
    ]

    [line] = timelines(events, NS, "op", "admin", {"md0": "md0-v1"})

    assert [t - T0 for t in (line.applied, line.children, line.deployment_ready, line.ready)] == [1.0, 3.0, 7.0, 7.5]
    assert line.operator_seconds == 2.5 and line.cluster_seconds == 4.0
    assert line.operator_seconds + line.cluster_seconds == line.apply_to_ready


def test_rejected_writes_and_reads_do_not_count_as_steps() -> None:
    events = [
        event("admin", "patch", "modeldeployments", "md0", 1.0),
        event("op", "patch", "deployments", "md0-v1", 2.0, code=429),
        event("op", "get", "deployments", "md0-v1", 2.5),
        event("op", "patch", "deployments", "md0-v1", 3.0),
        event("op", "patch", "modeldeployments", "md0", 4.0, sub="status"),
    ]

    [line] = timelines(events, NS, "op", "admin", {"md0": "md0-v1"})

    assert line.children - T0 == 3.0


def test_nearest_rank_percentile() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
