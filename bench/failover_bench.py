"""Operator failover on the local control plane: two replicas with the default leader-election
settings; the leader is killed (SIGKILL, no release) or stopped (SIGTERM, Lease released) and the
time to the new leader's first reconcile is measured, over several runs.

    python bench/failover_bench.py [--runs 5]

Baseline, measured in the same run: a fresh single replica (`--leader-elect=false`) from process
start to its first reconcile, i.e. the least any handover can cost when the replacement starts cold.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from localcluster.harness import ClusterHandle, started_local_cluster, wait_for  # noqa: E402
from tests.e2e.conftest import OPERATOR_NAMESPACE, ModelStore  # noqa: E402
from tests.e2e.helpers import model_deployment, model_version, wait_ready  # noqa: E402
from tests.e2e.replicas import Replica, first_reconcile_after  # noqa: E402

ADMIN = ("system:masters",)


def handovers(handle: ClusterHandle, workdir: Path, runs: int, sig: int) -> list[float]:
    suffix = "kill" if sig == signal.SIGKILL else "term"
    leader = Replica(handle, f"bench-{suffix}-a", workdir, groups=ADMIN).start()
    wait_for("a leader", leader.leads, timeout=60)
    follower = Replica(handle, f"bench-{suffix}-b", workdir, groups=ADMIN).start()
    times = []
    rng = random.Random(sig)
    try:
        for _ in range(runs):
            wait_for("the follower to see the leader",
                     lambda f=follower, name=leader.name: f.health()["holder"] == name, 30)
            time.sleep(rng.uniform(0, 2))  # anywhere in the leader's 2 s renewal cycle, like a real crash
            started = time.monotonic()
            leader.process.stop(sig)
            times.append(first_reconcile_after(follower, started, timeout=90))
            leader.process.start()  # comes back as a follower
            wait_for("the restarted replica's /healthz", leader.health, timeout=30)
            leader, follower = follower, leader
    finally:
        leader.stop()
        follower.stop()
    return times


def cold_start(handle: ClusterHandle, workdir: Path, ns: str) -> float:
    """Seconds from a single replica's start to its first reconcile; it then brings `web` to Ready."""
    single = Replica(handle, "bench-single", workdir, "--leader-elect=false", groups=ADMIN)
    started = time.monotonic()
    single.process.start()
    try:
        wait_for("/healthz", single.health, timeout=30, interval=0.05)
        took = first_reconcile_after(single, started)
        wait_ready(handle, ns, "web", timeout=120)
        return took
    finally:
        single.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    _, handle = started_local_cluster()
    if not handle.kubectl("get", "namespace", OPERATOR_NAMESPACE, "--ignore-not-found", "-o", "name"):
        handle.create_namespace(OPERATOR_NAMESPACE)
    ns = f"failover-{int(time.time())}"
    handle.create_namespace(ns)
    workdir = Path(tempfile.mkdtemp(prefix="failover-bench-"))
    store = ModelStore(workdir)
    handle.apply(model_version("v1", store.model("failover.onnx")), ns)
    handle.apply(model_deployment("web", "v1", replicas=2), ns)
    try:
        baseline = cold_start(handle, workdir, ns)
        rows = {"SIGKILL (Lease expires)": handovers(handle, workdir, args.runs, signal.SIGKILL),
                "SIGTERM (Lease released)": handovers(handle, workdir, args.runs, signal.SIGTERM)}
    finally:
        store.httpd.shutdown()
        handle.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    print(f"baseline: a fresh single replica reconciles {baseline:.2f}s after its start")
    lines = ["| leader stopped by | runs | median | worst | vs baseline (median) |", "|---|---|---|---|---|"]
    for name, times in rows.items():
        median = statistics.median(times)
        lines.append(f"| {name} | {len(times)} | {median:.1f} s | {max(times):.1f} s | {median / baseline:.1f}x |")
    print("\n".join(lines))
    out = REPO / "bench" / "results" / "failover.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")  # the table docs/high-availability.md includes
    out.write_text(json.dumps({"baseline_seconds": baseline, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
