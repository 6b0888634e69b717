"""What the real-node benchmarks share: the local cluster (started unless it runs), a fresh namespace,
a model store on the node IP and the operator as a process watching only that namespace."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from localcluster.harness import ClusterHandle, started_local_cluster, terminate
from tests.e2e.conftest import ModelStore

MODELS = Path(__file__).resolve().parent / "results" / "models"


@dataclass(frozen=True)
class Bench:
    cluster: ClusterHandle
    namespace: str
    models: ModelStore


@contextmanager
def operator_on_real_node(name: str) -> Iterator[Bench]:
    """Namespace `<name>-xxxxx` with the operator (its log in the cluster's logs as bench-<name>-operator.log);
    the operator stopped, the namespace deleted and the store shut down afterwards."""
    cluster, h = started_local_cluster()
    ns = f"{name}-{uuid.uuid4().hex[:5]}"
    h.create_namespace(ns)
    MODELS.mkdir(parents=True, exist_ok=True)
    store = ModelStore(MODELS)
    log = (cluster.paths.logs / f"bench-{name}-operator.log").open("ab")
    op = subprocess.Popen([sys.executable, "-m", "onnx_operator", "--runtime-image", h.runtime_image,
                           "--leader-elect=false", "--namespaces", ns], stdout=log, stderr=subprocess.STDOUT,
                          env=dict(os.environ, KUBECONFIG=str(cluster.paths.kubeconfig)))
    try:
        yield Bench(h, ns, store)
    finally:
        terminate(op)
        h.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        store.httpd.shutdown()
