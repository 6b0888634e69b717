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

`client=` chooses how requests travel, as different callers' traffic does (kube-proxy balances
connections, not requests, so the kind of client decides which pods see its requests):
- "per-request": a new connection per request (the default);
- "pooled": one httpx keep-alive pool shared by the worker threads (as a service's client is);
- "triton-http": one `tritonclient.http` client (keep-alive, one connection);
- "triton-grpc": one `tritonclient.grpc` client, i.e. one HTTP/2 channel, to `grpc_target`.

With an https:// address, `ca_file` is the CA every kind of client verifies the server against (and
`client_cert`, a (certificate, key) pair of files, is presented when the server asks for one); gRPC then
uses TLS too.

`python -m localcluster.prober URL MODEL --rate 20 --seconds 30` prints the live summary line.
"""

from __future__ import annotations

import argparse
import math
import ssl
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
CLIENTS = ("per-request", "pooled", "triton-http", "triton-grpc")
RETRY_PAUSE = 0.2  # seconds before retrying a 503 (retry_503)


@dataclass(frozen=True)
class Sample:
    """One request: when it was sent (seconds since the prober started) and how it ended."""

    sent: float
    latency: float
    status: int | None  # HTTP status; None when no answer came (timeout, connection error)
    version: str | None  # `model_version` of a 200 answer
    error: str | None = None  # "timeout", "connect", "http 503", "bad body", ...
    reason: str | None = None  # the `error` text of a non-200 answer's body (what the server said)
    retried: int = 0  # 503 answers with Retry-After that were retried (retry_503)

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
    client: str = "per-request"

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
    def retried(self) -> int:
        """503 answers (with Retry-After) that were retried before the request's outcome."""
        return sum(s.retried for s in self.samples)

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
        return (f"{self.client} {self.elapsed:5.1f}s @ {self.rate:g}/s: {self.total} sent, {self.failed} failed, "
                f"p50 {self.p50_ms:.1f}ms p99 {self.p99_ms:.1f}ms, mix {mix or '-'}")

    def describe_failures(self, limit: int = 10) -> str:
        kinds = Counter(s.error for s in self.failures)
        first = ", ".join(f"{s.error}{f' ({s.reason[:80]})' if s.reason else ''} at {s.sent:.2f}s "
                          f"after {s.latency:.2f}s" for s in self.failures[:limit])
        return f"{self.failed}/{self.total} failed ({dict(kinds)}); first: {first}"


