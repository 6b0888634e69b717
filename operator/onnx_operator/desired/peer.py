"""Peer fetch: the per-ModelDeployment token Secret, the per-version peer Service, and the pod's share.

A new pod of a version fetches its files from Ready pods of the same version through the version's peer
Service (its ClusterIP is in the pod's arguments: serving pods have no API access, DNS or Service links),
presenting the ModelDeployment's token; each file is checked against its pinned sha256, so a peer can
only help or be refused. The user-facing Services never expose the `peer` port.

Every serving pod serves its files to peers, but a version gets its peer Service only once the
ModelDeployment may run more than one pod (`peer_service_wanted`): a lone pod has no peer to fetch from,
and each Service costs a ClusterIP, which kube-apiserver allocates one at a time (at 1,000
ModelDeployments a peer Service each doubled the run). Scaling such a ModelDeployment out from one pod
adds the peer Service's address to the pod template, so its pod is replaced once (surge first, as any
template change); the peer Service then stays for the version's life, scale-in included.
"""

from __future__ import annotations

from dataclasses import dataclass

from onnx_operator.api import ModelDeployment, ModelVersion
from onnx_operator.config import OperatorConfig
from onnx_operator.desired.common import Obj, object_meta, owner_reference
from onnx_operator.desired.names import (
    LABEL_COMPONENT,
    LABEL_VERSION,
    bounded_name,
    serving_labels,
    version_labels,
)
from onnx_operator.desired.source import is_archive

TOKEN_DIR = "/var/run/onnx-peer"
TOKEN_KEY = "token"
TOKEN_FILE = f"{TOKEN_DIR}/{TOKEN_KEY}"
TOKEN_VOLUME = "peer-token"


def peer_service_name(md_name: str, mv_name: str) -> str:
    return bounded_name(md_name, mv_name, "peer")


def peer_secret_name(md_name: str) -> str:
    return bounded_name(md_name, "peer-token")


def peer_fetch_enabled(md: ModelDeployment, mv: ModelVersion) -> bool:
    """On unless spec.runtime.peerFetch is false (the ModelDeployment's setting wins over the
    ModelVersion's); an archive is always fetched from its source (peers hold only its extracted files)."""
    override = md.spec.runtime.peer_fetch if md.spec.runtime else None
    default = mv.spec.runtime.peer_fetch if mv.spec.runtime else None
    enabled = override if override is not None else default
    return enabled is not False and not is_archive(mv.spec.source)


def peer_service_wanted(md: ModelDeployment) -> bool:
    """True when the ModelDeployment may run more than one pod of a version: replicas, or autoscaling's maximum."""
    return (md.spec.autoscaling.max_replicas if md.spec.autoscaling else md.spec.replicas) > 1


def desired_peer_secret(md: ModelDeployment, token: str) -> Obj:
    """Created once with a random token; only pods of this ModelDeployment mount it."""
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": object_meta(peer_secret_name(md.name), md.namespace,
                                {**serving_labels(md.name), LABEL_COMPONENT: "peer"},
                                owner_reference("ModelDeployment", md.metadata)),
        "stringData": {TOKEN_KEY: token},
    }


def desired_peer_service(md: ModelDeployment, mv_name: str, config: OperatorConfig) -> Obj:
    """Only the version's Ready pods are its endpoints, so kube-proxy sends a fetch to a verified copy."""
    labels = {**version_labels(md.name, mv_name), LABEL_COMPONENT: "peer"}
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": object_meta(peer_service_name(md.name, mv_name), md.namespace, labels,
                                owner_reference("ModelDeployment", md.metadata)),
        "spec": {"selector": {**serving_labels(md.name), LABEL_VERSION: mv_name},
                 "ports": [{"name": "peer", "port": config.peer_port, "targetPort": "peer", "protocol": "TCP"}]},
    }


@dataclass(frozen=True)
class Peering:
    """A version's peer fetch: its pods serve their files to peers; with `service_ip` (the version's peer
    Service ClusterIP) a new pod also fetches from them before the source."""

    service_ip: str | None


@dataclass(frozen=True)
class PeerPod:
    """What a serving pod adds for peer fetch: arguments, its port, the token volume and mount."""

    fetch_args: list[str]
    serve_args: list[str]
    port: Obj
    volume: Obj
    mount: Obj


def peer_pod(md: ModelDeployment, config: OperatorConfig, peering: Peering) -> PeerPod:
    ip = peering.service_ip
    return PeerPod(
        fetch_args=["--peer", f"http://{ip}:{config.peer_port}", "--peer-token-file", TOKEN_FILE] if ip else [],
        serve_args=["--peer-port", str(config.peer_port), "--peer-token-file", TOKEN_FILE],
        port={"name": "peer", "containerPort": config.peer_port, "protocol": "TCP"},
        volume={"name": TOKEN_VOLUME, "secret": {"secretName": peer_secret_name(md.name), "defaultMode": 0o440}},
        mount={"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True},
    )
