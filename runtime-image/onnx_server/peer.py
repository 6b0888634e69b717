"""Peer fetch: a serving pod hands its verified model files to new pods of the same ModelDeployment.

The server side (`PeerFileServer`) is a small threaded HTTP server on its own port, apart from the
inference frontends: GET /v1/files/<path> of a regular file under the model folder, only with the
ModelDeployment's token (`Authorization: Bearer ...`, compared in constant time), read-only, no listings,
no symlinks. The client side (`fetch_from_peer`) streams one file into an open file while hashing it; the
caller keeps the bytes only when the sha256 matches the pinned digest, so a peer cannot inject anything.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import logging
import threading
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote, urlparse

import httpx

from onnx_server.errors import ChecksumMismatch, FetchFailed, TooLarge, UnsafePath
from onnx_server.fetch import CHUNK, file_below, safe_relative

LOG = logging.getLogger(__name__)
FILES_PREFIX = "/v1/files/"
CONNECT_SECONDS = 3.0  # a peer Service with no Ready endpoint refuses at once; a silent one is not waited on


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise FetchFailed(f"cannot read the peer token {path}: {exc.strerror}") from exc
    if not token:
        raise FetchFailed(f"the peer token {path} is empty")
    return token


def _servable(root: Path, raw: str) -> Path:
    """The regular file `raw` names under `root`, or UnsafePath / FileNotFoundError."""
    rel = safe_relative(raw)
    if any(part.startswith(".") for part in rel.parts):
        raise UnsafePath(f"{raw!r}: hidden paths (staging folders) are not served")
    target = file_below(root, rel, repr(raw))
    if not target.is_file():
        raise FileNotFoundError(raw)
    return target


class _Handler(http.server.BaseHTTPRequestHandler):
    server: PeerFileServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        LOG.debug("peer %s: " + format, self.client_address[0], *args)

    def _fail(self, status: int, message: str) -> None:
        body = message.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        given = self.headers.get("Authorization", "")
        if not given.startswith("Bearer "):
            LOG.warning("peer request from %s without a token: refused", self.client_address[0])
            return self._fail(401, "a bearer token is required")
        try:
            token = read_token(self.server.token_file)  # read per request: a rotated Secret applies at once
        except FetchFailed as exc:
            return self._fail(503, exc.message)
        if not hmac.compare_digest(given.removeprefix("Bearer ").encode(), token.encode()):
            LOG.warning("peer request from %s with a wrong token: refused", self.client_address[0])
            return self._fail(403, "the token does not match this ModelDeployment's")
        path = unquote(urlparse(self.path).path)
        if not path.startswith(FILES_PREFIX):
            return self._fail(404, f"only {FILES_PREFIX}<path> is served")
        try:
            target = _servable(self.server.root, path.removeprefix(FILES_PREFIX))
            size = target.stat().st_size
            with target.open("rb") as f:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(size))
                self.end_headers()
                if self.command == "HEAD":
                    return None
                while chunk := f.read(CHUNK):
                    self.wfile.write(chunk)
        except UnsafePath as exc:
            return self._fail(403, exc.message)
        except FileNotFoundError:
            return self._fail(404, f"{path.removeprefix(FILES_PREFIX)!r} is not a file of this model")
        except (BrokenPipeError, ConnectionResetError):
            return None
        LOG.info("served %s (%d bytes) to peer %s", target.relative_to(self.server.root), size,
                 self.client_address[0])
        return None


class PeerFileServer(http.server.ThreadingHTTPServer):
    """Serves the files under `root` to holders of the token in `token_file`; runs in a daemon thread."""

    daemon_threads = True

    def __init__(self, root: Path, token_file: Path, host: str, port: int) -> None:
        self.root, self.token_file = root.resolve(), token_file
        super().__init__((host, port), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> PeerFileServer:
        threading.Thread(target=self.serve_forever, name="peer-files", daemon=True).start()
        LOG.info("serving the model's files to peers on port %d (token required)", self.port)
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def fetch_from_peer(peer: str, path: str, token: str, out: BinaryIO, expected: str, budget: int,
                    stall_seconds: float) -> int:
    """Streams the peer's copy of `path` into `out` and returns its size; FetchFailed when the peer does
    not answer or refuses, ChecksumMismatch when its bytes are not the pinned ones, TooLarge past `budget`."""
    url = f"{peer.rstrip('/')}{FILES_PREFIX}{quote(path)}"
    digest, size = hashlib.sha256(), 0
    timeout = httpx.Timeout(stall_seconds, connect=CONNECT_SECONDS)
    try:
        with httpx.stream("GET", url, timeout=timeout, headers={"Authorization": f"Bearer {token}"}) as resp:
            if resp.status_code != 200:
                raise FetchFailed(f"GET {url}: HTTP {resp.status_code} {resp.read().decode(errors='replace')[:200]}")
            for chunk in resp.iter_bytes(CHUNK):
                size += len(chunk)
                if size > budget:
                    raise TooLarge(f"{url} is larger than the limit of {budget} bytes")
                digest.update(chunk)
                out.write(chunk)
    except httpx.HTTPError as exc:
        raise FetchFailed(f"GET {url}: {exc!r}") from exc
    if digest.hexdigest() != expected:
        raise ChecksumMismatch(f"{url}: sha256 is {digest.hexdigest()}, expected {expected}")
    return size
