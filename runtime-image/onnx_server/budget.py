"""The request-body budget shared by REST and gRPC: bytes held at once over all requests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from onnx_server.errors import Busy


class BodyBudget:
    """Caps the request-body bytes held at once: a request reserves its (declared or largest) size first."""

    def __init__(self, capacity: int, wait_s: float) -> None:
        self.capacity, self.wait_s, self.used, self.waiters = capacity, wait_s, 0, 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[None]:
        if self.used + size > self.capacity:  # the common case (room left) needs no lock: one event loop
            self.waiters += 1
            try:
                async with self._changed:
                    await asyncio.wait_for(self._changed.wait_for(lambda: self.used + size <= self.capacity),
                                           self.wait_s)
            except TimeoutError:
                raise Busy(f"{self.used} bytes of requests are being served; retry later") from None
            finally:
                self.waiters -= 1
        self.used += size
        try:
            yield
        finally:
            self.used -= size
            if self.waiters:
                async with self._changed:
                    self._changed.notify_all()
