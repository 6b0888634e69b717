"""`onnx-server fetch` and `verify`: the operator's verification Jobs and init containers run these."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from localcluster.models import make_model


def run(*args: str) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "onnx_server.cli", *args], capture_output=True, text=True, check=False)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture()
def model_file(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "src" / "m.onnx"
    path.parent.mkdir()
    data = make_model()
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_verify_prints_digest_size_and_signature(tmp_path: Path, model_file: tuple[Path, str]) -> None:
    path, sha = model_file
    msg = tmp_path / "termination-log"

    code, out = run("verify", "--uri", path.as_uri(), "--sha256", sha, "--dest", str(tmp_path / "d"),
                    "--termination-message-path", str(msg))

    assert code == 0
    assert out["digest"] == f"sha256:{sha}" and out["sizeBytes"] == path.stat().st_size
    assert out["signature"]["inputs"] == [{"name": "x", "dtype": "FP32", "shape": [-1, 4]}]
    assert json.loads(msg.read_text()) == out


def test_checksum_mismatch_fails_closed_and_writes_nothing(tmp_path: Path, model_file: tuple[Path, str]) -> None:
    path, _ = model_file
    dest = tmp_path / "d"

    code, out = run("fetch", "--uri", path.as_uri(), "--sha256", "0" * 64, "--dest", str(dest))

    assert code == 4 and out["reason"] == "ChecksumMismatch"
    assert list(dest.iterdir()) == []


def test_pvc_paths_cannot_escape_the_volume_root(tmp_path: Path, model_file: tuple[Path, str]) -> None:
    _, sha = model_file
    root = tmp_path / "pvc"
    (root / "claim").mkdir(parents=True)
    code, out = run("fetch", "--uri", "pvc://claim/../../src/m.onnx", "--sha256", sha,
                    "--dest", str(tmp_path / "d"), "--pvc-root", str(root))
    assert code == 5 and out["reason"] == "UnsafePath"


def test_pvc_symlinks_are_refused(tmp_path: Path, model_file: tuple[Path, str]) -> None:
    path, sha = model_file
    root = tmp_path / "pvc"
    (root / "claim").mkdir(parents=True)
    (root / "claim" / "m.onnx").symlink_to(path)
    code, out = run("fetch", "--uri", "pvc://claim/m.onnx", "--sha256", sha, "--dest", str(tmp_path / "d"),
                    "--pvc-root", str(root))
    assert code == 5 and out["reason"] == "UnsafePath"


def test_pvc_file_inside_the_claim_is_fetched(tmp_path: Path, model_file: tuple[Path, str]) -> None:
    path, sha = model_file
    root = tmp_path / "pvc"
    (root / "claim" / "iris").mkdir(parents=True)
    (root / "claim" / "iris" / "m.onnx").write_bytes(path.read_bytes())
    code, _ = run("fetch", "--uri", "pvc://claim/iris/m.onnx", "--sha256", sha, "--dest", str(tmp_path / "d"),
                    "--pvc-root", str(root))
    assert code == 0 and (tmp_path / "d" / "model.onnx").read_bytes() == path.read_bytes()


def test_external_data_outside_the_model_folder_is_refused(tmp_path: Path) -> None:
    import numpy as np

    weights = numpy_helper.from_array(np.ones((4, 2), dtype=np.float32), "W")
    weights.data_location = TensorProto.EXTERNAL
    entry = weights.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    weights.ClearField("raw_data")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], initializer=[weights])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    src = tmp_path / "evil.onnx"
    src.write_bytes(data)

    code, out = run("verify", "--uri", src.as_uri(), "--sha256", hashlib.sha256(data).hexdigest(),
                    "--dest", str(tmp_path / "d"))

    assert code == 5 and out["reason"] == "UnsafePath" and "etc/passwd" in out["message"]


def test_a_file_that_is_not_a_model_is_invalid(tmp_path: Path) -> None:
    src = tmp_path / "junk.onnx"
    src.write_bytes(b"definitely not protobuf" * 10)
    code, out = run("verify", "--uri", src.as_uri(), "--sha256", hashlib.sha256(src.read_bytes()).hexdigest(),
                    "--dest", str(tmp_path / "d"))
    assert code == 7 and out["reason"] == "InvalidModel"


def test_unreachable_http_source_is_a_fetch_failure(tmp_path: Path) -> None:
    code, out = run("fetch", "--uri", "http://127.0.0.1:9/none.onnx", "--sha256", "a" * 64, "--dest", str(tmp_path))
    assert code == 3 and out["reason"] == "FetchFailed"


def test_malformed_sha256_is_an_invalid_argument(tmp_path: Path, model_file: tuple[Path, str]) -> None:
    code, out = run("fetch", "--uri", model_file[0].as_uri(), "--sha256", "xyz", "--dest", str(tmp_path / "d"))
    assert code == 2 and out["reason"] == "InvalidArgument"


def test_model_larger_than_the_limit_is_refused(tmp_path: Path, model_file: tuple[Path, str]) -> None:
    from onnx_server.bundle import fetch_model
    from onnx_server.errors import TooLarge
    from onnx_server.fetch import FetchOptions

    path, sha = model_file
    with pytest.raises(TooLarge):
        fetch_model(path.as_uri(), tmp_path / "d", sha, opts=FetchOptions(max_bytes=10))
    assert not (tmp_path / "d" / "model.onnx").exists()


def test_checker_accepts_the_test_model() -> None:
    onnx.checker.check_model(onnx.load_from_string(make_model()))


def wide_model(inputs: int) -> bytes:
    """`inputs` inputs with long names, summed: a signature far over the 4 KiB termination message."""
    names = [f"feature_with_a_rather_long_descriptive_name_{i:04d}" for i in range(inputs)]
    graph = helper.make_graph([helper.make_node("Sum", names, ["total"])], "wide",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 1]) for n in names],
                              [helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch", 1])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_a_large_signature_is_truncated_in_the_termination_message_only(tmp_path: Path) -> None:
    src = tmp_path / "wide.onnx"
    src.write_bytes(wide_model(200))
    msg = tmp_path / "termination-log"

    code, out = run("verify", "--uri", src.as_uri(), "--sha256", hashlib.sha256(src.read_bytes()).hexdigest(),
                    "--dest", str(tmp_path / "d"), "--termination-message-path", str(msg))

    written = json.loads(msg.read_bytes())
    assert code == 0 and len(out["signature"]["inputs"]) == 200
    assert len(msg.read_bytes()) <= 4000 and written["signatureTruncated"] is True
    assert 0 < len(written["signature"]["inputs"]) < 200
    assert written["signature"]["inputs"] == out["signature"]["inputs"][:len(written["signature"]["inputs"])]
    assert written["digest"] == out["digest"]


def test_a_long_failure_message_stays_valid_json_under_the_limit(tmp_path: Path) -> None:
    msg = tmp_path / "termination-log"
    missing = tmp_path / ("é" * 3000) / "m.onnx"

    code, out = run("fetch", "--uri", missing.as_uri(), "--sha256", "a" * 64, "--dest", str(tmp_path / "d"),
                    "--termination-message-path", str(msg))

    written = json.loads(msg.read_bytes())
    assert code == 3 and out["reason"] == written["reason"] == "FetchFailed"
    assert len(msg.read_bytes()) <= 4000 and written["message"].endswith("...")


def test_an_existing_model_survives_a_failed_fetch(tmp_path: Path, model_file: tuple[Path, str]) -> None:
    path, _ = model_file
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "model.onnx").write_bytes(b"the model that was there")

    code, _ = run("fetch", "--uri", path.as_uri(), "--sha256", "1" * 64, "--dest", str(dest))

    assert code == 4
    assert (dest / "model.onnx").read_bytes() == b"the model that was there"
    assert sorted(p.name for p in dest.iterdir()) == ["model.onnx"]


def test_an_unwritable_destination_is_a_fetch_failure(tmp_path: Path, model_file: tuple[Path, str]) -> None:
    path, sha = model_file
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")

    code, out = run("fetch", "--uri", path.as_uri(), "--sha256", sha, "--dest", str(blocker / "d"))

    assert code == 3 and out["reason"] == "FetchFailed" and "cannot write into" in out["message"]


def _read_as(uid: int, path: Path) -> bool:
    """Whether a process running as `uid` (a serving container's user) can read `path`."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only opens the file and exits
        code = 1
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            with path.open("rb") as f:
                f.read(1)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to fetch as one uid and read as another")
def test_fetched_model_is_readable_by_a_server_running_as_another_uid(model_file: tuple[Path, str]) -> None:
    path, sha = model_file
    shared = Path(tempfile.mkdtemp(prefix="fetch-uid-"))
    shared.chmod(0o755)
    try:
        proc = subprocess.run([sys.executable, "-m", "onnx_server.cli", "fetch", "--uri", path.as_uri(),
                               "--sha256", sha, "--dest", str(shared / "models")],
                              capture_output=True, text=True, check=False,
                              preexec_fn=lambda: os.umask(0o077))

        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert _read_as(65532, shared / "models" / "model.onnx")
    finally:
        shutil.rmtree(shared)
