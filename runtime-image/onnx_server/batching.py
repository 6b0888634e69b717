"""Dynamic batching: requests wait up to max_delay for others, run as one call, and are split back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

RunFn = Callable[[dict[str, np.ndarray], list[str] | None], dict[str, np.ndarray]]


@dataclass
class _Pending:
    feeds: dict[str, np.ndarray]
    outputs: list[str] | None
    rows: int
    future: asyncio.Future[dict[str, np.ndarray]]
    queued_at: float = field(default_factory=time.perf_counter)

    @property
    def key(self) -> tuple[object, ...]:
        """Requests merge only when they ask for the same outputs with the same non-batch shapes and dtypes."""
        return (self.outputs, *((k, v.dtype.str, v.shape[1:]) for k, v in sorted(self.feeds.items())))


class Batcher:
    """One queue, one worker task, one future per caller."""

    def __init__(self, run: RunFn, max_batch_size: int, max_delay_s: float,
                 observe: Callable[[list[float], int, float], None] | None = None,
                 executor: Executor | None = None) -> None:
        self.run, self.max_rows, self.max_delay, self.executor = run, max_batch_size, max_delay_s, executor
        self.observe = observe or (lambda queue_s, rows, infer_s: None)
        self.queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._worker())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()

    async def submit(self, feeds: dict[str, np.ndarray], outputs: list[str] | None) -> dict[str, np.ndarray]:
        rows = int(next(iter(feeds.values())).shape[0])
        pending = _Pending(feeds, outputs, rows, asyncio.get_running_loop().create_future())
        await self.queue.put(pending)
        return await pending.future

    async def _worker(self) -> None:
        held: list[_Pending] = []  # taken from the queue but not fitting the last batch: first in line next
        while True:
            if not held:
                held.append(await self.queue.get())
            batch, rows, held = self._take(held)
            while rows < self.max_rows and not self.queue.empty():
                rows = self._offer(self.queue.get_nowait(), batch, rows, held)
            deadline = batch[0].queued_at + self.max_delay
            while rows < self.max_rows and (timeout := deadline - time.perf_counter()) > 0:
                try:
                    nxt = await asyncio.wait_for(self.queue.get(), timeout)
                except TimeoutError:
                    break
                rows = self._offer(nxt, batch, rows, held)
            await self._run(batch, rows)

    def _take(self, held: list[_Pending]) -> tuple[list[_Pending], int, list[_Pending]]:
        batch, rows = [held[0]], held[0].rows
        rest: list[_Pending] = []
        for p in held[1:]:
            rows = self._offer(p, batch, rows, rest)
        return batch, rows, rest

    def _offer(self, p: _Pending, batch: list[_Pending], rows: int, rest: list[_Pending]) -> int:
        """Adds `p` to the batch when it fits (else to `rest`); returns the batch's rows."""
        if p.key == batch[0].key and rows + p.rows <= self.max_rows:
            batch.append(p)
            return rows + p.rows
        rest.append(p)
        return rows

    async def _run(self, batch: list[_Pending], rows: int) -> None:
        start = time.perf_counter()
        try:
            if len(batch) == 1:
                results = [await self._off_loop(batch[0].feeds, batch[0].outputs)]
            else:
                feeds = {k: np.concatenate([p.feeds[k] for p in batch]) for k in batch[0].feeds}
                merged = await self._off_loop(feeds, batch[0].outputs)
                results = self._split(merged, batch, rows)
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            # one bad request must not fail the others: each runs alone, and gets its own error
            for p in batch:
                await self._run([p], p.rows)
            return
        self.observe([start - p.queued_at for p in batch], rows, time.perf_counter() - start)
        for p, result in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(result)

    async def _off_loop(self, feeds: dict[str, np.ndarray], outputs: list[str] | None) -> dict[str, np.ndarray]:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.run, feeds, outputs)

    @staticmethod
    def _split(merged: dict[str, np.ndarray], batch: list[_Pending], rows: int) -> list[dict[str, np.ndarray]]:
        if any(v.shape[:1] != (rows,) for v in merged.values()):
            raise ValueError("the model's outputs do not keep the batch dimension")
        out, start = [], 0
        for p in batch:
            out.append({k: v[start:start + p.rows] for k, v in merged.items()})
            start += p.rows
        return out
