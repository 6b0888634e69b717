"""Real onnx-server processes on 127.0.0.1 serving real models, and a real S3-compatible server."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from localcluster.harness import terminate, wait_for
from localcluster.models import make_model

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, model_dir: Path, *extra: str, name: str = "linear", version: str = "1.0.0",
                 wrapper: tuple[str, ...] = ()) -> None:
        """`wrapper`: a command the server runs under, e.g. ("prlimit", "--nofile=1024:1024")."""
        model_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_port = None if "--no-grpc" in extra else free_port()
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        grpc = [] if self.grpc_port is None else ["--grpc-port", str(self.grpc_port)]
        self.name, self.version = name, version
        self.log = model_dir / "server.log"
        self.proc = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "onnx_server.cli", "serve", "--model-dir", str(model_dir), "--name", name,
             "--version", version, "--host", "127.0.0.1", "--port", str(self.port), *grpc, *extra],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        wait_for("the server to be ready", lambda: self._ready(), timeout=60)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        return httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200

    @property
    def infer_url(self) -> str:
        return f"{self.url}/v2/models/{self.name}/infer"

    def stop(self) -> int:
        return terminate(self.proc)


def model_dir(tmp: Path, data: bytes) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "model.onnx").write_bytes(data)
    return tmp


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(model_dir(tmp_path_factory.mktemp("srv"), make_model()), "--max-body-bytes", "65536")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(model_dir(tmp_path_factory.mktemp("batch"), make_model()),
                        "--max-batch-size", "16", "--max-delay-ms", "50")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    binary = subprocess.run([str(REPO / "tests/runtime/build-s3.sh")], check=True, capture_output=True,
                            text=True, timeout=900).stdout.strip()
    port = free_port()
    root = tmp_path_factory.mktemp("s3")
    proc = subprocess.Popen([binary, "-host", f"127.0.0.1:{port}", "-backend", "memory", "-initialbucket", "models"],
                            stdout=(root / "s3.log").open("wb"), stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    wait_for("the S3 server", lambda: httpx.get(endpoint, timeout=2).status_code < 500, timeout=30)
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1"}
    yield env
    proc.terminate()
    proc.wait(timeout=10)
