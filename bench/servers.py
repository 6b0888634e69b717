"""The servers runtime_bench.py compares, each one process pinned to one core with onnxruntime intra-op
threads 1, hosting the same ONNX file: onnx-server, KServe's ModelServer and MLServer (each of the last two in
its own cached venv)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
from onnx_server.model import load_session, signature

from bench.loadgen import SERVER_CORE, cached_venv
from localcluster.harness import terminate, wait_for
from tests.runtime.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
KSERVE, MLSERVER = "0.21.0", "1.7.1"
PIN = ["taskset", "-c", SERVER_CORE]


def cpu_seconds(pid: int) -> float:
    """User + system CPU process `pid` used so far (taskset execs the server: same pid); unlike latency,
    barely moved by other processes sharing the core."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BenchServer:
    """One server process on 127.0.0.1; ready when GET /v2/models/{name}/ready answers 200."""

    def __init__(self, label: str, cmd: list[str], log: Path, name: str, port: int, cwd: Path | None = None,
                 grpc_port: int | None = None, ready_port: int | None = None) -> None:
        """`ready_port`: a plain port answering the readiness check (onnx-server's --health-port with TLS)."""
        self.label, self.name, self.log, self.port, self.grpc_port = label, name, log, port, grpc_port
        self.ready_port = ready_port or port
        self.proc = subprocess.Popen([*PIN, *cmd], stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=cwd)
        wait_for(f"{label} to be ready", self._ready, timeout=180)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.label} exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        try:
            path = "/v2/health/ready" if self.ready_port != self.port else f"/v2/models/{self.name}/ready"
            return httpx.get(f"http://127.0.0.1:{self.ready_port}{path}", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        terminate(self.proc)


def onnx_server(model_dir: Path, name: str, *extra: str, tree: Path | None = None) -> BenchServer:
    """With --tls-cert among `extra`, readiness is checked on a plain --health-port. `tree`: another checkout
    whose onnx-server to run instead (e.g. main's, for before/after rows in the same run)."""
    port = free_port()
    health = free_port() if "--tls-cert" in extra else None
    extra = (*extra, "--health-port", str(health)) if health else extra
    cmd = [sys.executable, "-m", "onnx_server.cli", "serve", "--model-dir", str(model_dir), "--name", name,
           "--version", "1", "--port", str(port), "--threads", "1", *extra]
    if tree is not None:
        cmd = ["env", f"PYTHONPATH={tree.resolve() / 'runtime-image'}", *cmd]
    return BenchServer("onnx-server", cmd, model_dir / "onnx-server.log", name, port, ready_port=health)


def kserve(model_dir: Path, name: str, grpc: bool = False) -> BenchServer:
    """KServe's ModelServer; `grpc=True` turns its gRPC server on too (bench/kserve_grpc_server.py)."""
    # the wrapper imports onnx_server.model_config (the Triton config), whose protocol module needs pysimdjson
    python = cached_venv(f"kserve-{KSERVE}", f"kserve=={KSERVE}", "onnxruntime", "numpy", "pysimdjson")
    port, grpc_port = free_port(), free_port() if grpc else None
    script = "kserve_grpc_server.py" if grpc else "kserve_onnx_server.py"
    grpc_args = ["--grpc_port", str(grpc_port)] if grpc else []
    return BenchServer("kserve", [str(python), str(REPO / "bench" / script), "--model", str(model_dir / "model.onnx"),
                                 "--name", name, "--threads", "1", "--http_port", str(port), *grpc_args,
                                 "--configure_logging", "false"], model_dir / "kserve.log", name, port,
                       grpc_port=grpc_port)


def _tensors(model_dir: Path) -> dict[str, list[dict[str, object]]]:
    sig = signature(load_session(model_dir / "model.onnx"))
    return {kind: [{"name": t["name"], "datatype": t["dtype"], "shape": t["shape"]} for t in sig[kind]]
            for kind in ("inputs", "outputs")}


def mlserver(model_dir: Path, name: str) -> BenchServer:
    python = cached_venv(f"mlserver-{MLSERVER}", f"mlserver=={MLSERVER}", "onnxruntime", "numpy", "pysimdjson")
    root = model_dir / "mlserver"
    (root / name).mkdir(parents=True, exist_ok=True)
    port, grpc_port = free_port(), free_port()
    (root / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": grpc_port, "metrics_port": free_port(),
        "parallel_workers": 0, "debug": False}))
    (root / name / "model-settings.json").write_text(json.dumps({
        "name": name, "implementation": "mlserver_onnx_runtime.OnnxRuntime",
        "parameters": {"uri": str(model_dir / "model.onnx"), "extra": {"threads": 1}},
        **_tensors(model_dir)}))
    return BenchServer("mlserver", [str(python.parent / "mlserver"), "start", str(root)], model_dir / "mlserver.log",
                       name, port, cwd=REPO / "bench", grpc_port=grpc_port)


def rest_floor(work: Path, name: str) -> BenchServer:
    """The HTTP floor (bench/floor.py rest): onnx-server's uvicorn + httptools + uvloop with a raw ASGI app."""
    port = free_port()
    return BenchServer("floor", [sys.executable, str(REPO / "bench" / "floor.py"), "rest", "--port", str(port)],
                       work / "floor.log", name, port)


def grpc_floor(work: Path, name: str) -> BenchServer:
    """The gRPC floor (bench/floor.py grpc): a bare grpc.aio servicer answering a fixed ModelInferResponse."""
    port, grpc_port = free_port(), free_port()
    return BenchServer("grpc floor", [sys.executable, str(REPO / "bench" / "floor.py"), "grpc", "--port",
                                      str(grpc_port), "--ready-port", str(port)], work / "grpc-floor.log", name, port,
                       grpc_port=grpc_port)
