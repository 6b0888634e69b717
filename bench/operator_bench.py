"""Operator scale benchmark on the local control plane: time from applying N ModelDeployments to
all Ready, API writes per ModelDeployment (audit log), writes per minute at rest, operator RSS.

    python bench/operator_bench.py [--sizes 50,200] [--rss-objects 1000] [--rest-seconds 60]

N=50 is the baseline the larger runs are compared against (time per object).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from localcluster.harness import ClusterHandle, started_local_cluster, wait_for  # noqa: E402
from tests.e2e.conftest import ModelStore  # noqa: E402
from tests.e2e.helpers import model_deployment, model_version  # noqa: E402

USER = "onnx-operator-bench"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def apply_many(handle: ClusterHandle, ns: str, count: int, replicas: int) -> None:
    docs = [model_deployment(f"md{i}", "v1", replicas=replicas) for i in range(count)]
    for start in range(0, count, 100):  # one kubectl call per 100 objects
        handle.kubectl("apply", "--server-side", "-n", ns, "-f", "-", input="\n".join(docs[start:start + 100]))


def count_ready(handle: ClusterHandle, ns: str) -> int:
    items = handle.kubectl_json("get", "md", "-n", ns)["items"]
    return sum(1 for o in items if any(c["type"] == "Ready" and c["status"] == "True"
                                       for c in o.get("status", {}).get("conditions", [])))


def writes(handle: ClusterHandle, since: float, ns: str | None = None) -> int:
    return sum(1 for w in handle.writes_by(USER, since) if ns is None or w.get("objectRef", {}).get("namespace") == ns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="50,200")
    parser.add_argument("--rss-objects", type=int, default=1000)
    parser.add_argument("--rest-seconds", type=float, default=60)
    args = parser.parse_args()
    cluster, handle = started_local_cluster()
    kubeconfig = handle.user_kubeconfig(USER, ("system:masters",))
    (REPO / "bench" / "results" / "models").mkdir(parents=True, exist_ok=True)
    store = ModelStore(REPO / "bench" / "results" / "models")
    art = store.model("bench.onnx")
    log = (cluster.paths.logs / "bench-operator.log").open("ab")
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    # verify Jobs run on the real node (its runtime image); serving pods go to the kwok nodes (helpers' default)
    op = subprocess.Popen([sys.executable, "-m", "onnx_operator", "--runtime-image", cluster.images()["runtime"]],
                          stdout=log, stderr=subprocess.STDOUT, env=env)
    rows: list[dict[str, float]] = []
    try:
        for n in [int(x) for x in args.sizes.split(",")]:
            ns = f"bench-{n}-{hashlib.sha1(str(time.time()).encode()).hexdigest()[:5]}"
            handle.create_namespace(ns)
            handle.apply(model_version("v1", art), ns)
            wait_for("v1 verified", lambda ns=ns: handle.kubectl_json("get", "mv", "v1", "-n", ns).get(
                "status", {}).get("phase") == "Ready", timeout=120)
            since = time.time()
            t0 = time.monotonic()
            apply_many(handle, ns, n, replicas=1)
            wait_for(f"{n} Ready", lambda ns=ns, n=n: count_ready(handle, ns) == n, timeout=1200, interval=1)
            elapsed = time.monotonic() - t0
            total = writes(handle, since, ns)
            rows.append({"n": n, "seconds_to_ready": elapsed, "writes_per_md": total / n})
            print(f"N={n}: all Ready in {elapsed:.1f}s, {total / n:.1f} API writes per ModelDeployment", flush=True)
        time.sleep(5)
        since = time.time()
        time.sleep(args.rest_seconds)
        at_rest = writes(handle, since) * 60 / args.rest_seconds
        print(f"at rest: {at_rest:.1f} API writes per minute", flush=True)
        ns = "bench-rss"
        handle.create_namespace(ns)
        handle.apply(model_version("v1", art), ns)
        apply_many(handle, ns, args.rss_objects, replicas=0)
        wait_for("every object reconciled", lambda: sum(
            1 for o in handle.kubectl_json("get", "md", "-n", ns)["items"]
            if o.get("status", {}).get("observedGeneration")) == args.rss_objects, timeout=1800, interval=2)
        rss = rss_mb(op.pid)
        print(f"operator RSS with {args.rss_objects} more ModelDeployments: {rss:.0f} MB", flush=True)
    finally:
        op.terminate()
        op.wait(timeout=30)
        for ns in [f for f in handle.kubectl("get", "ns", "-o", "name").split() if "bench-" in f]:
            handle.kubectl("delete", ns, "--wait=false", check=False)
    base = rows[0]["seconds_to_ready"] / rows[0]["n"]
    print(f"\n{'N':>6} {'to Ready (s)':>13} {'s per MD':>9} {'vs N=' + str(rows[0]['n']):>9} {'writes/MD':>10}")
    for r in rows:
        per = r["seconds_to_ready"] / r["n"]
        print(f"{r['n']:6.0f} {r['seconds_to_ready']:13.1f} {per:9.3f} {per / base:8.2f}x {r['writes_per_md']:10.1f}")
    print(f"writes/min at rest: {at_rest:.1f} (goal 0)   RSS at {args.rss_objects} objects: {rss:.0f} MB "
          "(target < 200 MB)   200 to Ready target: < 60 s")
    out = REPO / "bench" / "results" / "operator.json"
    out.write_text(json.dumps({"runs": rows, "writes_per_minute_at_rest": at_rest,
                               "rss_mb": rss, "rss_objects": args.rss_objects}, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
