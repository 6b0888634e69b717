"""What tests get from a cluster: its kubeconfig, kubectl, the audit log, bounded waiting."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from localcluster.cluster import Cluster

T = TypeVar("T")


def terminate(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    """Sends `sig` to a process we started, waits up to `timeout`, then kills it; returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def wait_for(what: str, probe: Callable[[], T], timeout: float = 60, interval: float = 0.25) -> T:
    """Polls `probe` until it returns a truthy value (returned) or `timeout` passes (fails)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except Exception as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


@dataclass
class ClusterHandle:
    kubeconfig: Path
    kubectl_bin: str
    audit_log: Path | None = None
    kwok: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def runtime_image(self) -> str:
        """The runtime image the cluster's nodes have (the local cluster builds it from this checkout)."""
        return str(self.extra.get("images", {}).get("runtime", os.environ.get(
            "ONNX_OPERATOR_RUNTIME_IMAGE", "localhost/onnx-operator/runtime:0.1.0")))

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        out = subprocess.run([self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args],
                             capture_output=True, text=True, input=input, check=False)
        if check and out.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def apply_crds(self) -> None:
        """This checkout's CRDs, served. They win over an earlier writer: on a reused cluster the GitOps
        tests' Argo CD owns their fields, and a changed CRD would otherwise conflict."""
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                     str(Path(__file__).resolve().parents[1] / "crds"))
        self.wait_crds_established("modelversions.serving.onnx-operator.io",
                                   "modeldeployments.serving.onnx-operator.io")

    def wait_crds_established(self, *names: str, timeout: float = 60) -> None:
        """Waits until each CRD is Established and its resource is served. Polls the conditions instead
        of `kubectl wait`, which fails outright on a CRD whose status has no conditions yet."""
        for name in names:
            wait_for(f"CRD {name} established", lambda name=name: self.kubectl(
                "get", f"crd/{name}", "-o", "jsonpath={.status.conditions[?(@.type=='Established')].status}",
                check=False).strip() == "True", timeout=timeout)
            group = name.split(".", 1)[1]
            wait_for(f"{name} served", lambda name=name, group=group: name in self.kubectl(
                "api-resources", f"--api-group={group}", "-o", "name", check=False).split(), timeout=timeout)

    def apply(self, manifest: str, namespace: str | None = None, server_side: bool = True) -> str:
        args = ["apply", "-f", "-"]
        if server_side:
            args.append("--server-side")
        if namespace:
            args += ["-n", namespace]
        return self.kubectl(*args, input=manifest)

    def create_namespace(self, name: str) -> None:
        self.kubectl("create", "namespace", name)
        wait_for(f"default ServiceAccount in {name}",
                 lambda: self.kubectl("get", "sa", "default", "-n", name, "-o", "name", check=False))

    def user_kubeconfig(self, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A kubeconfig for another identity (local control plane only)."""
        if "paths" not in self.extra:
            raise RuntimeError("only the local control plane can mint identities")
        return Cluster(self.extra["paths"]).user_kubeconfig(user, groups)

    def writes_by(self, username: str, since: float = 0.0) -> list[dict[str, Any]]:
        """Audit events of mutating requests made by `username` after the unix time `since`."""
        import datetime as dt

        out = []
        for e in self.audit_events():
            if e.get("user", {}).get("username") != username or e.get("verb") in ("get", "list", "watch"):
                continue
            ts = dt.datetime.fromisoformat(e["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
            if ts >= since:
                out.append(e)
        return out

    def audit_events(self) -> list[dict[str, Any]]:
        """Every audit event written so far (metadata level: writes only, reads are not logged)."""
        if self.audit_log is None:
            raise RuntimeError("this cluster has no audit log")
        events = []
        with self.audit_log.open() as f:
            for line in f:
                if line.strip():
                    events.append(json.loads(line))
        return events


def handle_of(cluster: Cluster) -> ClusterHandle:
    return ClusterHandle(kubeconfig=cluster.paths.kubeconfig, kubectl_bin=str(cluster.paths.bin / "kubectl"),
                         audit_log=cluster.paths.audit_log, extra={"paths": cluster.paths, "images": cluster.images()})


def started_local_cluster() -> tuple[Cluster, ClusterHandle]:
    """For benchmarks: the local cluster started (or reused) and the CRDs applied."""
    cluster = Cluster()
    cluster.up()
    handle = handle_of(cluster)
    handle.apply_crds()
    return cluster, handle


def local_cluster() -> Iterator[ClusterHandle]:
    cluster = Cluster()
    started_here = not cluster.running()
    cluster.up()
    try:
        yield handle_of(cluster)
    finally:
        if started_here and os.environ.get("ONNX_OPERATOR_KEEP_CLUSTER") != "1":
            cluster.down()


def kind_cluster() -> Iterator[ClusterHandle]:
    from pytest_kind import KindCluster  # imported lazily: only this mode needs Docker

    kind, kubectl = shutil.which("kind"), shutil.which("kubectl")
    if not kind or not kubectl:
        raise RuntimeError("--cluster=kind needs `kind` and `kubectl` on PATH and a Docker engine")
    kc = KindCluster("onnx-operator-tests", kind_path=Path(kind), kubectl_path=Path(kubectl))
    kc.create()
    try:
        yield ClusterHandle(kubeconfig=kc.kubeconfig_path, kubectl_bin=kubectl, audit_log=None, kwok=False)
    finally:
        kc.delete()
