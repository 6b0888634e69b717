"""`onnx-server serve`: REST (uvicorn) and gRPC on one event loop, one data plane, one drain on SIGTERM."""

from __future__ import annotations

import asyncio
import socket
from types import FrameType

import uvicorn

from onnx_server.app import create_app
from onnx_server.connections import aged_protocol
from onnx_server.dataplane import DataPlane
from onnx_server.grpc_server import GrpcFrontend
from onnx_server.settings import ServerSettings


class DrainingServer(uvicorn.Server):
    """uvicorn, with gRPC drained alongside its HTTP connections and the plane stopped after both."""

    def __init__(self, config: uvicorn.Config, settings: ServerSettings, plane: DataPlane) -> None:
        super().__init__(config)
        self.settings, self.plane = settings, plane
        self.grpc: GrpcFrontend | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.plane.start()
        if self.settings.grpc_port is not None:
            self.grpc = GrpcFrontend(self.settings, self.plane, self.settings.grpc_port)
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
    # keep-alive connections end after --max-connection-age so kube-proxy can place the client anew
    protocol = aged_protocol(settings.max_connection_age_seconds, plane.metrics.rest_connection_aged)
    config = uvicorn.Config(create_app(settings, plane, owns_plane=False), host=settings.host, port=settings.port,
                            log_level="warning", timeout_graceful_shutdown=int(settings.grace_seconds),
                            access_log=False, http=protocol)
    DrainingServer(config, settings, plane).run()
