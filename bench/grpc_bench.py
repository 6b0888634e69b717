"""gRPC benchmark, every number measured in the same run on this machine (loopback only).

Servers (each pinned to CPU 0, one onnxruntime intra-op thread; the load generator pinned to CPU 1):
  onnx-server grpc           `onnx-server serve`, ModelInfer with tensors in raw_input_contents
  onnx-server grpc batching  the same with --max-batch-size 32 --max-delay-ms 5 (CNNs only)
  kserve grpc                KServe's Python ModelServer (0.21.0, its own cached venv) with gRPC on,
                             hosting the same model with onnxruntime (bench/kserve_grpc_server.py)
  mlserver grpc              MLServer (1.7.1, its own cached venv) with its gRPC server, hosting the same
                             model with bench/mlserver_onnx_runtime.py
  onnx-server rest binary    the REST binary-tensor path of the same server (CNNs)
  grpc floor                 a bare grpc.aio servicer answering a fixed ModelInferResponse (bench/floor.py,
                             uvloop as onnx-server): what gRPC costs alone. onnx-server's own cost per call is
                             its server CPU per call minus the floor's, same model message, same run
Load generators: ghz (built once from its Go module) drives every gRPC row, so onnx-server and KServe
are measured by the same client; perf_analyzer -i grpc / -i http (tritonclient 2.50.0 wheel, its own
cached venv) measures onnx-server's gRPC against its REST binary path on the CNNs (it reads the model
config first: the ModelConfig RPC over gRPC, GET /v2/models/{name}/config over REST).
Models: the REST table's 4x2 linear model and its two small CNNs. Writes bench/results/grpc.json.

    python bench/grpc_bench.py [--seconds 5] [--concurrency 1,8,32] [--no-others]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from onnx_server.proto import inference_pb2 as pb  # noqa: E402

from bench import servers  # noqa: E402
from bench.loadgen import cached_venv  # noqa: E402
from localcluster.models import make_model  # noqa: E402
from tests.runtime.conftest import ServerProcess, model_dir  # noqa: E402
from tests.runtime.models import small_cnn  # noqa: E402

CACHE = Path(os.environ.get("ONNX_OPERATOR_CACHE", Path.home() / ".cache" / "onnx-operator"))
GHZ, TRITONCLIENT = "v0.120.0", "2.50.0"
PROTO = REPO / "runtime-image" / "onnx_server" / "proto" / "inference.proto"
RESULTS = REPO / "bench" / "results" / "grpc.json"
SERVER_CPU, LOAD_CPU = "0", "1"
CNNS = {"cnn": {}, "cnn-dense": {"dense_head": 512}}  # the REST table's CNNs: pooling head, VGG-style head
TARGETS = {"grpc_vs_kserve_grpc": 2.0, "grpc_vs_mlserver_grpc": 2.0, "grpc_batching_vs_kserve_grpc": 2.0,
           "grpc_vs_rest_binary": 1.0}


def ghz_binary() -> Path:
    """ghz, built once per machine from its Go module (the Go module proxy is the only download)."""
    target = CACHE / "tools" / f"ghz-{GHZ}"
    if not (target / "ghz").exists():
        print(f"building ghz {GHZ} into {target} (once per machine)", flush=True)
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["go", "install", f"github.com/bojand/ghz/cmd/ghz@{GHZ}"], check=True,
                       env={**os.environ, "GOBIN": str(target), "CGO_ENABLED": "0"})
    return target / "ghz"


def perf_analyzer_binary() -> tuple[Path, dict[str, str]]:
    """perf_analyzer from the tritonclient wheel (it needs libb64-0d from apt, in .ci/apt-packages.txt,
    and the CUDA runtime library, a pip wheel, even on CPU)."""
    python = cached_venv(f"tritonclient-{TRITONCLIENT}", f"tritonclient[http]=={TRITONCLIENT}",
                         "nvidia-cuda-runtime-cu12")
    libs = sorted(python.parent.parent.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join([*map(str, libs), os.environ.get("LD_LIBRARY_PATH", "")])}
    return python.parent / "perf_analyzer", env


def pin(pid: int) -> None:
    """Every thread of the server onto SERVER_CPU (threads it starts later inherit it)."""
    subprocess.run(["taskset", "-a", "-p", "-c", SERVER_CPU, str(pid)], check=True, capture_output=True)


def infer_message(model: str, name: str, array: np.ndarray) -> bytes:
    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name=name, datatype="FP32", shape=array.shape)
    req.raw_input_contents.append(array.tobytes())
    return bytes(req.SerializeToString())


def ghz_load(target: str, message: Path, seconds: float, concurrency: int, pid: int | None = None) -> dict[str, float]:
    """`pid`: the server's, to report its CPU per call (cpu_us)."""
    def run(duration: float) -> dict[str, Any]:
        out = subprocess.run(
            ["taskset", "-c", LOAD_CPU, str(ghz_binary()), "--insecure", "--proto", str(PROTO),
             "--call", "inference.GRPCInferenceService.ModelInfer", "--binary-file", str(message),
             "-c", str(concurrency), "-z", f"{duration}s", "-O", "json", target],
            check=True, capture_output=True, text=True, timeout=duration + 60)
        return dict(json.loads(out.stdout))
    run(min(1.0, seconds))  # warm-up
    cpu = servers.cpu_seconds(pid) if pid else 0.0
    report = run(seconds)
    cpu = servers.cpu_seconds(pid) - cpu if pid else 0.0
    latency = {d["percentage"]: d["latency"] / 1e3 for d in report.get("latencyDistribution") or []}
    ok = (report.get("statusCodeDistribution") or {}).get("OK", 0)
    # ghz cuts the calls in flight when the time is up: at most one per worker is not an error
    return {"requests_per_s": ok / (report["total"] / 1e9), "p50_us": latency.get(50, 0.0),
            "p99_us": latency.get(99, 0.0), "mean_us": report["average"] / 1e3, "requests": ok,
            "errors": max(0, report["count"] - ok - concurrency),
            **({"cpu_us": 1e6 * cpu / max(1, report["count"])} if pid else {})}


