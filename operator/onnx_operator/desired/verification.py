"""The Job that verifies a ModelVersion with the runtime image, and how its result is read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from onnx_operator.api import ModelVersion, Signature
from onnx_operator.api import conditions as reasons
from onnx_operator.config import OperatorConfig
from onnx_operator.desired.common import (
    RESTRICTED_CONTAINER,
    RESTRICTED_POD,
    TERMINATION_LOG,
    Obj,
    object_meta,
    owner_reference,
)
from onnx_operator.desired.names import (
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_MODEL_VERSION,
    MANAGED_BY,
    verify_job_name,
)
from onnx_operator.desired.source import source_args, source_volume

WORK_DIR = "/work"
KNOWN_FAILURES = {reasons.CHECKSUM_MISMATCH, reasons.FETCH_FAILED, reasons.INVALID_MODEL,
                  reasons.UNSAFE_PATH, reasons.TOO_LARGE, reasons.INVALID_ARGUMENT}
# exit codes of `onnx-server verify` (onnx_server/errors.py) that no retry can fix: the Job fails at once
PERMANENT_EXIT_CODES = {reasons.INVALID_ARGUMENT: 2, reasons.CHECKSUM_MISMATCH: 4, reasons.UNSAFE_PATH: 5,
                        reasons.TOO_LARGE: 6, reasons.INVALID_MODEL: 7}


def verify_labels(mv_name: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: "verify", LABEL_MODEL_VERSION: mv_name}


def desired_verify_job(mv: ModelVersion, config: OperatorConfig) -> Obj:
    container: Obj = {
        "name": "verify",
        "image": config.runtime_image,
        "command": ["onnx-server"],
        "args": ["verify", *source_args(mv.spec.source, WORK_DIR), "--termination-message-path", TERMINATION_LOG],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": "work", "mountPath": WORK_DIR}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    volumes, mounts = source_volume(mv.spec.source)
    container["volumeMounts"] += mounts
    labels = verify_labels(mv.name)
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": object_meta(verify_job_name(mv.name, str(mv.metadata["uid"])), mv.namespace, labels,
                                owner_reference("ModelVersion", mv.metadata)),
        "spec": {
            "backoffLimit": config.verify_backoff_limit,
            "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {
                "containerName": "verify", "operator": "In", "values": sorted(PERMANENT_EXIT_CODES.values())}}]},
            "activeDeadlineSeconds": config.verify_deadline_seconds,
            "ttlSecondsAfterFinished": config.verify_job_ttl_seconds,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": RESTRICTED_POD,
                    "containers": [container],
                    "volumes": [{"name": "work", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}, *volumes],
                },
            },
        },
    }


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    reason: str
    message: str
    digest: str | None = None
    size_bytes: int | None = None
    file_count: int | None = None
    signature: Signature | None = None


def parse_verify_result(termination_message: str | None, exit_code: int | None) -> VerifyResult:
    """Reads the verify command's termination message (JSON) into a result; never raises."""
    try:
        data: Any = json.loads(termination_message or "")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return VerifyResult(False, reasons.VERIFICATION_FAILED,
                            f"verification exited {exit_code} without a readable result")
    if exit_code == 0 and "digest" in data:
        try:
            signature = Signature.model_validate(data.get("signature") or {})
        except ValueError as exc:
            return VerifyResult(False, reasons.VERIFICATION_FAILED, f"unreadable signature: {exc}")
        return VerifyResult(True, reasons.VERIFIED, "model downloaded, checksum matched, loaded with onnxruntime",
                            str(data["digest"]), int(data.get("sizeBytes", 0)), int(data.get("fileCount", 1)),
                            signature)
    reason = str(data.get("reason", ""))
    return VerifyResult(False, reason if reason in KNOWN_FAILURES else reasons.VERIFICATION_FAILED,
                        str(data.get("message", ""))[:1024] or f"verification exited {exit_code}")


def signature_mismatch(expected: Signature | None, found: Signature | None) -> str | None:
    """Names the first difference between the declared and the discovered signature, if any."""
    if expected is None or found is None:
        return None
    for side in ("inputs", "outputs"):
        want = {t.name: t for t in getattr(expected, side)}
        have = {t.name: t for t in getattr(found, side)}
        if want and set(want) != set(have):
            return f"spec.signature.{side}: declared {sorted(want)}, model has {sorted(have)}"
        for name, t in want.items():
            h = have[name]
            if t.dtype != h.dtype:
                return f"spec.signature.{side}[{name}].dtype: declared {t.dtype}, model has {h.dtype}"
            fits = len(t.shape) == len(h.shape) and all(
                a == b or -1 in (a, b) for a, b in zip(t.shape, h.shape, strict=True))
            if not fits:
                return f"spec.signature.{side}[{name}].shape: declared {t.shape}, model has {h.shape}"
    return None
