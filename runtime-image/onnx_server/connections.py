"""Connection lifetime on the REST port.

kube-proxy balances connections, not requests: a keep-alive client stays on the pod it first reached
until the server ends the connection. So a connection older than its age (with +/-10% jitter, as
gRPC core applies to max_connection_age) gets `Connection: close` on its next response and is closed
right after that response is sent. Nothing else ends it early: never under a request in flight, and
never while idle (a client may be sending on an idle connection at that moment, and most clients do
not retry a POST lost that way), so the client learns from the response itself that it must reconnect.

This subclasses uvicorn's httptools protocol (uvicorn is pinned in pyproject.toml for that reason).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

JITTER = 0.1  # the fraction of the age each connection's own age may differ by


class AgedHttpToolsProtocol(HttpToolsProtocol):
    """An HTTP/1.1 connection that asks its client to reconnect once it is older than `max_age` seconds."""

    max_age: float = 0.0  # 0: connections live as long as the client keeps them
    on_aged: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        age = self.max_age * random.uniform(1 - JITTER, 1 + JITTER)
        self.expires_at = self.loop.time() + age if self.max_age > 0 else float("inf")

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # the cycle was just made for this request; its response will say `Connection: close` and the
        # transport closes once that response is written (uvicorn's keep_alive=False path)
        if self.cycle is not None and self.cycle.keep_alive and self.loop.time() >= self.expires_at:
            self.cycle.keep_alive = False
            if self.on_aged is not None:
                self.on_aged()


def aged_protocol(max_age: float, on_aged: Callable[[], None] | None = None) -> type[AgedHttpToolsProtocol]:
    """The protocol class for uvicorn.Config(http=...), bound to this server's age and metric."""
    return type("AgedHttpToolsProtocol", (AgedHttpToolsProtocol,),
                {"max_age": max_age, "on_aged": staticmethod(on_aged) if on_aged else None})
