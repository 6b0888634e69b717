"""Serving workloads of a ModelDeployment: one Deployment (and HPA) per served version, one Service."""

from __future__ import annotations

import math

from onnx_operator.api import ModelDeployment, ModelVersion
from onnx_operator.api.modelversion import DEFAULT_MAX_CONNECTION_AGE_SECONDS, RuntimeSettings
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
    ANNOTATION_DIGEST,
    LABEL_METRICS_PORT,
    LABEL_NAME,
    LABEL_VERSION,
    deployment_name,
    preview_service_name,
    serving_labels,
    version_labels,
)
from onnx_operator.desired.payload_logging import payload_log_args, payload_log_ca_volume
from onnx_operator.desired.peer import Peering, peer_pod
from onnx_operator.desired.source import model_file_args, source_args, source_digest, source_volume
from onnx_operator.desired.tls import tls_args, tls_volumes

MODEL_DIR = "/models"
GRPC_SERVICE_PORT = 8081
PROPAGATION_SECONDS = 5  # a deleted pod's endpoint leaves every node's kube-proxy rules well within this
DRAIN_SECONDS = 25  # onnx-server's --grace-seconds default: in-flight requests after SIGTERM
STARTUP_PERIOD_SECONDS = 2
STARTUP_BASE_SECONDS = 300
STARTUP_SECONDS_PER_GIB = 120  # loading and warming up; `make bench` measures a few seconds per GiB


def effective_runtime(md: ModelDeployment, mv: ModelVersion) -> RuntimeSettings:
    """The ModelDeployment's runtime overrides win over the ModelVersion's defaults, field by field."""
    base = mv.spec.runtime.model_dump() if mv.spec.runtime else {}
    override = md.spec.runtime.model_dump(exclude_none=True) if md.spec.runtime else {}
    return RuntimeSettings.model_validate({**base, **override})


def runtime_args(runtime: RuntimeSettings) -> list[str]:
    args: list[str] = []
    if runtime.threads:
        args += ["--threads", str(runtime.threads)]
    if runtime.batching:
        args += ["--max-batch-size", str(runtime.batching.max_batch_size),
                 "--max-delay-ms", str(runtime.batching.max_delay_ms)]
    if runtime.warmup is False:
        args.append("--no-warmup")
    if runtime.prepack is False:
        args.append("--no-prepack")
    if runtime.grpc is False:
        args.append("--no-grpc")
    for flag, value in (("--header-timeout", runtime.header_timeout_seconds),
                        ("--body-timeout", runtime.body_timeout_seconds),
                        ("--min-body-rate", runtime.min_body_bytes_per_second),
                        ("--idle-timeout", runtime.idle_timeout_seconds),
                        ("--max-connections", runtime.max_connections)):
        if value is not None:
            args += [flag, str(value)]
    return [*args, "--max-connection-age", str(connection_age_seconds(runtime))]


def prestop_seconds(runtime: RuntimeSettings) -> int:
    """A terminating pod keeps serving this long before SIGTERM: its endpoint leaves the Services, and every
    client connection still on it outlives its age (+10% jitter), so each active client is told to
    reconnect (Connection: close, GOAWAY) by a response, never by a close racing its next request."""
    return PROPAGATION_SECONDS + math.ceil(connection_age_seconds(runtime) * 1.1)


def connection_age_seconds(runtime: RuntimeSettings) -> int:
    """How long a client connection to a serving pod lives before it is asked to reconnect."""
    age = runtime.max_connection_age_seconds
    return DEFAULT_MAX_CONNECTION_AGE_SECONDS if age is None else age


def serve_args(md: ModelDeployment, mv: ModelVersion, config: OperatorConfig) -> list[str]:
    """The runtime image's arguments for a serving container (also used by the image tests)."""
    runtime = effective_runtime(md, mv)
    grpc = [] if runtime.grpc is False else ["--grpc-port", str(config.grpc_port)]
    return ["serve", "--model-dir", MODEL_DIR, "--name", mv.spec.model, "--version", mv.spec.version,
            "--model-deployment", md.name, "--host", "0.0.0.0", "--port", str(config.serving_port),
            *model_file_args(mv.spec.source), *grpc,
            *runtime_args(runtime), *payload_log_args(md), *tls_args(md, config.health_port)]


