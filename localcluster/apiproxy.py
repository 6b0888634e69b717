"""A loopback TCP proxy in front of the API server that a test can cut off (a network partition of one
client, without touching host networking): while cut, bytes from either side are read and dropped, so
requests are never delivered and never answered; healing closes the cut connections."""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit


class ApiProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 443)
        self.scheme = parts.scheme
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._lock = threading.Lock()
        self._cut = False
        self._conns: list[socket.socket] = []
        self._cut_conns: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self._listener.getsockname()[1]}"

    def cut(self) -> None:
        """From now on nothing passes, in either direction, on old or new connections."""
        with self._lock:
            self._cut = True
            self._cut_conns += self._conns
            self._conns = []

    def heal(self) -> None:
        """Closes the cut connections (their streams lost bytes) and lets new ones through again."""
        with self._lock:
            self._cut = False
            cut, self._cut_conns = self._cut_conns, []
        for sock in cut:
            self._close(sock)

    def close(self) -> None:
        self._closed = True
        self._close(self._listener)
        with self._lock:
            socks, self._conns, self._cut_conns = self._conns + self._cut_conns, [], []
        for sock in socks:
            self._close(sock)

    @staticmethod
    def _close(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                cut = self._cut
            if cut:
                with self._lock:
                    self._cut_conns.append(client)
                threading.Thread(target=self._drain, args=(client,), daemon=True).start()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                self._close(client)
                continue
            with self._lock:
                self._conns += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client), daemon=True).start()

    def _is_cut(self, sock: socket.socket) -> bool:
        with self._lock:
            return any(s is sock for s in self._cut_conns)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            if self._is_cut(src):
                continue  # dropped: the peer waits for an answer that never comes
            try:
                dst.sendall(data)
            except OSError:
                break
        if not self._is_cut(src):
            self._close(dst)
            self._close(src)

    def _drain(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while sock.recv(65536):
                pass
