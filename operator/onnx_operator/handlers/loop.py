"""Runs reconciles: one at a time per object, coalescing bursts of events, with requeues.

Nothing here is state that must survive a restart: on start kopf lists every object and each
listing event triggers a full, level-triggered reconcile. A follower (leader election) only records
the keys it hears about; when it becomes the leader it reconciles every one of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from onnx_operator.kube import NotLeader
from onnx_operator.metrics import RECONCILE_SECONDS, RECONCILES

LOG = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (kind, namespace, name)
ReconcileFn = Callable[[str, str], float | None]  # returns seconds until the next look, or None


@dataclass
class ReconcileLoop:
    """Per-key serialisation: a reconcile requested while one runs is run once more afterwards."""

    reconcilers: dict[str, ReconcileFn]
    error_backoff: float = 10.0
    active: Callable[[], bool] = lambda: True  # false on a follower: requests are only remembered
    workers: int = 16  # reconciles running at once (each in a thread: the API client blocks)
    _known: set[Key] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _locks: dict[Key, asyncio.Lock] = field(default_factory=dict)
    _pending: set[Key] = field(default_factory=set)
    _timers: dict[Key, asyncio.TimerHandle] = field(default_factory=dict)
    _executor: ThreadPoolExecutor | None = None

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="reconcile")
        return self._executor

    def __post_init__(self) -> None:
        for kind in self.reconcilers:  # every series exists from 0: an error rate is 0, not "no data"
            for result in ("ok", "error"):
                RECONCILES.labels(kind, result)

    async def request(self, kind: str, namespace: str, name: str) -> None:
        key = (kind, namespace, name)
        self._known.add(key)
        if not self.active():
            return
        lock = self._locks.setdefault(key, asyncio.Lock())
        if lock.locked():
            self._pending.add(key)  # the running reconcile's owner runs it again
            return
        async with lock:
            while True:
                self._pending.discard(key)
                delay = await self._run_once(key)
                if key not in self._pending:
                    break
        if delay is not None:
            self._schedule(key, delay)

    async def _run_once(self, key: Key) -> float | None:
        kind, namespace, name = key
        with RECONCILE_SECONDS.labels(kind).time():
            try:
                reconcile = self.reconcilers[kind]
                delay = await asyncio.get_running_loop().run_in_executor(self._pool(), reconcile, namespace, name)
            except NotLeader as exc:
                LOG.info("Stopped reconcile of %s %s/%s: %s", kind, namespace, name, exc)
                return None
            except Exception:
                RECONCILES.labels(kind, "error").inc()
                LOG.exception("Reconcile of %s %s/%s failed; retrying in %.0fs", kind, namespace, name,
                              self.error_backoff)
                return self.error_backoff
        RECONCILES.labels(kind, "ok").inc()
        return delay

    def _schedule(self, key: Key, delay: float) -> None:
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(
            max(delay, 0.1), lambda: asyncio.ensure_future(self.request(*key)))

    def resume(self) -> None:
        """Reconciles every object heard of so far (called when this replica becomes the leader)."""
        LOG.info("Reconciling %d objects as the new leader", len(self._known))
        for key in sorted(self._known):
            task = asyncio.ensure_future(self.request(*key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        key = (kind, namespace, name)
        self._known.discard(key)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._locks.pop(key, None)
