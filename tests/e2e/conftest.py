"""e2e fixtures: the CRDs installed, the operator running as a process, real models to serve."""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from localcluster.harness import ClusterHandle, terminate
from localcluster.models import make_model
from localcluster.realnode import NODE_IP
from tests.prometheus import build_prometheus_with_kubernetes_sd

REPO = Path(__file__).resolve().parents[2]
# every e2e test runs the operator as the chart's ServiceAccount, so a missing RBAC rule fails a test
OPERATOR_NAMESPACE = "e2e-operator"  # not the chart's default: `make demo` installs the chart there
OPERATOR_SA = "e2e-onnx-operator"  # the chart rendered as release e2e-onnx-operator
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SA}"


@pytest.fixture(scope="session")
def crds(cluster: ClusterHandle) -> None:
    cluster.apply_crds()


class OperatorProcess:
    """The operator as a real process (`python -m onnx_operator`) with its own identity."""

    def __init__(self, kubeconfig: Path, log_path: Path, runtime_image: str, extra_args: tuple[str, ...] = (),
                 identity: str = "e2e-operator") -> None:
        self.kubeconfig, self.log_path, self.extra_args = kubeconfig, log_path, extra_args
        self.runtime_image = runtime_image
        self.identity = identity  # like a pod name: a restart of the same identity resumes its Lease at once
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), PYTHONUNBUFFERED="1")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "onnx_operator", "--runtime-image", self.runtime_image,
             "--resync-seconds", "30", "--leader-elect-resource-namespace", OPERATOR_NAMESPACE,
             "--leader-elect-resource-name", OPERATOR_SA,
             "--leader-elect-identity", self.identity, *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
        )
        log.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            terminate(self.proc, sig, timeout=20)
        self.proc = None

    def restart(self, sig: int = signal.SIGKILL) -> None:
        self.stop(sig)
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster: ClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A token kubeconfig for the chart's ServiceAccount, bound to exactly the chart's RBAC."""
    bin_dir = Path(cluster.kubectl_bin).parent
    subprocess.run([str(REPO / "localcluster/tools/build-tools.sh"), str(bin_dir)], check=True, timeout=1800)
    rbac = subprocess.run(
        [str(bin_dir / "helm"), "template", OPERATOR_SA, str(REPO / "charts/onnx-operator"),
         "-n", OPERATOR_NAMESPACE, "--kube-version", "1.36.0", "--show-only", "templates/serviceaccount.yaml",
         "--show-only", "templates/clusterrole.yaml", "--show-only", "templates/clusterrolebinding.yaml",
         "--show-only", "templates/role.yaml", "--show-only", "templates/rolebinding.yaml"],
        capture_output=True, text=True, check=True).stdout
    if not cluster.kubectl("get", "namespace", OPERATOR_NAMESPACE, "--ignore-not-found", "-o", "name"):
        cluster.create_namespace(OPERATOR_NAMESPACE)
    cluster.apply(rbac, OPERATOR_NAMESPACE)
    token = cluster.kubectl("create", "token", OPERATOR_SA, "-n", OPERATOR_NAMESPACE, "--duration=12h").strip()
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    config["users"] = [{"name": OPERATOR_SA, "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = OPERATOR_SA
    path = tmp_path_factory.mktemp("operator-identity") / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def prometheus_bin() -> Path:
    """Prometheus with Kubernetes discovery (Debian's has none), built once per machine, in .cluster/bin
    where `make tools` puts it too."""
    return build_prometheus_with_kubernetes_sd(REPO / ".cluster" / "bin") / "prometheus"


@pytest.fixture(scope="module")
def operator(cluster: ClusterHandle, crds: None, operator_kubeconfig: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    yield from running_operator(cluster, operator_kubeconfig, tmp_path_factory)


def running_operator(cluster: ClusterHandle, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory,
                     *extra_args: str) -> Iterator[OperatorProcess]:
    """The body of a module's `operator` fixture: started with `extra_args`, stopped at the end, the tail
    of its log printed."""
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    op = OperatorProcess(kubeconfig, log_path, cluster.runtime_image, extra_args)
    op.start()
    try:
        yield op
    finally:
        op.stop()
        if log_path.exists():
            tail = log_path.read_text(errors="replace").splitlines()[-40:]
            print("\n--- operator log (tail) ---\n" + "\n".join(tail))


@dataclass(frozen=True)
class Artifact:
    uri: str
    sha256: str


class ModelStore:
    """Real ONNX model files served over HTTP on the node IP (pods fetch from it), as a model registry would."""

    def __init__(self, root: Path, host: str = NODE_IP) -> None:
        self.root = root
        self.bytes_sent = 0  # body bytes of every answer: what the model's source served (egress)
        store = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(*a, directory=str(root), **kw)

            def log_message(self, *_: Any) -> None:
                pass

            def copyfile(self, source: Any, outputfile: Any) -> None:
                while chunk := source.read(1 << 20):
                    outputfile.write(chunk)
                    with store.lock:
                        store.bytes_sent += len(chunk)

        self.lock = threading.Lock()
        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def publish(self, name: str, data: bytes) -> Artifact:
        (self.root / name).write_bytes(data)
        port = self.httpd.server_address[1]
        return Artifact(f"http://{self.httpd.server_address[0]}:{port}/{name}", hashlib.sha256(data).hexdigest())

    def model(self, name: str, scale: float = 1.0) -> Artifact:
        return self.publish(name, make_model(scale))

    def stop(self) -> None:
        """The store goes away: its port refuses connections from now on."""
        if self.httpd.socket.fileno() != -1:
            self.httpd.shutdown()
            self.httpd.server_close()


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelStore]:
    store = ModelStore(tmp_path_factory.mktemp("models"))
    yield store
    store.stop()


@pytest.fixture()
def own_store(tmp_path: Path) -> Iterator[ModelStore]:
    """A model store of the test's own, which the test may stop."""
    root = tmp_path / "store"
    root.mkdir()
    store = ModelStore(root)
    yield store
    store.stop()