def container_ports(md: ModelDeployment, runtime: RuntimeSettings, config: OperatorConfig) -> list[Obj]:
    ports = [{"name": "http", "containerPort": config.serving_port, "protocol": "TCP"}]
    if runtime.grpc is not False:
        ports.append({"name": "grpc", "containerPort": config.grpc_port, "protocol": "TCP"})
    if md.spec.tls is not None:
        ports.append({"name": "health", "containerPort": config.health_port, "protocol": "TCP"})
    return ports


def service_ports(md: ModelDeployment) -> list[Obj]:
    """`http` (80), and `grpc` (8081, HTTP/2) unless the ModelDeployment turns gRPC off; a pod whose version
    turned it off is simply no endpoint of the `grpc` port. With spec.tls both speak TLS (appProtocol
    https; gRPC negotiates h2 by ALPN); the health port stays out of the Service."""
    tls = md.spec.tls is not None
    ports: list[Obj] = [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP",
                         **({"appProtocol": "https"} if tls else {})}]
    if not (md.spec.runtime and md.spec.runtime.grpc is False):
        ports.append({"name": "grpc", "port": GRPC_SERVICE_PORT, "targetPort": "grpc", "protocol": "TCP",
                      "appProtocol": "https" if tls else "kubernetes.io/h2c"})
    return ports


def probe_port(md: ModelDeployment) -> str:
    """The kubelet has no client certificate: with spec.tls it probes the plain health port."""
    return "http" if md.spec.tls is None else "health"


def _probe(path: str, period: int, failures: int, port: str) -> Obj:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period, "timeoutSeconds": 2,
            "failureThreshold": failures}


def placement(md: ModelDeployment) -> Obj:
    """The pod spec's scheduling fields, each only when the ModelDeployment sets it."""
    out: Obj = {}
    if md.spec.node_selector:
        out["nodeSelector"] = dict(md.spec.node_selector)
    if md.spec.tolerations:
        out["tolerations"] = [t.wire() for t in md.spec.tolerations]
    if md.spec.affinity:
        out["affinity"] = md.spec.affinity.wire()
    return out


def startup_failure_threshold(size_bytes: int | None) -> int:
    """Startup probe failures allowed: the budget grows with the verified size, so a large model is not
    killed while it loads."""
    budget = STARTUP_BASE_SECONDS + STARTUP_SECONDS_PER_GIB * (size_bytes or 0) / (1 << 30)
    return math.ceil(budget / STARTUP_PERIOD_SECONDS)


def scrape_annotations(config: OperatorConfig, tls: bool = False) -> dict[str, str]:
    """What a plain Prometheus with kubernetes_sd (pod role) keys on to scrape the runtime's /metrics (the
    plain health port with TLS on: Prometheus has no client certificate)."""
    port = config.health_port if tls else config.serving_port
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics"}