def perf_analyzer_load(port: int, protocol: str, model: str, seconds: float,
                       concurrency: int) -> dict[str, float] | None:
    """None (and its reason printed) when perf_analyzer found no stable window on this busy machine."""
    binary, env = perf_analyzer_binary()
    with tempfile.NamedTemporaryFile(suffix=".csv") as report:
        done = subprocess.run(["taskset", "-c", LOAD_CPU, str(binary), "-m", model, "-u", f"127.0.0.1:{port}",
                               "-i", protocol, "--concurrency-range", str(concurrency), "-p", str(int(seconds * 1000)),
                               "-r", "5", "-s", "100", "-f", report.name], capture_output=True, text=True, env=env,
                              timeout=10 * seconds + 60)
        rows = list(csv.DictReader(Path(report.name).read_text().splitlines()))
    if not rows:
        print(f"perf_analyzer -i {protocol} on {model} gave no result: {done.stdout[-300:]}{done.stderr[-300:]}")
        return None
    rate = float(rows[0]["Inferences/Second"])
    # its CSV has no mean: Little's law gives it from the rate at a fixed concurrency
    return {"requests_per_s": rate, "p50_us": float(rows[0]["p50 latency"]), "p99_us": float(rows[0]["p99 latency"]),
            "mean_us": 1e6 * concurrency / rate if rate else 0.0, "requests": 0, "errors": 0}


def onnx_server(tmp: Path, label: str, data: bytes, name: str, *extra: str) -> ServerProcess:
    srv = ServerProcess(model_dir(tmp / label.replace(" ", "-"), data), "--threads", "1", *extra, name=name)
    pin(srv.proc.pid)
    return srv


def rest_binary_load(srv: ServerProcess, seconds: float, concurrency: int) -> dict[str, Any] | None:
    """perf_analyzer -i http sends binary tensors; it reads GET /v2/models/{name}/config first."""
    return perf_analyzer_load(srv.port, "http", srv.name, seconds, concurrency)


def rows_for(tmp: Path, kind: str, seconds: float, levels: list[int], with_others: bool) -> list[dict[str, Any]]:
    """Every server on one model; `kind` is "linear" or one of CNNS."""
    if kind == "linear":
        data, name, array = make_model(), "m", np.asarray([[0.5, -1.0, 2.0, 0.25]], dtype=np.float32)
        input_name = "x"
    else:
        data, name, input_name = small_cnn(**CNNS[kind]), "cnn", "image"
        array = np.random.default_rng(3).random((1, 3, 32, 32), dtype=np.float32)
    message = tmp / f"{kind}.bin"
    message.write_bytes(infer_message(name, input_name, array))
    rows: list[dict[str, Any]] = []

    def add(server: str, load: str, measure_one: Callable[[int], dict[str, Any] | None], at: list[int]) -> None:
        for c in at:
            result = measure_one(c)
            if result is not None:
                rows.append({"model": kind, "server": server, "concurrency": c, "load": load, **result})
    top = [max(levels)]
    ours = [("onnx-server grpc", ())]
    if kind != "linear":
        ours.append(("onnx-server grpc batching", ("--max-batch-size", "32", "--max-delay-ms", "5")))
    for label, extra in ours:
        srv = onnx_server(tmp, f"{kind}-{label}", data, name, *extra)
        try:
            add(label, "ghz", lambda c: ghz_load(srv.grpc_target, message, seconds, c, srv.proc.pid),  # noqa: B023
                levels)
            if kind != "linear" and not extra:
                add("onnx-server grpc", "perf_analyzer",
                    lambda c: perf_analyzer_load(srv.grpc_port or 0, "grpc", name, seconds, c), top)  # noqa: B023
                add("onnx-server rest binary", "perf_analyzer", lambda c: rest_binary_load(srv, seconds, c),  # noqa: B023
                    top)
        finally:
            srv.stop()
    if kind == "linear":
        floor = servers.grpc_floor(tmp, name)
        try:
            add("grpc floor", "ghz", lambda c: ghz_load(f"127.0.0.1:{floor.grpc_port}", message, seconds, c,
                                                        floor.proc.pid), levels)
        finally:
            floor.stop()
    if with_others:
        as_m = tmp / f"{kind}-m.bin"
        as_m.write_bytes(infer_message("m", input_name, array))
        for label, server in (("kserve grpc", lambda d: servers.kserve(d, "m", grpc=True)),
                              ("mlserver grpc", lambda d: servers.mlserver(d, "m"))):
            other = server(model_dir(tmp / f"{kind}-{label.split()[0]}", data))
            try:
                add(label, "ghz", lambda c: ghz_load(f"127.0.0.1:{other.grpc_port}", as_m, seconds, c),  # noqa: B023
                    levels)
            finally:
                other.stop()
    return rows


