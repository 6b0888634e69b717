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

    def take(self, size: int) -> bool:
        """Takes `size` bytes if there is room now (the common case: no lock, no await; one event loop)."""
        if self.used + size > self.capacity:
            return False
        self.used += size
        return True

    async def acquire(self, size: int) -> None:
        """Takes `size` bytes, waiting up to wait_s for room (then Busy); pair with release(size)."""
        if self.take(size):
            return
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

    def release(self, size: int) -> None:
        self.used -= size
        if self.waiters:
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[None]:
        await self.acquire(size)
        try:
            yield
        finally:
            self.release(size)
