"""The protocol-agnostic data plane: load, warm up, batch, infer, describe."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata as importlib_metadata
from typing import Any, TypeVar

import numpy as np

from onnx_server.batching import Batcher
from onnx_server.budget import BodyBudget
from onnx_server.errors import BadRequest, NotFound, NotReady, PayloadTooLarge
from onnx_server.fetch import safe_relative
from onnx_server.metrics import Metrics
from onnx_server.model import V2_DTYPES, LoadedModel
from onnx_server.model_config import triton_model_config
from onnx_server.payload_log import PayloadLogger, PayloadLogSettings, Source
from onnx_server.protocol import InferRequest, TensorMeta, encode_response, parse_request
from onnx_server.settings import ServerSettings

LOG = logging.getLogger("onnx_server")
T = TypeVar("T")
INLINE_PARSE_BYTES = 256 << 10
# runs expected to take less than this stay on the event loop: handing them to a thread costs more
INLINE_RUN_SECONDS = 200e-6


def payload_logger(settings: ServerSettings, metrics: Metrics) -> PayloadLogger | None:
    """The payload logger `--payload-log-url` asks for, else None (nothing happens per request)."""
    if settings.payload_log_url is None:
        return None
    return PayloadLogger(
        PayloadLogSettings(settings.payload_log_url, settings.payload_log_sample_rate, settings.payload_log_mode,
                           settings.payload_log_ca_file, settings.payload_log_max_queue_events,
                           settings.payload_log_max_queue_bytes, senders=settings.payload_log_senders),
        Source(settings.name, settings.version, settings.namespace, settings.model_deployment), metrics.registry,
        metrics.labels)


class DataPlane:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.metrics = Metrics(settings.name, settings.version, settings.model_deployment)
        self.model: LoadedModel | None = None
        self.batcher: Batcher | None = None
        self.ready = False
        self.payload_log = payload_logger(settings, self.metrics)
        self.budget = BodyBudget(settings.body_budget_bytes, settings.busy_wait_seconds)
        self._big_parse = asyncio.Lock()
        self._seconds_per_element = math.inf  # of onnxruntime runs, a moving average
        # one run at a time: onnxruntime's intra-op threads already use the cores, and concurrent runs
        # only thrash the caches (measured: the ~1 ms dense MLP served half as many requests at 32 clients as at 8)
        self.runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnx-run")
        try:
            self.server_version = importlib_metadata.version("onnx-operator")
        except importlib_metadata.PackageNotFoundError:
            self.server_version = "0.0.0"

    def load(self) -> None:
        """Loads (and warms up) the model; the server reports ready only afterwards."""
        start = time.perf_counter()
        model_path = self.settings.model_dir / safe_relative(self.settings.model_file)
        self.model = LoadedModel(model_path, self.settings.threads, self.settings.prepack)
        if self.settings.warmup:
            feeds = self.model.warmup_feeds()
            self.model.run(feeds)
            self._timed_run(feeds, None)  # the second run is the one that tells the steady-state cost
        self.metrics.model_load_seconds.set(time.perf_counter() - start)
        LOG.info("Loaded %s %s (batchable: %s)", self.settings.name, self.settings.version, self.model.batchable)

    async def start(self) -> None:
        if self.ready:
            return
        if self.model is None:
            await asyncio.to_thread(self.load)
        assert self.model is not None
        if self.settings.max_batch_size > 1 and self.model.batchable:
            self.batcher = Batcher(self.model.run, self.settings.max_batch_size, self.settings.max_delay_ms / 1000,
                                   self.metrics.observe_batch, self.runner)
            self.batcher.start()
        if self.payload_log is not None:
            self.payload_log.start()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self.batcher:
            await self.batcher.stop()
        self.runner.shutdown(wait=False)
        if self.payload_log is not None:
            await asyncio.to_thread(self.payload_log.stop)

    @functools.cached_property
    def input_meta(self) -> dict[str, TensorMeta]:
        """Built once (after load): every request of either protocol checks against it."""
        assert self.model is not None
        return {t["name"]: TensorMeta(t["name"], t["dtype"], t["shape"]) for t in self.model.inputs}

    def metadata(self) -> dict[str, Any]:
        if self.model is None:
            raise NotReady("the model is still loading")

        def describe(ts: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{"name": t["name"], "datatype": t["dtype"], "shape": t["shape"]} for t in ts]
        return {"name": self.settings.name, "versions": [self.settings.version], "platform": "onnxruntime_onnx",
                "inputs": describe(self.model.inputs), "outputs": describe(self.model.outputs)}

    def model_config(self) -> dict[str, Any]:
        """Triton's model configuration: batch dimension, dims and the dynamic batching wait."""
        if self.model is None:
            raise NotReady("the model is still loading")
        outputs = [TensorMeta(t["name"], t["dtype"], t["shape"]) for t in self.model.outputs
                   if t["dtype"] in V2_DTYPES]
        batch = self.settings.max_batch_size if self.model.batchable else 0
        delay = round(self.settings.max_delay_ms * 1000) if self.batcher is not None else None
        return triton_model_config(self.settings.name, list(self.input_meta.values()), outputs, batch, delay)

    def check_model(self, name: str, version: str | None) -> None:
        """NotFound unless `name` (and `version`, when given) is the served model."""
        if name != self.settings.name or (version is not None and version != self.settings.version):
            raise NotFound(f"model {name!r}" + (f" version {version!r}" if version else "") + " is not served here")

    async def infer(self, body: bytes, header_length: int | None) -> tuple[bytes, int | None]:
        """One REST request: JSON (or binary extension) in, the same out."""
        self.check_ready()
        if len(body) < INLINE_PARSE_BYTES:  # parse_with's inline case, without its coroutine
            req = parse_request(body, header_length, self.input_meta, self.settings.max_elements)
        else:
            req = await self.parse_with(len(body), parse_request, body, header_length, self.input_meta,
                                        self.settings.max_elements)
        result = await self.run(req)
        return encode_response(self.settings.name, self.settings.version, req.id, result, req.binary_outputs)

    def check_ready(self) -> None:
        if not self.ready or self.model is None:
            raise NotReady("the model is still loading")

    async def run(self, req: InferRequest) -> dict[str, np.ndarray]:
        """Runs a parsed request of either protocol (batched with the others when it can be)."""
        self.check_ready()
        model = self.model
        assert model is not None
        log = self.payload_log
        logged = log.sample(req) if log is not None else None
        if req.outputs is not None and not model.tensor_output_set.issuperset(req.outputs):
            unknown = sorted(set(req.outputs) - model.tensor_output_set)
            kinds = {o["name"]: o["dtype"] for o in model.outputs}
            untyped = [f"{n} is a {kinds[n]}" for n in unknown if n in kinds]
            why = f" ({'; '.join(untyped)}: no Open Inference Protocol datatype carries it)" if untyped else ""
            raise BadRequest(f"unknown outputs {unknown}{why}; "
                             f"the model's tensor outputs are {model.tensor_outputs}")
        # one pass over the inputs: the row count of those with a dimension (batched only when they share
        # it), the most rows of any, and the elements of all
        rows, shared, most, elements = None, True, 0, 0
        for a in req.inputs.values():
            elements += a.size
            if a.ndim:
                n = a.shape[0]
                if rows is None:
                    rows = most = n
                elif n != rows:
                    shared, most = False, max(most, n)
        if self.batcher is not None and rows is not None and shared and rows <= self.settings.max_batch_size:
            result = await self.batcher.submit(req.inputs, req.outputs)
        else:
            if self._seconds_per_element * elements < INLINE_RUN_SECONDS:
                result, took = self._timed_run(req.inputs, req.outputs, elements)
            else:
                result, took = await asyncio.get_running_loop().run_in_executor(
                    self.runner, self._timed_run, req.inputs, req.outputs, elements)
            self.metrics.observe_run(1 if rows is None else most, took)
        size = 0
        for v in result.values():
            size += v.nbytes  # onnxruntime returns numpy arrays (BYTES outputs: object arrays of str)
        if size > self.settings.max_output_bytes:
            raise PayloadTooLarge(f"the outputs are {size} bytes; the limit is {self.settings.max_output_bytes}")
        if log is not None and logged is not None:
            log.log_response(logged, result)
        return result

    def _timed_run(self, feeds: dict[str, Any], outputs: list[str] | None,
                   elements: int | None = None) -> tuple[dict[str, Any], float]:
        assert self.model is not None
        start = time.perf_counter()
        result = self.model.run(feeds, outputs)
        took = time.perf_counter() - start
        if elements is None:
            elements = sum(int(np.asarray(v).size) for v in feeds.values())
        per_element = took / max(1, elements)
        previous = self._seconds_per_element
        if previous == math.inf:
            self._seconds_per_element = per_element
        else:  # one run stalled by the scheduler (a CPU quota, a busy core) moves it at most 1.6x
            self._seconds_per_element = 0.8 * previous + 0.2 * min(per_element, 4 * previous)
        return result, took

    async def parse_with(self, size: int, parse: Callable[..., T], *args: Any) -> T:
        """Runs `parse(*args)` inline for small bodies; big ones are parsed off the event loop (health
        checks stay answered), one at a time (a body expands several-fold in memory while parsed)."""
        if size < INLINE_PARSE_BYTES:
            return parse(*args)
        async with self._big_parse:
            return await asyncio.to_thread(parse, *args)
