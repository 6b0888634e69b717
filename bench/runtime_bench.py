"""Runtime server benchmark, every number measured in the same run on this machine (loopback only).

Three models (a tiny MLP, a dense MLP of about 1 ms per row, a small CNN with a 3x32x32 input), each hosted by
onnx-server, KServe's ModelServer and MLServer (the last two in their own cached venvs, with onnxruntime), one
process pinned to core 0 with onnxruntime intra-op threads 1; the load generators `wrk` (one fixed body per
format) and Triton's `perf_analyzer` pinned to core 1; binary and JSON tensors (MLServer: JSON only);
concurrency 1/8/32; inputs are fixed normal values. Then onnx-server's dynamic batching gain at the highest
concurrency. Prints the tables with ratios and the issue's targets, and writes bench/results/runtime.json.

The floor: bench/floor.py's raw ASGI app under onnx-server's own uvicorn + httptools + uvloop, reading the
same bodies and answering a fixed 90-byte JSON (wrk rows). onnx-server's own cost per request is its server
CPU per request minus the floor's, and its p50 at one client minus the floor's and the raw run's.
`--before TREE` adds the rows of another checkout's onnx-server (e.g. main's) to the same run: the
before/after of a change to the serving path, and "no row worse than before" against KServe and MLServer.

    python bench/runtime_bench.py [--seconds 3] [--concurrency 1,8,32] [--models tiny-mlp,dense-mlp,cnn]
                                  [--servers floor,onnx-server,kserve,mlserver] [--generators wrk,perf_analyzer]
                                  [--connection-ages 0,0.001,30,1] [--age-rounds 3] [--before TREE]

Last, keep-alive rows: the tiny MLP with onnx-server's --max-connection-age at each age (wrk reconnects on
`Connection: close`), so the cost of the connection lifetime is measured against it off, same run; and the
same server over plain HTTP and HTTPS (--tls-cert), back to back: the TLS cost per request.

The machine is shared: figures move by 10-30% between runs; compare ratios within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import loadgen, servers  # noqa: E402
from tests.runtime.conftest import model_dir  # noqa: E402
from tests.runtime.models import dense_mlp, small_cnn  # noqa: E402

RESULTS = REPO / "bench" / "results" / "runtime.json"
MODELS: dict[str, Callable[[], tuple[bytes, str, tuple[int, ...]]]] = {
    "tiny-mlp": lambda: (dense_mlp(4, 16, 1, classes=2), "x", (4,)),
    "dense-mlp": lambda: (dense_mlp(256, 1536, 3), "x", (256,)),
    "cnn": lambda: (small_cnn(), "image", (3, 32, 32)),
}
BATCHING = ("--max-batch-size", "32", "--max-delay-ms", "2")
TARGETS = {"json_cnn_vs_mlserver_at_32_wrk": 2.0, "json_cnn_vs_mlserver_at_32_perf_analyzer": 1.5,
           "every_row_vs_others": 1.5, "tiny_p50_over_raw_us": 250.0, "batching_gain_dense_at_32": 2.0,
           "tiny_binary_vs_floor_at_32": 0.40, "tiny_p50_over_floor_and_raw_us": 60.0,
           "every_row_vs_before": 0.90}
# measured and printed, without a target of their own
REPORTED = ("tiny_own_cpu_us_binary_at_32", "tiny_own_cpu_us_json_at_32", "tiny_own_cpu_us_binary_at_1")


def raw_run(data: bytes, feeds: dict[str, np.ndarray], seconds: float) -> dict[str, float]:
    """InferenceSession.run in this process, pinned to the server's core: the floor under every server."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(loadgen.SERVER_CORE)})
    try:
        latencies = []
        stop_at = time.perf_counter() + seconds
        while time.perf_counter() < stop_at:
            start = time.perf_counter()
            session.run(None, feeds)
            latencies.append(time.perf_counter() - start)
    finally:
        os.sched_setaffinity(0, before)
    latencies.sort()
    return {"requests_per_s": len(latencies) / seconds, "p50_us": 1e6 * latencies[len(latencies) // 2],
            "p99_us": 1e6 * latencies[int(0.99 * (len(latencies) - 1))], "mean_us": 1e6 * float(np.mean(latencies)),
            "errors": 0}


def bodies(name: str, array: np.ndarray, output: str) -> dict[str, tuple[bytes, dict[str, str]]]:
    """One fixed request per format: JSON tensors, and the binary extension (binary outputs too)."""
    tensor = {"name": name, "shape": list(array.shape), "datatype": "FP32"}
    as_json = json.dumps({"id": "1", "inputs": [{**tensor, "data": array.reshape(-1).tolist()}]}).encode()
    blob = array.tobytes()
    head = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": len(blob)}}],
                       "outputs": [{"name": output, "parameters": {"binary_data": True}}]}).encode()
    return {"json": (as_json, {"Content-Type": "application/json"}),
            "binary": (head + blob, {"Content-Type": "application/octet-stream",
                                     "Inference-Header-Content-Length": str(len(head))})}


