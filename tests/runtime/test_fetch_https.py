"""`https://` fetches from a real TLS server on loopback, with a CA made in the test."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from localcluster.models import make_model
from tests.runtime.stores import tls_context


@pytest.fixture(scope="module")
def https_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("https")
    site = root / "site"
    site.mkdir()
    data = make_model(scale=2.0)
    (site / "model.onnx").write_bytes(data)
    context = tls_context(root)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"https://127.0.0.1:{server.server_address[1]}", "ca": root / "ca.pem", "data": data}
    server.shutdown()
    server.server_close()


def fetch(uri: str, sha: str, dest: Path, ca: Path | None, *extra: str) -> tuple[int, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    if ca is not None:
        env["SSL_CERT_FILE"] = str(ca)
    proc = subprocess.run([sys.executable, "-m", "onnx_server.cli", "fetch", "--uri", uri, "--sha256", sha,
                           "--dest", str(dest), *extra], capture_output=True, text=True, env=env, timeout=60,
                          check=False)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


def test_https_model_is_streamed_and_verified(https_site: dict[str, Any], tmp_path: Path) -> None:
    sha = hashlib.sha256(https_site["data"]).hexdigest()

    code, out = fetch(f"{https_site['url']}/model.onnx", sha, tmp_path, https_site["ca"])

    assert code == 0, out
    assert (tmp_path / "model.onnx").read_bytes() == https_site["data"]
    assert out["digest"] == f"sha256:{sha}" and out["sizeBytes"] == len(https_site["data"])


def test_an_untrusted_certificate_is_a_fetch_failure(https_site: dict[str, Any], tmp_path: Path) -> None:
    code, out = fetch(f"{https_site['url']}/model.onnx", "a" * 64, tmp_path, None)
    assert code == 3 and out["reason"] == "FetchFailed" and "CERTIFICATE_VERIFY_FAILED" in out["message"]
    assert list(tmp_path.iterdir()) == []


def test_a_missing_object_names_the_http_status(https_site: dict[str, Any], tmp_path: Path) -> None:
    code, out = fetch(f"{https_site['url']}/nope.onnx", "a" * 64, tmp_path, https_site["ca"])
    assert code == 3 and out["reason"] == "FetchFailed" and "HTTP 404" in out["message"]


def test_a_declared_size_over_the_limit_is_refused_before_downloading(https_site: dict[str, Any],
                                                                      tmp_path: Path) -> None:
    code, out = fetch(f"{https_site['url']}/model.onnx", "a" * 64, tmp_path, https_site["ca"], "--max-bytes", "100")
    assert code == 6 and out["reason"] == "TooLarge" and "limit is 100" in out["message"]
    assert list(tmp_path.iterdir()) == []
