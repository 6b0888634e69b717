"""How a pod fetches a ModelVersion's source: `onnx-server fetch`/`verify` arguments and the PVC it reads."""

from __future__ import annotations

import hashlib
from urllib.parse import urlparse

from onnx_operator.api.modelversion import Source
from onnx_operator.desired.common import Obj

PVC_ROOT = "/mnt/pvc"  # onnx-server's default --pvc-root
DEFAULT_MODEL_FILE = "model.onnx"
SOURCE_VOLUME = "source"


def source_args(source: Source, dest: str) -> list[str]:
    """`--uri ... --sha256 ...|--file PATH=SHA256... [--model-file ...] --dest DEST` for fetch and verify
    (one argument per file: Linux caps a single argument at 128 KiB)."""
    if source.files is not None:
        pin = [arg for f in source.files for arg in ("--file", f"{f.path}={f.sha256}")]
    else:
        pin = ["--sha256", str(source.sha256)]
    return ["--uri", source.uri, *pin, *model_file_args(source), "--dest", dest]


def is_archive(source: Source) -> bool:
    """What onnx-server extracts (it decides by the same suffixes)."""
    return urlparse(source.uri).path.lower().endswith((".tar", ".tar.gz", ".tgz", ".zip"))


def model_file_args(source: Source) -> list[str]:
    return ["--model-file", source.model_file] if source.model_file != DEFAULT_MODEL_FILE else []


def source_digest(source: Source) -> str:
    """What verification will report: the file's or archive's sha256, or that of the folder's manifest
    (one `<sha256>  <path>` line per file, sorted by path)."""
    if source.files is None:
        return f"sha256:{source.sha256}"
    lines = "".join(f"{f.sha256}  {f.path}\n" for f in sorted(source.files, key=lambda f: f.path))
    return f"sha256:{hashlib.sha256(lines.encode()).hexdigest()}"


def source_volume(source: Source) -> tuple[list[Obj], list[Obj]]:
    """A pvc:// source's claim, mounted read-only where onnx-server looks for it; nothing otherwise."""
    parsed = urlparse(source.uri)
    if parsed.scheme != "pvc":
        return [], []
    volume = {"name": SOURCE_VOLUME, "persistentVolumeClaim": {"claimName": parsed.netloc, "readOnly": True}}
    mount = {"name": SOURCE_VOLUME, "mountPath": f"{PVC_ROOT}/{parsed.netloc}", "readOnly": True}
    return [volume], [mount]
