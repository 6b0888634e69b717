"""TLS of the serving pods (spec.tls): the Secrets they mount, the flags they get, and whether the Secrets
can serve. Pure: the handler reads each Secret's type and key NAMES (never their values) and asks here."""

from __future__ import annotations

from dataclasses import dataclass

from onnx_operator.api import ModelDeployment
from onnx_operator.api import conditions as r
from onnx_operator.desired.common import Obj

TLS_DIR = "/etc/onnx-server/tls"
CLIENT_CA_DIR = "/etc/onnx-server/client-ca"
SERVING_KEYS = ("tls.crt", "tls.key")
CA_KEY = "ca.crt"
CLIENT_AUTH_FLAGS = {"None": "none", "Optional": "optional", "Require": "require"}


@dataclass(frozen=True)
class SecretShape:
    """What the operator keeps of a Secret: its type and the names of its keys."""

    type: str
    keys: frozenset[str]


def required_secrets(md: ModelDeployment) -> dict[str, tuple[str, ...]]:
    """Each Secret spec.tls names -> the keys it must hold."""
    tls = md.spec.tls
    if tls is None:
        return {}
    needed: dict[str, tuple[str, ...]] = {tls.secret_name: SERVING_KEYS}
    if tls.client_auth != "None" and tls.client_ca_secret_name:
        needed[tls.client_ca_secret_name] = tuple(dict.fromkeys((*needed.get(tls.client_ca_secret_name, ()),
                                                                  CA_KEY)))
    return needed


def tls_secret_problem(md: ModelDeployment, found: dict[str, SecretShape | None]) -> tuple[str, str] | None:
    """(reason, message) naming the first Secret that is missing or lacks a key, else None."""
    for name, keys in required_secrets(md).items():
        shape = found.get(name)
        field = "spec.tls.secretName" if md.spec.tls and name == md.spec.tls.secret_name \
            else "spec.tls.clientCASecretName"
        if shape is None:
            return r.TLS_SECRET_NOT_FOUND, f"Secret {name!r} ({field}) not found in namespace {md.namespace}"
        missing = [k for k in keys if k not in shape.keys]
        if missing:
            return r.TLS_SECRET_INVALID, (f"Secret {name!r} ({field}) has no key {', '.join(map(repr, missing))} "
                                          f"(it has: {', '.join(sorted(shape.keys)) or 'none'}); a kubernetes.io/tls "
                                          "Secret as cert-manager writes it holds tls.crt, tls.key and ca.crt")
    return None


def tls_args(md: ModelDeployment, health_port: int) -> list[str]:
    tls = md.spec.tls
    if tls is None:
        return []
    args = ["--tls-cert", f"{TLS_DIR}/tls.crt", "--tls-key", f"{TLS_DIR}/tls.key", "--health-port", str(health_port)]
    if tls.client_auth != "None":
        args += ["--tls-client-ca", f"{CLIENT_CA_DIR}/{CA_KEY}",
                 "--tls-client-auth", CLIENT_AUTH_FLAGS[tls.client_auth]]
    return args


def tls_volumes(md: ModelDeployment) -> tuple[list[Obj], list[Obj]]:
    """(volumes, mounts): whole Secret volumes, never subPath mounts (those are not updated on renewal)."""
    tls = md.spec.tls
    if tls is None:
        return [], []
    mode = 0o440  # the pod's fsGroup reads them; nobody else
    volumes = [{"name": "tls", "secret": {"secretName": tls.secret_name, "defaultMode": mode,
                                          "items": [{"key": k, "path": k} for k in SERVING_KEYS]}}]
    mounts = [{"name": "tls", "mountPath": TLS_DIR, "readOnly": True}]
    if tls.client_auth != "None" and tls.client_ca_secret_name:
        volumes.append({"name": "client-ca", "secret": {"secretName": tls.client_ca_secret_name, "defaultMode": mode,
                                                        "items": [{"key": CA_KEY, "path": CA_KEY}]}})
        mounts.append({"name": "client-ca", "mountPath": CLIENT_CA_DIR, "readOnly": True})
    return volumes, mounts