class Prober:
    """Sends requests at `rate` per second until `max_requests` are sent, `max_seconds` pass or
    `stop()` is called, whichever comes first. `keepalive=False` (default) opens a connection per
    request, so a per-connection balancer (kube-proxy) spreads requests as it spreads clients."""

    def __init__(self, base_url: str, model: str, *, rate: float = 20.0, max_requests: int = 10_000,
                 max_seconds: float = 300.0, timeout: float = 2.0, body: dict[str, Any] | None = None,
                 keepalive: bool = False, workers: int = 16, client: str = "per-request",
                 grpc_target: str | None = None, retry_503: int = 0,
                 on_summary: Callable[[str], None] | None = None, summary_every: float = 1.0,
                 ca_file: str | None = None, client_cert: tuple[str, str] | None = None) -> None:
        _check("rate", rate, 0 < rate <= MAX_RATE, f"between 0 (exclusive) and {MAX_RATE:g} requests/s")
        _check("max_requests", max_requests, 1 <= max_requests <= MAX_REQUESTS, f"between 1 and {MAX_REQUESTS}")
        _check("max_seconds", max_seconds, 0 < max_seconds <= MAX_SECONDS, f"between 0 and {MAX_SECONDS:g}")
        _check("timeout", timeout, 0 < timeout <= 60, "between 0 and 60 seconds")
        _check("workers", workers, 1 <= workers <= 256, "between 1 and 256")
        _check("base_url", base_url, base_url.startswith(("http://", "https://")), "an http:// or https:// URL")
        _check("client", client, client in CLIENTS, f"one of {', '.join(CLIENTS)}")
        _check("grpc_target", grpc_target, client != "triton-grpc" or bool(grpc_target), "host:port for triton-grpc")
        self.url = f"{base_url.rstrip('/')}/v2/models/{model}/infer"
        self.client_kind, self.model, self.retry_503 = client, model, retry_503
        if client == "pooled":
            keepalive = True
        elif client.startswith("triton"):
            self._triton = TritonSender(client, base_url, grpc_target, model, body or DEFAULT_BODY, timeout,
                                        TlsOptions(ca_file, client_cert) if base_url.startswith("https") else None)
        self.rate, self.max_requests, self.max_seconds = rate, max_requests, max_seconds
        self.body = body if body is not None else DEFAULT_BODY
        self.on_summary, self.summary_every = on_summary, summary_every
        limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers if keepalive else 0)
        verify: ssl.SSLContext | bool = True
        if ca_file is not None:
            verify = ssl.create_default_context(cafile=ca_file)
            if client_cert is not None:
                verify.load_cert_chain(*client_cert)
        self._client = httpx.Client(timeout=timeout, limits=limits, verify=verify)
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
        return Report(self.rate, samples, self.elapsed(), self.client_kind)

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
        if self.client_kind.startswith("triton"):
            self._triton.close()
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
        retried = 0
        while True:
            if self.client_kind.startswith("triton"):
                status, version, error, reason = self._triton.send()
            else:
                status, version, error, reason = self._send_httpx()
            if status != 503 or retried >= self.retry_503 or self._stop.is_set():
                break
            retried += 1  # as a client honouring Retry-After would (capped: the prober keeps its pace)
            time.sleep(RETRY_PAUSE)
        sample = Sample(sent - self._t0, time.monotonic() - sent, status, version, error, reason, retried)
        with self._lock:
            self._samples.append(sample)

    def _send_httpx(self) -> tuple[int | None, str | None, str | None, str | None]:
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
        except httpx.TimeoutException as exc:
            # which phase ran out (connect: no handshake, e.g. SYNs dropped; read: no answer) says where to look
            error, reason = "timeout", type(exc).__name__.removesuffix("Timeout").lower() or None
        except httpx.ConnectError:
            error = "connect"
        except httpx.TransportError as exc:
            error = f"transport {type(exc).__name__}"
        except (ValueError, KeyError, TypeError):
            error = "bad body"
        return status, version, error, reason


@dataclass(frozen=True)
class TlsOptions:
    """What a TLS client of the prober verifies against and presents."""

    ca_file: str | None
    client_cert: tuple[str, str] | None

    def http_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"ca_certs": self.ca_file} if self.ca_file else {}
        if self.client_cert:
            options.update(certfile=self.client_cert[0], keyfile=self.client_cert[1])
        return options

    def grpc_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"ssl": True, "root_certificates": self.ca_file}
        if self.client_cert:
            options.update(certificate_chain=self.client_cert[0], private_key=self.client_cert[1])
        return options


class TritonSender:
    """Requests through Triton's own Python clients: `tritonclient.http` (one client per worker thread,
    each one keep-alive connection: its gevent client must stay on the thread that made it) or
    `tritonclient.grpc` (one client, one HTTP/2 channel, shared by the workers)."""

    def __init__(self, kind: str, base_url: str, grpc_target: str | None, model: str, body: dict[str, Any],
                 timeout: float, tls: TlsOptions | None = None) -> None:
        import numpy as np

        self.kind, self.model, self.timeout, self.tls = kind, model, timeout, tls
        self.host = base_url.split("://", 1)[1].rstrip("/")
        self.grpc_target = grpc_target or ""
        self.arrays = [(t["name"], np.asarray(t["data"], dtype=_NUMPY[t["datatype"]]).reshape(t["shape"]),
                        t["datatype"]) for t in body["inputs"]]
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            if self.kind == "triton-grpc":
                import tritonclient.grpc as tc
                with self._lock:
                    client = self._clients[0] if self._clients else tc.InferenceServerClient(
                        self.grpc_target, **(self.tls.grpc_options() if self.tls else {}))
            else:
                import tritonclient.http as tc  # type: ignore[no-redef]
                tls = {"ssl": True, "ssl_options": self.tls.http_options()} if self.tls else {}
                client = tc.InferenceServerClient(self.host, connection_timeout=self.timeout,
                                                  network_timeout=self.timeout, **tls)
            with self._lock:
                if client not in self._clients:
                    self._clients.append(client)
            self._local.client = client
        return client

    def send(self) -> tuple[int | None, str | None, str | None, str | None]:
        if self.kind == "triton-grpc":
            import tritonclient.grpc as tc
        else:
            import tritonclient.http as tc  # type: ignore[no-redef]
        try:
            inputs = []
            for name, array, datatype in self.arrays:
                tensor = tc.InferInput(name, list(array.shape), datatype)
                tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            kwargs = {"client_timeout": self.timeout} if self.kind == "triton-grpc" else {}
            result = self._client().infer(self.model, inputs, **kwargs)
            response = result.get_response()
            version = response.model_version if self.kind == "triton-grpc" else response["model_version"]
            return 200, str(version), None, None
        except Exception as exc:  # the clients raise InferenceServerException, gevent and socket errors
            status = getattr(exc, "status", lambda: None)()
            code = int(status) if isinstance(status, str) and status.isdigit() else _GRPC_AS_HTTP.get(str(status))
            text = str(exc)[:200]
            return code, None, f"{self.kind} {status or type(exc).__name__}", text

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()


