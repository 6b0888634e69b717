"""The HTTP layer: Open Inference Protocol v2 REST over one data plane (`create_app(settings, plane)`).

Inference (`POST /v2/models/{name}[/versions/{version}]/infer`) is answered straight from ASGI by
`RestApp`: no routing table, middleware, request or response objects for the request every client sends
all the time. Everything else goes to a Starlette app. Both end in the same data plane, so parsing,
validation, limits and errors stay one implementation."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from onnx_server.budget import BodyBudget as BodyBudget  # re-exported: older imports
from onnx_server.dataplane import DataPlane
from onnx_server.errors import PayloadTooLarge, ServerError
from onnx_server.openapi import openapi_document
from onnx_server.protocol import HEADER_LENGTH, decimal
from onnx_server.settings import ServerSettings

LOG = logging.getLogger("onnx_server")
CLIENT_CLOSED = 499  # as nginx logs a request whose client closed the connection
Endpoint = Callable[[Request], Awaitable[Response]]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
INFER_PREFIX, INFER_SUFFIX = "/v2/models/", "/infer"
ENCODINGS = ("identity", "gzip", "deflate")


def reservation(declared: int | None, encoding: str, limit: int) -> int:
    """What a body may occupy: its Content-Length when plain, else the limit (chunked or compressed)."""
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
    if encoding not in ENCODINGS:
        raise PayloadTooLarge(f"Content-Encoding {encoding!r} is not supported (identity, gzip, deflate)")
    return declared if encoding == "identity" and declared is not None else limit


def error(exc: ServerError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status_code)


def guarded(endpoint: Endpoint) -> Endpoint:
    """Every failure becomes a response here, so the connection stays open: an exception escaping to
    Starlette's last-resort handler is re-raised to uvicorn, which then closes the keep-alive connection."""
    @functools.wraps(endpoint)
    async def call(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ServerError as exc:
            return error(exc)
        except ClientDisconnect:
            return Response(status_code=CLIENT_CLOSED)  # nobody to read it: the connection is gone
        except Exception:
            LOG.exception("Failed to answer %s %s", request.method, request.url.path)
            return JSONResponse({"error": "internal error"}, status_code=500)
    return call


async def read_body(receive: Receive, encoding: str, limit: int) -> bytes:
    """Reads at most `limit` bytes (after decompression); 413 as soon as more arrive; ClientDisconnect when the
    client (or a body timeout) ends the connection first."""
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS) \
        if encoding != "identity" else None
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk, more = message.get("body", b""), message.get("more_body", False)
        if inflate is not None:
            try:
                chunk = inflate.decompress(chunk, limit + 1 - size)
            except zlib.error as exc:
                raise PayloadTooLarge(f"the {encoding} body is corrupt: {exc}") from exc
            if inflate.unconsumed_tail:
                raise PayloadTooLarge(f"the decompressed body exceeds the limit of {limit} bytes")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def infer_route(path: str) -> tuple[str, str | None] | None:
    """(name, version) of /v2/models/{name}/infer or /v2/models/{name}/versions/{version}/infer, else None;
    a segment matches as Starlette's {param} does (one or more characters, no slash)."""
    if not (path.startswith(INFER_PREFIX) and path.endswith(INFER_SUFFIX)):
        return None
    parts = path[len(INFER_PREFIX):-len(INFER_SUFFIX)].split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
        return parts[0], parts[2]
    return None


def start_message(status: int, body: bytes, content_type: bytes, *extra: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status,
            "headers": [(b"content-length", b"%d" % len(body)), (b"content-type", content_type), *extra]}


