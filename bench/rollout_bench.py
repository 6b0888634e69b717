"""Rollout under load on the real node: for each strategy, four kinds of client (a new connection per
request, a keep-alive httpx pool, tritonclient.http, tritonclient.grpc) send inference requests at a fixed
rate each through the ModelDeployment's Service (kube-proxy) for a quiet baseline period, then through the
rollout v1 -> v2, then a little after. Reported per strategy: the rate, requests sent and failed (per
client), p99 latency during the rollout against p99 before it (the baseline of the same run), how long
the rollout took from `kubectl apply` until only v2's pods are left, and for the canary the share error
per client while its 50% step is held (answers of 2.0.0 against 0.5, once connections had two ages).

    python bench/rollout_bench.py [--rate 50] [--baseline-seconds 15] [--connection-age 5]

The serving pods are held to core 0 (the cpuset of the node's pod cgroups) and the prober to core 1,
so the load generator does not take the server's core. The operator runs as a process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.loadgen import CLIENT_CORE, SERVER_CORE  # noqa: E402
from bench.real_node import operator_on_real_node  # noqa: E402
from localcluster.harness import ClusterHandle, wait_for  # noqa: E402
from localcluster.hoststate import CGROUP_FS, CGROUP_ROOT  # noqa: E402
from localcluster.prober import ClientMix  # noqa: E402
from tests.e2e.helpers import (  # noqa: E402
    condition,
    model_deployment,
    model_version,
    replicas_by_version,
    service_url,
    wait_mv_phase,
    wait_until,
)

STRATEGIES: dict[str, tuple[int, dict[str, Any]]] = {
    "RollingUpdate": (3, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
    "Canary": (4, {"type": "Canary", "canary": {"steps": [{"weight": 25, "pause": "5s"},
                                                           {"weight": 50, "pause": "30s"}, {"weight": 100}]}}),
    "BlueGreen": (3, {"type": "BlueGreen", "blueGreen": {"autoPromote": True, "scaleDownDelaySeconds": 5}}),
}


@contextmanager
def pods_on_core(core: str) -> Iterator[bool]:
    """Every pod cgroup of the real node (and the ones kubelet creates meanwhile, which inherit it) on
    `core`; restored afterwards. cgroup v1 wants a parent's cpuset to cover its children's, so parents
    narrow last and widen first. Yields False (nothing pinned) where the cpuset hierarchy is not there."""
    top = CGROUP_FS / "cpuset" / CGROUP_ROOT / "kubepods"
    if not (top / "cpuset.cpus").exists() or (os.cpu_count() or 1) < 2:
        yield False
        return
    before = (top / "cpuset.cpus").read_text().strip()

    def write_all(value: str, deepest_first: bool) -> None:
        groups = sorted((p.parent for p in top.rglob("cpuset.cpus")), key=lambda p: len(p.parts),
                        reverse=deepest_first)
        for group in groups:
            with suppress(OSError):  # a pod's cgroup removed meanwhile
                (group / "cpuset.cpus").write_text(value)

    write_all(core, deepest_first=True)
    try:
        yield True
    finally:
        write_all(before, deepest_first=False)


def held_step(h: ClusterHandle, ns: str, name: str, mix: ClientMix, age: float) -> tuple[float, float] | None:
    """The window of the canary's 50% step in which every kept connection was placed anew twice."""
    md = wait_until(h, "md", ns, name, "the 50% step Ready", lambda o: ((o["status"].get("rollout") or {}).get(
        "weight") == 50 and replicas_by_version(h, ns, name) == {"v1": 2, "v2": 2}
        and o["status"].get("readyReplicas") == 4) or o["status"].get("servingVersion") == "v2", 300)
    if md["status"].get("servingVersion") == "v2":
        return None
    since = mix.elapsed() + 1.5 + 2 * 1.1 * age
    wait_until(h, "md", ns, name, "the 50% step over", lambda o: (o["status"].get("rollout") or {}).get(
        "weight") != 50, 300)
    return since, mix.elapsed() - 1