def load_rows(srv: servers.BenchServer, label: str, model: str, name: str, array: np.ndarray, formats: list[str],
              generators: list[str], levels: list[int], seconds: float, work: Path,
              scheme: str = "http") -> list[dict[str, Any]]:
    rows = []
    requests = bodies(name, array, "y" if model != "cnn" else "logits")
    for fmt in formats:
        body, headers = requests[fmt]
        for c in levels:
            for gen in generators:
                path = f"/v2/models/{srv.name}/infer"
                try:
                    if gen == "wrk":
                        loadgen.wrk(srv.port, path, body, headers, 1, c, work, scheme)  # warm-up
                        cpu = srv.cpu_seconds()
                        stats = loadgen.wrk(srv.port, path, body, headers, seconds, c, work, scheme)
                        stats["cpu_us"] = 1e6 * (srv.cpu_seconds() - cpu) / max(1.0, stats["requests_per_s"] * seconds)
                    else:
                        stats = loadgen.perf(srv.port, srv.name, loadgen.perf_input(name, array, True),
                                             fmt == "binary", seconds, c, work)
                except Exception as exc:  # one failing generator must not lose the other rows
                    print(f"  {label} {model} {fmt} {gen} c={c}: FAILED {str(exc)[-600:]}", flush=True)
                    continue
                row = {"model": model, "server": label, "format": fmt, "generator": gen, "concurrency": c, **stats}
                print(f"  {label:22} {model:9} {fmt:6} {gen:13} c={c:<3} {stats['requests_per_s']:8.0f} req/s "
                      f"p50 {stats['p50_us']:7.0f} us p99 {stats['p99_us']:7.0f} us err {stats['errors']} "
                      f"cpu {stats.get('cpu_us', float('nan')):6.0f} us/req", flush=True)
                rows.append(row)
    return rows


