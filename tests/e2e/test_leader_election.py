"""Two operator replicas on the local control plane, one Lease: a SIGKILLed leader hands its canary
over to the follower mid-step, a leader cut off from the API server stops acting before the follower
takes over, and the audit log shows the two identities writing one at a time."""

from __future__ import annotations

import datetime as dt
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.harness import ClusterHandle, wait_for
from tests.e2e.conftest import ModelStore
from tests.e2e.helpers import (
    condition,
    model_deployment,
    rollout,
    two_versions,
    wait_ready,
    wait_until,
)
from tests.e2e.replicas import REPLICA_BINDINGS, Replica, first_reconcile_after

pytestmark = pytest.mark.cluster
STEPS = {"type": "Canary", "canary": {"steps": [{"weight": 25, "pause": "2s"}, {"weight": 50, "pause": "25s"},
                                                {"weight": 75, "pause": "2s"}, {"weight": 100}]}}


@pytest.fixture(scope="module")
def replica_rbac(cluster: ClusterHandle, crds: None, operator_kubeconfig: Path) -> None:
    cluster.apply(REPLICA_BINDINGS)


@pytest.fixture()
def pair(cluster: ClusterHandle, replica_rbac: None, tmp_path: Path) -> Iterator[tuple[Replica, Replica]]:
    """Replica a leading, replica b following it."""
    suffix = uuid.uuid4().hex[:6]
    a, b = Replica(cluster, f"ha-a-{suffix}", tmp_path), Replica(cluster, f"ha-b-{suffix}", tmp_path)
    try:
        a.start()
        wait_for("a to lead", a.leads, timeout=40)
        b.start()
        wait_for("b to follow a", lambda: b.health()["holder"] == a.name, timeout=30)
        assert not b.leads()
        yield a, b
    finally:
        for replica in (a, b):
            replica.stop()
            print(f"\n--- {replica.name} log (tail) ---\n" + "\n".join(replica.log().splitlines()[-25:]))


def _ts(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def assert_one_writer_at_a_time(cluster: ClusterHandle, first: Replica, second: Replica, since: float) -> None:
    """Every write of `first` was answered before the first write of `second` arrived."""
    before, after = cluster.writes_by(first.name, since), cluster.writes_by(second.name, since)
    assert before and after, "both replicas wrote during the test"
    last = max(_ts(e["stageTimestamp"]) for e in before)
    took_over = min(_ts(e["requestReceivedTimestamp"]) for e in after)
    assert last < took_over, f"{first.name} wrote until {last}, {second.name} from {took_over}"


def step_events(cluster: ClusterHandle, ns: str) -> list[str]:
    events = cluster.kubectl_json("get", "events", "-n", ns, "--field-selector", "reason=StepAdvanced")["items"]
    return [e["message"] for e in sorted(events, key=lambda e: e["firstTimestamp"]) for _ in range(e["count"])]


def test_killed_leader_hands_its_canary_over_mid_step(
        cluster: ClusterHandle, namespace: str, models: ModelStore, pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    two_versions(cluster, namespace, models, "ha")
    cluster.apply(model_deployment("web", "v1", replicas=4, strategy=STEPS), namespace)
    wait_ready(cluster, namespace, "web")
    since = time.time()
    cluster.apply(model_deployment("web", "v2", replicas=4, strategy=STEPS), namespace)
    before = wait_until(cluster, "md", namespace, "web", "step 2 served and pausing", lambda o: (
        o["status"].get("rollout") or {}).get("stepIndex") == 1 and o["status"]["rollout"].get("stepReadyAt"),
        timeout=90)["status"]["rollout"]

    killed = time.monotonic()
    a.process.stop(signal.SIGKILL)

    failover = first_reconcile_after(b, killed)
    print(f"failover: {failover:.1f}s from SIGKILL to the new leader's first reconcile")
    assert b.leads() and b.health()["holder"] == b.name
    resumed = rollout(cluster, namespace, "web")
    assert resumed["stepIndex"] == 1, "the new leader continues the step the old one was in"
    assert resumed["stepReadyAt"] == before["stepReadyAt"], "the step's pause is not restarted"
    assert resumed["startedAt"] == before["startedAt"], "the same rollout, not a new one"
    md = wait_until(cluster, "md", namespace, "web", "v2 serving", lambda o: o["status"].get(
        "servingVersion") == "v2" and condition(o, "Ready").get("status") == "True", timeout=120)
    assert step_events(cluster, namespace) == [f"v2: step {i}/4 at weight {w}%" for i, w in
                                               ((2, 50), (3, 75), (4, 100))], "each step entered exactly once"
    v2_entries = [h for h in md["status"]["history"] if h["version"] == "v2"]
    assert [h["result"] for h in v2_entries] == ["Succeeded"], "one history entry for the rollout"
    assert condition(md, "RolledBack").get("status") != "True"
    assert not cluster.kubectl_json("get", "events", "-n", namespace, "--field-selector", "reason=RolledBack")["items"]
    assert_one_writer_at_a_time(cluster, a, b, since)


def test_partitioned_leader_stops_acting_before_the_follower_takes_over(
        cluster: ClusterHandle, namespace: str, models: ModelStore, pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    since = time.time()
    two_versions(cluster, namespace, models, "partition")
    cluster.apply(model_deployment("web", "v1", replicas=2), namespace)
    wait_ready(cluster, namespace, "web")
    seen: dict[str, float] = {}

    a.proxy.cut()
    cut = time.monotonic()

    def b_leads() -> bool:
        now = time.monotonic()
        if "a stopped" not in seen and not a.leads():
            seen["a stopped"] = now - cut
        if b.leads():
            seen["b leads"] = now - cut
        return "b leads" in seen
    wait_for("b to take over", b_leads, timeout=60, interval=0.05)

    print(f"after the cut: a stopped acting at {seen.get('a stopped', -1):.1f}s, b led at {seen['b leads']:.1f}s")
    assert "a stopped" in seen and seen["a stopped"] < seen["b leads"]
    assert a.process.alive() and "Stopped leading" in a.log()
    cluster.apply(model_deployment("web", "v2", replicas=2), namespace)
    md = wait_until(cluster, "md", namespace, "web", "v2 serving (b acts)", lambda o: o["status"].get(
        "servingVersion") == "v2" and condition(o, "Ready").get("status") == "True", timeout=120)
    assert md["status"]["history"][-1]["version"] == "v2"

    healed = time.time()
    a.proxy.heal()

    wait_for("a to see b's Lease again", lambda: a.health()["holder"] == b.name, timeout=30)
    assert not a.leads()
    assert cluster.writes_by(a.name, healed) == [], "a rejoins as a follower and writes nothing"
    assert_one_writer_at_a_time(cluster, a, b, since)
    assert [e for e in cluster.audit_events() if e.get("user", {}).get("username") in (a.name, b.name)
            and e.get("objectRef", {}).get("resource") == "leases"
            and e.get("responseStatus", {}).get("code") == 403] == [], "the chart's RBAC covers the Lease"
