"""bench/kserve_onnx_server.py with KServe's gRPC server on (it serves REST only): every ModelServer it
makes gets enable_grpc=True, and KServe reads --grpc_port from the command line. Run with KServe's venv:

    kserve-venv/bin/python bench/kserve_grpc_server.py --model m.onnx --name m --http_port P --grpc_port Q
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import kserve

SERVER = kserve.ModelServer


class GrpcModelServer(SERVER):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "enable_grpc": True})


kserve.ModelServer = GrpcModelServer
runpy.run_path(str(Path(__file__).with_name("kserve_onnx_server.py")), run_name="__main__")
