"""Multi-file ModelVersions through the operator: the verify Job checks a folder pinned by a file list
and an archive, status records digest, size and file count; the serving pod's init container and
server commands, run as a kubelet would, serve the model with its external data."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.cluster.harness import ClusterHandle
from tests.e2e.conftest import ModelStore
from tests.e2e.helpers import GROUP, condition, model_deployment, serving_deployments, wait_mv_phase, wait_until
from tests.models import external_weights, make_external_data_model
from tests.runtime.conftest import ServerProcess

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("operator")]
FEATURES, OUTPUTS = 64, 8


def publish_folder(models: ModelStore, name: str) -> tuple[str, list[dict[str, str]], Path]:
    folder = make_external_data_model(models.root / name, FEATURES, OUTPUTS).parent
    files = [{"path": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in sorted(folder.iterdir())]
    return f"http://127.0.0.1:{models.httpd.server_address[1]}/{name}/", files, folder


def version(name: str, source: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": GROUP, "kind": "ModelVersion", "metadata": {"name": name},
                       "spec": {"model": "ext", "version": "1.0.0", "source": source}})


def test_a_folder_pinned_by_a_file_list_is_verified_with_size_and_count(
        cluster: ClusterHandle, namespace: str, models: ModelStore) -> None:
    uri, files, folder = publish_folder(models, "folder-ok")

    cluster.apply(version("folder", {"uri": uri, "files": files}), namespace)

    mv = wait_mv_phase(cluster, namespace, "folder", "Ready")
    manifest = "".join(f"{f['sha256']}  {f['path']}\n" for f in files)
    assert mv["status"]["digest"] == f"sha256:{hashlib.sha256(manifest.encode()).hexdigest()}"
    assert mv["status"]["fileCount"] == 2
    assert mv["status"]["sizeBytes"] == sum(p.stat().st_size for p in folder.iterdir())
    assert mv["status"]["signature"]["inputs"][0]["shape"] == [-1, FEATURES]


def test_an_archive_is_verified_and_a_wrong_file_list_fails_closed(
        cluster: ClusterHandle, namespace: str, models: ModelStore) -> None:
    uri, files, folder = publish_folder(models, "archive-src")
    with tarfile.open(models.root / "ext.tar.gz", "w:gz") as tf:
        for p in sorted(folder.iterdir()):
            tf.add(p, arcname=p.name)
    archive_uri = uri.replace("archive-src/", "ext.tar.gz")
    wrong = [{**files[0], "sha256": "0" * 64}, files[1]]

    cluster.apply(version("archive", {"uri": archive_uri,
                                      "sha256": hashlib.sha256((models.root / "ext.tar.gz").read_bytes()).hexdigest()}),
                  namespace)
    cluster.apply(version("wrong-list", {"uri": uri, "files": wrong}), namespace)

    assert wait_mv_phase(cluster, namespace, "archive", "Ready")["status"]["fileCount"] == 2
    failed = wait_mv_phase(cluster, namespace, "wrong-list", "Failed")
    assert condition(failed, "Verified")["reason"] == "ChecksumMismatch"


def test_the_serving_pod_commands_fetch_and_serve_the_folder(
        cluster: ClusterHandle, namespace: str, models: ModelStore, tmp_path: Path) -> None:
    uri, files, folder = publish_folder(models, "folder-serve")
    cluster.apply(version("served", {"uri": uri, "files": files}), namespace)
    wait_mv_phase(cluster, namespace, "served", "Ready")

    cluster.apply(model_deployment("big", "served", replicas=1), namespace)
    wait_until(cluster, "md", namespace, "big", "a serving Deployment",
               lambda _: serving_deployments(cluster, namespace, "big"))

    pod = serving_deployments(cluster, namespace, "big")[0]["spec"]["template"]["spec"]
    init, server = pod["initContainers"][0], pod["containers"][0]
    local = [a.replace("/models", str(tmp_path)) for a in init["args"]]
    fetched = subprocess.run([sys.executable, "-m", "onnx_server.cli", *local], capture_output=True, text=True,
                             timeout=120, check=False)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    args = server["args"]
    extra = args[args.index("--port") + 2:]
    srv = ServerProcess(tmp_path, *extra, name=args[args.index("--name") + 1])
    try:
        x = np.ones((1, FEATURES), dtype=np.float32)
        out = httpx.post(srv.infer_url, json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, FEATURES],
                                                          "data": x.ravel().tolist()}]}, timeout=10).json()
        expected = x @ external_weights(folder, FEATURES, OUTPUTS) + np.arange(OUTPUTS, dtype=np.float32)
        np.testing.assert_allclose(np.array(out["outputs"][0]["data"]).reshape(1, OUTPUTS), expected, rtol=1e-4)
    finally:
        srv.stop()


@pytest.mark.parametrize(("source", "message"), [
    ({"uri": "s3://models/llm/1/", "sha256": "a" * 64}, "spec.source.files pins a folder"),
    ({"uri": "s3://models/llm/1/model.onnx", "files": [{"path": "model.onnx", "sha256": "a" * 64}]},
     "spec.source.files pins a folder"),
    ({"uri": "s3://models/llm/1/model.onnx"}, "set exactly one of sha256"),
    ({"uri": "s3://models/llm/1/", "files": [{"path": "../escape", "sha256": "a" * 64}]}, "files\\[0\\].path"),
])
def test_the_api_server_rejects_a_source_that_is_not_one_pinned_form(
        cluster: ClusterHandle, namespace: str, source: dict[str, Any], message: str) -> None:
    with pytest.raises(RuntimeError, match=message):
        cluster.apply(version("bad", source), namespace)
