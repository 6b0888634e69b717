"""The operator image, built with buildah and run with `buildah run --isolation chroot` (host
network) against the local control plane: it reconciles an example ModelDeployment."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.harness import ClusterHandle
from tests.e2e.conftest import OPERATOR_NAMESPACE, OPERATOR_SA, ModelStore
from tests.e2e.helpers import model_deployment, model_version, wait_ready

pytestmark = [pytest.mark.cluster, pytest.mark.image]
REPO = Path(__file__).resolve().parents[2]
BUILDAH = ["buildah", "--storage-driver", "vfs"]


@pytest.fixture(scope="module")
def operator_image(cluster: ClusterHandle) -> str:
    """The operator image `make cluster` built from this checkout (and imported into the real node)."""
    if shutil.which("buildah") is None:
        pytest.fail("buildah is needed: `make deps` installs it")
    return str(cluster.extra["images"]["operator"])


@pytest.fixture()
def containerised_operator(cluster: ClusterHandle, operator_image: str, operator_kubeconfig: Path, crds: None,
                           tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    config = json.loads(subprocess.run([*BUILDAH, "inspect", "--type", "image", operator_image], check=True,
                                       capture_output=True, text=True).stdout)["OCIv1"]["config"]
    assert config["User"] == "65532:65532"
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    shutil.copy(operator_kubeconfig, secrets / "kubeconfig")
    os.chmod(secrets, 0o755)
    os.chmod(secrets / "kubeconfig", 0o644)
    ctr = subprocess.run([*BUILDAH, "from", operator_image], check=True, capture_output=True, text=True).stdout.strip()
    # the environment a pod spec would give the container
    subprocess.run([*BUILDAH, "config", "--env", "KUBECONFIG=/etc/onnx-operator/kubeconfig",
                    "--env", f"ONNX_OPERATOR_RUNTIME_IMAGE={cluster.runtime_image}",
                    "--env", f"ONNX_OPERATOR_LEADER_ELECT_RESOURCE_NAMESPACE={OPERATOR_NAMESPACE}",
                    "--env", f"ONNX_OPERATOR_LEADER_ELECT_RESOURCE_NAME={OPERATOR_SA}", ctr], check=True)
    proc = subprocess.Popen(
        [*BUILDAH, "run", "--isolation", "chroot", "--network", "host", "--user", "65532:65532",
         "-v", f"{secrets}:/etc/onnx-operator:ro", ctr, "--", *config["Entrypoint"]],
        stdout=(tmp_path / "operator.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        subprocess.run([*BUILDAH, "rm", ctr], capture_output=True, check=False)
        print((tmp_path / "operator.log").read_text()[-3000:])


def test_operator_image_reconciles_a_model_deployment(
        cluster: ClusterHandle, namespace: str, models: ModelStore,
        containerised_operator: subprocess.Popen[bytes]) -> None:
    cluster.apply(model_version("v1", models.model("image-op.onnx")), namespace)
    cluster.apply(model_deployment("web", "v1", replicas=2), namespace)

    md = wait_ready(cluster, namespace, "web", timeout=180)

    assert containerised_operator.poll() is None
    assert md["status"]["servingVersion"] == "v1"
    image = cluster.kubectl_json("get", "deployment", "web-v1", "-n", namespace)[
        "spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == cluster.runtime_image
