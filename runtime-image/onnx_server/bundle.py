"""A model made of one file, an archive or a folder with a file list, fetched whole or not at all.

Everything lands first in a private staging folder inside DEST; files move into DEST only after every
one of them matched its digest (and an archive was extracted within its bounds), so nothing
half-written is ever served. The digest of a folder is the sha256 of its canonical manifest: one line
`<sha256>  <path>\\n` per file, sorted by path (what `sha256sum` prints).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import quote, urlparse

from onnx_server.errors import FetchFailed, InvalidArgument, InvalidModel, ServerError, TooLarge, UnsafePath
from onnx_server.fetch import CHUNK, MODEL_FILE, FetchOptions, check_sha256, download, safe_relative
from onnx_server.peer import fetch_from_peer

LOG = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


@dataclass(frozen=True)
class SourceFile:
    path: str
    sha256: str


@dataclass(frozen=True)
class Fetched:
    model_path: Path
    digest: str  # sha256:<hex> of the file, the archive, or the folder's manifest
    size_bytes: int  # of every file placed
    file_count: int
    peer_files: int = 0  # how many of them a peer sent (the rest came from the source)
    peer_errors: tuple[str, ...] = ()  # why a peer's copy was not taken (the first few)


def manifest_digest(files: list[SourceFile]) -> str:
    lines = "".join(f"{f.sha256}  {f.path}\n" for f in sorted(files, key=lambda f: f.path))
    return f"sha256:{hashlib.sha256(lines.encode()).hexdigest()}"


def is_archive(uri: str) -> bool:
    return urlparse(uri).path.lower().endswith(ARCHIVE_SUFFIXES)


class _Budget:
    """Bytes and files still allowed; exceeding either is TooLarge (archive bombs, huge folders)."""

    def __init__(self, opts: FetchOptions) -> None:
        self.opts, self.bytes, self.files, self.peer_files = opts, 0, 0, 0
        self.peer_errors: list[str] = []

    def add_file(self, name: str) -> None:
        self.files += 1
        if self.files > self.opts.max_files:
            raise TooLarge(f"{name}: more than {self.opts.max_files} files (--max-files)")

    def add_bytes(self, name: str, count: int) -> None:
        self.bytes += count
        if self.bytes > self.opts.max_bytes:
            raise TooLarge(f"{name}: the files add up to more than {self.opts.max_bytes} bytes (--max-bytes)")


def _copy(src: IO[bytes], target: Path, name: str, budget: _Budget) -> None:
    """Copies counting the bytes really written, not the sizes an archive declares."""
    if target.exists() or target.is_symlink():
        raise UnsafePath(f"archive entry {name!r} appears twice or collides with a folder")
    with target.open("xb") as out:
        while chunk := src.read(CHUNK):
            budget.add_bytes(name, len(chunk))
            out.write(chunk)


def _entry_target(tree: Path, name: str) -> Path:
    rel = safe_relative(name.removeprefix("./").rstrip("/") or ".")
    target = tree / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _extract_tar(archive: Path, tree: Path, budget: _Budget) -> None:
    with tarfile.open(archive, "r:*") as tf:
        for member in tf:
            if member.name in (".", "./"):
                continue
            budget.add_file(member.name)
            target = _entry_target(tree, member.name)
            if member.isdir():
                target.mkdir(exist_ok=True)
            elif member.isreg():
                src = tf.extractfile(member)
                assert src is not None  # regular members always have a body
                _copy(src, target, member.name, budget)
            else:
                raise UnsafePath(f"archive entry {member.name!r} is a link or a device; only files and folders "
                                 "are extracted")


def _extract_zip(archive: Path, tree: Path, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            budget.add_file(info.filename)
            mode = info.external_attr >> 16
            if info.create_system == 3 and mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise UnsafePath(f"archive entry {info.filename!r} is a link or a device; only files and folders "
                                 "are extracted")
            target = _entry_target(tree, info.filename)
            if info.is_dir():
                target.mkdir(exist_ok=True)
            else:
                with zf.open(info) as src:
                    _copy(src, target, info.filename, budget)


def _extract(archive: Path, uri: str, tree: Path, opts: FetchOptions) -> _Budget:
    budget = _Budget(opts)
    try:
        if urlparse(uri).path.lower().endswith(".zip"):
            _extract_zip(archive, tree, budget)
        else:
            _extract_tar(archive, tree, budget)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, RuntimeError) as exc:
        raise InvalidModel(f"{uri} is not a readable archive: {exc}") from exc
    return budget


def _download_to(uri: str, target: Path, sha256: str, opts: FetchOptions, budget: int,
                 peer_path: str | None = None, peer_errors: list[str] | None = None) -> tuple[int, bool]:
    """Fetches one file, from a peer first when one is configured and the file is pinned by its own sha256
    (`peer_path`: its path in a peer's model folder); returns (size, whether a peer sent it). Why a peer's
    copy was not taken is appended to `peer_errors`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("xb") as out:
        if opts.peer and opts.peer_token and peer_path is not None:
            try:
                size = fetch_from_peer(opts.peer, peer_path, opts.peer_token, out, sha256, budget,
                                       opts.stall_seconds)
                LOG.info("%s: %d bytes from peer %s, sha256 matched", peer_path, size, opts.peer)
                return size, True
            except ServerError as exc:  # no peer, a refusal or altered bytes: nothing of it is kept
                LOG.warning("%s: not taken from peer %s (%s: %s); fetching it from the source %s", peer_path,
                            opts.peer, exc.reason, exc.message, uri)
                if peer_errors is not None:
                    peer_errors.append(f"{peer_path}: {exc.reason}: {exc.message}"[:300])
                out.seek(0)
                out.truncate()
        LOG.info("downloading %s from the source", uri)
        return download(uri, out, sha256, opts, budget), False


def _fetch_files(uri: str, files: list[SourceFile], tree: Path, opts: FetchOptions) -> _Budget:
    budget = _Budget(opts)
    seen: set[str] = set()
    for entry in files:
        rel = safe_relative(entry.path)
        if str(rel) in seen:
            raise InvalidArgument(f"files: {entry.path!r} is listed twice")
        seen.add(str(rel))
        budget.add_file(entry.path)
        size, from_peer = _download_to(f"{uri}{quote(str(rel))}", tree / rel,
                                       check_sha256(entry.sha256, f"files[{entry.path}]"), opts,
                                       opts.max_bytes - budget.bytes, str(rel), budget.peer_errors)
        budget.add_bytes(entry.path, size)
        budget.peer_files += from_peer
    return budget


def _make_readable(tree: Path) -> None:
    """Folders 0755, files 0644: the serving container need not run as the uid that fetched the model."""
    for path in tree.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _place(tree: Path, dest: Path) -> None:
    """Moves every verified top-level entry into DEST (same filesystem: each move is a rename)."""
    _make_readable(tree)
    for entry in sorted(tree.iterdir()):
        target = dest / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)


