"""Shared fixtures: the local control plane (or kind) and a namespace per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from localcluster.harness import ClusterHandle, kind_cluster, local_cluster


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cluster",
        choices=["local", "kind"],
        default=os.environ.get("ONNX_OPERATOR_TEST_CLUSTER", "local"),
        help="local: the embedded control plane (etcd, kube-apiserver, ... and kwok; default). "
        "kind: a kind cluster through pytest-kind (needs Docker; no kwok failure injection).",
    )


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[ClusterHandle]:
    """A kubeconfig for a real Kubernetes API server, started when none is running."""
    if request.config.getoption("--cluster") == "kind":
        yield from kind_cluster()
    else:
        yield from local_cluster()


@pytest.fixture()
def namespace(cluster: ClusterHandle) -> Iterator[str]:
    """A fresh namespace (with its default ServiceAccount), deleted after the test."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.create_namespace(name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
