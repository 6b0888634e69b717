"""Payload logging: sampled inference requests and responses sent to a sink as CloudEvents (HTTP, binary mode).

The inference path only decides (a counter sampler) and appends references to a bounded queue; threads of
their own encode and post. A full queue, a slow sink or a dead one drop events (counted, logged), never
delay or fail an inference. The queue holds at most `max_queue_events` events and `max_queue_bytes` of
tensor data; each event is posted at most 1 + `retries` times; after a failed event the sink gets a pause
of `down_seconds` during which events are dropped unsent.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
from prometheus_client import CollectorRegistry, Counter

from onnx_server.protocol import InferRequest, dumps, tensor_items

LOG = logging.getLogger("onnx_server.payload_log")
Mode = Literal["request", "response", "both"]
MODES: tuple[Mode, ...] = ("request", "response", "both")
EVENT_TYPE = "io.onnx-operator.inference."  # + "request" / "response"
PARTS_PER_MILLION = 1_000_000
DROP_LOG_SECONDS = 10.0


class CounterSampler:
    """Exactly `rate` of the requests, evenly spread and reproducible: a credit grows by `rate` per request and
    each whole unit of it samples one (the first request is sampled; 100 requests at 0.1 give exactly 10)."""

    def __init__(self, rate: float) -> None:
        if not 0 <= rate <= 1:
            raise ValueError(f"sample rate {rate} is outside [0, 1]")
        self._step = round(rate * PARTS_PER_MILLION)
        self._credit = PARTS_PER_MILLION - self._step if self._step else 0

    def take(self) -> bool:
        self._credit += self._step
        if self._credit >= PARTS_PER_MILLION:
            self._credit -= PARTS_PER_MILLION
            return True
        return False


@dataclass(frozen=True)
class PayloadLogSettings:
    url: str
    sample_rate: float = 1.0
    mode: Mode = "both"
    ca_file: Path | None = None  # the sink's CA bundle (https); default: the system's trust store
    max_queue_events: int = 1000
    max_queue_bytes: int = 32 << 20
    retries: int = 2
    timeout_seconds: float = 2.0
    down_seconds: float = 1.0
    senders: int = 1  # threads posting events, one request in flight each (more: throughput, but CPU of the server)


@dataclass(frozen=True)
class Source:
    """Who sends: the attributes every event carries."""

    model: str
    version: str
    namespace: str
    model_deployment: str = ""


@dataclass(frozen=True)
class _Event:
    kind: str  # "request" or "response"
    request_id: str
    tensors: dict[str, np.ndarray]
    size: int


def tensor_bytes(tensors: dict[str, np.ndarray]) -> int:
    """Memory the tensors hold (BYTES tensors: their strings' lengths)."""
    total = 0
    for array in tensors.values():
        if array.dtype == object:
            total += sum(len(v) if isinstance(v, (bytes, str)) else 8 for v in array.reshape(-1))
        else:
            total += int(array.nbytes)
    return total


def cloudevent(source: Source, event_kind: str, request_id: str, tensors: dict[str, np.ndarray],
               now: dt.datetime) -> tuple[dict[str, str], bytes]:
    """An event in CloudEvents' HTTP binary mode: attributes as ce-* headers, the v2 JSON document as the body."""
    items, _ = tensor_items(tensors, set())
    key = "inputs" if event_kind == "request" else "outputs"
    body = dumps({"id": request_id, "model_name": source.model, "model_version": source.version, key: items})
    headers = {
        "ce-specversion": "1.0",
        "ce-id": f"{request_id}-{event_kind}",
        "ce-type": EVENT_TYPE + event_kind,
        "ce-source": f"/namespaces/{source.namespace}/models/{source.model}/versions/{source.version}",
        "ce-time": now.isoformat().replace("+00:00", "Z"),
        "ce-requestid": request_id,
        "ce-model": source.model,
        "ce-modelversion": source.version,
        "ce-namespace": source.namespace,
        "content-type": "application/json",
    }
    if source.model_deployment:
        headers["ce-modeldeployment"] = source.model_deployment
    return headers, body


class PayloadLogger:
    """The hook the data plane calls (`sample`, then `log_request` / `log_response`) and the sender thread."""

    def __init__(self, settings: PayloadLogSettings, source: Source, registry: CollectorRegistry,
                 labels: dict[str, str]) -> None:
        """`labels`: the server's metric labels (model, version, modeldeployment), on the payload-log series too."""
        self.settings, self.source = settings, source
        self.sampler = CounterSampler(settings.sample_rate)
        self.requests = settings.mode in ("request", "both")
        self.responses = settings.mode in ("response", "both")
        sent = Counter("onnx_server_payload_log_events", "Payload-log events delivered to the sink",
                       list(labels), registry=registry)
        dropped = Counter("onnx_server_payload_log_dropped", "Payload-log events dropped, by reason (queue_full: "
                          "the bounded queue is full; sink_failed: retries exhausted; sink_down: sent while the "
                          "sink was failing)", [*labels, "reason"], registry=registry)
        self._sent = sent.labels(**labels)
        self._dropped = {r: dropped.labels(**labels, reason=r) for r in ("queue_full", "sink_failed", "sink_down")}
        self._queue: collections.deque[_Event] = collections.deque()
        self._queued_bytes = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._down_until = 0.0
        self._drop_log = threading.Lock()
        self._unlogged_drops = 0
        self._last_drop_log = 0.0
        self._threads = [threading.Thread(target=self._run, name=f"payload-log-{i}", daemon=True)
                         for i in range(settings.senders)]
        self._client = httpx.Client(timeout=settings.timeout_seconds, verify=self._verify(),
                                    limits=httpx.Limits(max_connections=settings.senders))

    def _verify(self) -> ssl.SSLContext | bool:
        if self.settings.ca_file is None:
            return True
        return ssl.create_default_context(cafile=str(self.settings.ca_file))

    def start(self) -> None:
        for thread in self._threads:
            thread.start()
        LOG.info("Payload logging to %s: %s, sample rate %g", self.settings.url, self.settings.mode,
                 self.settings.sample_rate)

    def sample(self, req: InferRequest) -> str | None:
        """The request's id when this request is logged, else None (the only call made for every request)."""
        if not self.sampler.take():
            return None
        request_id = req.id or uuid.uuid4().hex
        if self.requests:
            self._put(_Event("request", request_id, req.inputs, tensor_bytes(req.inputs)))
        return request_id

    def log_response(self, request_id: str, outputs: dict[str, np.ndarray]) -> None:
        if self.responses:
            self._put(_Event("response", request_id, outputs, tensor_bytes(outputs)))

    def _put(self, event: _Event) -> None:
        with self._cond:
            full = (len(self._queue) >= self.settings.max_queue_events
                    or self._queued_bytes + event.size > self.settings.max_queue_bytes)
            if not full:
                self._queue.append(event)
                self._queued_bytes += event.size
                self._cond.notify()
        if full:
            self._drop("queue_full")

    def _drop(self, reason: str) -> None:
        self._dropped[reason].inc()
        with self._drop_log:  # one warning per DROP_LOG_SECONDS with the count since the last one
            self._unlogged_drops += 1
            now = time.monotonic()
            if now - self._last_drop_log < DROP_LOG_SECONDS:
                return
            count, self._unlogged_drops, self._last_drop_log = self._unlogged_drops, 0, now
        LOG.warning("Payload logging dropped %d events (last reason: %s; sink %s)", count, reason, self.settings.url)

    def _next(self) -> _Event | None:
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if not self._queue:
                return None
            event = self._queue.popleft()
            self._queued_bytes -= event.size
            return event

    def _run(self) -> None:
        while (event := self._next()) is not None:
            if time.monotonic() < self._down_until:
                self._drop("sink_down")
            elif self._delivered(event):
                self._sent.inc()
            else:
                self._down_until = time.monotonic() + self.settings.down_seconds
                self._drop("sink_failed")

    def _delivered(self, event: _Event) -> bool:
        try:
            return self._deliver(event)
        except Exception:  # the thread must outlive any bad event
            LOG.exception("Payload log event %s-%s could not be sent", event.request_id, event.kind)
            return False

    def _deliver(self, event: _Event) -> bool:
        headers, body = cloudevent(self.source, event.kind, event.request_id, event.tensors, dt.datetime.now(dt.UTC))
        for attempt in range(1 + self.settings.retries):
            if attempt:
                time.sleep(min(0.05 * 2 ** attempt, 0.5))
            try:
                status = self._client.post(self.settings.url, content=body, headers=headers).status_code
            except httpx.HTTPError as exc:
                why: Any = exc
            else:
                if status < 300:
                    return True
                why = f"HTTP {status}"
                if 400 <= status < 500 and status not in (408, 429):
                    break  # the sink refuses this event: no retry
            LOG.debug("Payload log %s to %s failed (attempt %d): %s", headers["ce-id"], self.settings.url,
                      attempt + 1, why)
        return False

    def stop(self, timeout: float = 2.0) -> None:
        """Sends what is queued for up to `timeout` seconds, then drops the rest."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        self._client.close()