def fetch_model(uri: str, dest: Path, sha256: str | None = None, files: list[SourceFile] | None = None,
                model_file: str = MODEL_FILE, opts: FetchOptions | None = None) -> Fetched:
    """Fetches one file (to DEST/<model_file>), an archive (extracted into DEST) or the listed files of
    a folder URI ending in '/' (into DEST); returns what was placed. Nothing is left behind on failure."""
    opts = opts or FetchOptions()
    if (sha256 is None) == (files is None):
        raise InvalidArgument("give exactly one of --sha256 (one file or an archive) and --file (a folder's files)")
    if files is not None and not uri.endswith("/"):
        raise InvalidArgument(f"--file needs a folder URI ending in '/', got {uri!r}")
    if files is None and uri.endswith("/"):
        raise InvalidArgument(f"{uri!r} is a folder: pin its contents with --file PATH=SHA256")
    model_rel = safe_relative(model_file)
    if dest.is_symlink():
        raise UnsafePath(f"destination {dest} is a symlink")
    try:
        if not dest.exists():
            dest.mkdir(parents=True)
            dest.chmod(0o755)
        staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest))
    except OSError as exc:
        raise FetchFailed(f"cannot write into {dest}: {exc.strerror}") from exc
    try:
        tree = staging / "tree"
        tree.mkdir()
        if files is not None:
            budget = _fetch_files(uri, files, tree, opts)
            digest = manifest_digest(files)
        elif is_archive(uri):
            expected = check_sha256(sha256 or "")
            if opts.peer:  # peers hold the extracted files, whose digests nothing here pins
                LOG.info("%s is an archive: fetched from the source, not from peers", uri)
            _download_to(uri, staging / "archive", expected, opts, opts.max_bytes)
            budget = _extract(staging / "archive", uri, tree, opts)
            digest = f"sha256:{expected}"
        else:
            expected = check_sha256(sha256 or "")
            budget = _Budget(opts)
            budget.add_file(model_file)
            size, from_peer = _download_to(uri, tree / model_rel, expected, opts, opts.max_bytes, str(model_rel),
                                           budget.peer_errors)
            budget.add_bytes(model_file, size)
            budget.peer_files += from_peer
            digest = f"sha256:{expected}"
        if not (tree / model_rel).is_file() or (tree / model_rel).is_symlink():
            raise InvalidModel(f"the model file {model_file!r} (--model-file) is not among the fetched files")
        _place(tree, dest)
        return Fetched(dest / model_rel, digest, budget.bytes, budget.files, budget.peer_files,
                       tuple(budget.peer_errors[:5]))
    except OSError as exc:
        raise FetchFailed(f"cannot write into {dest}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
