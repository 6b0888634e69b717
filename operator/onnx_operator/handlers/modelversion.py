"""ModelVersion: verify the artifact once, in the cluster, with the runtime image's `verify`."""

from __future__ import annotations

import logging
from typing import Any

from onnx_operator.api import API_VERSION, InvalidSpec, ModelVersion, parse_model_version, set_condition
from onnx_operator.api import conditions as r
from onnx_operator.desired.names import verify_job_name
from onnx_operator.desired.verification import (
    VerifyResult,
    desired_verify_job,
    parse_verify_result,
    signature_mismatch,
)
from onnx_operator.handlers.context import Context, live_status, now
from onnx_operator.rollout.stuck import stuck_pods

LOG = logging.getLogger(__name__)
KIND = "ModelVersion"
VERIFY_FETCHERS = frozenset({"verify"})  # its failure while the Job retries is a failed fetch (or check)


def _job_finished(job: dict[str, Any]) -> bool:
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


def _result_from_pods(pods: list[dict[str, Any]]) -> VerifyResult:
    """The newest terminated verify container decides (a later retry may have succeeded)."""
    finished = []
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated")
            if cs.get("name") == "verify" and term:
                finished.append((term.get("finishedAt") or "", term))
    if not finished:
        return VerifyResult(False, r.VERIFICATION_FAILED, "the verification Job failed before its pod ran")
    _, term = max(finished, key=lambda item: item[0])
    return parse_verify_result(term.get("message"), term.get("exitCode"))


def _next_status(mv: ModelVersion, ctx: Context, generation: int) -> dict[str, Any]:
    st = mv.status.model_copy()
    job_name = verify_job_name(mv.name, str(mv.metadata["uid"]))
    job = ctx.kube.get("batch/v1", "Job", mv.namespace, job_name)
    if job is None:
        ctx.kube.apply(desired_verify_job(mv, ctx.config))
    if job is None or not _job_finished(job):
        st.phase = "Verifying"
        st.verification_job = job_name
        stuck = None if job is None else stuck_pods(
            ctx.kube.list("v1", "Pod", mv.namespace, {"job-name": job_name}), VERIFY_FETCHERS)
        reason, message = (stuck.reason, f"Job {job_name}: {stuck.describe()}") if stuck else (
            r.VERIFYING, f"Job {job_name} is downloading and checking the model")
        st.conditions = set_condition(st.conditions, "Verified", False, reason, message, generation, now())
    else:
        result = _result_from_pods(ctx.kube.list("v1", "Pod", mv.namespace, {"job-name": job_name}))
        mismatch = signature_mismatch(mv.spec.signature, result.signature) if result.ok else None
        if mismatch:
            result = VerifyResult(False, r.SIGNATURE_MISMATCH, mismatch)
        st.phase = "Ready" if result.ok else "Failed"
        st.conditions = set_condition(st.conditions, "Verified", result.ok, result.reason, result.message,
                                      generation, now())
        if result.ok:
            st.digest, st.size_bytes, st.signature = result.digest, result.size_bytes, result.signature
            st.file_count = result.file_count
    st.observed_generation = generation
    return st.wire()


def reconcile_model_version(ctx: Context, namespace: str, name: str) -> float | None:
    body = ctx.kube.get(API_VERSION, KIND, namespace, name)
    if body is None:
        return None
    generation = int(body["metadata"].get("generation", 0))
    old = live_status(body)
    try:
        mv = parse_model_version(body)
    except InvalidSpec as exc:
        conds = set_condition([], "Verified", False, r.INVALID_SPEC, str(exc), generation, now())
        new = {**old, "phase": "Failed", "observedGeneration": generation,
               "conditions": [c.wire() for c in conds]}
    else:
        if mv.status.phase in ("Ready", "Failed") and mv.status.observed_generation == generation:
            return None  # verified once; the spec is immutable
        new = _next_status(mv, ctx, generation)
    if new != old:
        ctx.kube.patch_status(API_VERSION, KIND, namespace, name, old, new)
        verified: dict[str, Any] = next((c for c in new.get("conditions", []) if c["type"] == "Verified"), {})
        was: dict[str, Any] = next((c for c in old.get("conditions", []) if c["type"] == "Verified"), {})
        if new.get("phase") != old.get("phase") or verified.get("reason") != was.get("reason"):
            warn = new["phase"] == "Failed" or verified.get("reason") not in (r.VERIFYING, r.VERIFIED)
            ctx.kube.event(body, "Warning" if warn else "Normal",
                           verified.get("reason", new["phase"]), f"{new['phase']}: {verified.get('message', '')}")
    return None
