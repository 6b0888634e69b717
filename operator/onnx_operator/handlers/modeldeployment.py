"""ModelDeployment: observe, let the rollout state machine decide, apply the difference, write status."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from onnx_operator.api import (
    API_VERSION,
    InvalidSpec,
    ModelDeployment,
    ModelVersion,
    parse_model_deployment,
    parse_model_version,
    set_condition,
)
from onnx_operator.api import conditions as r
from onnx_operator.desired.names import (
    ANNOTATION_ACTION,
    LABEL_VERSION,
    deployment_name,
    preview_service_name,
    selector_string,
    serving_labels,
)
from onnx_operator.desired.peer import (
    Peering,
    desired_peer_secret,
    desired_peer_service,
    peer_fetch_enabled,
    peer_service_name,
    peer_service_wanted,
)
from onnx_operator.desired.serving import (
    connection_age_seconds,
    desired_deployment,
    desired_hpa,
    desired_preview_service,
    desired_service,
    effective_runtime,
    service_url,
)
from onnx_operator.desired.tls import SecretShape, required_secrets, tls_secret_problem
from onnx_operator.desired.traffic import (
    ROLES,
    desired_role_service,
    intended_weights,
    role_service_name,
    traffic_split,
    weighted_rules,
)
from onnx_operator.handlers.context import Context, live_status, now
from onnx_operator.handlers.gates import evaluate_gates, read_shares
from onnx_operator.metrics import MD_ROLLBACKS, ROLLOUTS, record_model_deployment
from onnx_operator.rollout.progressive import ABORTED, ROLLED_BACK, Decision, decide, parse_action
from onnx_operator.rollout.rolling import Observed
from onnx_operator.rollout.share import UNDER_SERVED, track_share
from onnx_operator.rollout.status import Problem, compute_status, stuck_events
from onnx_operator.rollout.stuck import stuck_pods

LOG = logging.getLogger(__name__)
KIND = "ModelDeployment"
SHARE_INTERVAL_SECONDS = 30  # how often the observed split is read during a rollout without metric gates
TLS_RECHECK_SECONDS = 10  # a missing or incomplete TLS Secret is read again this often (Secrets are not watched)
HTTPROUTE_API = "gateway.networking.k8s.io/v1"
Obj = dict[str, Any]


def _owned(items: list[Obj], uid: str) -> list[Obj]:
    return [i for i in items if any(ref.get("uid") == uid for ref in i["metadata"].get("ownerReferences") or [])
            and not i["metadata"].get("deletionTimestamp")]


def _observe(dep: Obj, pods: list[Obj]) -> Observed:
    status = dep.get("status") or {}
    version = dep["metadata"]["labels"][LABEL_VERSION]
    return Observed(
        version=version,
        replicas=int(dep["spec"].get("replicas", 0)),
        ready=int(status.get("readyReplicas") or 0),
        updated=int(status.get("observedGeneration") or 0) >= int(dep["metadata"].get("generation", 0)),
        stuck=stuck_pods([p for p in pods if (p["metadata"].get("labels") or {}).get(LABEL_VERSION) == version]),
    )


def _observe_versions(ctx: Context, namespace: str, labels: dict[str, str], uid: str) -> tuple[list[Obj],
                                                                                            dict[str, Observed]]:
    """The ModelDeployment's Deployments, and per version what they show; pods are read only while some
    version has fewer Ready pods than it asks for (to say why)."""
    deps = _owned(ctx.kube.list("apps/v1", "Deployment", namespace, labels), uid)
    short = any(int((d.get("status") or {}).get("readyReplicas") or 0) < int(d["spec"].get("replicas", 0))
                for d in deps)
    pods = ctx.kube.list("v1", "Pod", namespace, labels) if short else []
    return deps, {o.version: o for o in (_observe(d, pods) for d in deps)}


def _problem(md: ModelDeployment, mv_body: Obj | None) -> tuple[Problem | None, ModelVersion | None]:
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


def _base_replicas(md: ModelDeployment, observed: dict[str, Observed]) -> int:
    """Replicas a fully rolled-out version gets; with autoscaling, what the HPA chose for the stable one."""
    auto = md.spec.autoscaling
    if auto is None:
        return md.spec.replicas
    current = observed.get(md.status.serving_version or "") or observed.get(md.spec.model_version)
    live = current.replicas if current else auto.min_replicas
    return max(auto.min_replicas, min(auto.max_replicas, live))


class Applier:
    """Applies a Decision: Deployments per version, Services, HPAs; writes only what differs."""

    def __init__(self, ctx: Context, md: ModelDeployment, mv: ModelVersion, deps: list[Obj], hpas: list[Obj]):
        self.ctx, self.md, self.mv = ctx, md, mv
        self.kube = ctx.kube
        self.deps = {d["metadata"]["labels"][LABEL_VERSION]: d for d in deps}
        self.hpas = {h["metadata"]["labels"].get(LABEL_VERSION): h for h in hpas}

    def apply(self, d: Decision) -> None:
        md, kube, ns = self.md, self.kube, self.md.namespace
        kube.ensure(desired_service(md, self.ctx.config, d.active), kube.get("v1", "Service", ns, md.name))
        preview = kube.get("v1", "Service", ns, preview_service_name(md.name))
        if d.preview:
            kube.ensure(desired_preview_service(md, d.preview), preview)
        elif preview is not None:
            kube.delete("v1", "Service", ns, preview_service_name(md.name))
        for version, replicas in d.replicas.items():
            self._deployment(version, replicas)
        for version, dep in self.deps.items():
            if version not in d.replicas:
                kube.delete("apps/v1", "Deployment", ns, dep["metadata"]["name"], dep["metadata"]["uid"])
                kube.delete("v1", "Service", ns, peer_service_name(md.name, version))
        for version, hpa in self.hpas.items():
            if md.spec.autoscaling is None or not d.replicas.get(version or ""):
                kube.delete("autoscaling/v2", "HorizontalPodAutoscaler", ns, hpa["metadata"]["name"])
        self._traffic(d)

    def _traffic(self, d: Decision) -> None:
        """With spec.traffic.httpRoute: exact weights on `<md>-stable` / `<md>-canary` backendRefs."""
        md, kube, ns = self.md, self.kube, self.md.namespace
        route_ref = md.spec.traffic.http_route if md.spec.traffic else None
        if route_ref is None:
            for role in ROLES:
                if kube.get("v1", "Service", ns, role_service_name(md.name, role)) is not None:
                    kube.delete("v1", "Service", ns, role_service_name(md.name, role))
            return
        split = traffic_split(md, d.rollout, d.serving, self._ready())
        for role, version in (("stable", split.stable), ("canary", split.canary)):
            kube.ensure(desired_role_service(md, role, version),
                        kube.get("v1", "Service", ns, role_service_name(md.name, role)))
        route = kube.get(HTTPROUTE_API, "HTTPRoute", ns, route_ref.name)
        if route is None:
            LOG.warning("HTTPRoute %s/%s of %s not found: weights not set", ns, route_ref.name, md.name)
            return
        rules = weighted_rules(route, md.name, split.canary_weight)
        if rules != (route.get("spec") or {}).get("rules"):
            kube.merge_patch(HTTPROUTE_API, "HTTPRoute", ns, route_ref.name, {"spec": {"rules": rules}})

    def _ready(self) -> dict[str, int]:
        return {v: int((dep.get("status") or {}).get("readyReplicas") or 0) for v, dep in self.deps.items()}

    def _peering(self, mv: ModelVersion) -> Peering | None:
        """The version's peer fetch (the ModelDeployment's token Secret made first), or None when it is off.
        Its peer Service is made once the ModelDeployment may run more than one pod, and kept: its ClusterIP
        goes into the pod template."""
        md, kube, ns = self.md, self.kube, self.md.namespace
        if not peer_fetch_enabled(md, mv):
            return None
        kube.create_once(desired_peer_secret(md, secrets.token_hex(32)))  # never rewritten: pods hold it
        svc = desired_peer_service(md, mv.name, self.ctx.config)
        live = kube.get("v1", "Service", ns, svc["metadata"]["name"])
        if live is None and not peer_service_wanted(md):
            return Peering(None)  # a lone pod has no peer; no ClusterIP spent on it
        live = kube.converge(svc, live)
        ip = (live.get("spec") or {}).get("clusterIP")
        if not ip or ip == "None":
            raise RuntimeError(f"Service {ns}/{svc['metadata']['name']} has no ClusterIP")
        return Peering(str(ip))

    def _deployment(self, version: str, replicas: int) -> None:
        md, kube, ns, auto = self.md, self.kube, self.md.namespace, self.md.spec.autoscaling
        live = self.deps.get(version)
        if version == self.mv.name:
            # with autoscaling the HPA owns replicas: applies leave them out
            kube.ensure(desired_deployment(md, self.mv, self.ctx.config, None if auto else replicas,
                                           self._peering(self.mv)), live)
            if auto is not None and live is None:
                kube.scale("apps/v1", "Deployment", ns, deployment_name(md.name, version), replicas)
        elif live is None:
            other = kube.get(API_VERSION, "ModelVersion", ns, version)
            if other is None or (other.get("status") or {}).get("phase") != "Ready":
                LOG.warning("Cannot recreate %s/%s for %s: ModelVersion not Ready", ns, version, md.name)
                return
            mv = parse_model_version(other)
            kube.apply(desired_deployment(md, mv, self.ctx.config, replicas, self._peering(mv)))
        elif int(live["spec"].get("replicas", 0)) != replicas and (auto is None or replicas == 0):
            kube.scale("apps/v1", "Deployment", ns, live["metadata"]["name"], replicas)
        if auto is not None and replicas > 0:
            hpa = desired_hpa(md, version, max(1, min(replicas, auto.max_replicas)), auto.max_replicas)
            kube.ensure(hpa, self.hpas.get(version))


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
        record_model_deployment(namespace, name, new)
        return _write(ctx, body, old, new, [])
    labels = serving_labels(name)
    uid = str(body["metadata"]["uid"])
    deps, observed = _observe_versions(ctx, namespace, labels, uid)
    problem, mv = _problem(md, kube.get(API_VERSION, "ModelVersion", namespace, md.spec.model_version))
    tls_problem = _tls_problem(ctx, md)
    problem = problem or tls_problem
    replicas = _base_replicas(md, observed)
    decision: Decision | None = None
    if problem is None and mv is not None:
        hpas = _owned(kube.list("autoscaling/v2", "HorizontalPodAutoscaler", namespace, labels), uid)
        gates = evaluate_gates(ctx, md, mv, observed)
        action = parse_action((body["metadata"].get("annotations") or {}).get(ANNOTATION_ACTION))
        decision = decide(md, observed, replicas, mv.status.digest, gates, action, now())
        analysis = md.spec.strategy.canary.analysis if md.spec.strategy.canary else None
        if analysis is not None and decision.rollout and decision.rollout.get("version"):
            # gates are re-read every interval while a canary runs
            decision.requeue = min(decision.requeue or analysis.interval_seconds, analysis.interval_seconds)
        Applier(ctx, md, mv, deps, hpas).apply(decision)
        if decision.replicas != {v: o.replicas for v, o in observed.items()}:
            deps, observed = _observe_versions(ctx, namespace, labels, uid)
    weights = intended_weights(md, sorted(observed), {v: o.ready for v, o in observed.items()},
                               decision.active if decision else None,
                               decision.rollout if decision else md.status.rollout,
                               decision.serving if decision else md.status.serving_version)
    shares = _observe_split(ctx, md, mv, observed, decision, weights) if decision and mv else {}
    status = compute_status(md, list(observed.values()), replicas, problem, decision,
                            selector_string(labels), service_url(md), now(), weights=weights, shares=shares)
    events = [*(decision.events if decision else []), *stuck_events(md.status.versions, list(observed.values()))]
    new = status.wire()
    delay = _write(ctx, body, old, new, events)
    record_model_deployment(namespace, name, new)
    if decision and len(decision.history) and decision.history != md.status.history:
        last = decision.history[-1]
        ROLLOUTS.labels(str(last.get("strategy")), str(last.get("result"))).inc()
        if last.get("result") in (ROLLED_BACK, ABORTED):
            MD_ROLLBACKS.labels(namespace, name).inc()
    if decision and decision.requeue is not None:
        return min(delay or decision.requeue, decision.requeue)
    if tls_problem is not None:
        return min(delay or TLS_RECHECK_SECONDS, TLS_RECHECK_SECONDS)
    return delay


def _tls_problem(ctx: Context, md: ModelDeployment) -> Problem | None:
    """spec.tls's Secrets must exist with their keys before pods mount them; else nothing is rolled and the
    version serving now keeps serving."""
    found: dict[str, SecretShape | None] = {}
    for name in required_secrets(md):
        shape = ctx.kube.secret_keys(md.namespace, name)
        found[name] = None if shape is None else SecretShape(shape[0], frozenset(shape[1]))
    why = tls_secret_problem(md, found)
    if why is None:
        return None
    serving = md.status.serving_version
    return Problem(why[0], why[1] + (f"; {serving} keeps serving" if serving else ""))


def _observe_split(ctx: Context, md: ModelDeployment, mv: ModelVersion, observed: dict[str, Observed],
                   decision: Decision, weights: dict[str, int]) -> dict[str, float]:
    """During a rollout: the share of requests each version answered (from Prometheus), and whether the
    canary stays far below its intended share once clients had time to reconnect (kept in the rollout
    state, said in the Progressing condition)."""
    rollout = decision.rollout
    if not rollout or not rollout.get("version") or not ctx.config.prometheus_url:
        return {}
    spec_versions = {mv.name: mv.spec.version}
    for version in observed:
        if version not in spec_versions:
            other = ctx.kube.get(API_VERSION, "ModelVersion", md.namespace, version)
            if other is None:
                return {}  # a version we cannot name in the metrics: claim nothing
            spec_versions[version] = str(other["spec"]["version"])
    shares = read_shares(ctx.config.prometheus_url, md, spec_versions)
    analysis = md.spec.strategy.canary.analysis if md.spec.strategy.canary else None
    interval = float(analysis.interval_seconds if analysis else SHARE_INTERVAL_SECONDS)
    canary = str(rollout["version"])
    was = rollout.get("underServed")
    why = track_share(rollout, canary, weights.get(canary, 0) / 100, shares, rollout.get("stepReadyAt"),
                      connection_age_seconds(effective_runtime(md, mv)), interval, now())
    if why is None:
        rollout.pop("underServed", None)
    else:
        rollout["underServed"] = why
        if not was:
            decision.events.append(("Warning", UNDER_SERVED, why))
    # the observed split is re-read every interval while the rollout runs
    decision.requeue = min(decision.requeue or interval, interval)
    return shares


def _write(ctx: Context, body: Obj, old: Obj, new: Obj, events: list[tuple[str, str, str]]) -> float | None:
    if new != old:
        meta = body["metadata"]
        ctx.kube.patch_status(API_VERSION, KIND, meta["namespace"], meta["name"], old, new)
        for type_, reason, message in events:
            ctx.kube.event(body, type_, reason, message)
        if new.get("phase") != old.get("phase"):
            conds = new.get("conditions", [])
            degraded = [c for c in conds if c["type"] == "Degraded" and c["status"] == "True"]
            why: dict[str, Any] = degraded[0] if degraded else next((c for c in conds if c["type"] == "Ready"), {})
            ctx.kube.event(body, "Warning" if new.get("phase") == "Degraded" else "Normal",
                           str(why.get("reason", new.get("phase"))), f"{new.get('phase')}: {why.get('message', '')}")
    return ctx.config.resync_seconds
