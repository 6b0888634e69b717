"""kopf glue: every watched event asks for a level-triggered reconcile of the object it concerns.

Only `on.event` handlers and indexes are used, so kopf itself writes nothing to our objects (no
progress annotations, no finalizers): the operator's only writes are the ones reconciles decide.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from onnx_operator.api import GROUP, VERSION
from onnx_operator.desired.names import (
    LABEL_COMPONENT,
    LABEL_DEPLOYMENT,
    LABEL_MANAGED_BY,
    LABEL_MODEL_VERSION,
    MANAGED_BY,
)
from onnx_operator.handlers.context import Context
from onnx_operator.handlers.loop import ReconcileLoop
from onnx_operator.handlers.modeldeployment import reconcile_model_deployment
from onnx_operator.handlers.modelversion import reconcile_model_version
from onnx_operator.metrics import forget_model_deployment

LOG = logging.getLogger(__name__)


def register(registry: kopf.OperatorRegistry, ctx: Context) -> ReconcileLoop:
    loop = ReconcileLoop({
        "md": lambda ns, name: reconcile_model_deployment(ctx, ns, name),
        "mv": lambda ns, name: reconcile_model_version(ctx, ns, name),
    }, active=ctx.kube.may_write)

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # our own Events, on phase changes only
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.watching.connect_timeout = 30
        settings.networking.request_timeout = 60
        settings.peering.standalone = True
        settings.persistence.finalizer = f"{GROUP}/finalizer"

    @kopf.index(GROUP, VERSION, "modeldeployments", registry=registry, id="by_model_version")
    def by_model_version(*, namespace: str | None, name: str, spec: kopf.Spec,
                         **_: Any) -> dict[tuple[str, str], str]:
        return {(namespace or "", str(spec.get("modelVersion"))): name}

    @kopf.on.event(GROUP, VERSION, "modeldeployments", registry=registry)
    async def model_deployment_event(*, type: str, namespace: str | None, name: str, **_: Any) -> None:
        if namespace is None:
            return
        if type == "DELETED":
            loop.forget("md", namespace, name)
            forget_model_deployment(namespace, name)
            return
        await loop.request("md", namespace, name)

    @kopf.on.event(GROUP, VERSION, "modelversions", registry=registry)
    async def model_version_event(*, type: str, namespace: str | None, name: str, **kwargs: Any) -> None:
        index: kopf.Index[tuple[str, str], str] = kwargs["by_model_version"]
        if namespace is None:
            return
        if type == "DELETED":
            loop.forget("mv", namespace, name)
        else:
            await loop.request("mv", namespace, name)
        for md in list(index.get((namespace, name), [])):
            await loop.request("md", namespace, md)

    @kopf.on.event("apps", "v1", "deployments", registry=registry,
                   labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: "serving"})
    async def serving_deployment_event(*, namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
        if namespace is not None:
            await loop.request("md", namespace, labels[LABEL_DEPLOYMENT])

    @kopf.on.event("batch", "v1", "jobs", registry=registry,
                   labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: "verify"})
    async def verify_job_event(*, namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
        if namespace is not None:
            await loop.request("mv", namespace, labels[LABEL_MODEL_VERSION])

    @kopf.on.event("", "v1", "pods", registry=registry, labels={LABEL_MANAGED_BY: MANAGED_BY})
    async def owned_pod_event(*, namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
        """A pod's state (an image pull backing off, a failed fetch, an OOM kill) changes no Deployment or Job
        status: its owner is looked at again so its status can say why the pod is stuck."""
        if namespace is None:
            return
        if labels.get(LABEL_COMPONENT) == "serving" and labels.get(LABEL_DEPLOYMENT):
            await loop.request("md", namespace, labels[LABEL_DEPLOYMENT])
        elif labels.get(LABEL_COMPONENT) == "verify" and labels.get(LABEL_MODEL_VERSION):
            await loop.request("mv", namespace, labels[LABEL_MODEL_VERSION])

    return loop
