"""Download one object, verifying sha256 while streaming, with progress logs, a stall bound and resumed retries.

Sources: https:// and http:// (httpx, streaming), s3://bucket/key (boto3; endpoint and credentials
from the standard AWS_* environment), pvc://claim/path (a file under the PVC mount root) and
file:// (local tests). Multi-file sources (archives, folders) build on `download` in bundle.py.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import unquote, urlparse

import httpx

from onnx_server.errors import ChecksumMismatch, FetchFailed, InvalidArgument, TooLarge, UnsafePath

LOG = logging.getLogger(__name__)
MODEL_FILE = "model.onnx"
CHUNK = 1 << 20
DEFAULT_MAX_BYTES = 4 << 30
DEFAULT_MAX_FILES = 10000
MIB = 1 << 20


@dataclass(frozen=True)
class FetchOptions:
    """Bounds of one fetch: where pvc:// claims are mounted, sizes, and how long a stalled transfer waits."""

    pvc_root: Path = Path("/mnt/pvc")
    max_bytes: int = DEFAULT_MAX_BYTES
    max_files: int = DEFAULT_MAX_FILES
    stall_seconds: float = 60.0
    retries: int = 3
    progress_seconds: float = 10.0
    peer: str | None = None  # http://<peer Service>:<port>: Ready pods of the same version, tried first
    peer_token: str | None = None


class TransientFetchError(FetchFailed):
    """A network failure that a retry may fix (reset connection, stall, HTTP 5xx)."""


def safe_relative(path: str) -> PurePosixPath:
    """A relative path with no '..' and no absolute start, or UnsafePath."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts:
        raise UnsafePath(f"path {path!r} must be relative and must not contain '..'")
    return p


def check_sha256(sha256: str, field: str = "--sha256") -> str:
    expected = sha256.lower().removeprefix("sha256:")
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise InvalidArgument(f"{field} {sha256!r} is not a 64-character hex digest")
    return expected


def file_below(root: Path, rel: PurePosixPath, what: str) -> Path:
    """root/rel, refused (UnsafePath) when it or a folder between it and root is a symlink."""
    target = root / rel
    for parent in [target, *target.parents]:
        if parent == root:
            break
        if parent.is_symlink():
            raise UnsafePath(f"{what}: symlinks are not followed ({parent})")
    return target


def _pvc_file(uri: str, pvc_root: Path) -> Path:
    parsed = urlparse(uri)
    target = file_below(pvc_root, safe_relative(f"{parsed.netloc}{unquote(parsed.path)}"), uri)
    root = pvc_root.resolve()
    if not target.resolve().is_relative_to(root):
        raise UnsafePath(f"{uri} resolves outside the volume root {root}")
    return target


def _read_file(path: Path, offset: int) -> Iterator[bytes]:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            while chunk := f.read(CHUNK):
                yield chunk
    except OSError as exc:
        raise FetchFailed(f"cannot read {path}: {exc.strerror}") from exc


def _skip(chunks: Iterator[bytes], count: int) -> Iterator[bytes]:
    """Drops the first `count` bytes: a server that ignored a Range request sends the object again."""
    for chunk in chunks:
        if count >= len(chunk):
            count -= len(chunk)
            continue
        yield chunk[count:]
        count = 0


def _read_http(uri: str, opts: FetchOptions, offset: int) -> Iterator[bytes]:
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    timeout = httpx.Timeout(opts.stall_seconds)  # a read that gets no byte for this long is a stall
    try:
        with httpx.stream("GET", uri, timeout=timeout, follow_redirects=True, headers=headers) as resp:
            if resp.status_code >= 500 or resp.status_code == 429:
                raise TransientFetchError(f"GET {uri}: HTTP {resp.status_code}")
            if resp.status_code not in (200, 206):
                raise FetchFailed(f"GET {uri}: HTTP {resp.status_code}")
            declared = resp.headers.get("content-length", "")
            if resp.status_code == 200 and declared.isdigit() and int(declared) > opts.max_bytes:
                raise TooLarge(f"{uri} is {declared} bytes; the limit is {opts.max_bytes}")
            resumed = resp.status_code == 206 and resp.headers.get("content-range", "").startswith(f"bytes {offset}-")
            chunks = resp.iter_bytes()  # as bytes arrive: a broken transfer keeps all it received
            yield from (chunks if resumed or not offset else _skip(chunks, offset))
    except httpx.TimeoutException as exc:
        raise TransientFetchError(f"GET {uri}: stalled, no data for {opts.stall_seconds:g}s ({exc!r})") from exc
    except httpx.TransportError as exc:
        raise TransientFetchError(f"GET {uri}: {exc!r}") from exc
    except httpx.HTTPError as exc:
        raise FetchFailed(f"GET {uri}: {exc}") from exc


def _read_s3(uri: str, opts: FetchOptions, offset: int) -> Iterator[bytes]:
    parsed = urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket or not key:
        raise InvalidArgument(f"{uri}: expected s3://bucket/key")
    try:
        import boto3  # only this source needs it
        from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, ReadTimeoutError
    except ImportError as exc:
        raise FetchFailed("s3:// needs boto3 installed") from exc
    from botocore.config import Config

    # S3-compatible servers (MinIO, Ceph, ...) behind AWS_ENDPOINT_URL rarely have per-bucket host names
    style = "path" if os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") else "auto"
    config = Config(s3={"addressing_style": style}, retries={"max_attempts": 3},
                    connect_timeout=opts.stall_seconds, read_timeout=opts.stall_seconds)
    try:
        client = boto3.client("s3", config=config)
        extra = {"Range": f"bytes={offset}-"} if offset else {}
        obj = client.get_object(Bucket=bucket, Key=key, **extra)
        resumed = str(obj.get("ContentRange", "")).startswith(f"bytes {offset}-")
        chunks = obj["Body"].iter_chunks(CHUNK)
        yield from (chunks if resumed or not offset else _skip(chunks, offset))
    except (ReadTimeoutError, ConnectionError) as exc:
        raise TransientFetchError(f"{uri}: {exc}") from exc
    except (BotoCoreError, ClientError) as exc:
        raise FetchFailed(f"{uri}: {exc}") from exc


def open_source(uri: str, opts: FetchOptions, offset: int = 0) -> Iterator[bytes]:
    """The object's bytes from `offset` on."""
    scheme = urlparse(uri).scheme
    if scheme in ("https", "http"):
        return _read_http(uri, opts, offset)
    if scheme == "s3":
        return _read_s3(uri, opts, offset)
    if scheme == "pvc":
        return _read_file(_pvc_file(uri, opts.pvc_root), offset)
    if scheme == "file":
        return _read_file(Path(unquote(urlparse(uri).path)), offset)
    raise InvalidArgument(f"unsupported URI scheme in {uri!r}: use https://, s3://, pvc:// or file://")


