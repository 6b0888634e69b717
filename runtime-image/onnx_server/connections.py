"""Connection lifetime and limits on the REST port.

Every HTTP/1.1 connection is bounded, so neither a flood of slow or idle connections nor a canary's
keep-alive clients can hold the server:

- **age**: kube-proxy balances connections, not requests, so a keep-alive client stays on the pod it
  first reached until the server ends the connection. A connection older than `max_age` (+/-10% jitter,
  as gRPC core applies to max_connection_age) gets `Connection: close` on its next response and is
  closed right after it. Never under a request in flight, never while idle: a client may be sending on
  an idle connection at that moment, and most clients do not retry a POST lost that way.
- **headers**: the request line and headers must arrive within `header_timeout` of the request's first
  byte (else 408 and close);
- **body**: the body must arrive within `body_timeout` plus its announced length at `min_body_rate`
  (a chunked body: the bytes received so far at that rate), else the connection is closed;
- **idle**: a connection with no request for `idle_timeout` is closed; it is longer than common clients'
  keep-alive expiry (httpx 5 s, aiohttp 15 s, nginx 75 s) so a client's own expiry comes first;
- **cap**: at most `max_connections` open. Only at the cap is the connection idle the longest closed to
  make room; with none idle, the new connection gets a fast `503` with `Retry-After` and is closed.
- **drain**: on SIGTERM a connection with no complete request is closed at once; only requests in
  flight hold the grace period.
- **writes**: a response leaves in one write, and under load the responses of one event-loop turn leave
  together (`BatchedTransport`); every close sends what is held first.

This subclasses uvicorn's httptools protocol (uvicorn is pinned in pyproject.toml for that reason).

The header, body and idle deadlines share one timer per connection, re-armed only when it fires early:
under steady traffic a connection costs one timer per ~10 s instead of three per request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

LOG = logging.getLogger("onnx_server")
CLOSE_REASONS = ("max_age", "header_timeout", "body_timeout", "idle_timeout", "evicted", "drain")
JITTER = 0.1  # the fraction of the age each connection's own age may differ by
RETRY_AFTER_SECONDS = 1
PAUSED_CHECK_SECONDS = 1.0
ONE_WRITE_BYTES = 64 << 10  # more bytes held than this are written as they are, without joining them
REJECTED = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: %d\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s")
TIMED_OUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
             b"content-length: %d\r\n\r\n%s")


@dataclass(frozen=True)
class ConnectionLimits:
    """The REST port's connection bounds (see the module docstring); 0 turns max_age off."""

    max_age: float = 30.0
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    min_body_rate: float = 64 * 1024
    idle_timeout: float = 75.0
    max_connections: int = 4096


class LogLimiter:
    """One warning per `every` seconds for a kind of closed connection, with how many there were: a flood
    must not become a flood of log lines."""

    def __init__(self, what: str, every: float = 10.0) -> None:
        self.what, self.every = what, every
        self.count, self.since = 0, -math.inf

    def note(self, example: str) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.since >= self.every:
            LOG.warning("%s: %d connection(s) since the last report; e.g. %s", self.what, self.count, example)
            self.count, self.since = 0, now


SLOW_HEADERS = LogLimiter("Closed for slow headers (408)")
SLOW_BODIES = LogLimiter("Closed for a slow body")
REJECTIONS = LogLimiter("Refused with 503")


class ConnectionEvents:
    """What the protocol reports: connections opened and closed (by reason) and rejected at the cap."""

    def __init__(self, opened: Callable[[int], None] | None = None, closed: Callable[[str], None] | None = None,
                 rejected: Callable[[], None] | None = None) -> None:
        self.opened = opened or (lambda _: None)
        self.closed = closed or (lambda _: None)
        self.rejected = rejected or (lambda: None)


class WriteBatch:
    """The connections with bytes to send, written together at the start of the event loop's next turn."""

    def __init__(self) -> None:
        self.pending: list[BatchedTransport] = []

    def add(self, writer: BatchedTransport) -> None:
        if not self.pending:
            writer.loop.call_soon(self.flush)
        self.pending.append(writer)

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        for writer in pending:
            try:
                writer.flush()
            except Exception:  # one connection's failure must not hold back the others' responses
                LOG.exception("Failed to write to a connection; closing it")
                writer.transport.abort()