def desired_deployment(md: ModelDeployment, mv: ModelVersion, config: OperatorConfig,
                       replicas: int | None, peering: Peering | None = None) -> Obj:
    """`replicas=None` leaves spec.replicas out, so an HPA owns it and apply never fights it; `peering`
    turns peer fetch on (serving files to peers, and fetching from them when it has a peer Service)."""
    labels = version_labels(md.name, mv.name)
    digest = mv.status.digest or source_digest(mv.spec.source)
    # a user's podAnnotations may override the scrape annotations (e.g. prometheus.io/scrape: "false")
    pod_annotations = {**scrape_annotations(config, md.spec.tls is not None), **(md.spec.pod_annotations or {}),
                       ANNOTATION_DIGEST: digest}
    container: Obj = {
        "name": "server",
        "image": config.runtime_image,
        "command": ["onnx-server"],
        "args": serve_args(md, mv, config),
        "ports": container_ports(md, effective_runtime(md, mv), config),
        "readinessProbe": _probe("/v2/health/ready", 5, 3, probe_port(md)),
        "livenessProbe": _probe("/v2/health/live", 10, 3, probe_port(md)),
        "startupProbe": _probe("/v2/health/ready", STARTUP_PERIOD_SECONDS,
                               startup_failure_threshold(mv.status.size_bytes), probe_port(md)),
        "lifecycle": {"preStop": {"sleep": {"seconds": prestop_seconds(effective_runtime(md, mv))}}},
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": "models", "mountPath": MODEL_DIR, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    fetch: Obj = {
        "name": "fetch-model",
        "image": config.runtime_image,
        "command": ["onnx-server"],
        "args": ["fetch", *source_args(mv.spec.source, MODEL_DIR), "--termination-message-path", TERMINATION_LOG],
        # the failure's reason and message (the URL and the error) reach the pod's status, so the operator
        # can say why a pod is stuck; a crash before the message is written leaves the log's tail instead
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": "models", "mountPath": MODEL_DIR}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    volumes, mounts = source_volume(mv.spec.source)
    fetch["volumeMounts"] += mounts
    if peering is not None:
        peer = peer_pod(md, config, peering)
        container["args"] += peer.serve_args
        container["ports"].append(peer.port)
        container["volumeMounts"].append(peer.mount)
        if peer.fetch_args:
            fetch["args"] += peer.fetch_args
            fetch["volumeMounts"].append(peer.mount)
        volumes.append(peer.volume)
    ca_volumes, ca_mounts = payload_log_ca_volume(md)
    container["volumeMounts"] += ca_mounts
    secret_volumes, secret_mounts = tls_volumes(md)
    volumes += secret_volumes
    container["volumeMounts"] += secret_mounts
    if md.spec.resources:
        # the init container too: a namespace quota may demand limits on every container
        container["resources"] = fetch["resources"] = md.spec.resources.wire()
    spec: Obj = {
        "selector": {"matchLabels": labels},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "template": {
            "metadata": {"labels": {**labels, **({LABEL_METRICS_PORT: "health"} if md.spec.tls else {})},
                         "annotations": pod_annotations},
            "spec": {
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": RESTRICTED_POD,
                "terminationGracePeriodSeconds": prestop_seconds(effective_runtime(md, mv)) + DRAIN_SECONDS,
                "initContainers": [fetch],
                "containers": [container],
                "volumes": [{"name": "models", "emptyDir": {}}, {"name": "tmp", "emptyDir": {"medium": "Memory"}},
                            *volumes, *ca_volumes],
                **placement(md),
            },
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": object_meta(deployment_name(md.name, mv.name), md.namespace, labels,
                                owner_reference("ModelDeployment", md.metadata)),
        "spec": spec,
    }


def desired_service(md: ModelDeployment, config: OperatorConfig, active: str | None = None) -> Obj:
    """`<md>`: every serving pod of the ModelDeployment, or only version `active` (blue/green)."""
    labels = {LABEL_NAME: "onnx-model", **serving_labels(md.name)}
    selector = {**serving_labels(md.name), **({LABEL_VERSION: active} if active else {})}
    return _service(md, md.name, labels, selector)


def desired_preview_service(md: ModelDeployment, version: str) -> Obj:
    """`<md>-preview`: the version waiting for promotion (blue/green), for smoke tests."""
    labels = {LABEL_NAME: "onnx-model", **serving_labels(md.name)}
    return _service(md, preview_service_name(md.name), labels, {**serving_labels(md.name), LABEL_VERSION: version})


def _service(md: ModelDeployment, name: str, labels: dict[str, str], selector: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": object_meta(name, md.namespace, labels, owner_reference("ModelDeployment", md.metadata)),
        "spec": {"selector": selector, "ports": service_ports(md)},
    }


def service_url(md: ModelDeployment) -> str:
    return f"{'https' if md.spec.tls else 'http'}://{md.name}.{md.namespace}.svc.cluster.local"


def desired_hpa(md: ModelDeployment, version: str, min_replicas: int, max_replicas: int) -> Obj:
    """autoscaling/v2 HPA for one version's Deployment (its minimum follows the version's share)."""
    assert md.spec.autoscaling is not None
    name = deployment_name(md.name, version)
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": object_meta(name, md.namespace, version_labels(md.name, version),
                                owner_reference("ModelDeployment", md.metadata)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": min_replicas, "maxReplicas": max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization",
                "averageUtilization": md.spec.autoscaling.target_cpu_utilization_percentage}}}],
        },
    }