class Progress:
    """Logs bytes and rate every `period` seconds from a thread, so a stalled read still reports."""

    def __init__(self, label: str, period: float) -> None:
        self.label, self.period, self.done = label, period, 0
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.log("finished" if exc_type is None else "stopped")

    def log(self, state: str) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        LOG.info("%s %s: %.1f MiB in %.0fs (%.1f MiB/s)", state, self.label, self.done / MIB, elapsed,
                 self.done / MIB / elapsed)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.log("fetching")


def download(uri: str, out: BinaryIO, expected: str, opts: FetchOptions, budget: int) -> int:
    """Streams `uri` into `out`, checking sha256; transient failures are retried from the last byte
    written. Returns the size; raises TooLarge past `budget` bytes and ChecksumMismatch."""
    digest, size = hashlib.sha256(), 0
    with Progress(uri, opts.progress_seconds) as progress:
        for attempt in range(opts.retries + 1):
            try:
                for chunk in open_source(uri, opts, size):
                    size += len(chunk)
                    if size > budget:
                        raise TooLarge(f"{uri} is larger than the limit of {budget} bytes")
                    digest.update(chunk)
                    out.write(chunk)
                    progress.done = size
                break
            except TransientFetchError as exc:
                if attempt == opts.retries:
                    raise FetchFailed(f"{exc.message} (gave up after {attempt + 1} attempts)") from exc
                LOG.warning("retrying %s from byte %d: %s", uri, size, exc.message)
                time.sleep(min(0.5 * 2.0**attempt, 10.0))
    out.flush()
    os.fsync(out.fileno())
    if digest.hexdigest() != expected:
        raise ChecksumMismatch(f"{uri}: sha256 is {digest.hexdigest()}, expected {expected}")
    return size
