"""Prometheus metrics (the rollout gates read these names; keep them stable)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from onnx_server.connections import CLOSE_REASONS, ConnectionEvents

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
PROTOCOLS = ("rest", "grpc")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self, model: str, version: str, model_deployment: str = "") -> None:
        self.registry = CollectorRegistry()
        # modeldeployment tells apart two ModelDeployments of one namespace serving the same version
        self.labels = {"model": model, "version": version, "modeldeployment": model_deployment}
        names = ["model", "version", "modeldeployment"]
        # `code` is the HTTP status, or for gRPC the HTTP status of the same error class (gates read 5xx)
        self.requests = Counter("onnx_server_requests", "Inference requests by response code",
                                [*names, "code", "protocol"], registry=self.registry)
        self.duration = Histogram("onnx_server_request_duration_seconds", "End-to-end inference request time",
                                  [*names, "protocol"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue = Histogram("onnx_server_queue_duration_seconds", "Time a request waited for its batch",
                               names, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inference = Histogram("onnx_server_inference_duration_seconds", "onnxruntime run time per batch",
                                   names, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("onnx_server_batch_size", "Rows per onnxruntime run", names,
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("onnx_server_in_flight_requests", "Inference requests being served",
                               [*names, "protocol"], registry=self.registry)
        self.connections_open = Gauge("onnx_server_connections_open", "Open client connections (REST)",
                                      [*names, "protocol"], registry=self.registry)
        self.connections_closed = Counter("onnx_server_connections_closed", "Client connections the server "
                                          "ended, by why: max_age, header_timeout, body_timeout, idle_timeout, "
                                          "evicted (at the cap), drain (SIGTERM) (REST; gRPC core ends its own)",
                                          [*names, "protocol", "reason"], registry=self.registry)
        self.connections_rejected = Counter("onnx_server_connections_rejected", "Connections refused with 503 "
                                            "at the connection cap", [*names, "protocol"], registry=self.registry)

        # the labelled series, looked up once (the lookup costs more than the update)
        self.in_flight_now = {p: self.in_flight.labels(**self.labels, protocol=p) for p in PROTOCOLS}
        self._queue, self._batch_size = self.queue.labels(**self.labels), self.batch_size.labels(**self.labels)
        self._inference = self.inference.labels(**self.labels)
        self._duration = {p: self.duration.labels(**self.labels, protocol=p) for p in PROTOCOLS}
        self._by_code: dict[tuple[int, str], Counter] = {}

    def observe_batch(self, queue_s: list[float], rows: int, infer_s: float) -> None:
        """One onnxruntime run of `rows` rows, serving requests that waited `queue_s` each."""
        for waited in queue_s:
            self._queue.observe(waited)
        self._batch_size.observe(rows)
        self._inference.observe(infer_s)

    def request_done(self, code: int, seconds: float, protocol: str = "rest") -> None:
        counter = self._by_code.get((code, protocol))
        if counter is None:
            counter = self._by_code[code, protocol] = self.requests.labels(**self.labels, code=str(code),
                                                                           protocol=protocol)
        counter.inc()
        self._duration[protocol].observe(seconds)

    def rest_connection_events(self) -> ConnectionEvents:
        gauge = self.connections_open.labels(**self.labels, protocol="rest")
        closed = {reason: self.connections_closed.labels(**self.labels, protocol="rest", reason=reason)
                  for reason in CLOSE_REASONS}
        return ConnectionEvents(opened=gauge.set, closed=lambda reason: closed[reason].inc(),
                                rejected=self.connections_rejected.labels(**self.labels, protocol="rest").inc)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
