"""Payload-logging overhead: onnx-server with logging off and with every request logged (rate 1.0, request and
response) to a real sink on 127.0.0.1, measured in the same run. The two servers take turns, in rounds, so both
see the same machine; each round sends ROUND requests to one then the other, from `--clients` threads.

    python bench/payload_log_bench.py [--requests 3000] [--clients 1,8]

Prints p50/p99 per setting and the ratios; the machine is shared, so compare within one run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from localcluster.models import make_model  # noqa: E402
from localcluster.prober import DEFAULT_BODY  # noqa: E402
from tests.payload_sink import EventSink  # noqa: E402
from tests.runtime.conftest import ServerProcess, model_dir  # noqa: E402

ROUND = 100


def counter(server: ServerProcess, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=5).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == f"onnx_server_payload_log_{name}")


def timed(client: httpx.Client, url: str, count: int) -> list[float]:
    took = []
    for _ in range(count):
        start = time.perf_counter()
        resp = client.post(url, json=DEFAULT_BODY)
        took.append(time.perf_counter() - start)
        if resp.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {resp.status_code} {resp.text[:200]}")
    return took


def run(servers: dict[str, ServerProcess], requests: int, clients: int) -> dict[str, list[float]]:
    took: dict[str, list[float]] = {name: [] for name in servers}
    with ThreadPoolExecutor(clients) as pool, httpx.Client(timeout=10,
                                                           limits=httpx.Limits(max_connections=clients)) as client:
        for srv in servers.values():  # warm-up
            list(pool.map(timed, [client] * clients, [srv.infer_url] * clients, [20] * clients))
        for _ in range(max(1, requests // ROUND)):
            for name, srv in servers.items():
                per_client = max(1, ROUND // clients)
                for part in pool.map(timed, [client] * clients, [srv.infer_url] * clients, [per_client] * clients):
                    took[name] += part
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="requests to each server per client count")
    parser.add_argument("--clients", default="1,8", help="concurrent clients, comma-separated")
    parser.add_argument("--senders", type=int, default=1, help="--payload-log-senders of the logging server")
    args = parser.parse_args()
    sink = EventSink()
    with tempfile.TemporaryDirectory() as tmp:
        servers = {
            "off": ServerProcess(model_dir(Path(tmp) / "off", make_model())),
            "rate 1.0": ServerProcess(model_dir(Path(tmp) / "on", make_model()), "--payload-log-url", sink.url,
                                      "--payload-log-sample-rate", "1.0", "--payload-log-senders", str(args.senders)),
        }
        try:
            print("| clients | logging | requests | p50 ms | p99 ms | p50 ratio | p99 ratio |")
            print("| --- | --- | --- | --- | --- | --- | --- |")
            clients_list = [int(c) for c in args.clients.split(",")]
            for clients in clients_list:
                took = run(servers, args.requests, clients)
                base = {q: float(np.percentile(took["off"], q)) for q in (50, 99)}
                for name, values in took.items():
                    p50, p99 = (float(np.percentile(values, q)) for q in (50, 99))
                    print(f"| {clients} | {name} | {len(values)} | {1000 * p50:.2f} | {1000 * p99:.2f} | "
                          f"{p50 / base[50]:.2f} | {p99 / base[99]:.2f} |")
            logged = 2 * sum(args.requests // ROUND * max(1, ROUND // c) + 20 * c for c in clients_list)
            for _ in range(300):  # the queue drains: every event sent or dropped (bounded: 30 s)
                sent, dropped = (counter(servers["rate 1.0"], n) for n in ("events_total", "dropped_total"))
                if sent + dropped >= logged:
                    break
                time.sleep(0.1)
            print(f"\nevents: {len(sink.received())} received by the sink; the server counted {sent:.0f} sent, "
                  f"{dropped:.0f} dropped")
        finally:
            for srv in servers.values():
                srv.stop()
            sink.stop()


if __name__ == "__main__":
    main()
