"""Prometheus metrics (the rollout gates read these names; keep them stable).

The per-request series (requests, durations, batches, in flight) are plain numbers updated on the event
loop, where every request of either protocol is answered, and turned into Prometheus samples only when
scraped (`HotSeries`): prometheus_client's own metrics take a lock per update, and a request updates six
of them. The exposition is the same as prometheus_client's (names, labels, `_created`)."""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from onnx_server.connections import CLOSE_REASONS, ConnectionEvents

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
PROTOCOLS = ("rest", "grpc")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class LoopHistogram:
    """One histogram series, updated from the event loop only (no lock): counts per bucket, not cumulative."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1  # a bucket holds values <= its bound
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, count in zip((*map(floatToGoString, self.bounds), "+Inf"), self.counts, strict=True):
            total += count
            out.append((bound, float(total)))
        return out


class LoopCounter:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value, self.created = 0, time.time()


class HotSeries(Collector):
    """The per-request series of one Metrics, exposed at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m, names = self.m, ["model", "version", "modeldeployment"]
        values = list(m.labels.values())
        requests = CounterMetricFamily("onnx_server_requests", "Inference requests by response code",
                                       labels=[*names, "code", "protocol"])
        for (code, protocol), counter in sorted(m.requests.items()):
            requests.add_metric([*values, str(code), protocol], counter.value, created=counter.created)
        yield requests
        yield histogram("onnx_server_request_duration_seconds", "End-to-end inference request time",
                        [*names, "protocol"], [([*values, p], m.duration[p]) for p in PROTOCOLS])
        yield histogram("onnx_server_queue_duration_seconds", "Time a request waited for its batch", names,
                        [(values, m.queue)])
        yield histogram("onnx_server_inference_duration_seconds", "onnxruntime run time per batch", names,
                        [(values, m.inference)])
        yield histogram("onnx_server_batch_size", "Rows per onnxruntime run", names, [(values, m.batch_size)])
        in_flight = GaugeMetricFamily("onnx_server_in_flight_requests", "Inference requests being served",
                                      labels=[*names, "protocol"])
        for protocol in PROTOCOLS:
            in_flight.add_metric([*values, protocol], m.in_flight[protocol])
        yield in_flight


def histogram(name: str, doc: str, labels: list[str], series: list[tuple[list[str], LoopHistogram]]) -> Metric:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, h in series:
        family.add_metric(values, h.cumulative(), h.sum)
        family.samples.append(Sample(f"{name}_created", dict(zip(labels, values, strict=True)), h.created))
    return family


class Metrics:
    def __init__(self, model: str, version: str, model_deployment: str = "") -> None:
        self.registry = CollectorRegistry()
        # modeldeployment tells apart two ModelDeployments of one namespace serving the same version
        self.labels = {"model": model, "version": version, "modeldeployment": model_deployment}
        names = ["model", "version", "modeldeployment"]
        # `code` is the HTTP status, or for gRPC the HTTP status of the same error class (gates read 5xx)
        self.requests: dict[tuple[int, str], LoopCounter] = {}
        self.duration = {p: LoopHistogram(LATENCY_BUCKETS) for p in PROTOCOLS}
        self.queue, self.inference = LoopHistogram(LATENCY_BUCKETS), LoopHistogram(LATENCY_BUCKETS)
        self.batch_size = LoopHistogram(BATCH_BUCKETS)
        self.in_flight = dict.fromkeys(PROTOCOLS, 0)
        self.registry.register(HotSeries(self))
        self.model_load_seconds = Gauge("onnx_server_model_load_seconds", "Time the model took to load and warm "
                                        "up (set once the server is ready)", names, registry=self.registry
                                        ).labels(**self.labels)
        self.connections_open = Gauge("onnx_server_connections_open", "Open client connections (REST)",
                                      [*names, "protocol"], registry=self.registry)
        self.connections_closed = Counter("onnx_server_connections_closed", "Client connections the server "
                                          "ended, by why: max_age, header_timeout, body_timeout, idle_timeout, "
                                          "evicted (at the cap), drain (SIGTERM) (REST; gRPC core ends its own)",
                                          [*names, "protocol", "reason"], registry=self.registry)
        self.connections_rejected = Counter("onnx_server_connections_rejected", "Connections refused with 503 "
                                            "at the connection cap", [*names, "protocol"], registry=self.registry)

    def observe_batch(self, queue_s: Sequence[float], rows: int, infer_s: float) -> None:
        """One onnxruntime run of `rows` rows, serving requests that waited `queue_s` each."""
        for waited in queue_s:
            self.queue.observe(waited)
        self.batch_size.observe(rows)
        self.inference.observe(infer_s)

    def observe_run(self, rows: int, infer_s: float) -> None:
        """observe_batch of a request run on its own: no queue time."""
        self.queue.counts[0] += 1  # a wait of 0 s: the first bucket (the sum is unchanged)
        self.batch_size.observe(rows)
        self.inference.observe(infer_s)

    def request_done(self, code: int, seconds: float, protocol: str = "rest") -> None:
        counter = self.requests.get((code, protocol))
        if counter is None:
            counter = self.requests[code, protocol] = LoopCounter()
        counter.value += 1
        self.duration[protocol].observe(seconds)

    def rest_connection_events(self) -> ConnectionEvents:
        gauge = self.connections_open.labels(**self.labels, protocol="rest")
        closed = {reason: self.connections_closed.labels(**self.labels, protocol="rest", reason=reason)
                  for reason in CLOSE_REASONS}
        return ConnectionEvents(opened=gauge.set, closed=lambda reason: closed[reason].inc(),
                                rejected=self.connections_rejected.labels(**self.labels, protocol="rest").inc)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
