"""The gRPC layer: inference.GRPCInferenceService (Open Inference Protocol v2, plus Triton's ModelConfig)
and grpc.health.v1, over the same data plane, budget, batcher and metrics as REST."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from onnx_server.app import CLIENT_CLOSED
from onnx_server.dataplane import DataPlane
from onnx_server.errors import ServerError
from onnx_server.grpc_protocol import decode_message, decode_request, encode_response
from onnx_server.proto import inference_pb2 as pb
from onnx_server.settings import ServerSettings

LOG = logging.getLogger("onnx_server")
SERVICE = "inference.GRPCInferenceService"
# the HTTP status of each error class -> its gRPC code
GRPC_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
              413: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE}
RESPONSE_HEADROOM = 1 << 20  # bytes of a response beyond its tensors (names, shapes)
Req = TypeVar("Req")


async def abort(context: grpc.aio.ServicerContext, exc: Exception) -> None:
    if isinstance(exc, ServerError) and exc.status_code in GRPC_CODES:
        await context.abort(GRPC_CODES[exc.status_code], exc.message)
    LOG.exception("internal error in a gRPC call")
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


def answered(fn: Callable[[Any, Req], Awaitable[Message]]) -> Callable[[Any, Req, grpc.aio.ServicerContext],
                                                                       Awaitable[Message]]:
    """Turns the data plane's errors into the matching gRPC status."""
    @functools.wraps(fn)
    async def call(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Message:
        try:
            return await fn(self, request)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort(context, exc)
            raise  # unreachable: abort raises
    return call


class InferenceService:
    def __init__(self, settings: ServerSettings, plane: DataPlane) -> None:
        self.settings, self.plane = settings, plane

    @answered
    async def server_live(self, _: pb.ServerLiveRequest) -> Message:
        return pb.ServerLiveResponse(live=True)

    @answered
    async def server_ready(self, _: pb.ServerReadyRequest) -> Message:
        return pb.ServerReadyResponse(ready=self.plane.ready)

    @answered
    async def model_ready(self, request: pb.ModelReadyRequest) -> Message:
        self.plane.check_model(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=self.plane.ready)

    @answered
    async def server_metadata(self, _: pb.ServerMetadataRequest) -> Message:
        return pb.ServerMetadataResponse(name="onnx-server", version=self.plane.server_version,
                                         extensions=["binary_tensor_data", "model_configuration"])

    @answered
    async def model_metadata(self, request: pb.ModelMetadataRequest) -> Message:
        self.plane.check_model(request.name, request.version or None)
        return json_format.ParseDict(self.plane.metadata(), pb.ModelMetadataResponse())

    @answered
    async def model_config(self, request: pb.ModelConfigRequest) -> Message:
        self.plane.check_model(request.name, request.version or None)
        # the REST config's fields that inference.proto leaves out (instance groups, ...) are dropped
        return json_format.ParseDict({"config": self.plane.model_config()}, pb.ModelConfigResponse(),
                                     ignore_unknown_fields=True)

    async def model_infer(self, raw: bytes, context: grpc.aio.ServicerContext) -> pb.ModelInferResponse:
        """Takes the serialized request: its size is what the body budget reserves."""
        plane, start, code = self.plane, time.perf_counter(), 500
        plane.metrics.in_flight["grpc"] += 1
        try:
            plane.check_ready()
            if not plane.budget.take(len(raw)):
                await plane.budget.acquire(len(raw))
            try:
                msg = await plane.parse_with(len(raw), decode_message, raw)
                plane.check_model(msg.model_name, msg.model_version or None)
                req = await plane.parse_with(len(raw), decode_request, msg, plane.input_meta,
                                             self.settings.max_elements)
                result = await plane.run(req)
                response = encode_response(self.settings.name, self.settings.version, req.id, result)
            finally:
                plane.budget.release(len(raw))
            code = 200
            return response
        except asyncio.CancelledError:
            code = CLIENT_CLOSED  # the client went away (deadline, cancel): no server error for the gates
            raise
        except Exception as exc:
            code = exc.status_code if isinstance(exc, ServerError) else 500
            await abort(context, exc)
            raise
        finally:
            plane.metrics.in_flight["grpc"] -= 1
            plane.metrics.request_done(code, time.perf_counter() - start, "grpc")

    def handler(self) -> grpc.GenericRpcHandler:
        def unary(fn: Any, request: type[Message] | None, response: type[Message]) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=request.FromString if request else None,
                response_serializer=response.SerializeToString)
        return grpc.method_handlers_generic_handler(SERVICE, {
            "ServerLive": unary(self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": unary(self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ModelReady": unary(self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ServerMetadata": unary(self.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
            "ModelMetadata": unary(self.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
            "ModelConfig": unary(self.model_config, pb.ModelConfigRequest, pb.ModelConfigResponse),
            "ModelInfer": unary(self.model_infer, None, pb.ModelInferResponse),
        })


MAX_CONCURRENT_STREAMS = 128  # calls one connection may have open at once
MIN_PING_INTERVAL_MS = 10_000  # a client pinging more often (without calls) is sent GOAWAY after 2 strikes


def connection_options(settings: ServerSettings, cap: int) -> list[tuple[str, int]]:
    """The gRPC equivalents of the REST port's bounds: GOAWAY after --max-connection-age (gRPC core adds
    +/-10% jitter; a channel then reconnects and kube-proxy places it anew; calls in flight get the
    drain's grace to finish), after --idle-timeout without calls, a handshake deadline, a cap on streams
    per connection and on connections, and keepalive pings enforced."""
    def ms(seconds: float) -> int:
        return max(1, round(seconds * 1000))
    options = [("grpc.max_connection_idle_ms", ms(settings.idle_timeout_seconds)),
               ("grpc.server_handshake_timeout_ms", ms(settings.header_timeout_seconds)),
               ("grpc.max_concurrent_streams", MAX_CONCURRENT_STREAMS),
               ("grpc.max_allowed_incoming_connections", cap),
               ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
               ("grpc.http2.max_ping_strikes", 2),
               ("grpc.keepalive_permit_without_calls", 0)]
    if settings.max_connection_age_seconds > 0:
        options += [("grpc.max_connection_age_ms", ms(settings.max_connection_age_seconds)),
                    ("grpc.max_connection_age_grace_ms", ms(settings.grace_seconds))]
    return options


class GrpcFrontend:
    """The gRPC server: started after the plane, drained (health NOT_SERVING, calls finished) on SIGTERM."""

    def __init__(self, settings: ServerSettings, plane: DataPlane, port: int, cap: int = 1024,
                 credentials: grpc.ServerCredentials | None = None) -> None:
        """`credentials`: TLS (onnx_server.tls); None serves h2c. The handshake deadline
        (grpc.server_handshake_timeout_ms) covers the TLS handshake too."""
        self.settings, self.plane = settings, plane
        self.server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", settings.max_output_bytes + RESPONSE_HEADROOM),
            ("grpc.so_reuseport", 0),
            *connection_options(settings, cap),
        ])
        self.server.add_generic_rpc_handlers([InferenceService(settings, plane).handler()])
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        address = f"{host}:{port}"
        self.port = self.server.add_secure_port(address, credentials) if credentials is not None \
            else self.server.add_insecure_port(address)
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.server.start()
        status = health_pb2.HealthCheckResponse.SERVING if self.plane.ready else \
            health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", SERVICE):
            await self.health.set(service, status)
        LOG.info("gRPC listening on %s:%d", self.settings.host, self.port)

    def begin_drain(self) -> None:
        """Stops taking calls now; the ones in flight get up to --grace-seconds."""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(self._stop())

    async def drain(self) -> None:
        self.begin_drain()
        assert self._stopping is not None
        await self._stopping

    async def _stop(self) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.settings.grace_seconds)