class RestApp:
    """The REST port's ASGI app: inference on its own path (the module docstring), the rest in Starlette."""

    def __init__(self, settings: ServerSettings, plane: DataPlane, other: Starlette) -> None:
        self.settings, self.plane, self.other = settings, plane, other

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = infer_route(scope["path"])
            if route is not None:
                return await self.infer(scope, receive, send, *route)
        return await self.other(scope, receive, send)

    async def infer(self, scope: Scope, receive: Receive, send: Send, name: str, version: str | None) -> None:
        """Every outcome is a response (the connection stays open) and counted in the metrics."""
        plane, metrics, limit = self.plane, self.plane.metrics, self.settings.max_body_bytes
        start = time.perf_counter()
        metrics.in_flight["rest"] += 1
        code, head = 500, None
        try:
            plane.check_model(name, version)
            length = header_length = encoding = None
            for key, value in scope["headers"]:  # the first of each wins, as in Starlette's Headers.get
                if key == b"content-length" and length is None:
                    length = value.decode("latin-1")
                elif key == b"inference-header-content-length" and header_length is None:
                    header_length = value.decode("latin-1")
                elif key == b"content-encoding" and encoding is None:
                    encoding = value.decode("latin-1").lower()
            encoding = encoding or "identity"
            head_bytes = decimal(header_length, "Inference-Header-Content-Length")
            size = reservation(decimal(length, "Content-Length"), encoding, limit)
            if not plane.budget.take(size):
                await plane.budget.acquire(size)
            try:
                body = await read_body(receive, encoding, limit)
                payload, head = await plane.infer(body, head_bytes)
            finally:
                plane.budget.release(size)
            code = 200
        except ServerError as exc:
            code, payload = exc.status_code, orjson.dumps({"error": exc.message})
        except ClientDisconnect:
            code = CLIENT_CLOSED  # the client (or a body timeout) ended it: nobody to answer, no error for the gates
            return
        except Exception:
            LOG.exception("Failed to answer POST %s", scope["path"])
            payload = b'{"error":"internal error"}'
        finally:
            metrics.in_flight["rest"] -= 1
            metrics.request_done(code, time.perf_counter() - start)
        if head is None:
            await send(start_message(code, payload, b"application/json"))
        else:
            await send(start_message(code, payload, b"application/octet-stream",
                                     (HEADER_LENGTH.encode(), b"%d" % head)))
        await send({"type": "http.response.body", "body": payload})


def health_routes(plane: DataPlane) -> list[Route]:
    """Liveness, readiness and metrics: on the serving port, and alone on the health port."""
    async def live(_: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(_: Request) -> Response:
        return JSONResponse({"ready": plane.ready}, status_code=200 if plane.ready else 503)

    async def metrics(_: Request) -> Response:
        return Response(plane.metrics.render(), media_type="text/plain; version=0.0.4")

    return [Route("/v2/health/live", live), Route("/v2/health/ready", ready), Route("/metrics", metrics)]


def create_health_app(plane: DataPlane) -> Starlette:
    """The plain-HTTP health port's app: what the kubelet and Prometheus need, without a client certificate."""
    return Starlette(routes=[Route(r.path, guarded(r.endpoint), methods=r.methods) for r in health_routes(plane)])


def create_app(settings: ServerSettings, plane: DataPlane, owns_plane: bool = True) -> RestApp:
    """The REST app; with owns_plane=False its lifespan leaves starting and stopping the plane to the caller."""
    def check_model(request: Request) -> None:
        plane.check_model(request.path_params["name"], request.path_params.get("version"))

    async def server_meta(_: Request) -> Response:
        return JSONResponse({"name": "onnx-server", "version": plane.server_version,
                             "extensions": ["binary_tensor_data"]})

    async def model_meta(request: Request) -> Response:
        check_model(request)
        return JSONResponse(plane.metadata())

    async def model_ready(request: Request) -> Response:
        check_model(request)
        return JSONResponse({"name": settings.name, "ready": plane.ready}, status_code=200 if plane.ready else 503)

    async def not_post(_: Request) -> Response:
        raise RuntimeError("RestApp answers every POST to an inference path before Starlette routes it")

    async def model_config(request: Request) -> Response:
        check_model(request)
        return JSONResponse(plane.model_config())

    async def openapi(_: Request) -> Response:
        return JSONResponse(openapi_document(settings.name, settings.version))

    async def on_server_error(_: Request, exc: Exception) -> Response:
        if isinstance(exc, ServerError):
            return error(exc)
        return JSONResponse({"error": "internal error"}, status_code=500)

    async def on_http_error(_: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        return JSONResponse({"error": str(getattr(exc, "detail", "error"))}, status_code=status)

    routes = [
        Route("/v2", server_meta), *health_routes(plane),
        Route("/v2/models/{name}", model_meta), Route("/v2/models/{name}/versions/{version}", model_meta),
        Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/models/{name}/config", model_config),
        Route("/v2/models/{name}/versions/{version}/config", model_config),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready),
        Route("/v2/models/{name}/infer", not_post, methods=["POST"]),  # POSTs are RestApp's: other methods 405
        Route("/v2/models/{name}/versions/{version}/infer", not_post, methods=["POST"]),
        Route("/v2/openapi.json", openapi),
    ]
    routes = [Route(r.path, guarded(r.endpoint), methods=r.methods) for r in routes]
    from starlette.exceptions import HTTPException

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if not owns_plane:
            yield
            return
        await plane.start()
        try:
            yield
        finally:
            await plane.stop()

    return RestApp(settings, plane, Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        ServerError: on_server_error, HTTPException: on_http_error, Exception: on_server_error}))

