"""Model size vs start-up, every number measured in the same run on this machine (loopback only).

For generated models whose weights are external data (a tiny baseline, ~100 MB, ~1 GB and, with --big,
~2.5 GB: over protobuf's 2 GB cap) the steps a serving pod takes are timed:
  fetch   `onnx-server fetch` of the folder from a model store (an HTTP server on 127.0.0.1), pinned by
          its file list: download and sha256 of every file, placed atomically
  load    `onnx-server serve` from start to ready: onnxruntime loads model.onnx with its external data,
          then the warm-up run
  infer   the first inference request
with the peak RSS (VmHWM) of the fetch and of the server. The store runs on core 1, fetch and server on
core 0 (taskset). Ratios are against the tiny baseline of the same run. Prints a table and writes
bench/results/large_models.json.

    python bench/large_model_bench.py [--big] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from localcluster.harness import terminate, wait_for  # noqa: E402
from localcluster.models import make_external_data_model  # noqa: E402
from tests.runtime.conftest import free_port  # noqa: E402

RESULTS = REPO / "bench" / "results" / "large_models.json"
OUTPUTS = 1024  # W is [features, 1024] FP32: features set the size
SIZES = {"tiny": 1 << 20, "100MB": 100 << 20, "1GB": 1 << 30}
BIG = {"2.5GB": 5 << 29}


def pinned(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def timed_fetch(url: str, files: list[dict[str, str]], dest: Path) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of `onnx-server fetch`."""
    started = time.perf_counter()
    proc = subprocess.Popen([*pinned(0), sys.executable, "-m", "onnx_server.cli", "fetch", "--uri", url,
                             *[a for f in files for a in ("--file", f"{f['path']}={f['sha256']}")],
                             "--dest", str(dest), "--max-bytes", str(8 << 30)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"fetch failed: {proc.stdout.read().decode() if proc.stdout else ''}")
    return elapsed, usage.ru_maxrss / 1024


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def timed_serve(model_dir: Path, features: int, *extra: str) -> dict[str, float]:
    port = free_port()
    log = (model_dir.parent / "server.log").open("wb")
    started = time.perf_counter()
    proc = subprocess.Popen([*pinned(0), sys.executable, "-m", "onnx_server.cli", "serve", "--model-dir",
                             str(model_dir), "--name", "big", "--version", "1", "--port", str(port), *extra],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = started + 900
        while not _ready(url):  # bounded: at most 900 s, and only while the server runs
            if proc.poll() is not None or time.perf_counter() > deadline:
                raise RuntimeError(f"server not ready (exit code {proc.returncode}): see {log.name}")
            time.sleep(0.05)
        load = time.perf_counter() - started
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, features],
                            "data": np.ones(features, dtype=np.float32).tolist()}]}
        t0 = time.perf_counter()
        resp = httpx.post(f"{url}/v2/models/big/infer", json=body, timeout=120)
        infer = time.perf_counter() - t0
        if resp.status_code != 200:
            raise RuntimeError(f"inference failed: HTTP {resp.status_code} {resp.text[:300]}")
        return {"load_s": load, "infer_s": infer, "server_peak_rss_mib": peak_rss_mib(proc.pid)}
    finally:
        terminate(proc)
        log.close()


def measure(name: str, size: int, work: Path, store_root: Path, store_port: int) -> list[dict[str, Any]]:
    """One row per server variant (default, --no-prepack) for a model fetched once."""
    features = max(1, size // (4 * OUTPUTS))
    src = store_root / name
    make_external_data_model(src, features, OUTPUTS)
    files = [{"path": p.name, "sha256": sha256_of(p)} for p in sorted(src.iterdir())]
    total = sum(p.stat().st_size for p in src.iterdir())
    dest = work / f"{name}-served" / "models"
    dest.mkdir(parents=True)
    subprocess.run(["sync"], check=False)
    fetch_s, fetch_rss = timed_fetch(f"http://127.0.0.1:{store_port}/{name}/", files, dest)
    rows = []
    for variant, extra in (("default", ()), ("--no-prepack", ("--no-prepack",))):
        row: dict[str, Any] = {"model": name, "server": variant, "size_mib": total / (1 << 20), "fetch_s": fetch_s,
                               "fetch_peak_rss_mib": fetch_rss, **timed_serve(dest, features, *extra)}
        row["startup_s"] = row["fetch_s"] + row["load_s"] + row["infer_s"]
        rows.append(row)
    shutil.rmtree(src)
    shutil.rmtree(dest.parent)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big", action="store_true", help="also a ~2.5 GB model (needs ~6 GB of free disk)")
    parser.add_argument("--workdir", type=Path, default=None, help="where models are generated (default: a temp dir)")
    args = parser.parse_args()
    sizes = {**SIZES, **(BIG if args.big else {})}
    with tempfile.TemporaryDirectory(prefix="large-model-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        need = 2.2 * max(sizes.values())
        if shutil.disk_usage(work).free < need:
            raise SystemExit(f"not enough free disk in {work}: need {need / (1 << 30):.1f} GiB")
        store_root = work / "store"
        store_root.mkdir()
        port = free_port()
        store = subprocess.Popen([*pinned(1), sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                  "--directory", str(store_root)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            wait_for("the model store", lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200,
                     timeout=30)
            measure("warm-up", SIZES["tiny"], work, store_root, port)  # imports and page cache, not counted
            rows = [row for name, size in sizes.items() for row in measure(name, size, work, store_root, port)]
        finally:
            terminate(store)
    for row in rows:
        base = next(r for r in rows if r["model"] == "tiny" and r["server"] == row["server"])
        row["startup_vs_tiny"] = row["startup_s"] / base["startup_s"]
        row["rss_per_model_mib"] = (row["server_peak_rss_mib"] - base["server_peak_rss_mib"]) / row["size_mib"]
    print(f"{'model':>6} {'server':>12} {'MiB':>6} {'fetch s':>8} {'load s':>7} {'infer s':>8} {'start-up s':>10} "
          f"{'x tiny':>7} {'server RSS MiB':>15} {'fetch RSS MiB':>14}")
    for r in rows:
        print(f"{r['model']:>6} {r['server']:>12} {r['size_mib']:6.0f} {r['fetch_s']:8.2f} {r['load_s']:7.2f} "
              f"{r['infer_s']:8.3f} {r['startup_s']:10.2f} {r['startup_vs_tiny']:7.1f} "
              f"{r['server_peak_rss_mib']:15.0f} {r['fetch_peak_rss_mib']:14.0f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows, "cores": os.cpu_count()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
