"""A real CloudEvents sink for payload-logging tests: an HTTP(S) server that records every event it receives.

`EventSink("127.0.0.1")` for servers on loopback; on the node address (198.18.0.254) pods reach it.
`hang=True` makes it a sink that accepts connections and never answers (the slowest sink there is).
"""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from dataclasses import dataclass
from typing import Any

from localcluster.harness import wait_for


@dataclass(frozen=True)
class Event:
    headers: dict[str, str]  # lower-case names
    body: dict[str, Any]

    @property
    def id(self) -> str:
        return self.headers["ce-id"]


class EventSink:
    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None, hang: bool = False) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if hang:
                    sink._release.wait(60)  # bounded: the test's end releases it
                    return
                with sink._lock:
                    sink.events.append(Event({k.lower(): v for k, v in self.headers.items()}, json.loads(body)))
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://{host}:{self.httpd.server_address[1]}/events"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def received(self) -> list[Event]:
        with self._lock:
            return list(self.events)

    def wait_count(self, count: int, timeout: float = 30) -> list[Event]:
        """Waits until at least `count` events arrived; returns them all."""
        return wait_for(f"{count} events at the sink", lambda: (e := self.received()) and len(e) >= count and e,
                        timeout=timeout, interval=0.05)

    def stop(self) -> None:
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
