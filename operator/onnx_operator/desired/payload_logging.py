"""Payload logging of a ModelDeployment's serving pods: the runtime's flags and the sink's CA bundle."""

from __future__ import annotations

from onnx_operator.api import ModelDeployment
from onnx_operator.desired.common import Obj

CA_VOLUME = "payload-log-ca"
CA_DIR = "/etc/onnx-server/payload-log-ca"


def payload_log_args(md: ModelDeployment) -> list[str]:
    """`--payload-log-*` for onnx-server when spec.logging is set (with the namespace events carry)."""
    log = md.spec.logging
    if log is None:
        return []
    args = ["--namespace", md.namespace, "--payload-log-url", log.url,
            "--payload-log-sample-rate", f"{log.sample_rate:g}", "--payload-log-mode", log.mode]
    if log.ca_config_map is not None:
        args += ["--payload-log-ca-file", f"{CA_DIR}/{log.ca_config_map.key}"]
    return args


def payload_log_ca_volume(md: ModelDeployment) -> tuple[list[Obj], list[Obj]]:
    """The CA bundle's ConfigMap as a read-only volume and its mount; nothing without one."""
    ca = md.spec.logging.ca_config_map if md.spec.logging else None
    if ca is None:
        return [], []
    volume = {"name": CA_VOLUME, "configMap": {"name": ca.name, "items": [{"key": ca.key, "path": ca.key}]}}
    return [volume], [{"name": CA_VOLUME, "mountPath": CA_DIR, "readOnly": True}]
