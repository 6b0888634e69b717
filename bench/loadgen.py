"""Standard load generators for runtime_bench.py: `wrk` (Debian package) with one fixed body per format, and
Triton's `perf_analyzer` (from the tritonclient wheel, in its own cached venv). Each runs pinned to a core
of its own with taskset; every run is bounded in time."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

CACHE = Path(os.environ.get("ONNX_OPERATOR_CACHE", Path.home() / ".cache" / "onnx-operator"))
TRITONCLIENT = "2.50.0"
CLIENT_CORE, SERVER_CORE = "1", "0"
WRK_SCRIPT = """
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb")); wrk.body = f:read("*a"); f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
if os.getenv("BENCH_HEADER_LENGTH") ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = os.getenv("BENCH_HEADER_LENGTH")
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "duration_us": %d, "errors": %d, "p50_us": %d, "p99_us": %d, '
    .. '"mean_us": %.1f}\\n', summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout + e.status,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def ensure_apt(*packages: str) -> None:
    """Installs missing Debian packages (the bench needs wrk and libb64; tests do not)."""
    missing = [p for p in packages if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode]
    if missing:
        print(f"installing {' '.join(missing)} with apt-get", flush=True)
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run([*sudo, "apt-get", "install", "-y", "-q", *missing], check=True, timeout=600)


def cached_venv(name: str, *requirements: str) -> Path:
    """A venv under the cache with `requirements` installed, made once per machine (and topped up when the list
    grows); returns its python."""
    venv = CACHE / f"{name}-venv"
    done, wanted = venv / ".complete", "\n".join(requirements)
    installed = done.read_text() if done.exists() else None
    if installed != wanted:
        print(f"installing {' '.join(requirements)} into {venv} (once per machine)", flush=True)
        if installed is None:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *requirements], check=True,
                       timeout=1800)
        done.write_text(wanted)
    return venv / "bin" / "python"


def perf_analyzer() -> tuple[Path, dict[str, str]]:
    """perf_analyzer from the tritonclient wheel, and the environment that finds its libcudart."""
    ensure_apt("libb64-0d")
    python = cached_venv(f"tritonclient-{TRITONCLIENT}", f"tritonclient[http]=={TRITONCLIENT}",
                         "nvidia-cuda-runtime-cu12")
    libs = next(python.parent.parent.glob("lib/python*/site-packages/nvidia/cuda_runtime/lib"))
    return python.parent / "perf_analyzer", {**os.environ, "LD_LIBRARY_PATH": str(libs)}


def wrk(port: int, path: str, body: bytes, headers: dict[str, str], seconds: float, concurrency: int,
        work: Path, scheme: str = "http") -> dict[str, Any]:
    """`scheme="https"`: wrk speaks TLS (it does not verify the certificate: loopback only)."""
    ensure_apt("wrk")
    (work / "body.bin").write_bytes(body)
    (work / "bench.lua").write_text(WRK_SCRIPT)
    env = {**os.environ, "BENCH_BODY": str(work / "body.bin"),
           "BENCH_CONTENT_TYPE": headers.get("Content-Type", "application/json"),
           "BENCH_HEADER_LENGTH": headers.get("Inference-Header-Content-Length", "")}
    out = subprocess.run(["taskset", "-c", CLIENT_CORE, shutil.which("wrk") or "wrk", "-t1", f"-c{concurrency}",
                          f"-d{seconds:g}s", "--timeout", "10s", "-s", str(work / "bench.lua"),
                          f"{scheme}://127.0.0.1:{port}{path}"], env=env, capture_output=True, text=True,
                         timeout=seconds + 60, check=True).stdout
    stats = json.loads(out.strip().splitlines()[-1])
    return {"requests_per_s": stats["requests"] / (stats["duration_us"] / 1e6), "p50_us": stats["p50_us"],
            "p99_us": stats["p99_us"], "mean_us": stats["mean_us"], "errors": stats["errors"]}


def perf_input(name: str, array: np.ndarray, batched: bool) -> dict[str, Any]:
    """perf_analyzer's --input-data file: one fixed realistic input (shape without the batch dimension)."""
    shape = list(array.shape[1:] if batched else array.shape)
    return {"data": [{name: {"content": array.reshape(-1).tolist(), "shape": shape}}]}


def perf(port: int, model: str, inputs: dict[str, Any], binary: bool, seconds: float, concurrency: int,
         work: Path) -> dict[str, Any]:
    """Three time windows filling `seconds`, with a stability threshold that always passes: its check never
    settles on a busy shared machine, and --request-count reports the count over whole seconds."""
    binary_path, env = perf_analyzer()
    (work / "input.json").write_text(json.dumps(inputs))
    fmt = "binary" if binary else "json"
    cmd = ["taskset", "-c", CLIENT_CORE, str(binary_path), "-m", model, "-u", f"127.0.0.1:{port}", "-i", "http",
           "--concurrency-range", str(concurrency), "--measurement-interval", str(max(500, int(seconds * 1000 / 3))),
           "--stability-percentage", "999", "--max-trials", "3",
           "--input-data", str(work / "input.json"), "--input-tensor-format", fmt, "--output-tensor-format", fmt,
           "-f", str(work / "perf.csv")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode:
        raise RuntimeError(f"perf_analyzer failed: {(proc.stdout + proc.stderr)[-1500:]}")
    row = next(csv.DictReader((work / "perf.csv").open()))
    return {"requests_per_s": float(row["Inferences/Second"]), "p50_us": float(row["p50 latency"]),
            "p99_us": float(row["p99 latency"]), "mean_us": float(row.get("Avg latency") or "nan"), "errors": 0}
