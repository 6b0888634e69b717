"""The HTTP layer: Open Inference Protocol v2 REST over one data plane (`create_app(settings, plane)`)."""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

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


def reservation(request: Request, limit: int) -> int:
    """What a body may occupy: its Content-Length when plain, else the limit (chunked or compressed)."""
    declared = decimal(request.headers.get("content-length"), "Content-Length")
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
    if request.headers.get("content-encoding", "identity").lower() == "identity" and declared is not None:
        return declared
    return limit


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


async def read_body(request: Request, limit: int) -> bytes:
    """Reads at most `limit` bytes (after decompression); 413 as soon as more arrive."""
    declared = decimal(request.headers.get("content-length"), "Content-Length")
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding not in ("identity", "gzip", "deflate"):
        raise PayloadTooLarge(f"Content-Encoding {encoding!r} is not supported (identity, gzip, deflate)")
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS) \
        if encoding != "identity" else None
    chunks, size = [], 0
    async for chunk in request.stream():
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
    return b"".join(chunks)


def create_app(settings: ServerSettings, plane: DataPlane, owns_plane: bool = True) -> Starlette:
    """The REST app; with owns_plane=False its lifespan leaves starting and stopping the plane to the caller."""
    budget = plane.budget

    def check_model(request: Request) -> None:
        plane.check_model(request.path_params["name"], request.path_params.get("version"))

    async def server_meta(_: Request) -> Response:
        return JSONResponse({"name": "onnx-server", "version": plane.server_version,
                             "extensions": ["binary_tensor_data"]})

    async def live(_: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(_: Request) -> Response:
        return JSONResponse({"ready": plane.ready}, status_code=200 if plane.ready else 503)

    async def model_meta(request: Request) -> Response:
        check_model(request)
        return JSONResponse(plane.metadata())

    async def model_ready(request: Request) -> Response:
        check_model(request)
        return JSONResponse({"name": settings.name, "ready": plane.ready}, status_code=200 if plane.ready else 503)

    async def infer(request: Request) -> Response:
        start = time.perf_counter()
        plane.metrics.in_flight_now["rest"].inc()
        code = 500
        try:
            check_model(request)
            header_length = decimal(request.headers.get(HEADER_LENGTH), "Inference-Header-Content-Length")
            async with budget.reserve(reservation(request, settings.max_body_bytes)):
                body = await read_body(request, settings.max_body_bytes)
                payload, head = await plane.infer(body, header_length)
            code = 200
            if head is None:
                return Response(payload, media_type="application/json")
            return Response(payload, media_type="application/octet-stream", headers={HEADER_LENGTH: str(head)})
        except ServerError as exc:
            code = exc.status_code
            return error(exc)
        except ClientDisconnect:
            code = CLIENT_CLOSED  # the client (or a body timeout) ended it: no server error for the gates
            raise
        finally:
            plane.metrics.in_flight_now["rest"].dec()
            plane.metrics.request_done(code, time.perf_counter() - start)

    async def model_config(request: Request) -> Response:
        check_model(request)
        return JSONResponse(plane.model_config())

    async def metrics(_: Request) -> Response:
        return Response(plane.metrics.render(), media_type="text/plain; version=0.0.4")

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
        Route("/v2", server_meta), Route("/v2/health/live", live), Route("/v2/health/ready", ready),
        Route("/v2/models/{name}", model_meta), Route("/v2/models/{name}/versions/{version}", model_meta),
        Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/models/{name}/config", model_config),
        Route("/v2/models/{name}/versions/{version}/config", model_config),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
        Route("/metrics", metrics), Route("/v2/openapi.json", openapi),
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

    return Starlette(routes=routes, exception_handlers={ServerError: on_server_error, HTTPException: on_http_error,
                                                        Exception: on_server_error}, lifespan=lifespan)