class BatchedTransport:
    """A connection's transport, as its protocol and uvicorn's request cycle see it: a response's head and body
    go out in one write, and while other requests are being answered, the responses completed in one turn of
    the event loop are sent together at the start of the next, with the other connections' ones.

    Why: a response costs one system call instead of two (head, then body), and a burst of responses wakes an
    idle client's thread once rather than once per response; on the bench's two-core VM that cuts the server's
    CPU per response spent in the kernel by a third. The cost: under load a response waits for the rest of its
    loop turn (the requests answered in it), never for a timer; a request answered while no other is in
    flight is sent at once. `close()` sends what is held first."""

    __slots__ = ("batch", "chunks", "loop", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop, batch: WriteBatch) -> None:
        self.transport, self.loop, self.batch = transport, loop, batch
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self.chunks:
            self.batch.add(self)
        self.chunks.append(data)

    def flush(self) -> None:
        chunks = self.chunks
        if not chunks:
            return
        self.chunks = []
        if self.transport.is_closing():  # the peer is gone: nobody to send it to
            return
        if len(chunks) == 1:
            self.transport.write(chunks[0])
        elif sum(map(len, chunks)) <= ONE_WRITE_BYTES:
            self.transport.write(b"".join(chunks))
        else:
            self.transport.writelines(chunks)  # no copy of a large body

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def __getattr__(self, name: str) -> object:  # what else uvicorn may use (get_extra_info, set_protocol)
        return getattr(self.transport, name)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """An HTTP/1.1 connection held to ConnectionLimits."""

    limits: ConnectionLimits = ConnectionLimits()
    events: ConnectionEvents = ConnectionEvents()
    batch: WriteBatch = WriteBatch()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # every write of the protocol and its request cycles, and every close, goes through it (`flow` keeps the
        # real transport: it pauses and resumes reading)
        self.transport = BatchedTransport(transport, self.loop, self.batch)  # type: ignore[assignment]
        now = self.loop.time()
        age = self.limits.max_age * random.uniform(1 - JITTER, 1 + JITTER)
        self.expires_at = now + age if self.limits.max_age > 0 else math.inf
        self.last_active = now
        self.in_request = False  # between a request's first byte and its complete body
        self.request_started = now
        self.body_received = 0
        self.body_announced = 0
        # the one pending deadline (header, body or idle), its action, and the timer that checks it
        self.due_at, self.on_due = math.inf, self._idle_timeout
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = math.inf
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            self._reject()
            return
        self.events.opened(len(self.connections))
        # an idle connection that never sends a byte is closed like one idle after a response
        self._arm(self.limits.idle_timeout, self._idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        super().connection_lost(exc)
        self.events.opened(len(self.connections))

    # the request's phases
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_request, self.request_started = True, self.loop.time()
        self.body_received = self.body_announced = 0
        self._arm(self.limits.header_timeout, self._header_timeout, self.request_started)

    def on_headers_complete(self) -> None:
        self._cancel_deadline()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is None:
            return
        now = self.loop.time()
        if now >= self.expires_at and cycle.keep_alive:
            # its response says `Connection: close`; uvicorn closes the transport once it is written
            cycle.keep_alive = False
            self.events.closed("max_age")
        length, chunked = None, False
        for key, value in self.headers:
            if key == b"content-length":
                if length is None:
                    length = value
            elif key == b"transfer-encoding":
                chunked = True
        if length is not None and length.isdigit():
            self.body_announced = int(length)
        if self.body_announced or chunked:
            self.request_started = now
            self._arm(self._body_allowance(), self._body_timeout, now)
        else:
            self.in_request = False

    def on_body(self, body: bytes) -> None:
        self.body_received += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel_deadline()
        self.in_request = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """uvicorn's, with the keep-alive (idle) timeout on this connection's deadline instead of a new timer."""
        if len(self.tasks) <= 1:  # this request's task alone: no other response would join its turn's writes
            self.transport.flush()  # type: ignore[attr-defined]
        self.last_active = self.loop.time()
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        else:
            self._arm(self.limits.idle_timeout, self._idle_timeout, self.last_active)

    def _idle_timeout(self) -> None:
        """The idle timeout: closed and counted (a request's first byte replaces this deadline; `_idle()` still
        guards it, so no deadline mix-up can close a connection under a request)."""
        if self._idle() and not self.transport.is_closing():
            self.events.closed("idle_timeout")
            self.transport.close()

    def shutdown(self) -> None:
        """SIGTERM: a connection without a complete request is closed now; one in flight finishes."""
        if self.in_request and not self.transport.is_closing():
            self.events.closed("drain")
            self.transport.close()
            return
        super().shutdown()

    # timeouts
    def _arm(self, delay: float, callback: Callable[[], None], now: float | None = None) -> None:
        """Makes `callback` due in `delay` seconds from `now` (the loop's time when not given), replacing the
        pending deadline; a timer is created only when none would fire by then."""
        self.due_at, self.on_due = (self.loop.time() if now is None else now) + max(0.0, delay), callback
        if self.timer_at > self.due_at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer_at = self.due_at
            self.timer = self.loop.call_at(self.due_at, self._check_due)

    def _cancel_deadline(self) -> None:
        self.due_at = math.inf  # the timer, if any, finds nothing due when it fires

    def _check_due(self) -> None:
        self.timer, self.timer_at = None, math.inf
        if self.due_at == math.inf:
            return
        if self.loop.time() < self.due_at:  # the deadline moved since the timer was set
            self.timer_at = self.due_at
            self.timer = self.loop.call_at(self.due_at, self._check_due)
            return
        self.due_at, callback = math.inf, self.on_due
        callback()

    def _body_allowance(self) -> float:
        """Seconds from the headers' end the body may take: a base, plus its size at the minimum rate."""
        expected = max(self.body_announced, self.body_received)
        return self.limits.body_timeout + expected / self.limits.min_body_rate

    def _header_timeout(self) -> None:
        if self.in_request and not self.transport.is_closing():
            self.events.closed("header_timeout")
            SLOW_HEADERS.note(f"headers not complete within {self.limits.header_timeout:g}s")
            body = b'{"error": "the request line and headers did not arrive within %gs"}' % self.limits.header_timeout
            self.transport.write(TIMED_OUT % (len(body), body))
            self.transport.close()

    def _body_timeout(self) -> None:
        if not self.in_request or self.transport.is_closing():
            return
        if self.flow.read_paused:  # the server is not reading (its buffer is full): not the client's time
            self.request_started += PAUSED_CHECK_SECONDS
            self._arm(PAUSED_CHECK_SECONDS, self._body_timeout)
            return
        left = self.request_started + self._body_allowance() - self.loop.time()
        if left > 0:  # a chunked body still arriving at the minimum rate
            self._arm(left, self._body_timeout)
            return
        self.events.closed("body_timeout")
        SLOW_BODIES.note(f"body slower than {self.limits.min_body_rate:g} bytes/s "
                         f"({self.body_received} of {self.body_announced} bytes)")
        self.transport.close()

    # the cap
    def _idle(self) -> bool:
        return not self.in_request and (self.cycle is None or self.cycle.response_complete) and not self.pipeline

    def _make_room(self) -> bool:
        """At the cap: closes the connection idle the longest, if there is one."""
        idle = [c for c in self.connections if c is not self and isinstance(c, LimitedHttpToolsProtocol)
                and c._idle() and not c.transport.is_closing()]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.last_active)
        oldest.events.closed("evicted")
        oldest.transport.close()
        return True

    def _reject(self) -> None:
        self.events.rejected()
        REJECTIONS.note(f"at the connection cap ({self.limits.max_connections}), none idle")
        body = b'{"error": "the server is at its connection limit (%d); retry"}' % self.limits.max_connections
        self.transport.write(REJECTED % (RETRY_AFTER_SECONDS, len(body), body))
        self.transport.close()


def limited_protocol(limits: ConnectionLimits, events: ConnectionEvents) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for uvicorn.Config(http=...), bound to this server's limits and metrics."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,),
                {"limits": limits, "events": events, "batch": WriteBatch()})

