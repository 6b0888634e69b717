"""Scale-out egress and time with peer fetch on and off, on the real node, in the same run.

A ~1 GiB model (model.onnx + external weights, a folder source pinned by its file list) is verified once;
then for each mode a ModelDeployment serves it with 1 replica (`spec.runtime.peerFetch` true or false),
and `kubectl scale md --replicas=4` is timed until 4/4 pods are Ready, counting the body bytes the model
store (an HTTP server on the node IP) sent during the scale-out. The operator runs as a process.

    python bench/peer_fetch_bench.py [--gib 1.0]     # starts the local cluster unless it runs
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.large_model_bench import sha256_of  # noqa: E402
from bench.real_node import operator_on_real_node  # noqa: E402
from localcluster.harness import ClusterHandle, wait_for  # noqa: E402
from localcluster.models import make_external_data_model  # noqa: E402
from tests.e2e.conftest import ModelStore  # noqa: E402
from tests.e2e.helpers import GROUP, model_deployment, wait_mv_phase, wait_ready  # noqa: E402

RESULTS = REPO / "bench" / "results" / "peer_fetch.json"
OUTPUTS = 1024  # W is [features, 1024] FP32
SCALE_TO = 4


def publish(store: ModelStore, gib: float) -> tuple[dict[str, Any], int]:
    folder = store.root / "peer-bench"
    shutil.rmtree(folder, ignore_errors=True)
    make_external_data_model(folder, int(gib * (1 << 30)) // (4 * OUTPUTS), OUTPUTS)
    files = [{"path": p.name, "sha256": sha256_of(p)} for p in sorted(folder.iterdir())]
    host, port = store.httpd.server_address[:2]
    size = sum(p.stat().st_size for p in folder.iterdir())
    return {"uri": f"http://{host}:{port}/peer-bench/", "files": files}, size


def ready_count(h: ClusterHandle, ns: str, md: str) -> int:
    return int((h.kubectl_json("get", "md", md, "-n", ns).get("status") or {}).get("readyReplicas") or 0)


def scale_out(h: ClusterHandle, ns: str, store: ModelStore, peer_fetch: bool) -> dict[str, Any]:
    md = f"big-{'peer' if peer_fetch else 'source'}"
    runtime = {"peerFetch": peer_fetch, "prepack": False}
    h.apply(model_deployment(md, "big", replicas=1, kwok=False, runtime=runtime, progressDeadlineSeconds=1800), ns)
    wait_ready(h, ns, md, timeout=900)
    before = store.bytes_sent
    t0 = time.monotonic()
    h.kubectl("scale", "md", md, "-n", ns, f"--replicas={SCALE_TO}")
    wait_for(f"{SCALE_TO} pods of {md} Ready", lambda: ready_count(h, ns, md) >= SCALE_TO, 1200, 0.2)
    seconds = time.monotonic() - t0
    sent = store.bytes_sent - before
    mode = 'on' if peer_fetch else 'off'
    print(f"peer fetch {mode}: 1 -> {SCALE_TO} in {seconds:.1f} s, {sent} bytes from the store",
          flush=True)
    h.kubectl("delete", "md", md, "-n", ns, "--wait=true", "--timeout=300s")
    wait_for(f"{md}'s pods gone", lambda: not h.kubectl_json(
        "get", "pods", "-n", ns, "-l", f"serving.onnx-operator.io/deployment={md}")["items"], 300, 0.5)
    return {"peer_fetch": peer_fetch, "seconds_to_all_ready": seconds, "store_bytes": sent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0, help="model size in GiB")
    args = parser.parse_args()
    with operator_on_real_node("peer-bench") as bench:
        h, ns, store = bench.cluster, bench.namespace, bench.models
        source, size = publish(store, args.gib)
        h.apply(json.dumps({"apiVersion": GROUP, "kind": "ModelVersion", "metadata": {"name": "big"},
                            "spec": {"model": "ext", "version": "1.0.0", "source": source}}), ns)
        wait_mv_phase(h, ns, "big", "Ready", timeout=900)
        rows = [scale_out(h, ns, store, peer) for peer in (True, False)]
    print(f"model: {size / (1 << 30):.2f} GiB ({size} bytes), scaled 1 -> {SCALE_TO} on the real node")
    print("| peer fetch | bytes from the store | time to all Ready |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {'on' if r['peer_fetch'] else 'off'} | {r['store_bytes']} ({r['store_bytes'] / size:.2f}x the "
              f"model) | {r['seconds_to_all_ready']:.1f} s |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"model_bytes": size, "scale_to": SCALE_TO, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
