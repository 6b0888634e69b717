"""`onnx-server serve`: REST (uvicorn) and gRPC on one event loop, one data plane, one drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import socket
from types import FrameType

import uvicorn

from onnx_server.app import create_app
from onnx_server.connections import ConnectionLimits, limited_protocol
from onnx_server.dataplane import DataPlane
from onnx_server.grpc_server import GrpcFrontend
from onnx_server.resources import connection_cap, memory_limit_bytes, raise_descriptor_limit
from onnx_server.settings import ServerSettings

LOG = logging.getLogger("onnx_server")


class DrainingServer(uvicorn.Server):
    """uvicorn, with gRPC drained alongside its HTTP connections and the plane stopped after both."""

    def __init__(self, config: uvicorn.Config, settings: ServerSettings, plane: DataPlane, cap: int) -> None:
        super().__init__(config)
        self.settings, self.plane, self.cap = settings, plane, cap
        self.grpc: GrpcFrontend | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.plane.start()
        if self.settings.grpc_port is not None:
            self.grpc = GrpcFrontend(self.settings, self.plane, self.settings.grpc_port, self.cap)
            await self.grpc.start()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.grpc is not None:
            asyncio.get_running_loop().call_soon(self.grpc.begin_drain)
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        drains = [super().shutdown(sockets)] + ([self.grpc.drain()] if self.grpc is not None else [])
        await asyncio.gather(*drains)
        await self.plane.stop()


def serve(settings: ServerSettings, plane: DataPlane) -> None:
    # uvicorn stops accepting on SIGTERM and waits up to the grace period for in-flight requests
    descriptors = raise_descriptor_limit()
    cap = settings.max_connections or connection_cap(descriptors, memory_limit_bytes())
    LOG.info("Connection cap: %d per protocol", cap)
    limits = ConnectionLimits(max_age=settings.max_connection_age_seconds,
                              header_timeout=settings.header_timeout_seconds,
                              body_timeout=settings.body_timeout_seconds,
                              min_body_rate=settings.min_body_bytes_per_second,
                              idle_timeout=settings.idle_timeout_seconds, max_connections=cap)
    # every REST connection is bounded in age, header/body/idle time and number (onnx_server.connections)
    protocol = limited_protocol(limits, plane.metrics.rest_connection_events())
    config = uvicorn.Config(create_app(settings, plane, owns_plane=False), host=settings.host, port=settings.port,
                            log_level="warning", timeout_graceful_shutdown=int(settings.grace_seconds),
                            timeout_keep_alive=int(settings.idle_timeout_seconds), access_log=False, http=protocol,
                            backlog=min(4096, cap))
    DrainingServer(config, settings, plane, cap).run()
