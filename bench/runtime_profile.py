"""Where one onnx-server request's time goes: py-spy samples the server (pinned to core 0) while wrk (core 1)
keeps 32 keep-alive clients busy on the tiny MLP (binary tensors, the defaults as shipped), and each sample's
innermost Python frame is put in a group (time in C is counted to the Python frame that called it). The
server's core is saturated, so a group's share of the samples times 1/throughput is its time per request.

    python bench/runtime_profile.py [--before TREE] [--seconds 8] [--format binary|json]

`--before TREE` profiles another checkout's onnx-server (e.g. main's) in the same run. Writes
bench/results/runtime-profile.md (the table for the docs) and prints it.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import loadgen, servers  # noqa: E402
from bench.runtime_bench import MODELS, bodies  # noqa: E402
from tests.runtime.conftest import model_dir  # noqa: E402

RESULTS = REPO / "bench" / "results" / "runtime-profile.md"
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
ENCODE = ("encode_response", "tensor_items", "dumps", "_as_list")
# first match wins: (file fragment, function names or None for any) -> group
GROUPS: tuple[tuple[str, tuple[str, ...] | None, str], ...] = (
    ("onnxruntime", None, "onnxruntime run (the model)"),
    ("onnx_server/model.py", ("run",), "onnxruntime run (the model)"),  # calls onnxruntime's C++ session itself
    # the socket writes uvicorn made itself before BatchedTransport: the HTTP server's share, as in the floor
    ("onnx_server/connections.py", ("write", "flush", "add", "close"),
     "uvicorn + httptools (parse, ASGI messages, socket writes)"),
    ("onnx_server/protocol.py", ENCODE, "response encoding (JSON / binary)"),
    ("onnx_server/protocol.py", None, "request decoding and validation"),
    ("onnx_server/grpc_protocol.py", None, "request decoding and validation"),
    ("onnx_server/metrics.py", None, "metrics"),
    ("prometheus_client", None, "metrics"),
    ("onnx_server/connections.py", None, "connection bounds (age, timeouts, cap)"),
    ("onnx_server/app.py", None, "inference endpoint (headers, body, budget, response)"),
    ("onnx_server/budget.py", None, "inference endpoint (headers, body, budget, response)"),
    ("onnx_server/dataplane.py", None, "data plane (checks, run dispatch, output bound)"),
    ("onnx_server/model.py", None, "data plane (checks, run dispatch, output bound)"),
    ("starlette", None, "Starlette (routing, middleware, Request / Response objects)"),
    ("uvicorn/middleware", None, "Starlette (routing, middleware, Request / Response objects)"),
    ("uvicorn", None, "uvicorn + httptools (parse, ASGI messages, socket writes)"),
    ("httptools", None, "uvicorn + httptools (parse, ASGI messages, socket writes)"),
    ("asyncio", None, "event loop (uvloop: epoll, callbacks, tasks)"),
    ("numpy", None, "numpy"),
    ("contextlib", None, "inference endpoint (headers, body, budget, response)"),
)
FLOOR_GROUPS = ("uvicorn + httptools (parse, ASGI messages, socket writes)",
                "event loop (uvloop: epoll, callbacks, tasks)")


def group_of(frame: str) -> str:
    match = FRAME.match(frame.strip())
    if not match:
        return "event loop (uvloop: epoll, callbacks, tasks)"  # py-spy's empty frame: native code of the loop
    func, file = match["func"].rsplit(".", 1)[-1], match["file"]
    for fragment, funcs, label in GROUPS:
        if fragment in file and (funcs is None or func in funcs):
            return label
    return "other Python"


def summarize(path: Path) -> Counter[str]:
    groups: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            groups[group_of(stack.split(";")[-1])] += int(count)
    return groups


def profile(label: str, tree: Path | None, fmt: str, seconds: float, work: Path) -> tuple[Counter[str], float]:
    """(samples per group, requests per second) of one server under wrk -c32."""
    data, name, shape = MODELS["tiny-mlp"]()
    array = np.random.default_rng(3).standard_normal((1, *shape)).astype(np.float32)
    body, headers = bodies(name, array, "y")[fmt]
    folder = model_dir(work / label, data)
    srv = servers.onnx_server(folder, "m", tree=tree)
    try:
        path = f"/v2/models/{srv.name}/infer"
        loadgen.wrk(srv.port, path, body, headers, 2, 32, folder)  # warm-up
        with ThreadPoolExecutor(1) as pool:  # wrk runs while py-spy samples
            load = pool.submit(loadgen.wrk, srv.port, path, body, headers, seconds + 2, 32, folder)
            time.sleep(1)
            out = folder / "profile.txt"
            subprocess.run([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(srv.proc.pid), "-r", "500",
                            "-d", str(int(seconds)), "-f", "raw", "-o", str(out), "--nonblocking"], check=True,
                           capture_output=True, timeout=seconds + 60)
            rate = float(load.result(timeout=seconds + 90)["requests_per_s"])
        return summarize(out), rate
    finally:
        srv.stop()


def table(results: dict[str, tuple[Counter[str], float]]) -> str:
    labels = list(results)
    per_request = {label: {g: 1e6 / rate * n / max(1, sum(groups.values())) for g, n in groups.items()}
                   for label, (groups, rate) in results.items()}
    order = sorted({g for p in per_request.values() for g in p}, key=lambda g: -max(p.get(g, 0) for p in
                                                                                    per_request.values()))
    out = ["| where (innermost Python frame) | " + " | ".join(f"{label} us/request" for label in labels) + " |",
           "|---|" + "---|" * len(labels)]
    for g in order:
        out.append(f"| {g} | " + " | ".join(f"{per_request[label].get(g, 0.0):.1f}" for label in labels) + " |")
    out.append("| **total (1 / throughput)** | " + " | ".join(f"**{1e6 / results[label][1]:.1f}**" for label in labels)
               + " |")
    ours = {label: sum(v for g, v in per_request[label].items() if g not in FLOOR_GROUPS) for label in labels}
    out.append("| of which above the HTTP server and loop | " + " | ".join(f"{ours[label]:.1f}" for label in labels)
               + " |")
    out.append("| throughput (req/s, 32 clients) | " + " | ".join(f"{results[label][1]:,.0f}" for label in labels)
               + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="another checkout whose onnx-server to profile too")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--format", choices=("binary", "json"), default="binary")
    args = parser.parse_args()
    results: dict[str, tuple[Counter[str], float]] = {}
    with tempfile.TemporaryDirectory(prefix="runtime-profile-") as tmp:
        if args.before is not None:
            results["before"] = profile("before", args.before, args.format, args.seconds, Path(tmp))
        results["after" if args.before else "now"] = profile("now", None, args.format, args.seconds, Path(tmp))
    text = (f"tiny MLP, {args.format} tensors, wrk 32 keep-alive clients, server pinned to one core, py-spy at "
            f"500 Hz for {args.seconds:g} s\n\n" + table(results))
    print(text)
    RESULTS.write_text(text)
    print(f"written {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
