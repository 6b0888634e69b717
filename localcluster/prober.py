"""A traffic prober: OIP v2 inference requests at a fixed rate, bounded in count and time.

It runs in a background thread (requests go out from a small pool, so one slow answer does not
delay the schedule), records each request's status, latency and the `model_version` of the
answer, and reports totals, failures (any non-200, timeout or connection error), p50/p99 and
the version mix per time window. Tests, the demo and the benchmark share it; the caller gives
the address (e.g. a Service ClusterIP), so nothing here knows about Kubernetes.

    with Prober("http://127.0.0.1:8080", "linear", rate=50, max_seconds=60) as prober:
        ...  # change something
    report = prober.report()
    assert report.failed == 0, report.describe_failures()

`python -m localcluster.prober URL MODEL --rate 20 --seconds 30` prints the live summary line.
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

# matches localcluster.models.make_model(): input `x` [batch, 4] FP32
DEFAULT_BODY: dict[str, Any] = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                            "data": [1.0, 2.0, 3.0, 4.0]}]}
MAX_RATE = 2000.0
MAX_SECONDS = 3600.0
MAX_REQUESTS = 1_000_000


@dataclass(frozen=True)
class Sample:
    """One request: when it was sent (seconds since the prober started) and how it ended."""

    sent: float
    latency: float
    status: int | None  # HTTP status; None when no answer came (timeout, connection error)
    version: str | None  # `model_version` of a 200 answer
    error: str | None = None  # "timeout", "connect", "http 503", "bad body", ...
    reason: str | None = None  # the `error` text of a non-200 answer's body (what the server said)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Window:
    """The requests sent in [start, end): how many answered per version, and how many failed."""

    start: float
    end: float
    versions: dict[str, int]
    failed: int

    def share(self, version: str) -> float:
        answered = sum(self.versions.values())
        return self.versions.get(version, 0) / answered if answered else 0.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of `values`; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class Report:
    """What the prober saw; `samples` are in the order the requests were sent."""

    rate: float
    samples: list[Sample] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def total(self) -> int:
        return len(self.samples)

    @property
    def failures(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def versions(self) -> Counter[str]:
        return Counter(s.version for s in self.samples if s.ok and s.version is not None)

    def latency_ms(self, q: float, since: float = 0.0, until: float = math.inf) -> float:
        """Percentile of the answered requests sent in [since, until)."""
        return 1000 * percentile([s.latency for s in self.samples if s.ok and since <= s.sent < until], q)

    @property
    def p50_ms(self) -> float:
        return self.latency_ms(50)

    @property
    def p99_ms(self) -> float:
        return self.latency_ms(99)

    def windows(self, seconds: float = 1.0) -> list[Window]:
        """The version mix per window of `seconds`, from the first request to the last."""
        if not self.samples:
            return []
        count = int(max(s.sent for s in self.samples) // seconds) + 1
        mix: list[Counter[str]] = [Counter() for _ in range(count)]
        failed = [0] * count
        for s in self.samples:
            i = int(s.sent // seconds)
            if s.ok and s.version is not None:
                mix[i][s.version] += 1
            elif not s.ok:
                failed[i] += 1
        return [Window(i * seconds, (i + 1) * seconds, dict(mix[i]), failed[i]) for i in range(count)]

    def share(self, version: str, since: float = 0.0, until: float = math.inf) -> float:
        """Fraction of the answers to requests sent in [since, until) that came from `version`."""
        answered = [s.version for s in self.samples if s.ok and since <= s.sent < until]
        return answered.count(version) / len(answered) if answered else 0.0

    def summary(self, window: float = 1.0) -> str:
        """One line: totals, failures, latency and the version mix of the last full window."""
        windows = self.windows(window)
        last = windows[-2] if len(windows) > 1 else (windows[-1] if windows else None)
        mix = " ".join(f"{v} {100 * last.share(v):.0f}%" for v in sorted(last.versions)) if last else ""
        return (f"prober {self.elapsed:5.1f}s @ {self.rate:g}/s: {self.total} sent, {self.failed} failed, "
                f"p50 {self.p50_ms:.1f}ms p99 {self.p99_ms:.1f}ms, mix {mix or '-'}")

    def describe_failures(self, limit: int = 10) -> str:
        kinds = Counter(s.error for s in self.failures)
        first = ", ".join(f"{s.error} at {s.sent:.2f}s" for s in self.failures[:limit])
        return f"{self.failed}/{self.total} failed ({dict(kinds)}); first: {first}"


class Prober:
    """Sends requests at `rate` per second until `max_requests` are sent, `max_seconds` pass or
    `stop()` is called, whichever comes first. `keepalive=False` (default) opens a connection per
    request, so a per-connection balancer (kube-proxy) spreads requests as it spreads clients."""

    def __init__(self, base_url: str, model: str, *, rate: float = 20.0, max_requests: int = 10_000,
                 max_seconds: float = 300.0, timeout: float = 2.0, body: dict[str, Any] | None = None,
                 keepalive: bool = False, workers: int = 16,
                 on_summary: Callable[[str], None] | None = None, summary_every: float = 1.0) -> None:
        _check("rate", rate, 0 < rate <= MAX_RATE, f"between 0 (exclusive) and {MAX_RATE:g} requests/s")
        _check("max_requests", max_requests, 1 <= max_requests <= MAX_REQUESTS, f"between 1 and {MAX_REQUESTS}")
        _check("max_seconds", max_seconds, 0 < max_seconds <= MAX_SECONDS, f"between 0 and {MAX_SECONDS:g}")
        _check("timeout", timeout, 0 < timeout <= 60, "between 0 and 60 seconds")
        _check("workers", workers, 1 <= workers <= 256, "between 1 and 256")
        _check("base_url", base_url, base_url.startswith(("http://", "https://")), "an http:// or https:// URL")
        self.url = f"{base_url.rstrip('/')}/v2/models/{model}/infer"
        self.rate, self.max_requests, self.max_seconds = rate, max_requests, max_seconds
        self.body = body if body is not None else DEFAULT_BODY
        self.on_summary, self.summary_every = on_summary, summary_every
        limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers if keepalive else 0)
        self._client = httpx.Client(timeout=timeout, limits=limits)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prober")
        self._samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._schedule, name="prober-schedule", daemon=True)
        self._t0 = 0.0
        self._ended: float | None = None

    def start(self) -> Prober:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __enter__(self) -> Prober:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def elapsed(self) -> float:
        return (self._ended or time.monotonic()) - self._t0

    def report(self) -> Report:
        """A snapshot (safe while running); after stop() it holds every request."""
        with self._lock:
            samples = sorted(self._samples, key=lambda s: s.sent)
        return Report(self.rate, samples, self.elapsed())

    def wait(self, timeout: float | None = None) -> Report:
        """Waits until the prober reaches its own bound (count or time), then stops it."""
        self._thread.join(self.max_seconds + 5 if timeout is None else timeout)
        return self.stop()

    def stop(self) -> Report:
        """Stops sending, waits for the requests in flight (each bounded by the timeout)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._pool.shutdown(wait=True)
        self._client.close()
        if self._ended is None:
            self._ended = time.monotonic()
        return self.report()

    def _schedule(self) -> None:
        next_summary = self.summary_every
        for i in range(self.max_requests):
            due = i / self.rate
            if due >= self.max_seconds:
                break
            delay = self._t0 + due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            if self._stop.is_set():
                break
            self._pool.submit(self._one)
            if self.on_summary is not None and due >= next_summary:
                next_summary += self.summary_every
                self.on_summary(self.report().summary())
        self._pool.shutdown(wait=True)
        self._ended = time.monotonic()
        if self.on_summary is not None:
            self.on_summary(self.report().summary())

    def _one(self) -> None:
        sent = time.monotonic()
        status: int | None = None
        version: str | None = None
        error: str | None = None
        reason: str | None = None
        try:
            resp = self._client.post(self.url, json=self.body)
            status = resp.status_code
            if status != 200:
                error, reason = f"http {status}", _error_text(resp)
            else:
                version = str(resp.json()["model_version"])
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.ConnectError:
            error = "connect"
        except httpx.TransportError as exc:
            error = f"transport {type(exc).__name__}"
        except (ValueError, KeyError, TypeError):
            error = "bad body"
        sample = Sample(sent - self._t0, time.monotonic() - sent, status, version, error, reason)
        with self._lock:
            self._samples.append(sample)


def _error_text(resp: httpx.Response) -> str:
    """The Open Inference Protocol's `{"error": ...}` of a failed answer, else the start of its body."""
    try:
        return str(resp.json()["error"])[:200]
    except (ValueError, KeyError, TypeError):
        return resp.text[:200]


def _check(name: str, value: object, ok: bool, expected: str) -> None:
    if not ok:
        raise ValueError(f"prober {name} must be {expected} (got {value!r})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster.prober", description=__doc__.splitlines()[0])
    parser.add_argument("base_url", help="e.g. http://198.19.0.10 (a Service ClusterIP) or http://127.0.0.1:8080")
    parser.add_argument("model", help="model name in /v2/models/<model>/infer")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="stop after this long")
    parser.add_argument("--requests", type=int, default=100_000, help="stop after this many requests")
    args = parser.parse_args(argv)
    prober = Prober(args.base_url, args.model, rate=args.rate, max_requests=args.requests,
                    max_seconds=args.seconds, on_summary=lambda line: print(line, flush=True))
    report = prober.start().wait()
    print(report.describe_failures() if report.failed else "no failed requests")
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
