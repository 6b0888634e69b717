"""Leader election on a coordination.k8s.io/v1 Lease: only the holder reconciles and writes.

Why our own asyncio elector and not `kubernetes.leaderelection`: that one blocks a thread in API calls
without a timeout, so a leader cut off from the API server hangs inside a renewal and never reaches
its renew deadline; here every attempt is bounded and the acting window is a clock check made before
each write (`Leadership.is_acting`), whatever the elector loop is waiting on.

Safety: a renewal sent at `t` lets the leader act until `t + renew_deadline`; a follower takes over
only `lease_duration` after it last saw the Lease change (its own clock, never the record's timestamps),
which is later than `t + lease_duration`. With renew_deadline < lease_duration the two never overlap.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from onnx_operator.kube.lease import LeaseRecord, LeaseStore
from onnx_operator.metrics import LEADER, forget_all_model_deployments

LOG = logging.getLogger(__name__)


def default_identity() -> str:
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def claim(current: LeaseRecord | None, identity: str, now: dt.datetime, lease_duration_seconds: int,
          expired: bool) -> LeaseRecord | None:
    """The record to write to hold the Lease, or None while another holder's Lease is still valid."""
    if current is None:
        return LeaseRecord(identity, lease_duration_seconds, now, now, 0)
    if current.holder == identity:
        return replace(current, renew_time=now, lease_duration_seconds=lease_duration_seconds)
    if current.holder and not expired:
        return None
    return LeaseRecord(identity, lease_duration_seconds, now, now, current.transitions + 1)


@dataclass(frozen=True)
class ElectionTiming:
    lease_duration: float
    renew_deadline: float
    retry_period: float


class Leadership:
    """Whether this replica may act now; `always()` for a single replica without election."""

    def __init__(self, identity: str, elected: bool = True) -> None:
        self.identity, self.elected = identity, elected
        self.holder = "" if elected else identity
        self._acting_until = 0.0 if elected else math.inf
        LEADER.set(0 if elected else 1)

    @classmethod
    def always(cls) -> Leadership:
        return cls("single-replica", elected=False)

    def is_acting(self) -> bool:
        return time.monotonic() < self._acting_until

    def remaining(self) -> float:
        """Seconds left in the current term (negative once past its deadline)."""
        return self._acting_until - time.monotonic()

    def renewed(self, acting_until: float) -> bool:
        """Extends the acting window; returns whether this started a term."""
        started = not self.is_acting()
        self._acting_until = acting_until
        self.holder = self.identity
        if started:
            LEADER.set(1)
        return started

    def stop(self) -> bool:
        """Ends the term at once; returns whether there was one."""
        was = self._acting_until > 0
        self._acting_until = 0.0
        LEADER.set(0)
        forget_all_model_deployments()
        return was

    def expired(self) -> bool:
        """A term that ran past its deadline without a renewal (the elector has not noticed yet)."""
        return 0 < self._acting_until <= time.monotonic()

    def view(self) -> dict[str, object]:
        return {"leader": self.is_acting(), "identity": self.identity, "holder": self.holder,
                "leaderElection": self.elected}


class LeaderElector:
    """Campaigns for the Lease, renews it every retry period, gives it up on shutdown."""

    def __init__(self, store: LeaseStore, leadership: Leadership, timing: ElectionTiming,
                 on_started: Callable[[], None]) -> None:
        self.store, self.leadership, self.timing, self.on_started = store, leadership, timing, on_started
        self.where = f"Lease {store.namespace}/{store.name}"
        self._duration = max(1, math.ceil(timing.lease_duration))
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease")  # attempts never overlap

    async def run(self) -> None:
        LOG.info("Campaigning for %s as %s", self.where, self.leadership.identity)
        while True:
            sent = time.monotonic()
            won = await self._attempt(self._attempt_timeout())
            if self.leadership.expired() and self.leadership.stop():
                LOG.warning("Stopped leading: %s not renewed within the renew deadline (%gs)", self.where,
                            self.timing.renew_deadline)
            elif not won and self.leadership.holder not in ("", self.leadership.identity) and self.leadership.stop():
                LOG.warning("Stopped leading: %s is held by %s", self.where, self.leadership.holder)
            if won and self.leadership.renewed(sent + self.timing.renew_deadline):
                LOG.info("Became the leader: %s held by %s", self.where, self.leadership.identity)
                self.on_started()
            await asyncio.sleep(self._pause())

    def _attempt_timeout(self) -> float:
        if self.leadership.is_acting():  # come back by the deadline at the latest
            return max(0.05, min(self.timing.renew_deadline, self.leadership.remaining()))
        return self.timing.retry_period

    def _pause(self) -> float:
        """Until the next attempt: the retry period, shortened to the moment the observed Lease expires."""
        now = time.monotonic()
        if self.leadership.is_acting():
            return max(0.0, min(self.timing.retry_period, self.leadership.remaining()))
        if self._observed is not None and self._observed.holder:
            expiry = self._observed_at + self._observed.lease_duration_seconds
            return max(0.0, min(self.timing.retry_period, expiry - now + 0.01))
        return self.timing.retry_period

    async def _attempt(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._executor, self._try, timeout), timeout)
        except TimeoutError:
            LOG.warning("%s: no answer from the API server within %.1fs", self.where, timeout)
        except Exception as exc:
            LOG.warning("%s: could not read or write it: %s", self.where, exc)
        return False

    def _try(self, timeout: float) -> bool:
        stored = self.store.get(timeout)
        now = time.monotonic()
        wall = dt.datetime.now(dt.UTC)
        if stored is None:
            record = claim(None, self.leadership.identity, wall, self._duration, expired=True)
            assert record is not None
            self.store.create(record, timeout)
        else:
            self._observe(stored.record, now)
            expired = self._observed_at + stored.record.lease_duration_seconds <= now
            record = claim(stored.record, self.leadership.identity, wall, self._duration, expired)
            if record is None:
                return False
            self.store.update(record, stored.resource_version, timeout)
        self._observed, self._observed_at = record, now
        return True

    def _observe(self, record: LeaseRecord, now: float) -> None:
        if record == self._observed:
            return
        if self._observed is None or record.holder != self._observed.holder:
            if record.holder != self.leadership.identity:
                LOG.info("%s is held by %s", self.where, record.holder or "nobody (released)")
            self.leadership.holder = record.holder
        self._observed, self._observed_at = record, now

    async def release(self) -> None:
        """On shutdown: stop acting first, then hand the Lease back so a follower takes over at once."""
        if not self.leadership.stop():
            return
        LOG.info("Stopped leading: shutting down, releasing %s", self.where)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.run_in_executor(self._executor, self._release), self.timing.retry_period)
        except Exception as exc:
            LOG.warning("%s: could not release it (it expires on its own): %s", self.where, exc)

    def _release(self) -> None:
        stored = self.store.get(self.timing.retry_period)
        if stored is None or stored.record.holder != self.leadership.identity:
            return
        released = replace(stored.record, holder="", lease_duration_seconds=1,
                           renew_time=dt.datetime.now(dt.UTC))
        self.store.update(released, stored.resource_version, self.timing.retry_period)