def bench_model(model: str, args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    data, name, shape = MODELS[model]()
    array = np.random.default_rng(3).standard_normal((1, *shape)).astype(np.float32)
    raw = raw_run(data, {name: array}, args.seconds)
    rows: list[dict[str, Any]] = [{"model": model, "server": "raw", "format": "-", "generator": "-",
                                   "concurrency": 1, **raw}]
    print(f"{model}: raw InferenceSession.run p50 {raw['p50_us']:.0f} us", flush=True)
    plans: list[tuple[str, Callable[[Path, str], servers.BenchServer], list[str], list[int]]] = [
        ("floor", servers.rest_floor, ["binary", "json"], args.levels),
        ("onnx-server", lambda d, n: servers.onnx_server(d, n), ["binary", "json"], args.levels),
        ("onnx-server before", lambda d, n: servers.onnx_server(d, n, tree=args.before), ["binary", "json"],
         args.levels),
        ("onnx-server batching", lambda d, n: servers.onnx_server(d, n, *BATCHING), ["binary", "json"],
         [max(args.levels)]),
        ("kserve", servers.kserve, ["binary", "json"], args.levels),
        ("mlserver", servers.mlserver, ["json"], args.levels),
    ]
    for label, start, formats, levels in plans:
        if label.split()[0] not in args.servers or (label.endswith("batching") and model == "tiny-mlp"
                                                    and "wrk" not in args.generators) \
                or (label.endswith("before") and args.before is None):
            continue
        folder = model_dir(tmp / f"{model}-{label.replace(' ', '-')}", data)
        srv = start(folder, "m")
        try:
            # the floor answers a fixed body: perf_analyzer would refuse it
            gens = ["wrk"] if label.endswith("batching") or label == "floor" else args.generators
            rows += load_rows(srv, label, model, name, array, formats, gens, levels, args.seconds, folder)
        finally:
            srv.stop()
    return rows


def bench_connection_age(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """Keep-alive clients (wrk) against onnx-server with --max-connection-age at each of args.ages, same run,
    in args.age_rounds interleaved rounds (the machine is shared: medians of rounds compare better than one
    pass). 0 = connections live as long as the client keeps them; 0.001 = every response closes its
    connection, so its extra server CPU per request is the cost of one reconnect."""
    data, name, shape = MODELS["tiny-mlp"]()
    array = np.random.default_rng(3).standard_normal((1, *shape)).astype(np.float32)
    servers_by_age: dict[float, servers.BenchServer] = {}
    rows = []
    try:
        for age in args.ages:
            servers_by_age[age] = servers.onnx_server(model_dir(tmp / f"age-{age:g}", data), "m",
                                                      "--max-connection-age", f"{age:g}", "--no-grpc")
        for round_ in range(args.age_rounds):
            for age, srv in servers_by_age.items():
                for row in load_rows(srv, f"onnx-server age {age:g}s", "tiny-mlp", name, array, ["binary"], ["wrk"],
                                     sorted({1, max(args.levels)}), args.seconds, tmp / f"age-{age:g}"):
                    rows.append({**row, "connection_age_s": age, "round": round_})
    finally:
        for srv in servers_by_age.values():
            srv.stop()
    return rows


def bench_tls(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    """The same server over plain HTTP and HTTPS (wrk keep-alive, tiny MLP, binary), back to back: what TLS
    costs per request once the connection is up (the handshake is paid once per connection, i.e. once per
    --max-connection-age per client)."""
    from tests.runtime.tls_files import Pki

    data, name, shape = MODELS["tiny-mlp"]()
    array = np.random.default_rng(3).standard_normal((1, *shape)).astype(np.float32)
    pair = Pki(tmp / "pki").serving("bench")
    rows = []
    for scheme, extra in (("http", ()), ("https", ("--tls-cert", str(pair.cert), "--tls-key", str(pair.key)))):
        folder = model_dir(tmp / f"tls-{scheme}", data)
        srv = servers.onnx_server(folder, "m", *extra)
        try:
            for row in load_rows(srv, f"onnx-server {scheme}", "tiny-mlp", name, array, ["binary"], ["wrk"],
                                 sorted({1, max(args.levels)}), args.seconds, folder, scheme):
                rows.append({**row, "scheme": scheme})
        finally:
            srv.stop()
    return rows


def print_tls(rows: list[dict[str, Any]]) -> None:
    tls = [r for r in rows if r.get("scheme") == "https"]
    if tls:
        print("\nTLS (tiny-mlp, binary, wrk keep-alive): HTTPS against plain HTTP, same run")
    for r in tls:
        plain = find(rows, scheme="http", concurrency=r["concurrency"])
        if plain is None:
            continue
        print(f"  c={r['concurrency']:<3} {r['requests_per_s']:8.0f} req/s ({ratio(r, plain):.3f}x of "
              f"{plain['requests_per_s']:.0f}); p50 {r['p50_us'] - plain['p50_us']:+6.0f} us; server CPU "
              f"{r.get('cpu_us', float('nan')) - plain.get('cpu_us', float('nan')):+6.1f} us per request")


def median_row(rows: list[dict[str, Any]], **where: Any) -> dict[str, Any] | None:
    """Per field, the median over the rounds that match."""
    found = [r for r in rows if all(r.get(k) == v for k, v in where.items())]
    if not found:
        return None
    keys = ("requests_per_s", "p50_us", "p99_us", "cpu_us")
    return {**found[0], **{k: float(np.median([r[k] for r in found if k in r])) for k in keys}}


def print_connection_age(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The keep-alive table (medians of the rounds) and the derived cost of the connection age."""
    aged = [r for r in rows if "connection_age_s" in r]
    if not aged:
        return {}
    print("\nconnection age (tiny-mlp, binary, wrk keep-alive; medians of interleaved rounds, same run)")
    levels = sorted({r["concurrency"] for r in aged})
    derived: dict[str, float] = {}
    for c in levels:
        off = median_row(aged, connection_age_s=0, concurrency=c)
        for age in dict.fromkeys(r["connection_age_s"] for r in aged):
            r = median_row(aged, connection_age_s=age, concurrency=c)
            if r is None or off is None:
                continue
            print(f"  age {age:>6g}s c={c:<3} {r['requests_per_s']:8.0f} req/s ({ratio(r, off):.3f}x of off) "
                  f"p50 {r['p50_us']:6.0f} us p99 {r['p99_us']:7.0f} us cpu {r['cpu_us']:5.0f} us/req")
        close = median_row(aged, connection_age_s=0.001, concurrency=c)
        if off and close:
            cost = close["cpu_us"] - off["cpu_us"]  # one reconnect per request
            per_conn_rate = off["requests_per_s"] / c
            default = cost / (30 * per_conn_rate * off["cpu_us"]) if per_conn_rate else 0.0
            derived[f"reconnect_cpu_us_c{c}"] = cost
            derived[f"default_age_cpu_overhead_c{c}"] = default
            print(f"  c={c}: a reconnect costs ~{cost:.0f} us of server CPU; at the default 30 s age and "
                  f"{per_conn_rate:.0f} req/s per connection that is {100 * default:.3f}% of the CPU per request")
    return derived


def find(rows: list[dict[str, Any]], **where: Any) -> dict[str, Any] | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in where.items())), None)


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    return a["requests_per_s"] / b["requests_per_s"] if a and b and b["requests_per_s"] else None


def print_tables(rows: list[dict[str, Any]]) -> None:
    fmt = lambda v: f"{v:6.2f}x" if v is not None else "      -"  # noqa: E731
    for model in dict.fromkeys(r["model"] for r in rows):
        raw = find(rows, model=model, server="raw")
        print(f"\n{model}: raw InferenceSession.run p50 {raw['p50_us'] if raw else 0:.0f} us")
        print(f"{'format':7}{'generator':14}{'conc':>5}{'onnx-server':>12}{'p50 us':>8}{'p99 us':>9}"
              f"{'kserve':>9}{'mlserver':>10}{'vs kserve':>10}{'vs mlserver':>12}{'floor':>8}{'vs floor':>9}"
              f"{'p50 +us':>8}{'cpu +us':>8}{'before':>8}{'vs before':>10}")
        for r in (r for r in rows if r["model"] == model and r["server"] == "onnx-server"):
            key = {k: r[k] for k in ("model", "format", "generator", "concurrency")}
            ks, ml = find(rows, server="kserve", **key), find(rows, server="mlserver", **key)
            fl, old = find(rows, server="floor", **key), find(rows, server="onnx-server before", **key)
            above = f"{r['p50_us'] - fl['p50_us']:8.0f}{r.get('cpu_us', 0) - fl.get('cpu_us', 0):8.0f}" if fl \
                else f"{'-':>8}{'-':>8}"
            print(f"{r['format']:7}{r['generator']:14}{r['concurrency']:5d}{r['requests_per_s']:12.0f}"
                  f"{r['p50_us']:8.0f}{r['p99_us']:9.0f}{ks['requests_per_s'] if ks else 0:9.0f}"
                  f"{ml['requests_per_s'] if ml else 0:10.0f}{fmt(ratio(r, ks)):>10}{fmt(ratio(r, ml)):>12}"
                  f"{fl['requests_per_s'] if fl else 0:8.0f}{fmt(ratio(r, fl)):>9}{above}"
                  f"{old['requests_per_s'] if old else 0:8.0f}{fmt(ratio(r, old)):>10}")
        for r in (r for r in rows if r["model"] == model and r["server"] == "onnx-server batching"):
            plain = find(rows, model=model, server="onnx-server", format=r["format"], generator="wrk",
                         concurrency=r["concurrency"])
            print(f"batching ({' '.join(BATCHING)}) {r['format']:6} wrk c={r['concurrency']}: "
                  f"{r['requests_per_s']:.0f} req/s, gain {fmt(ratio(r, plain))} over no batching")


def markdown(rows: list[dict[str, Any]], results: dict[str, Any]) -> str:
    """The docs' table (bench/results/runtime.md, included by docs/benchmarks.md): onnx-server's throughput,
    its ratio to KServe and MLServer and to its HTTP floor (and to the `--before` checkout), row by row; then
    the targets."""
    out = ["| model | format | generator | clients | onnx-server req/s (p50 ms) | KServe | MLServer | "
           "vs KServe | vs MLServer | floor req/s (p50 ms) | vs floor | before | vs before | "
           "server CPU us/request: ours, floor, KServe, MLServer |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in (r for r in rows if r["server"] == "onnx-server"):
        key = {k: r[k] for k in ("model", "format", "generator", "concurrency")}
        ks, ml = find(rows, server="kserve", **key), find(rows, server="mlserver", **key)
        fl, old = find(rows, server="floor", **key), find(rows, server="onnx-server before", **key)
        cells = [f"{o['requests_per_s']:,.0f}" if o else "-" for o in (ks, ml)]
        ratios = [f"{v:.2f}x" if (v := ratio(r, o)) is not None else "-" for o in (ks, ml, fl, old)]
        floor = f"{fl['requests_per_s']:,.0f} ({fl['p50_us'] / 1000:.2f})" if fl else "-"
        before = f"{old['requests_per_s']:,.0f}" if old else "-"
        cpu = ", ".join(f"{o['cpu_us']:,.0f}" if o and "cpu_us" in o else "-" for o in (r, fl, ks, ml))
        out.append(f"| {r['model']} | {r['format']} | {r['generator']} | {r['concurrency']} | "
                   f"{r['requests_per_s']:,.0f} ({r['p50_us'] / 1000:.2f}) | {' | '.join(cells)} | "
                   f"{' | '.join(ratios[:2])} | {floor} | {ratios[2]} | {before} | {ratios[3]} | {cpu} |")
    out += ["", "| target | measured | wanted | |", "|---|---|---|---|"]
    for key, value in results.items():
        if key in REPORTED:
            out.append(f"| {key} | {value:.1f} us | (measured) | |")
            continue
        target, lower = TARGETS[key], key.endswith("_us")
        met = value <= target if lower else value >= target
        unit = " us" if lower else "x"
        out.append(f"| {key} | {value:.2f}{unit} | {'<=' if lower else '>='} {target:g}{unit} | "
                   f"{'met' if met else 'NOT met'} |")
    return "\n".join(out) + "\n"


def verdicts(rows: list[dict[str, Any]], top: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ours = [r for r in rows if r["server"] == "onnx-server"]
    versus = [v for r in ours for other in ("kserve", "mlserver") if (v := ratio(r, find(
        rows, server=other, **{k: r[k] for k in ("model", "format", "generator", "concurrency")}))) is not None]
    if versus:
        out["every_row_vs_others"] = min(versus)
    for gen in ("wrk", "perf_analyzer"):
        cnn = ratio(find(rows, model="cnn", server="onnx-server", format="json", generator=gen, concurrency=top),
                    find(rows, model="cnn", server="mlserver", format="json", generator=gen, concurrency=top))
        if cnn is not None:
            out[f"json_cnn_vs_mlserver_at_32_{gen}"] = cnn
    raw = find(rows, model="tiny-mlp", server="raw")
    tiny = [r["p50_us"] - raw["p50_us"] for r in ours if raw and r["model"] == "tiny-mlp" and r["concurrency"] == 1]
    if tiny:
        out["tiny_p50_over_raw_us"] = max(tiny)
    # against the floor: the HTTP server's own cost, same bodies, same run
    tiny_wrk = {"model": "tiny-mlp", "generator": "wrk"}
    floor_ratio = ratio(find(rows, server="onnx-server", format="binary", concurrency=top, **tiny_wrk),
                        find(rows, server="floor", format="binary", concurrency=top, **tiny_wrk))
    if floor_ratio is not None:
        out["tiny_binary_vs_floor_at_32"] = floor_ratio
    over = [r["p50_us"] - f["p50_us"] - raw["p50_us"] for fmt in ("binary", "json")
            if raw and (r := find(rows, server="onnx-server", format=fmt, concurrency=1, **tiny_wrk))
            and (f := find(rows, server="floor", format=fmt, concurrency=1, **tiny_wrk))]
    if over:
        out["tiny_p50_over_floor_and_raw_us"] = max(over)
    for fmt, c in (("binary", top), ("json", top), ("binary", 1)):
        r = find(rows, server="onnx-server", format=fmt, concurrency=c, **tiny_wrk)
        f = find(rows, server="floor", format=fmt, concurrency=c, **tiny_wrk)
        if r and f and "cpu_us" in r and "cpu_us" in f:
            out[f"tiny_own_cpu_us_{fmt}_at_{c}"] = r["cpu_us"] - f["cpu_us"]
    before = [v for r in ours if (v := ratio(r, find(rows, server="onnx-server before", **{
        k: r[k] for k in ("model", "format", "generator", "concurrency")}))) is not None]
    if before:
        out["every_row_vs_before"] = min(before)
    gains = [v for fmt in ("binary", "json") if (v := ratio(
        find(rows, model="dense-mlp", server="onnx-server batching", format=fmt, concurrency=top),
        find(rows, model="dense-mlp", server="onnx-server", format=fmt, generator="wrk", concurrency=top)))]
    if gains:
        out["batching_gain_dense_at_32"] = min(gains)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3, help="measurement time per row")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated models")
    parser.add_argument("--servers", default="floor,onnx-server,kserve,mlserver", help="comma-separated servers")
    parser.add_argument("--before", type=Path, help="another checkout whose onnx-server adds 'before' rows")
    parser.add_argument("--generators", default="wrk,perf_analyzer", help="comma-separated load generators")
    parser.add_argument("--connection-ages", default="0,0.001,30,1",
                        help="--max-connection-age values for the keep-alive rows (seconds; 0 = off, 0.001 = a "
                        "reconnect per request; '' = skip)")
    parser.add_argument("--age-rounds", type=int, default=3, help="interleaved rounds of the keep-alive rows")
    args = parser.parse_args()
    args.ages = [float(a) for a in args.connection_ages.split(",") if a]
    args.levels = [int(c) for c in args.concurrency.split(",")]
    args.servers, args.generators = args.servers.split(","), args.generators.split(",")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="runtime-bench-") as tmp:
        for model in args.models.split(","):
            rows += bench_model(model, args, Path(tmp))
        if "onnx-server" in args.servers and "wrk" in args.generators:
            rows += bench_connection_age(args, Path(tmp))
            rows += bench_tls(args, Path(tmp))
    print(f"\nmachine: {os.cpu_count()} cores, shared (noisy: compare ratios within this run); server on core "
          f"{loadgen.SERVER_CORE}, load generator on core {loadgen.CLIENT_CORE}; onnxruntime {ort.__version__}, "
          f"1 intra-op thread; {args.seconds:g} s per row")
    main_rows = [r for r in rows if "connection_age_s" not in r and "scheme" not in r]
    print_tables(main_rows)
    age_costs = print_connection_age(rows)
    print_tls(rows)
    results = verdicts(main_rows, max(args.levels))
    print("\ntargets (from the issue):")
    for key, value in results.items():
        if key in REPORTED:
            print(f"  {key:28} {value:8.2f} us  (measured; no target)")
            continue
        target, lower = TARGETS[key], key.endswith("_us")
        met = value <= target if lower else value >= target
        unit = " us" if lower else "x"
        print(f"  {key:28} {value:8.2f}{unit}  target {'<=' if lower else '>='} {target:g}{unit}  "
              f"{'met' if met else 'NOT met'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.with_suffix(".md").write_text(markdown(rows, results))
    RESULTS.write_text(json.dumps({"seconds": args.seconds, "cores": os.cpu_count(), "rows": rows,
                                   "ratios": results, "targets": TARGETS, "connection_age": age_costs}, indent=2))
    print(f"written {RESULTS.relative_to(REPO)} and the docs' table in {RESULTS.with_suffix('.md').name}")


if __name__ == "__main__":
    main()
