"""`s3://` fetches against a real S3-compatible server process (gofakes3, built from Go) on loopback."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import boto3

from localcluster.models import make_model


def fetch(env: dict[str, str], uri: str, sha: str, dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "onnx_server.cli", "fetch", "--uri", uri, "--sha256", sha,
                           "--dest", str(dest)], capture_output=True, text=True, env={**os.environ, **env},
                          timeout=60, check=False)


def test_s3_model_is_fetched_and_verified(s3: dict[str, str], tmp_path: Path) -> None:
    data = make_model()
    client = boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"], aws_access_key_id="test",
                          aws_secret_access_key="test", region_name="us-east-1")
    client.put_object(Bucket="models", Key="iris/1.0.0/model.onnx", Body=data)

    out = fetch(s3, "s3://models/iris/1.0.0/model.onnx", hashlib.sha256(data).hexdigest(), tmp_path)

    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "model.onnx").read_bytes() == data


def test_s3_checksum_mismatch_and_missing_key(s3: dict[str, str], tmp_path: Path) -> None:
    data = make_model(scale=3.0)
    boto3.client("s3", endpoint_url=s3["AWS_ENDPOINT_URL"], aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").put_object(Bucket="models", Key="m.onnx", Body=data)

    mismatch = fetch(s3, "s3://models/m.onnx", "0" * 64, tmp_path)
    missing = fetch(s3, "s3://models/nope.onnx", "0" * 64, tmp_path)

    assert mismatch.returncode == 4 and "ChecksumMismatch" in mismatch.stdout
    assert missing.returncode == 3 and "FetchFailed" in missing.stdout
    assert not (tmp_path / "model.onnx").exists()
