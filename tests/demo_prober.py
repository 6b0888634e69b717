"""A fixed-rate inference prober (bounded in count and time): every response's status and
`model_version`, totals, failures and the version mix over the last seconds."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

import httpx


@dataclass
class Totals:
    sent: int = 0
    failed: int = 0
    by_version: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        mix = ", ".join(f"{v}: {n}" for v, n in sorted(self.by_version.items()))
        errors = f" ({', '.join(f'{k}: {n}' for k, n in self.errors.items())})" if self.errors else ""
        return f"{self.sent} sent, {self.failed} failed{errors}; answered by {mix or 'none'}"


class Prober:
    def __init__(self, url: str, rows: list[list[float]], rate: float = 20.0, max_seconds: float = 600,
                 max_requests: int = 100_000, window_seconds: float = 5.0) -> None:
        self.url, self.rate, self.max_seconds, self.max_requests = url, rate, max_seconds, max_requests
        self.body = {"inputs": [{"name": "float_input", "shape": [len(rows), len(rows[0])], "datatype": "FP32",
                                 "data": [v for row in rows for v in row]}]}
        self.window = window_seconds
        self.totals = Totals()
        self.recent: collections.deque[tuple[float, str]] = collections.deque()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> Totals:
        self.stopping.set()
        self.thread.join(timeout=30)
        return self.totals

    def _record(self, outcome: str, ok: bool) -> None:
        with self.lock:
            self.totals.sent += 1
            if ok:
                self.totals.by_version[outcome] = self.totals.by_version.get(outcome, 0) + 1
            else:
                self.totals.failed += 1
                self.totals.errors[outcome] = self.totals.errors.get(outcome, 0) + 1
            now = time.monotonic()
            self.recent.append((now, outcome if ok else "FAILED"))
            while self.recent and self.recent[0][0] < now - self.window:
                self.recent.popleft()

    def _run(self) -> None:
        start = time.monotonic()
        with httpx.Client(timeout=5.0) as client:
            for i in range(self.max_requests):
                if self.stopping.is_set() or time.monotonic() - start > self.max_seconds:
                    return
                try:
                    resp = client.post(self.url, json=self.body)
                    if resp.status_code == 200:
                        self._record(str(resp.json().get("model_version")), True)
                    else:
                        self._record(f"HTTP {resp.status_code}", False)
                except httpx.HTTPError as exc:
                    self._record(type(exc).__name__, False)
                delay = start + (i + 1) / self.rate - time.monotonic()
                if delay > 0:
                    self.stopping.wait(delay)

    def line(self) -> str:
        with self.lock:
            seen = collections.Counter(v for _, v in self.recent)
            total = sum(seen.values()) or 1
            mix = "  ".join(f"{v}: {100 * n / total:3.0f}%" for v, n in sorted(seen.items()))
            return f"sent {self.totals.sent:5d}  failed {self.totals.failed:3d}  | last {self.window:.0f}s: {mix}"
