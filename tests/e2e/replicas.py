"""Operator replicas for the HA tests and the failover benchmark: each a real process with its own
client-certificate identity (so the audit log tells them apart), its API traffic through an ApiProxy
the test can cut, and its /healthz and /metrics on loopback ports the test reads directly."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from localcluster.apiproxy import ApiProxy
from localcluster.harness import ClusterHandle, wait_for
from tests.e2e.conftest import OPERATOR_NAMESPACE, OPERATOR_SA, OperatorProcess

REPLICA_GROUP = "onnx-operator:replicas"
# the chart's own ClusterRole and Lease Role (installed by the operator_kubeconfig fixture), bound to the group
REPLICA_BINDINGS = f"""\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: onnx-operator-replicas}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {OPERATOR_SA}}}
subjects: [{{kind: Group, name: "{REPLICA_GROUP}", apiGroup: rbac.authorization.k8s.io}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: onnx-operator-replicas, namespace: {OPERATOR_NAMESPACE}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {OPERATOR_SA}-leader-election}}
subjects: [{{kind: Group, name: "{REPLICA_GROUP}", apiGroup: rbac.authorization.k8s.io}}]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Replica:
    def __init__(self, cluster: ClusterHandle, name: str, workdir: Path, *extra_args: str,
                 groups: tuple[str, ...] = (REPLICA_GROUP,)) -> None:
        self.name = name
        config = yaml.safe_load(cluster.user_kubeconfig(name, groups).read_text())
        self.proxy = ApiProxy(config["clusters"][0]["cluster"]["server"])
        config["clusters"][0]["cluster"]["server"] = self.proxy.url
        kubeconfig = workdir / f"{name}.kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(config))
        self.health_port, self.metrics_port = free_port(), free_port()
        self.log_path = workdir / f"{name}.log"
        self.process = OperatorProcess(kubeconfig, self.log_path, cluster.runtime_image, identity=name, extra_args=(
            "--liveness-port", str(self.health_port), "--metrics-port", str(self.metrics_port), *extra_args))

    def start(self) -> Replica:
        self.process.start()
        wait_for(f"{self.name}'s /healthz", self.health, timeout=30, interval=0.1)
        return self

    def stop(self) -> None:
        self.process.stop()
        self.proxy.close()

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1) as resp:
            return dict(json.load(resp))

    def leads(self) -> bool:
        try:
            return bool(self.health()["leader"])
        except OSError:
            return False

    def reconciles(self) -> float:
        """Reconciles run so far (a follower runs none)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=1) as resp:
            text = resp.read().decode()
        return sum(sample.value for family in text_string_to_metric_families(text)
                   if family.name == "onnx_operator_reconciles" for sample in family.samples
                   if sample.name == "onnx_operator_reconciles_total")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def first_reconcile_after(replica: Replica, since: float, timeout: float = 60) -> float:
    """Seconds from `since` (time.monotonic) to the replica's first reconcile."""
    wait_for(f"{replica.name} to reconcile", lambda: replica.reconciles() > 0, timeout=timeout, interval=0.05)
    return time.monotonic() - since