def find(rows: list[dict[str, Any]], model: str, server: str, concurrency: int, load: str) -> dict[str, Any] | None:
    return next((r for r in rows if (r["model"], r["server"], r["concurrency"], r["load"])
                 == (model, server, concurrency, load)), None)


def ratios(rows: list[dict[str, Any]], top: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for model in ("linear", *CNNS):
        ours, kserve = find(rows, model, "onnx-server grpc", top, "ghz"), find(rows, model, "kserve grpc", top, "ghz")
        mlserver = find(rows, model, "mlserver grpc", top, "ghz")
        if ours and mlserver:
            out[f"grpc_vs_mlserver_grpc_{model}"] = ours["requests_per_s"] / mlserver["requests_per_s"]
        batched = find(rows, model, "onnx-server grpc batching", top, "ghz")
        if ours and kserve:
            out[f"grpc_vs_kserve_grpc_{model}"] = ours["requests_per_s"] / kserve["requests_per_s"]
        if batched and kserve:
            out[f"grpc_batching_vs_kserve_grpc_{model}"] = batched["requests_per_s"] / kserve["requests_per_s"]
        # the same load generator (perf_analyzer) on both sides
        rest = find(rows, model, "onnx-server rest binary", top, "perf_analyzer")
        grpc = find(rows, model, "onnx-server grpc", top, "perf_analyzer")
        if rest and grpc:
            out[f"grpc_vs_rest_binary_{model}"] = grpc["requests_per_s"] / rest["requests_per_s"]
        floor = find(rows, model, "grpc floor", top, "ghz")
        if ours and floor and "cpu_us" in ours and "cpu_us" in floor:
            out[f"grpc_own_cpu_us_per_call_{model}"] = ours["cpu_us"] - floor["cpu_us"]
            out[f"grpc_vs_floor_{model}"] = ours["requests_per_s"] / floor["requests_per_s"]
    return out


def print_table(title: str, rows: list[dict[str, Any]], baseline: dict[str, Any] | None) -> None:
    print(f"\n{title}")
    print(f"{'server (load generator)':42} {'conc':>5} {'req/s':>9} {'p50 us':>9} {'p99 us':>9} {'vs base':>8} "
          f"{'err':>4} {'cpu us/call':>12}")
    for r in rows:
        ratio = f"{r['requests_per_s'] / baseline['requests_per_s']:7.2f}x" if baseline else ""
        cpu = f"{r['cpu_us']:12.0f}" if "cpu_us" in r else ""
        print(f"{r['server'] + ' (' + r['load'] + ')':42} {r['concurrency']:5d} {r['requests_per_s']:9.0f} "
              f"{r['p50_us']:9.0f} {r['p99_us']:9.0f} {ratio:>8} {r['errors']:4d} {cpu}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5, help="measurement time per row")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--no-others", action="store_true", help="skip KServe and MLServer (no venv installs)")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    ghz_binary()
    with tempfile.TemporaryDirectory(prefix="grpc-bench-") as tmp:
        rows = [r for kind in ("linear", *CNNS) for r in rows_for(Path(tmp), kind, args.seconds, levels,
                                                                    not args.no_others)]
    print(f"\nmachine: {os.cpu_count()} cores; servers on CPU {SERVER_CPU}, load generator on CPU {LOAD_CPU}; "
          f"1 onnxruntime thread; {args.seconds:.0f} s per row; loopback")
    for model in ("linear", *CNNS):
        mine = [r for r in rows if r["model"] == model]
        print_table(f"model `{model}`; baseline: onnx-server grpc (ghz) at concurrency {max(levels)}", mine,
                    find(rows, model, "onnx-server grpc", max(levels), "ghz"))
    results = ratios(rows, max(levels))
    print("\ntargets (from the issue):")
    for key, value in results.items():
        target = TARGETS.get(key.rsplit("_", 1)[0])  # the model names have no underscore
        if target is None:  # measured, without a target: the floor comparison
            print(f"  {key:36} {value:8.2f}")
            continue
        print(f"  {key:36} {value:8.2f}x  target >= {target:g}x  {'met' if value >= target else 'NOT met'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"seconds": args.seconds, "cores": os.cpu_count(), "rows": rows,
                                   "ratios": results, "targets": TARGETS}, indent=2))
    print(f"written {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
