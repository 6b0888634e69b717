"""Downloads that break: a dropped connection resumes (or restarts when Range is ignored), a stall gives
up in bounded time with FetchFailed, and progress is logged while bytes trickle in."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.stores import Faults, FileStore

SIZE = 1 << 20


def fetch(store: FileStore, dest: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    data = (store.root / "blob.onnx").read_bytes()
    proc = subprocess.run([sys.executable, "-m", "onnx_server.cli", "fetch", "--uri", f"{store.url}/blob.onnx",
                           "--sha256", hashlib.sha256(data).hexdigest(), "--dest", str(dest), *extra],
                          capture_output=True, text=True, env={**os.environ, "SSL_CERT_FILE": str(store.ca)},
                          timeout=60, check=False)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileStore]:
    site = tmp_path_factory.mktemp("site")
    (site / "blob.onnx").write_bytes(os.urandom(SIZE))
    srv = FileStore(site, tmp_path_factory.mktemp("tls"))
    yield srv
    srv.close()


def test_a_dropped_download_resumes_from_the_last_byte(store: FileStore, tmp_path: Path) -> None:
    store.reset(Faults(drops=1, cut=SIZE // 2))

    code, out, log = fetch(store, tmp_path)

    assert code == 0, out
    assert store.faults.seen_ranges and int(store.faults.seen_ranges[0].split("=")[1].rstrip("-")) > 0
    assert "retrying" in log and (tmp_path / "model.onnx").read_bytes() == (store.root / "blob.onnx").read_bytes()


def test_a_server_ignoring_range_gets_a_clean_restart(store: FileStore, tmp_path: Path) -> None:
    store.reset(Faults(drops=2, cut=SIZE // 3, ranges=False))

    code, out, _ = fetch(store, tmp_path)

    assert code == 0, out
    assert len(store.faults.seen_ranges) == 2  # both retries asked to resume; both got the whole object
    assert (tmp_path / "model.onnx").read_bytes() == (store.root / "blob.onnx").read_bytes()


def test_a_stalled_download_gives_up_in_bounded_time(store: FileStore, tmp_path: Path) -> None:
    store.reset(Faults(cut=SIZE // 4, stall=20))
    started = time.monotonic()

    code, out, _ = fetch(store, tmp_path, "--stall-seconds", "1", "--retries", "1")

    assert (code, out["reason"]) == (3, "FetchFailed") and "stalled" in out["message"]
    assert "gave up after 2 attempts" in out["message"]
    assert time.monotonic() - started < 15
    assert list(tmp_path.iterdir()) == []


def test_progress_is_logged_with_bytes_and_rate(store: FileStore, tmp_path: Path) -> None:
    store.reset(Faults(pace=0.1))  # 16 chunks of 64 KiB: about 1.6 s

    code, _, log = fetch(store, tmp_path, "--progress-seconds", "0.3")

    lines = [line for line in log.splitlines() if "fetching https://" in line]
    assert code == 0 and len(lines) >= 2, log
    assert all("MiB/s" in line for line in lines) and "finished" in log, log  # the log, to see a garbled line
