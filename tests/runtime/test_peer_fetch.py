"""Peer fetch between real onnx-server processes on 127.0.0.1: a serving process hands its files to a
fetching one (the store may be down), altered bytes are refused and the source used instead, and only
the holder of the token reads anything."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from localcluster.models import make_model
from tests.e2e.conftest import ModelStore
from tests.runtime.conftest import ServerProcess, free_port, model_dir

TOKEN = "a" * 64
ROWS = [[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 2.0, 0.0]]


@pytest.fixture()
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[ModelStore]:
    """The model's source: an HTTP server on 127.0.0.1 that counts the bytes it sent."""
    root = tmp_path / "store"
    root.mkdir()
    s = ModelStore(root, host="127.0.0.1")
    yield s
    s.stop()


def source_url(store: ModelStore, name: str) -> str:
    host, port = store.httpd.server_address[:2]
    return f"http://{host}:{port}/{name}"


def peer_server(tmp_path: Path, data: bytes, token_file: Path) -> tuple[ServerProcess, str]:
    port = free_port()
    server = ServerProcess(model_dir(tmp_path / "peer", data), "--peer-port", str(port),
                           "--peer-token-file", str(token_file), "--no-grpc")
    return server, f"http://127.0.0.1:{port}"


def fetch(*args: str) -> tuple[int, dict, str]:
    proc = subprocess.run([sys.executable, "-m", "onnx_server.cli", "fetch", "--retries", "0", *args],
                          capture_output=True, text=True, check=False, timeout=120)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_a_new_process_gets_the_model_from_a_peer_while_the_store_is_down(tmp_path: Path, token_file: Path,
                                                                         store: ModelStore) -> None:
    data = make_model(scale=1.5)
    sha = hashlib.sha256(data).hexdigest()
    (tmp_path / "store" / "m.onnx").write_bytes(data)
    peer, peer_url = peer_server(tmp_path, data, token_file)
    source = source_url(store, "m.onnx")
    store.stop()  # the store is gone: only the peer can help
    try:
        dest = tmp_path / "new"
        code, out, log = fetch("--uri", source, "--sha256", sha, "--dest", str(dest), "--peer", peer_url,
                               "--peer-token-file", str(token_file))

        assert code == 0, log
        assert out["peerFiles"] == 1 and (dest / "model.onnx").read_bytes() == data
        assert f"model.onnx: {len(data)} bytes from peer {peer_url}, sha256 matched" in log
        second = ServerProcess(dest, "--no-grpc")
        try:
            body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                "data": [v for r in ROWS for v in r]}]}
            got = httpx.post(second.infer_url, json=body, timeout=10).json()
            expected = ort.InferenceSession(data).run(None, {"x": np.asarray(ROWS, dtype=np.float32)})[0]
            np.testing.assert_allclose(np.asarray(got["outputs"][0]["data"]).reshape(2, -1), expected, rtol=1e-6)
        finally:
            second.stop()
        assert "served model.onnx" in peer.log.read_text()
    finally:
        peer.stop()


def test_altered_bytes_from_a_peer_are_refused_and_the_source_used(tmp_path: Path, token_file: Path,
                                                                   store: ModelStore) -> None:
    data, other = make_model(scale=1.0), make_model(scale=3.0)
    sha = hashlib.sha256(data).hexdigest()
    (tmp_path / "store" / "m.onnx").write_bytes(data)
    peer, peer_url = peer_server(tmp_path, other, token_file)  # a peer whose file is not the pinned one
    try:
        dest = tmp_path / "new"
        code, out, log = fetch("--uri", source_url(store, "m.onnx"), "--sha256", sha, "--dest", str(dest),
                               "--peer", peer_url, "--peer-token-file", str(token_file))
    finally:
        peer.stop()

    assert code == 0, log
    assert out["peerFiles"] == 0 and (dest / "model.onnx").read_bytes() == data
    assert out["peerErrors"][0].startswith("model.onnx: ChecksumMismatch: ")  # the pod's termination message
    assert "not taken from peer" in log and "ChecksumMismatch" in log and "fetching it from the source" in log
    assert store.bytes_sent == len(data)
    assert [p.name for p in dest.iterdir()] == ["model.onnx"]  # nothing of the peer's bytes is left


def test_no_token_or_a_wrong_token_reads_nothing(tmp_path: Path, token_file: Path) -> None:
    data = make_model()
    peer, peer_url = peer_server(tmp_path, data, token_file)
    try:
        url = f"{peer_url}/v1/files/model.onnx"
        anonymous = httpx.get(url, timeout=5)
        wrong = httpx.get(url, headers={"Authorization": "Bearer " + "b" * 64}, timeout=5)
        right = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        escape = httpx.get(f"{peer_url}/v1/files/..%2Fserver.log", headers={"Authorization": f"Bearer {TOKEN}"},
                           timeout=5)
        listing = httpx.get(f"{peer_url}/v1/files/", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        write = httpx.put(url, content=b"x", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    finally:
        peer.stop()

    assert (anonymous.status_code, wrong.status_code, right.status_code) == (401, 403, 200)
    assert anonymous.content != data and wrong.content != data and right.content == data
    assert escape.status_code in (403, 404) and listing.status_code in (403, 404)
    assert write.status_code == 501  # read-only: only GET and HEAD exist


def test_with_a_wrong_token_and_no_store_the_fetch_fails_naming_the_source(tmp_path: Path, token_file: Path,
                                                                           store: ModelStore) -> None:
    data = make_model()
    sha = hashlib.sha256(data).hexdigest()
    peer, peer_url = peer_server(tmp_path, data, token_file)
    wrong = tmp_path / "wrong-token"
    wrong.write_text("c" * 64)
    source = source_url(store, "m.onnx")
    store.stop()
    try:
        code, out, log = fetch("--uri", source, "--sha256", sha, "--dest", str(tmp_path / "new"),
                               "--peer", peer_url, "--peer-token-file", str(wrong))
    finally:
        peer.stop()

    assert code == 3 and out["reason"] == "FetchFailed" and source in out["message"]
    assert "HTTP 403" in log


def test_a_folder_comes_file_by_file_from_the_peer(tmp_path: Path, token_file: Path, store: ModelStore) -> None:
    data, extra = make_model(), b"vocabulary\n" * 1000
    peer, peer_url = peer_server(tmp_path, data, token_file)
    (tmp_path / "peer" / "assets").mkdir()
    (tmp_path / "peer" / "assets" / "vocab.txt").write_bytes(extra)
    source = source_url(store, "folder/")
    store.stop()
    try:
        code, out, log = fetch("--uri", source, "--file", f"model.onnx={hashlib.sha256(data).hexdigest()}",
                               "--file", f"assets/vocab.txt={hashlib.sha256(extra).hexdigest()}",
                               "--dest", str(tmp_path / "new"), "--peer", peer_url,
                               "--peer-token-file", str(token_file))
    finally:
        peer.stop()

    assert code == 0, log
    assert out["peerFiles"] == 2 and (tmp_path / "new" / "assets" / "vocab.txt").read_bytes() == extra

