"""The real node's figures on this machine: pod create -> Ready, first inference after `kubectl apply`,
and the resident memory of the node's components.

    python bench/node_bench.py [--runs 3]     # starts the local cluster unless it runs

Pod create -> Ready: a pod of the runtime image with a readiness probe on a server it starts (no model).
First inference: a ModelVersion and a ModelDeployment (1 replica, real node) applied together, until
the first HTTP 200 through the Service's ClusterIP (verify Job, init container fetch, load, warm-up,
readiness, endpoints, kube-proxy); the operator runs as a process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.real_node import operator_on_real_node  # noqa: E402
from localcluster.harness import ClusterHandle, wait_for  # noqa: E402
from tests.e2e.conftest import ModelStore  # noqa: E402
from tests.e2e.helpers import model_deployment, model_version, service_url  # noqa: E402

PROBE_POD = {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ready"},
    "spec": {"containers": [{
        "name": "main", "command": ["python3", "-m", "http.server", "8080"],
        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
        "securityContext": {"runAsUser": 65532, "runAsNonRoot": True}}]},
}


def rss_mb(names: tuple[str, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
            status = (proc / "status").read_text()
        except OSError:
            continue
        name = Path(cmd).name
        if name.startswith("containerd-shim"):
            name = "containerd-shim (per pod)"
        if name in names or name == "containerd-shim (per pod)":
            kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
            out[name] = max(out.get(name, 0.0), kb / 1024)
    return out


def pod_ready_seconds(h: ClusterHandle, ns: str, image: str) -> float:
    pod = json.loads(json.dumps(PROBE_POD))
    pod["metadata"]["name"] = f"ready-{uuid.uuid4().hex[:6]}"
    pod["spec"]["containers"][0]["image"] = image
    t0 = time.monotonic()
    h.apply(json.dumps(pod), ns)
    wait_for("pod Ready", lambda: any(c["type"] == "Ready" and c["status"] == "True" for c in h.kubectl_json(
        "get", "pod", pod["metadata"]["name"], "-n", ns).get("status", {}).get("conditions", [])), 120, 0.05)
    return time.monotonic() - t0


def first_inference_seconds(h: ClusterHandle, ns: str, store: ModelStore, i: int) -> float:
    art = store.model(f"node-bench-{ns}-{i}.onnx")
    t0 = time.monotonic()
    h.apply(model_version(f"v{i}", art), ns)
    h.apply(model_deployment(f"m{i}", f"v{i}", replicas=1, kwok=False), ns)
    url = service_url(h, ns, f"m{i}", timeout=120, interval=0.1)
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}

    def answered() -> bool:
        return httpx.post(f"{url}/v2/models/linear/infer", json=body, timeout=2).status_code == 200
    wait_for("the first inference", answered, 300, 0.1)
    return time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with operator_on_real_node("node-bench") as bench:
        h, ns, store = bench.cluster, bench.namespace, bench.models
        ready = [pod_ready_seconds(h, ns, h.runtime_image) for _ in range(args.runs)]
        first = [first_inference_seconds(h, ns, store, i) for i in range(args.runs)]
        memory = rss_mb(("kubelet", "kube-proxy", "containerd"))
    result = {"pod_create_to_ready_s": ready, "first_inference_after_apply_s": first, "rss_mb": memory}
    runs = ", ".join(f"{x:.2f}" for x in ready)
    print(f"pod create -> Ready: median {statistics.median(ready):.2f} s (runs: {runs})")
    print(f"first inference after kubectl apply: median {statistics.median(first):.1f} s "
          f"(runs: {', '.join(f'{x:.1f}' for x in first)})")
    print("RSS: " + ", ".join(f"{k} {v:.0f} MB" for k, v in sorted(memory.items())))
    (REPO / "bench" / "results" / "node.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
