"""`onnx-server serve`: REST (uvicorn) and gRPC on one event loop, one data plane, one drain on SIGTERM;
optionally TLS on both (onnx_server.tls) and a plain health port for probes and Prometheus."""

from __future__ import annotations

import asyncio
import logging
import socket
from types import FrameType

import uvicorn

from onnx_server.app import create_app, create_health_app
from onnx_server.connections import ConnectionLimits, limited_protocol
from onnx_server.dataplane import DataPlane
from onnx_server.grpc_server import GrpcFrontend
from onnx_server.resources import connection_cap, memory_limit_bytes, raise_descriptor_limit
from onnx_server.settings import ServerSettings
from onnx_server.tls import CertificateReloader

LOG = logging.getLogger("onnx_server")


class DrainingServer(uvicorn.Server):
    """uvicorn, with gRPC drained alongside its HTTP connections and the plane stopped after both."""

    def __init__(self, config: uvicorn.Config, settings: ServerSettings, plane: DataPlane, cap: int,
                 tls: CertificateReloader | None = None) -> None:
        super().__init__(config)
        self.settings, self.plane, self.cap, self.tls = settings, plane, cap, tls
        self.grpc: GrpcFrontend | None = None
        self.health: uvicorn.Server | None = None
        self.reloading: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.plane.start()
        if self.settings.grpc_port is not None:
            self.grpc = GrpcFrontend(self.settings, self.plane, self.settings.grpc_port, self.cap,
                                     self.tls.grpc_credentials() if self.tls else None)
            await self.grpc.start()
        if self.settings.health_port is not None:
            self.health = uvicorn.Server(uvicorn.Config(
                create_health_app(self.plane), host=self.settings.host, port=self.settings.health_port,
                log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=5))
            self.health.config.load()
            self.health.lifespan = self.health.config.lifespan_class(self.health.config)
            await self.health.startup()
        if self.tls is not None:
            self.reloading = asyncio.get_running_loop().create_task(self.tls.poll(self.settings.tls_reload_seconds))
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.grpc is not None:
            asyncio.get_running_loop().call_soon(self.grpc.begin_drain)
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        drains = [super().shutdown(sockets)] + ([self.grpc.drain()] if self.grpc is not None else [])
        await asyncio.gather(*drains)
        if self.reloading is not None:
            self.reloading.cancel()
        if self.health is not None:  # probes and scrapes keep an answer until the drain ends
            await self.health.shutdown()
        await self.plane.stop()


def serve(settings: ServerSettings, plane: DataPlane, tls: CertificateReloader | None = None) -> None:
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
                            access_log=False, http=protocol, proxy_headers=False,
                            backlog=min(4096, cap))
    if tls is not None:
        # uvicorn listens with this context (create_server(ssl=config.ssl)); its SNI callback hands each new
        # handshake the newest certificate. The handshake is bounded by asyncio's ssl_handshake_timeout
        # (60 s; uvicorn does not expose it) and is not counted against the cap until it completes.
        config.load()
        config.ssl = tls.listening_context()
    DrainingServer(config, settings, plane, cap, tls).run()
