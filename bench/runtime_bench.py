"""Runtime server benchmark: throughput and latency with dynamic batching, as ratios against the
same server without batching, measured in the same run on this machine (loopback only).

    python bench/runtime_bench.py [--seconds 10] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.models import make_model  # noqa: E402
from tests.runtime.conftest import ServerProcess, model_dir  # noqa: E402


def load(url: str, seconds: float, concurrency: int, features: int) -> dict[str, float]:
    body = {"inputs": [{"name": "x", "shape": [1, features], "datatype": "FP32", "data": [0.5] * features}]}
    latencies: list[float] = []
    errors = [0]
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def worker() -> None:
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                resp = client.post(url, json=body)
                dt = time.perf_counter() - t0
                with lock:
                    if resp.status_code == 200:
                        latencies.append(dt)
                    else:
                        errors[0] += 1
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    latencies.sort()
    return {"requests_per_s": len(latencies) / elapsed, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))], "errors": errors[0],
            "requests": len(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--features", type=int, default=1024, help="model input width (MatMul to 1024 outputs)")
    args = parser.parse_args()
    data = make_model(features=args.features, outputs=1024)
    root = REPO / "bench" / "results" / "runtime-tmp"
    results = {}
    for label, extra in (("baseline (no batching)", ()),
                         ("dynamic batching (max 32, 2 ms)", ("--max-batch-size", "32", "--max-delay-ms", "2"))):
        srv = ServerProcess(model_dir(root / label.split()[0], data), *extra, name="m")
        try:
            load(srv.infer_url, 2, args.concurrency, args.features)  # warm-up
            results[label] = load(srv.infer_url, args.seconds, args.concurrency, args.features)
        finally:
            srv.stop()
    base = results["baseline (no batching)"]
    print(f"\nruntime server, {args.features}x1024 MatMul model, {args.concurrency} concurrent clients, "
          f"{args.seconds:.0f} s each, loopback")
    print(f"{'configuration':34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs baseline':>12}")
    for label, r in results.items():
        print(f"{label:34} {r['requests_per_s']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
              f"{r['requests_per_s'] / base['requests_per_s']:11.2f}x")
    out = REPO / "bench" / "results" / "runtime.json"
    out.write_text(json.dumps({"concurrency": args.concurrency, "seconds": args.seconds, "results": results}, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