def one_rollout(h: ClusterHandle, ns: str, strategy: str, rate: float, baseline: float,
                age: float) -> dict[str, Any]:
    replicas, spec = STRATEGIES[strategy]
    name = f"web-{strategy.lower()}"
    runtime = {"maxConnectionAgeSeconds": int(age)}
    h.apply(model_deployment(name, "v1", replicas=replicas, kwok=False, strategy=spec, runtime=runtime), ns)
    wait_until(h, "md", ns, name, "v1 Ready", lambda o: condition(o, "Ready").get("status") == "True", 300)
    url = service_url(h, ns, name)
    mix = ClientMix(url, f"{url.removeprefix('http://')}:8081", "linear", rate=rate / 4, max_seconds=900).start()
    window = None
    try:
        time.sleep(baseline)
        changed = mix.elapsed()
        h.apply(model_deployment(name, "v2", replicas=replicas, kwok=False, strategy=spec, runtime=runtime), ns)
        if strategy == "Canary":
            window = held_step(h, ns, name, mix, age)
        wait_until(h, "md", ns, name, "v2 serving everything", lambda o: o["status"].get("servingVersion") == "v2"
                   and condition(o, "Ready").get("status") == "True", 600)
        wait_for("only v2's pods left", lambda: replicas_by_version(h, ns, name) == {"v2": replicas}, 300, 0.2)
        done = mix.elapsed()
        time.sleep(3)
    finally:
        report = mix.stop()
        h.kubectl("delete", "md", name, "-n", ns, "--wait=false", check=False)
    clients = {}
    for kind, one in report.reports.items():
        before, during = one.latency_ms(99, until=changed), one.latency_ms(99, since=changed, until=done)
        share = one.share("2.0.0", since=window[0], until=window[1]) if window else None
        clients[kind] = {"sent": one.total, "failed": one.failed, "p99_before_ms": round(before, 1),
                         "p99_during_ms": round(during, 1), "p99_ratio": round(during / before, 2) if before else None,
                         "held_50_share": None if share is None else round(share, 3),
                         "share_error": None if share is None else round(abs(share - 0.5), 3)}
    return {"strategy": strategy, "replicas": replicas, "rate": rate, "connection_age_s": age,
            "sent": report.total, "failed": report.failed,
            "failures": report.describe_failures() if report.failed else "",
            "rollout_seconds": round(done - changed, 1), "versions": dict(report.versions), "clients": clients}


def table(rows: list[dict[str, Any]], pinned: bool) -> str:
    lines = ["| strategy | client | rate (req/s) | sent | failed | p99 before (ms) | p99 during (ms) | "
             "during / before | held 50% share (error) | rollout (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for kind, c in r["clients"].items():
            held = "-" if c["held_50_share"] is None else f"{c['held_50_share']:.2f} ({c['share_error']:.2f})"
            lines.append(f"| {r['strategy']} ({r['replicas']} pods) | {kind} | {r['rate'] / 4:g} | {c['sent']} | "
                         f"{c['failed']} | {c['p99_before_ms']} | {c['p99_during_ms']} | {c['p99_ratio']} | {held} | "
                         f"{r['rollout_seconds']} |")
    where = (f"serving pods on core {SERVER_CORE}, clients on core {CLIENT_CORE}" if pinned
             else "pods and prober share the cores (no cpuset hierarchy or one core)")
    return "\n".join(lines) + f"\n\n({where})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second of the four clients together")
    parser.add_argument("--connection-age", type=float, default=5.0,
                        help="spec.runtime.maxConnectionAgeSeconds of the benchmark's ModelDeployments")
    parser.add_argument("--baseline-seconds", type=float, default=15.0, help="quiet load before each rollout")
    parser.add_argument("--strategy", choices=sorted(STRATEGIES), action="append",
                        help="only this strategy (repeatable; default all)")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with operator_on_real_node("rollout") as bench:
        h, ns, store = bench.cluster, bench.namespace, bench.models
        h.apply(model_version("v1", store.model(f"rollout-bench-{ns}-1.onnx")), ns)
        h.apply(model_version("v2", store.model(f"rollout-bench-{ns}-2.onnx", scale=2.0), version="2.0.0"), ns)
        wait_mv_phase(h, ns, "v1", "Ready", 300)
        wait_mv_phase(h, ns, "v2", "Ready", 300)
        affinity = os.sched_getaffinity(0)
        with pods_on_core(SERVER_CORE) as pinned:
            if pinned:
                os.sched_setaffinity(0, {int(CLIENT_CORE)})
            try:
                for strategy in args.strategy or list(STRATEGIES):
                    rows.append(one_rollout(h, ns, strategy, args.rate, args.baseline_seconds,
                                            args.connection_age))
                    print(f"{strategy}: {rows[-1]['sent']} sent, {rows[-1]['failed']} failed, "
                          f"rollout {rows[-1]['rollout_seconds']} s", flush=True)
            finally:
                os.sched_setaffinity(0, affinity)
    print("\nRollout under load (real node):\n" + table(rows, pinned))
    (REPO / "bench" / "results" / "rollout.json").write_text(json.dumps({"pinned": pinned, "rows": rows}, indent=2))
    if any(r["failed"] for r in rows):
        sys.exit("requests failed during a rollout: " + "; ".join(r["failures"] for r in rows if r["failed"]))


if __name__ == "__main__":
    main()
