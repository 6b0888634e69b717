"""ModelDeployment: serving Deployments per version, the Service, HPAs, and the handover."""

from __future__ import annotations

import logging
from typing import Any

from onnx_operator.api import API_VERSION, InvalidSpec, ModelDeployment, ModelVersion
from onnx_operator.api import conditions as r
from onnx_operator.api import parse_model_deployment, parse_model_version, set_condition
from onnx_operator.desired.names import LABEL_VERSION, deployment_name, selector_string, serving_labels
from onnx_operator.desired.serving import desired_deployment, desired_hpa, desired_service, service_url
from onnx_operator.handlers.context import Context, live_status, now
from onnx_operator.rollout.rolling import HandoverPlan, Observed, plan_handover
from onnx_operator.rollout.status import Problem, compute_status

LOG = logging.getLogger(__name__)
KIND = "ModelDeployment"


def _owned(items: list[dict[str, Any]], uid: str) -> list[dict[str, Any]]:
    return [i for i in items if any(ref.get("uid") == uid for ref in i["metadata"].get("ownerReferences") or [])]


def _observe(dep: dict[str, Any]) -> Observed:
    status = dep.get("status") or {}
    return Observed(
        version=dep["metadata"]["labels"][LABEL_VERSION],
        replicas=int(dep["spec"].get("replicas", 0)),
        ready=int(status.get("readyReplicas") or 0),
        updated=int(status.get("observedGeneration") or 0) >= int(dep["metadata"].get("generation", 0)),
    )


def _problem(md: ModelDeployment, mv_body: dict[str, Any] | None) -> tuple[Problem | None, ModelVersion | None]:
    wanted = md.spec.model_version
    serving = md.status.serving_version
    keep = f"; {serving} keeps serving" if serving and serving != wanted else ""
    if mv_body is None:
        return Problem(r.MODEL_VERSION_NOT_FOUND,
                       f"ModelVersion {wanted!r} not found in namespace {md.namespace}{keep}"), None
    mv = parse_model_version(mv_body)
    if mv.status.phase == "Failed":
        verified = next((c for c in mv.status.conditions if c.type == "Verified"), None)
        why = f"{verified.reason}: {verified.message}" if verified else "verification failed"
        return Problem(r.VERIFICATION_FAILED, f"ModelVersion {wanted!r} failed verification ({why}){keep}"), mv
    if mv.status.phase != "Ready":
        return Problem(r.MODEL_VERSION_NOT_READY, f"waiting for ModelVersion {wanted!r} to be verified{keep}",
                       degraded=False), mv
    return None, mv


def _apply_workloads(ctx: Context, md: ModelDeployment, mv: ModelVersion, deps: list[dict[str, Any]],
                     hpas: list[dict[str, Any]]) -> HandoverPlan:
    kube, ns = ctx.kube, md.namespace
    by_version = {d["metadata"]["labels"][LABEL_VERSION]: d for d in deps}
    new_dep = by_version.get(mv.name)
    auto = md.spec.autoscaling
    replicas = md.spec.replicas
    if auto is not None:
        live = int(new_dep["spec"].get("replicas", auto.min_replicas)) if new_dep else auto.min_replicas
        replicas = max(auto.min_replicas, min(auto.max_replicas, live))
    rolling = md.spec.strategy.rolling_update
    plan = plan_handover(replicas, rolling.max_surge if rolling else "100%",
                         rolling.max_unavailable if rolling else 0,
                         _observe(new_dep) if new_dep else None,
                         [_observe(d) for v, d in sorted(by_version.items()) if v != mv.name])
    kube.ensure(desired_service(md, ctx.config), kube.get("v1", "Service", ns, md.name))
    # with autoscaling the HPA owns replicas: applies leave them out and only a new
    # Deployment is sized once, through the scale subresource, so apply never fights the HPA
    kube.ensure(desired_deployment(md, mv, ctx.config, None if auto else plan.new_replicas), new_dep)
    if auto is not None and new_dep is None:
        kube.scale("apps/v1", "Deployment", ns, deployment_name(md.name, mv.name), plan.new_replicas)
    for version, target in plan.old_replicas.items():
        dep = by_version[version]
        if int(dep["spec"].get("replicas", 0)) != target:
            kube.scale("apps/v1", "Deployment", ns, dep["metadata"]["name"], target)
    for version in plan.delete:
        dep = by_version[version]
        kube.delete("apps/v1", "Deployment", ns, dep["metadata"]["name"], dep["metadata"]["uid"])
    for hpa in hpas:  # old versions are scaled by the handover, not by their HPA
        if hpa["metadata"]["labels"].get(LABEL_VERSION) != mv.name or auto is None:
            kube.delete("autoscaling/v2", "HorizontalPodAutoscaler", ns, hpa["metadata"]["name"])
    if auto is not None:
        current = next((h for h in hpas if h["metadata"]["labels"].get(LABEL_VERSION) == mv.name), None)
        kube.ensure(desired_hpa(md, mv, auto.min_replicas, auto.max_replicas), current)
    return plan


def reconcile_model_deployment(ctx: Context, namespace: str, name: str) -> float | None:
    kube = ctx.kube
    body = kube.get(API_VERSION, KIND, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None  # garbage collection removes what it owned
    old = live_status(body)
    generation = int(body["metadata"].get("generation", 0))
    try:
        md = parse_model_deployment(body)
    except InvalidSpec as exc:
        conds = set_condition([], "Degraded", True, r.INVALID_SPEC, str(exc), generation, now())
        new = {**old, "phase": "Degraded", "observedGeneration": generation, "conditions": [c.wire() for c in conds]}
        return _write(ctx, body, old, new)
    labels = serving_labels(name)
    uid = str(body["metadata"]["uid"])
    deps = _owned(kube.list("apps/v1", "Deployment", namespace, labels), uid)
    hpas = _owned(kube.list("autoscaling/v2", "HorizontalPodAutoscaler", namespace, labels), uid)
    problem, mv = _problem(md, kube.get(API_VERSION, "ModelVersion", namespace, md.spec.model_version))
    complete = False
    desired_replicas = md.spec.autoscaling.min_replicas if md.spec.autoscaling else md.spec.replicas
    if problem is None and mv is not None:
        plan = _apply_workloads(ctx, md, mv, deps, hpas)
        complete = plan.complete
        desired_replicas = plan.new_replicas
        deps = _owned(kube.list("apps/v1", "Deployment", namespace, labels), uid) if not complete or plan.delete else deps
    observed = [_observe(d) for d in deps if d["metadata"].get("deletionTimestamp") is None]
    status = compute_status(md, observed, desired_replicas, problem, complete, selector_string(labels),
                            service_url(md), now())
    return _write(ctx, body, old, status.wire())


def _write(ctx: Context, body: dict[str, Any], old: dict[str, Any], new: dict[str, Any]) -> float | None:
    if new != old:
        meta = body["metadata"]
        ctx.kube.patch_status(API_VERSION, KIND, meta["namespace"], meta["name"], new)
        if new.get("phase") != old.get("phase"):
            ready = next((c for c in new.get("conditions", []) if c["type"] == "Degraded"
                          and c["status"] == "True"), None) or next(
                (c for c in new.get("conditions", []) if c["type"] == "Ready"), {})
            ctx.kube.event(body, "Warning" if new.get("phase") == "Degraded" else "Normal",
                           str(ready.get("reason", new.get("phase"))), f"{new.get('phase')}: {ready.get('message', '')}")
    return ctx.config.resync_seconds
