"""The runtime image, built for real with buildah and run with `buildah run --isolation chroot`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from onnx_operator.api import parse_model_deployment, parse_model_version
from onnx_operator.config import OperatorConfig
from onnx_operator.desired.serving import serve_args

from localcluster.harness import wait_for
from localcluster.models import make_model
from tests.runtime.conftest import free_port

pytestmark = pytest.mark.image
REPO = Path(__file__).resolve().parents[2]
TAG = "localhost/onnx-operator/runtime:test"
BUILDAH = ["buildah", "--storage-driver", "vfs"]


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("buildah") is None or shutil.which("debootstrap") is None:
        pytest.fail("buildah and debootstrap are needed: `make deps` installs them")
    subprocess.run([str(REPO / "runtime-image/build-image.sh"), "runtime", TAG], check=True, timeout=1800)
    return TAG


def inspect(image: str) -> dict:
    out = subprocess.run([*BUILDAH, "inspect", "--type", "image", image], check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout)["OCIv1"]["config"])


def test_image_runs_as_non_root_with_the_onnx_server_entrypoint(image: str) -> None:
    config = inspect(image)
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["/opt/venv/bin/onnx-server"]
    assert "PYTHONDONTWRITEBYTECODE=1" in config["Env"]


@pytest.fixture()
def container(image: str) -> Iterator[str]:
    ctr = subprocess.run([*BUILDAH, "from", image], check=True, capture_output=True, text=True).stdout.strip()
    yield ctr
    subprocess.run([*BUILDAH, "rm", ctr], capture_output=True, check=False)


def operator_args(port: int) -> list[str]:
    """The serving container's args exactly as the operator generates them."""
    md = parse_model_deployment({"metadata": {"name": "web", "namespace": "ns", "uid": "u"},
                                 "spec": {"modelVersion": "v1", "runtime": {"threads": 1}}})
    mv = parse_model_version({"metadata": {"name": "v1", "namespace": "ns", "uid": "u2"},
                              "spec": {"model": "linear", "version": "1.0.0",
                                       "source": {"uri": "https://m.example/x.onnx", "sha256": "a" * 64}}})
    return serve_args(md, mv, OperatorConfig(serving_port=port, grpc_port=free_port()))


def model_folder(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    (models / "model.onnx").write_bytes(make_model())
    os.chmod(tmp_path, 0o755)
    return models


def infer_once(port: int) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/v2/models/linear/infer", json={"inputs": [
        {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})


def test_image_serves_with_the_operators_container_args(image: str, container: str, tmp_path: Path) -> None:
    models = model_folder(tmp_path)
    port = free_port()
    args = operator_args(port)
    entrypoint = inspect(image)["Entrypoint"]
    proc = subprocess.Popen(
        [*BUILDAH, "run", "--isolation", "chroot", "--network", "host", "--user", "65532:65532",
         "-v", f"{models}:/models:ro", container, "--", *entrypoint, *args],
        stdout=(tmp_path / "server.log").open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for("the containerised server", lambda: proc.poll() is None and httpx.get(
            f"{url}/v2/health/ready", timeout=2).status_code == 200, timeout=120)

        resp = infer_once(port)

        assert resp.status_code == 200
        out = resp.json()["outputs"][0]
        assert out["shape"] == [1, 2] and np.isfinite(out["data"]).all()
        assert resp.json()["model_version"] == "1.0.0"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


READ_ONLY_ROOT = r"""
set -eu
root=$1; models=$2; shift 2
mount --bind "$root" "$root" && mount -o remount,bind,ro "$root"
mount -t tmpfs -o size=64m,mode=1777 tmpfs "$root/tmp"
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
mount --bind "$models" "$root/models" && mount -o remount,bind,ro "$root/models"
if chroot "$root" /opt/venv/bin/python -c "open('/probe', 'w')" 2>/dev/null; then echo "root is writable"; exit 90; fi
exec chroot --userspec=65532:65532 "$root" "$@"
"""


@pytest.fixture()
def rootfs(container: str) -> Iterator[str]:
    path = subprocess.run([*BUILDAH, "mount", container], check=True, capture_output=True, text=True).stdout.strip()
    yield path
    subprocess.run([*BUILDAH, "umount", container], capture_output=True, check=False)


def test_image_serves_from_a_read_only_root_with_only_tmp_writable(image: str, rootfs: str, tmp_path: Path) -> None:
    # what a pod with readOnlyRootFilesystem and an emptyDir on /tmp gives: a private mount namespace
    # with the image's root bind-mounted read-only, then the entrypoint as uid 65532
    models = model_folder(tmp_path)
    port = free_port()
    log = tmp_path / "server.log"
    proc = subprocess.Popen(
        ["unshare", "--mount", "--fork", "sh", "-c", READ_ONLY_ROOT, "sh", rootfs, str(models),
         *inspect(image)["Entrypoint"], *operator_args(port)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for("the server on a read-only root", lambda: proc.poll() is None and httpx.get(
            f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200, timeout=120)

        resp = infer_once(port)

        assert resp.status_code == 200 and resp.json()["outputs"][0]["shape"] == [1, 2]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode != 90, log.read_text()
