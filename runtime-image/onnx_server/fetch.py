"""Download a model artifact, verifying sha256 while streaming, and write it atomically.

Sources: https:// and http:// (httpx, streaming), s3://bucket/key (boto3; endpoint and credentials
from the standard AWS_* environment), pvc://claim/path (a file under the PVC mount root) and
file:// (local tests). The file lands as DEST/model.onnx only when its checksum matched.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

import httpx

from onnx_server.errors import ChecksumMismatch, FetchFailed, InvalidArgument, TooLarge, UnsafePath

MODEL_FILE = "model.onnx"
CHUNK = 1 << 20
DEFAULT_MAX_BYTES = 4 << 30


def safe_relative(path: str) -> PurePosixPath:
    """A relative path with no '..' and no absolute start, or UnsafePath."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts:
        raise UnsafePath(f"path {path!r} must be relative and must not contain '..'")
    return p


def _pvc_file(uri: str, pvc_root: Path) -> Path:
    parsed = urlparse(uri)
    rel = safe_relative(f"{parsed.netloc}{unquote(parsed.path)}")
    root = pvc_root.resolve()
    target = pvc_root / rel
    for parent in [target, *target.parents]:
        if parent == pvc_root:
            break
        if parent.is_symlink():
            raise UnsafePath(f"{uri}: symlinks are not followed ({parent})")
    if not target.resolve().is_relative_to(root):
        raise UnsafePath(f"{uri} resolves outside the volume root {root}")
    return target


def _read_file(path: Path) -> Iterator[bytes]:
    try:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk
    except OSError as exc:
        raise FetchFailed(f"cannot read {path}: {exc.strerror}") from exc


def _read_http(uri: str, timeout: float, max_bytes: int) -> Iterator[bytes]:
    try:
        with httpx.stream("GET", uri, timeout=timeout, follow_redirects=True) as resp:
            if resp.status_code != 200:
                raise FetchFailed(f"GET {uri}: HTTP {resp.status_code}")
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise TooLarge(f"{uri} is {declared} bytes; the limit is {max_bytes}")
            yield from resp.iter_bytes(CHUNK)
    except httpx.HTTPError as exc:
        raise FetchFailed(f"GET {uri}: {exc}") from exc


def _read_s3(uri: str) -> Iterator[bytes]:
    parsed = urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket or not key:
        raise InvalidArgument(f"{uri}: expected s3://bucket/key")
    try:
        import boto3  # only this source needs it
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError as exc:
        raise FetchFailed("s3:// needs boto3 installed") from exc
    from botocore.config import Config

    # S3-compatible servers (MinIO, Ceph, ...) behind AWS_ENDPOINT_URL rarely have per-bucket host names
    style = "path" if os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") else "auto"
    try:
        client = boto3.client("s3", config=Config(s3={"addressing_style": style}, retries={"max_attempts": 3}))
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        yield from body.iter_chunks(CHUNK)
    except (BotoCoreError, ClientError) as exc:
        raise FetchFailed(f"{uri}: {exc}") from exc


def open_source(uri: str, pvc_root: Path, timeout: float = 60, max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[bytes]:
    scheme = urlparse(uri).scheme
    if scheme in ("https", "http"):
        return _read_http(uri, timeout, max_bytes)
    if scheme == "s3":
        return _read_s3(uri)
    if scheme == "pvc":
        return _read_file(_pvc_file(uri, pvc_root))
    if scheme == "file":
        return _read_file(Path(unquote(urlparse(uri).path)))
    raise InvalidArgument(f"unsupported URI scheme in {uri!r}: use https://, s3://, pvc:// or file://")


def fetch(uri: str, sha256: str, dest: Path, pvc_root: Path = Path("/mnt/pvc"),
          max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[Path, int]:
    """Streams `uri` to DEST/model.onnx; returns (path, size). Nothing is left behind on failure."""
    expected = sha256.lower().removeprefix("sha256:")
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise InvalidArgument(f"--sha256 {sha256!r} is not a 64-character hex digest")
    if dest.is_symlink():
        raise UnsafePath(f"destination {dest} is a symlink")
    try:
        if not dest.exists():
            dest.mkdir(parents=True)
            dest.chmod(0o755)
        fd, tmp_name = tempfile.mkstemp(prefix=".fetch-", dir=dest)
    except OSError as exc:
        raise FetchFailed(f"cannot write into {dest}: {exc.strerror}") from exc
    digest, size = hashlib.sha256(), 0
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in open_source(uri, pvc_root, max_bytes=max_bytes):
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(f"{uri} is larger than the limit of {max_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != expected:
            raise ChecksumMismatch(f"{uri}: sha256 is {digest.hexdigest()}, expected {expected}")
        target = dest / MODEL_FILE
        # readable by any uid: the serving container need not run as the uid that fetched the model
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        return target, size
    finally:
        tmp.unlink(missing_ok=True)