# onnx-server's gRPC codes for its HTTP error classes (grpc_server.GRPC_CODES), read back
_GRPC_AS_HTTP = {"StatusCode.INVALID_ARGUMENT": 400, "StatusCode.NOT_FOUND": 404,
                 "StatusCode.RESOURCE_EXHAUSTED": 413, "StatusCode.UNAVAILABLE": 503}
_NUMPY = {"FP32": "float32", "FP64": "float64", "INT64": "int64", "INT32": "int32", "FP16": "float16",
          "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}


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


class ClientMix:
    """The four kinds of client at once against one Service: a new connection per request, a keep-alive
    pool, `tritonclient.http` and `tritonclient.grpc` (over `grpc_target`); each its own Prober, rate
    and report. Keep-alive kinds only reach a pod other than their first one when the server ends the
    connection (onnx-server's --max-connection-age)."""

    def __init__(self, base_url: str, grpc_target: str, model: str, *, rate: float = 20.0,
                 max_seconds: float = 300.0, timeout: float = 5.0, body: dict[str, Any] | None = None,
                 kinds: tuple[str, ...] = CLIENTS, ca_file: str | None = None,
                 client_cert: tuple[str, str] | None = None) -> None:
        workers = {"per-request": 16, "pooled": 3, "triton-http": 1, "triton-grpc": 4}
        self.probers = {kind: Prober(base_url, model, rate=rate, max_requests=int(rate * max_seconds) + 1,
                                     max_seconds=max_seconds, timeout=timeout, body=body, client=kind,
                                     grpc_target=grpc_target, workers=workers[kind], ca_file=ca_file,
                                     client_cert=client_cert) for kind in kinds}

    def start(self) -> ClientMix:
        for prober in self.probers.values():
            prober.start()
        return self

    def report(self) -> MixReport:
        return MixReport({kind: p.report() for kind, p in self.probers.items()})

    def stop(self) -> MixReport:
        return MixReport({kind: p.stop() for kind, p in self.probers.items()})

    def elapsed(self) -> float:
        """Seconds on the mix's clock: its probers start within milliseconds of each other."""
        return max(p.elapsed() for p in self.probers.values())


@dataclass
class MixReport:
    """Every client's report; totals, failures and versions are summed over the clients."""

    reports: dict[str, Report]

    def __getitem__(self, kind: str) -> Report:
        return self.reports[kind]

    @property
    def total(self) -> int:
        return sum(r.total for r in self.reports.values())

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.reports.values())

    @property
    def versions(self) -> Counter[str]:
        return sum((r.versions for r in self.reports.values()), Counter())

    @property
    def samples(self) -> list[Sample]:
        return [s for r in self.reports.values() for s in r.samples]

    @property
    def failures(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    def share(self, version: str, since: float = 0.0, until: float = math.inf,
              kinds: tuple[str, ...] | None = None) -> float:
        """Fraction of the answers the given clients (default: all) got for requests sent in [since, until)
        that came from `version`, all their requests counted alike."""
        answered = [s.version for kind in (kinds or tuple(self.reports)) for s in self.reports[kind].samples
                    if s.ok and since <= s.sent < until]
        return answered.count(version) / len(answered) if answered else 0.0

    def summary(self) -> str:
        return "; ".join(f"{r.summary()}, answered by {dict(r.versions)}" for r in self.reports.values())

    def describe_failures(self) -> str:
        return "; ".join(f"{kind}: {r.describe_failures()}" for kind, r in self.reports.items() if r.failed)
