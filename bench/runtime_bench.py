"""Runtime server benchmark, every number measured in the same run on this machine (loopback only).

Side by side, with one load generator (keep-alive HTTP/1.1 connections, pre-encoded requests):
  raw        InferenceSession.run in-process: the limit
  onnx-server  this project's server (`onnx-server serve`)
  kserve     KServe's Python ModelServer hosting the same ONNX model with onnxruntime (its own venv,
             built once under $ONNX_OPERATOR_CACHE; --no-kserve skips it)
on a small model at concurrency 1, 8 and 32, then the dynamic batching gain on a small CNN at the
highest concurrency. Prints a table and writes bench/results/runtime.json.

    python bench/runtime_bench.py [--seconds 5] [--concurrency 1,8,32] [--no-kserve]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.cluster.harness import terminate, wait_for  # noqa: E402
from tests.models import make_model  # noqa: E402
from tests.runtime.conftest import ServerProcess, free_port, model_dir  # noqa: E402
from tests.runtime.models import small_cnn  # noqa: E402

KSERVE = "0.21.0"
CACHE = Path(os.environ.get("ONNX_OPERATOR_CACHE", Path.home() / ".cache" / "onnx-operator"))
RESULTS = REPO / "bench" / "results" / "runtime.json"
TARGETS = {"throughput_vs_kserve_at_32": 2.0, "overhead_us": 300.0, "batching_gain": 3.0}


def summarize(latencies: list[float], elapsed: float, errors: int) -> dict[str, float]:
    latencies.sort()
    n = len(latencies)
    return {"requests_per_s": n / elapsed, "p50_us": 1e6 * latencies[n // 2] if n else 0.0,
            "p99_us": 1e6 * latencies[int(0.99 * (n - 1))] if n else 0.0,
            "mean_us": 1e6 * statistics.fmean(latencies) if n else 0.0, "requests": n, "errors": errors}


def http_request(port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"127.0.0.1:{port}", "Content-Length": str(len(body)),
                                                 **headers}.items())
    return f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + body


async def _connection(port: int, request: bytes, stop_at: float, latencies: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                          if line.startswith(b"content-length:"))
            await reader.readexactly(length)
            if head[9:12] == b"200":
                latencies.append(time.perf_counter() - start)
            else:
                errors[0] += 1
    finally:
        writer.close()


def http_load(port: int, request: bytes, seconds: float, concurrency: int) -> dict[str, float]:
    async def run() -> dict[str, float]:
        latencies: list[float] = []
        errors = [0]
        start = time.perf_counter()
        await asyncio.gather(*(_connection(port, request, start + seconds, latencies, errors)
                               for _ in range(concurrency)))
        return summarize(latencies, time.perf_counter() - start, errors[0])

    import uvloop  # the server extra installs it; the client must not be the bottleneck

    return uvloop.run(run())


def raw_load(session: ort.InferenceSession, feeds: dict[str, np.ndarray], seconds: float,
             concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    def worker() -> None:
        mine = []
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            session.run(None, feeds)
            mine.append(time.perf_counter() - start)
        latencies.extend(mine)
    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summarize(latencies, time.perf_counter() - start, 0)


def session(data: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def kserve_python() -> Path:
    """A venv with kserve (pinned), onnxruntime and numpy; made once per machine."""
    venv = CACHE / f"kserve-{KSERVE}-venv"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        print(f"installing kserve {KSERVE} into {venv} (once per machine)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"kserve=={KSERVE}", "onnxruntime", "numpy"],
                       check=True)
        (venv / ".complete").touch()
    return python


class KServeProcess:
    def __init__(self, model: Path, name: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [str(kserve_python()), str(REPO / "bench" / "kserve_onnx_server.py"), "--model", str(model),
             "--name", name, "--threads", "1", "--http_port", str(self.port), "--configure_logging", "false"],
            stdout=(model.parent / "kserve.log").open("wb"), stderr=subprocess.STDOUT)
        wait_for("the KServe server", self._ready, timeout=120)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"kserve exited {self.proc.returncode}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/v2/models/m/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        terminate(self.proc)


def measure(port: int, request: bytes, seconds: float, concurrency: int) -> dict[str, float]:
    http_load(port, request, min(1.0, seconds), concurrency)  # warm-up
    return http_load(port, request, seconds, concurrency)


def small_model_rows(tmp: Path, seconds: float, levels: list[int], with_kserve: bool) -> list[dict[str, Any]]:
    data = make_model()
    x = np.asarray([[0.5, -1.0, 2.0, 0.25]], dtype=np.float32)
    body = json.dumps({"id": "1", "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                              "data": x.reshape(-1).tolist()}]}).encode()
    rows = [{"server": "raw", "concurrency": c, **raw_load(session(data), {"x": x}, seconds, c)} for c in levels]
    ours = ServerProcess(model_dir(tmp / "ours", data), "--threads", "1", name="m")
    try:
        request = http_request(ours.port, "/v2/models/m/infer", body, {"Content-Type": "application/json"})
        rows += [{"server": "onnx-server", "concurrency": c, **measure(ours.port, request, seconds, c)}
                 for c in levels]
    finally:
        ours.stop()
    if with_kserve:
        kserve = KServeProcess(model_dir(tmp / "kserve", data) / "model.onnx", "m")
        try:
            request = http_request(kserve.port, "/v2/models/m/infer", body, {"Content-Type": "application/json"})
            rows += [{"server": "kserve", "concurrency": c, **measure(kserve.port, request, seconds, c)}
                     for c in levels]
        finally:
            kserve.stop()
    return rows


CNNS = {"cnn": {}, "cnn-dense": {"dense_head": 512}}  # global-pooling head; VGG-style dense head


def cnn_rows(tmp: Path, seconds: float, concurrency: int, kind: str) -> list[dict[str, Any]]:
    data = small_cnn(**CNNS[kind])
    image = np.random.default_rng(3).random((1, 3, 32, 32), dtype=np.float32)
    sess = session(data)
    rows: list[dict[str, Any]] = []
    for batch in (1, 32):
        run = raw_load(sess, {"image": np.repeat(image, batch, axis=0)}, seconds, 1)
        rows.append({"model": kind, "server": f"raw batch {batch}", "concurrency": 1, **run,
                     "samples_per_s": run["requests_per_s"] * batch})
    blob = image.tobytes()
    head = json.dumps({"inputs": [{"name": "image", "shape": [1, 3, 32, 32], "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(blob)}}]}).encode()
    for label, extra in (("onnx-server", ()), ("onnx-server batching", ("--max-batch-size", "32",
                                                                       "--max-delay-ms", "5"))):
        srv = ServerProcess(model_dir(tmp / f"{kind}-{label.replace(' ', '-')}", data), "--threads", "1", *extra,
                            name="cnn")
        try:
            request = http_request(srv.port, "/v2/models/cnn/infer", head + blob, {
                "Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"})
            run = measure(srv.port, request, seconds, concurrency)
            rows.append({"model": kind, "server": label, "concurrency": concurrency, **run,
                         "samples_per_s": run["requests_per_s"]})
        finally:
            srv.stop()
    return rows


def find(rows: list[dict[str, Any]], server: str, concurrency: int, model: str | None = None) -> dict[str, Any] | None:
    return next((r for r in rows if r["server"] == server and r["concurrency"] == concurrency
                 and r.get("model") == model), None)


def verdicts(small: list[dict[str, Any]], cnn: list[dict[str, Any]], top: int) -> dict[str, Any]:
    ours, raw, kserve = find(small, "onnx-server", top), find(small, "raw", 1), find(small, "kserve", top)
    ours1 = find(small, "onnx-server", 1)
    out: dict[str, Any] = {}
    if ours and kserve:
        out["throughput_vs_kserve_at_32"] = ours["requests_per_s"] / kserve["requests_per_s"]
    if ours1 and raw:
        out["overhead_us"] = ours1["mean_us"] - raw["mean_us"]
    for kind in CNNS:
        plain, batched = find(cnn, "onnx-server", top, kind), find(cnn, "onnx-server batching", top, kind)
        if plain and batched:
            out[f"batching_gain_{kind}"] = batched["requests_per_s"] / plain["requests_per_s"]
    return out


def print_table(title: str, rows: list[dict[str, Any]], baseline: dict[str, Any] | None) -> None:
    print(f"\n{title}")
    print(f"{'server':22} {'conc':>5} {'req/s':>9} {'p50 us':>9} {'p99 us':>9} {'mean us':>9} "
          f"{'vs base':>8} {'err':>4}")
    for r in rows:
        ratio = f"{r['requests_per_s'] / baseline['requests_per_s']:7.2f}x" if baseline else ""
        print(f"{r['server']:22} {r['concurrency']:5d} {r['requests_per_s']:9.0f} {r['p50_us']:9.0f} "
              f"{r['p99_us']:9.0f} {r['mean_us']:9.0f} {ratio:>8} {r['errors']:4d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5, help="measurement time per row")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--no-kserve", action="store_true", help="skip KServe (no venv install)")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="runtime-bench-") as tmp:
        small = small_model_rows(Path(tmp), args.seconds, levels, not args.no_kserve)
        cnn = [row for kind in CNNS for row in cnn_rows(Path(tmp), args.seconds, max(levels), kind)]
    print(f"\nmachine: {os.cpu_count()} cores; onnxruntime {ort.__version__}, 1 intra-op thread everywhere; "
          f"{args.seconds:.0f} s per row; loopback")
    print_table("small model (4x2 linear, JSON tensors); baseline: raw InferenceSession.run at concurrency 1",
                small, find(small, "raw", 1))
    for kind, head in (("cnn", "global pooling + dense 10"), ("cnn-dense", "flatten + dense 512 + dense 10")):
        print_table(f"small CNN `{kind}` (2 conv, {head}; 3x32x32 binary tensors); "
                    "baseline: onnx-server without batching", [r for r in cnn if r["model"] == kind],
                    find(cnn, "onnx-server", max(levels), kind))
    results = verdicts(small, cnn, max(levels))
    print("\ntargets (from the issue):")
    for key, value in results.items():
        target = TARGETS[key.split("_cnn")[0]]
        met = value <= target if key == "overhead_us" else value >= target
        unit = " us" if key == "overhead_us" else "x"
        print(f"  {key:28} {value:8.2f}{unit}  target {'<=' if key == 'overhead_us' else '>='} {target:g}{unit}  "
              f"{'met' if met else 'NOT met'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"seconds": args.seconds, "cores": os.cpu_count(), "small_model": small,
                                   "cnn": cnn, "ratios": results, "targets": TARGETS}, indent=2))
    print(f"written {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
