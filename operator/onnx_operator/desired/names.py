"""Names and labels of the objects the operator owns."""

from __future__ import annotations

import hashlib

LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_DEPLOYMENT = "serving.onnx-operator.io/deployment"
LABEL_VERSION = "serving.onnx-operator.io/version"
LABEL_MODEL_VERSION = "serving.onnx-operator.io/modelversion"
ANNOTATION_DIGEST = "serving.onnx-operator.io/digest"
# on serving pods whose /metrics is on the plain health port (spec.tls): the chart's PodMonitor scrapes that port
LABEL_METRICS_PORT = "serving.onnx-operator.io/metrics-port"
# what `kubectl model promote|abort|pause|resume` writes: "<verb>@<unique id>"
ANNOTATION_ACTION = "serving.onnx-operator.io/action"
MANAGED_BY = "onnx-operator"


def _short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def bounded_name(*parts: str, limit: int = 63) -> str:
    """Joins parts with '-'; when too long, truncates and appends a hash of the full name."""
    full = "-".join(parts)
    if len(full) <= limit:
        return full
    return f"{full[: limit - 9].rstrip('-.')}-{_short_hash(full)}"


def deployment_name(md_name: str, mv_name: str) -> str:
    return bounded_name(md_name, mv_name)


def preview_service_name(md_name: str) -> str:
    return bounded_name(md_name, "preview")


def verify_job_name(mv_name: str, uid: str) -> str:
    return bounded_name("verify", mv_name, _short_hash(uid, 6))


def serving_labels(md_name: str) -> dict[str, str]:
    """Labels every serving pod of a ModelDeployment has: what the Service selects."""
    return {LABEL_DEPLOYMENT: md_name}


def version_labels(md_name: str, mv_name: str) -> dict[str, str]:
    return {LABEL_NAME: "onnx-model", LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: "serving",
            LABEL_DEPLOYMENT: md_name, LABEL_VERSION: mv_name}


def selector_string(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
