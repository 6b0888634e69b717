"""Multi-file ModelVersions through the operator: the verify Job checks a folder pinned by a file list
and an archive, status records digest, size and file count; on the real node a ModelDeployment's pods
fetch the folder in their init container and serve the model with its external data."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from localcluster.harness import ClusterHandle
from localcluster.models import external_weights, make_external_data_model
from tests.e2e.conftest import ModelStore
from tests.e2e.helpers import GROUP, condition, model_deployment, service_url, wait_mv_phase, wait_ready

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("operator")]
FEATURES, OUTPUTS = 64, 8


def publish_folder(models: ModelStore, name: str) -> tuple[str, list[dict[str, str]], Path]:
    folder = make_external_data_model(models.root / name, FEATURES, OUTPUTS).parent
    files = [{"path": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in sorted(folder.iterdir())]
    host, port = models.httpd.server_address[:2]
    return f"http://{host}:{port}/{name}/", files, folder


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


def test_a_model_with_external_data_serves_end_to_end_on_the_real_node(
        cluster: ClusterHandle, namespace: str, models: ModelStore) -> None:
    uri, files, folder = publish_folder(models, "folder-serve")
    cluster.apply(version("served", {"uri": uri, "files": files}), namespace)
    wait_mv_phase(cluster, namespace, "served", "Ready")

    cluster.apply(model_deployment("big", "served", replicas=1, kwok=False), namespace)
    wait_ready(cluster, namespace, "big", timeout=240)
    x = np.linspace(-1, 1, FEATURES, dtype=np.float32).reshape(1, FEATURES)
    url = service_url(cluster, namespace, "big")
    resp = httpx.post(f"{url}/v2/models/ext/infer", timeout=10, json={"inputs": [{
        "name": "x", "datatype": "FP32", "shape": [1, FEATURES], "data": x.ravel().tolist()}]})

    assert resp.status_code == 200, resp.text
    expected = x @ external_weights(folder, FEATURES, OUTPUTS) + np.arange(OUTPUTS, dtype=np.float32)
    got = np.array(resp.json()["outputs"][0]["data"], dtype=np.float32).reshape(1, OUTPUTS)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


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
