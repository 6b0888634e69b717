"""The model store `examples/basic/` points at: an HTTP server on the real node's IP, port 30080.

`make demo` runs it beside the cluster; `make model-store` runs it in the foreground for the
"Using the operator" steps (it exits at once when a store already answers there, e.g. the demo's).

    python -m localcluster.model_store [--dir .cluster/store]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

import httpx

from localcluster.cluster import default_paths
from localcluster.models import iris_model
from localcluster.realnode import NODE_IP

STORE_PORT = 30080
STORE = f"http://{NODE_IP}:{STORE_PORT}"
EXAMPLE = "iris/1.0.0/model.onnx"  # examples/basic/modelversion.yaml's file


def write(root: Path, files: dict[str, bytes]) -> dict[str, str]:
    """Places each file under root; returns {path: sha256}."""
    digests = {}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        digests[rel] = hashlib.sha256(data).hexdigest()
    return digests


def serving() -> bool:
    try:
        return httpx.get(f"{STORE}/{EXAMPLE}", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster.model_store", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=default_paths().root / "store")
    args = parser.parse_args(argv)
    if serving():
        print(f"model store: {STORE} already serves {EXAMPLE}", flush=True)
        return 0
    for rel, sha in write(args.dir, {EXAMPLE: iris_model()}).items():
        print(f"model store: {STORE}/{rel}  sha256 {sha}", flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "http.server", str(STORE_PORT), "--bind", NODE_IP,
                              "--directory", str(args.dir)])
    return 1  # not reached: execv replaces this process


if __name__ == "__main__":
    sys.exit(main())
