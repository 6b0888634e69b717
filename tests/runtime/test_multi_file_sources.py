"""Multi-file models (external data) from archives and file-listed folders: https, s3 and pvc sources,
served by a real onnx-server; unsafe archives, wrong lists and wrong digests fail closed."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import pytest

from localcluster.models import external_weights, make_external_data_model
from tests.runtime.conftest import ServerProcess
from tests.runtime.stores import FileStore

FEATURES, OUTPUTS = 64, 8


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run([sys.executable, "-m", "onnx_server.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120, check=False)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_list(folder: Path) -> list[dict[str, str]]:
    return [{"path": p.relative_to(folder).as_posix(), "sha256": sha(p)}
            for p in sorted(folder.rglob("*")) if p.is_file()]


def file_args(files: list[dict[str, str]]) -> list[str]:
    return [arg for f in files for arg in ("--file", f"{f['path']}={f['sha256']}")]


def add_member(tf: tarfile.TarFile, name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE,
               link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def assert_serves_the_model(dest: Path, weights_dir: Path, *extra: str) -> None:
    srv = ServerProcess(dest, *extra, name="ext")
    try:
        x = np.linspace(-1, 1, 2 * FEATURES, dtype=np.float32).reshape(2, FEATURES)
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, FEATURES], "data": x.ravel().tolist()}]}
        out = httpx.post(srv.infer_url, json=body, timeout=10).json()["outputs"][0]
        expected = x @ external_weights(weights_dir, FEATURES, OUTPUTS) + np.arange(OUTPUTS, dtype=np.float32)
        np.testing.assert_allclose(np.array(out["data"]).reshape(2, OUTPUTS), expected, rtol=1e-4, atol=1e-4)
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_external_data_model(tmp_path_factory.mktemp("ext") / "m", FEATURES, OUTPUTS).parent


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, model_folder: Path) -> Iterator[FileStore]:
    site = tmp_path_factory.mktemp("site")
    with tarfile.open(site / "model.tar.gz", "w:gz") as tf:
        for p in sorted(model_folder.iterdir()):
            tf.add(p, arcname=p.name)
    with zipfile.ZipFile(site / "model.zip", "w") as zf:
        for p in sorted(model_folder.iterdir()):
            zf.write(p, f"onnx/{p.name}")
    (site / "folder").mkdir()
    for p in model_folder.iterdir():
        (site / "folder" / p.name).write_bytes(p.read_bytes())
    srv = FileStore(site, tmp_path_factory.mktemp("tls"))
    yield srv
    srv.close()


def https_env(store: FileStore) -> dict[str, str]:
    return {"SSL_CERT_FILE": str(store.ca)}


def test_a_tar_gz_over_https_is_verified_extracted_and_served(store: FileStore, model_folder: Path,
                                                              tmp_path: Path) -> None:
    archive = store.root / "model.tar.gz"

    code, out, _ = run("verify", "--uri", f"{store.url}/model.tar.gz", "--sha256", sha(archive),
                       "--dest", str(tmp_path), env=https_env(store))

    assert code == 0, out
    assert out["digest"] == f"sha256:{sha(archive)}" and out["fileCount"] == 2
    assert out["sizeBytes"] == sum(p.stat().st_size for p in model_folder.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "weights.bin"]
    assert_serves_the_model(tmp_path, model_folder)


def test_a_zip_on_a_pvc_with_the_model_in_a_subfolder_is_served(store: FileStore, model_folder: Path,
                                                               tmp_path: Path) -> None:
    claim = tmp_path / "pvc" / "claim" / "models"
    claim.mkdir(parents=True)
    (claim / "m.zip").write_bytes((store.root / "model.zip").read_bytes())

    code, out, _ = run("fetch", "--uri", "pvc://claim/models/m.zip", "--sha256", sha(claim / "m.zip"),
                       "--model-file", "onnx/model.onnx", "--dest", str(tmp_path / "d"),
                       "--pvc-root", str(tmp_path / "pvc"))

    assert code == 0, out
    assert out["path"] == str(tmp_path / "d" / "onnx" / "model.onnx") and out["fileCount"] == 2
    assert_serves_the_model(tmp_path / "d", model_folder, "--model-file", "onnx/model.onnx")


def test_an_s3_prefix_pinned_by_a_file_list_is_verified_and_served(s3: dict[str, str], model_folder: Path,
                                                                  tmp_path: Path) -> None:
    client = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"], aws_access_key_id="test",
                          aws_secret_access_key="test", region_name="us-east-1")
    for p in model_folder.iterdir():
        client.put_object(Bucket="models", Key=f"ext/1.0.0/{p.name}", Body=p.read_bytes())
    client.put_object(Bucket="models", Key="ext/1.0.0/README.txt", Body=b"not listed, so not fetched")
    files = file_list(model_folder)
    manifest = "".join(f"{f['sha256']}  {f['path']}\n" for f in files)

    code, out, _ = run("verify", "--uri", "s3://models/ext/1.0.0/", *file_args(files),
                       "--dest", str(tmp_path), env=s3)

    assert code == 0, out
    assert out["digest"] == f"sha256:{hashlib.sha256(manifest.encode()).hexdigest()}" and out["fileCount"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "weights.bin"]
    assert_serves_the_model(tmp_path, model_folder, "--no-prepack")  # weights memory-mapped from weights.bin


def test_a_pvc_folder_pinned_by_a_file_list_is_fetched(model_folder: Path, tmp_path: Path) -> None:
    claim = tmp_path / "pvc" / "claim" / "ext"
    claim.mkdir(parents=True)
    for p in model_folder.iterdir():
        (claim / p.name).write_bytes(p.read_bytes())

    code, out, _ = run("verify", "--uri", "pvc://claim/ext/", *file_args(file_list(model_folder)),
                       "--dest", str(tmp_path / "d"), "--pvc-root", str(tmp_path / "pvc"))

    assert code == 0, out
    assert (tmp_path / "d" / "weights.bin").read_bytes() == (model_folder / "weights.bin").read_bytes()


@pytest.mark.parametrize(("change", "reason", "exit_code"), [
    ("wrong-digest", "ChecksumMismatch", 4),
    ("missing-file", "FetchFailed", 3),
    ("weights-not-listed", "InvalidModel", 7),
    ("escaping-path", "UnsafePath", 5),
])
def test_a_wrong_file_list_fails_closed(store: FileStore, model_folder: Path, tmp_path: Path, change: str,
                                        reason: str, exit_code: int) -> None:
    files = file_list(model_folder)
    if change == "wrong-digest":
        files[1]["sha256"] = "0" * 64
    elif change == "missing-file":
        files.append({"path": "extra.bin", "sha256": "0" * 64})
    elif change == "weights-not-listed":
        files = [f for f in files if f["path"] == "model.onnx"]
    else:
        files[1]["path"] = "../folder/weights.bin"

    code, out, _ = run("verify", "--uri", f"{store.url}/folder/", *file_args(files),
                       "--dest", str(tmp_path), "--retries", "0", env=https_env(store))

    assert (code, out["reason"]) == (exit_code, reason), out
    if change != "weights-not-listed":  # that one is placed, then refused by onnxruntime at load
        assert list(tmp_path.iterdir()) == []


def test_a_wrong_archive_digest_writes_nothing(store: FileStore, tmp_path: Path) -> None:
    code, out, _ = run("fetch", "--uri", f"{store.url}/model.tar.gz", "--sha256", "1" * 64, "--dest", str(tmp_path),
                       env=https_env(store))
    assert (code, out["reason"]) == (4, "ChecksumMismatch") and list(tmp_path.iterdir()) == []


def unsafe_tar(kind: str, target: Path) -> Path:
    with tarfile.open(target, "w") as tf:
        add_member(tf, "model.onnx", b"model")
        if kind == "dotdot":
            add_member(tf, "sub/../../evil", b"evil")
        elif kind == "absolute":
            add_member(tf, "/tmp/evil", b"evil")
        elif kind == "symlink":
            add_member(tf, "weights.bin", kind=tarfile.SYMTYPE, link="/etc/passwd")
        elif kind == "hardlink":
            add_member(tf, "weights.bin", kind=tarfile.LNKTYPE, link="model.onnx")
        else:
            add_member(tf, "null", kind=tarfile.CHRTYPE)
    return target


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "hardlink", "device"])
def test_an_unsafe_tar_entry_is_refused_and_nothing_is_placed(tmp_path: Path, kind: str) -> None:
    archive = unsafe_tar(kind, tmp_path / "a.tar")

    code, out, _ = run("fetch", "--uri", archive.as_uri(), "--sha256", sha(archive), "--dest", str(tmp_path / "d"))

    assert (code, out["reason"]) == (5, "UnsafePath"), out
    assert list((tmp_path / "d").iterdir()) == [] and not (tmp_path / "evil").exists()


def test_an_unsafe_zip_entry_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("model.onnx", b"model")
        link = zipfile.ZipInfo("weights.bin")
        link.create_system, link.external_attr = 3, (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")

    code, out, _ = run("fetch", "--uri", archive.as_uri(), "--sha256", sha(archive), "--dest", str(tmp_path / "d"))

    assert (code, out["reason"]) == (5, "UnsafePath") and "link" in out["message"]
    assert list((tmp_path / "d").iterdir()) == []


def test_an_archive_bomb_is_too_large(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        add_member(tf, "model.onnx", bytes(8 << 20))

    code, out, _ = run("fetch", "--uri", archive.as_uri(), "--sha256", sha(archive), "--dest", str(tmp_path / "d"),
                       "--max-bytes", str(1 << 20))

    assert archive.stat().st_size < 64 << 10
    assert (code, out["reason"]) == (6, "TooLarge") and "--max-bytes" in out["message"]
    assert list((tmp_path / "d").iterdir()) == []


def test_an_archive_with_too_many_files_is_too_large(tmp_path: Path) -> None:
    archive = tmp_path / "many.tar"
    with tarfile.open(archive, "w") as tf:
        for i in range(20):
            add_member(tf, f"f{i}")

    code, out, _ = run("fetch", "--uri", archive.as_uri(), "--sha256", sha(archive), "--dest", str(tmp_path / "d"),
                       "--max-files", "10")

    assert (code, out["reason"]) == (6, "TooLarge") and "--max-files" in out["message"]
