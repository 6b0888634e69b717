"""Server-side apply, reads, status patches and Events, with one field manager."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import dynamic
from kubernetes.dynamic.exceptions import (
    ConflictError,
    NotFoundError,
    ResourceNotFoundError,
    ServiceUnavailableError,
    TooManyRequestsError,
)

from onnx_operator.kube.cache import ObjectCache
from onnx_operator.kube.drift import is_satisfied, merge_patch

LOG = logging.getLogger(__name__)
# every call is bounded: a hung connection must fail the reconcile (retried), never block it forever
TIMEOUT = (5, 30)

# a throttled request (429, API priority and fairness) is retried after the server's Retry-After, as
# client-go does; past the last attempt the reconcile fails and the loop retries it later
THROTTLE_ATTEMPTS = 6
THROTTLE_MAX_WAIT = 5.0

Obj = dict[str, Any]
T = TypeVar("T")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NotLeader(RuntimeError):
    """This replica does not hold the leader Lease (any more), so it must not write."""


def _retry_after(exc: Exception) -> float:
    headers = getattr(exc, "headers", None) or {}
    try:
        return min(THROTTLE_MAX_WAIT, max(0.2, float(headers.get("Retry-After", 1))))
    except (TypeError, ValueError):
        return 1.0


def throttled(call: Callable[[], T], what: str) -> T:
    """Runs `call`, retrying when the API server answers 429 Too Many Requests (or 503 with Retry-After)."""
    for attempt in range(1, THROTTLE_ATTEMPTS + 1):
        try:
            return call()
        except (TooManyRequestsError, ServiceUnavailableError) as exc:
            if attempt == THROTTLE_ATTEMPTS:
                raise
            wait = _retry_after(exc) * attempt
            LOG.info("API server throttled %s (HTTP %s): retrying in %.1fs", what, exc.status, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


def existence_key(obj: Obj) -> tuple[str, ...]:
    meta = obj["metadata"]
    owners = sorted(str(ref.get("uid")) for ref in meta.get("ownerReferences") or [])
    return (obj["apiVersion"], obj["kind"], str(meta.get("namespace") or ""), meta["name"], *owners)


def _body(response: Any) -> Obj:
    return dict(json.loads(response.data))


class Kube:
    """A thin client: every write goes through here, so writes are easy to count and avoid."""

    def __init__(self, api: k8s.ApiClient, field_manager: str, component: str = "onnx-operator",
                 cache: ObjectCache | None = None) -> None:
        self.api = api
        self.dyn = dynamic.DynamicClient(api)
        self.field_manager = field_manager
        self.component = component
        self.cache = cache or ObjectCache()  # reads of the kinds it covers never reach the API server
        self.may_write: Callable[[], bool] = lambda: True  # leader election narrows this to the Lease holder
        self._known_to_exist: set[tuple[str, ...]] = set()  # see create_once

    def _check_may_write(self, what: str) -> None:
        if not self.may_write():
            raise NotLeader(f"not the leader: refused to write {what}")

    @classmethod
    def from_environment(cls, field_manager: str, kubeconfig: str | None = None, cache: ObjectCache | None = None,
                         connections: int = 10) -> Kube:
        """In-cluster config when running in a pod, else $KUBECONFIG / the given file."""
        configuration = k8s.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except k8s_config.ConfigException:
            k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        configuration.connection_pool_maxsize = connections  # one per reconcile worker thread
        return cls(k8s.ApiClient(configuration), field_manager, cache=cache)

    def _resource(self, api_version: str, kind: str) -> Any:
        try:
            return self.dyn.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            # a CRD installed after start (e.g. Gateway API): refresh discovery once
            self.dyn.resources.invalidate_cache()
            return self.dyn.resources.get(api_version=api_version, kind=kind)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        """The object, or None when it (or its kind) does not exist; from the cache for the kinds it covers."""
        if self.cache.covers(api_version, kind):
            return self.cache.get(api_version, kind, namespace, name)
        try:
            return _body(throttled(lambda: self._resource(api_version, kind).get(
                name=name, namespace=namespace, _request_timeout=TIMEOUT, serialize=False), f"get {kind}"))
        except (NotFoundError, ResourceNotFoundError):
            return None

    def secret_keys(self, namespace: str, name: str) -> tuple[str, list[str]] | None:
        """A Secret's type and the NAMES of its keys (None if it does not exist); the values are dropped here
        and never reach a caller, a log line or a status."""
        try:
            secret = k8s.CoreV1Api(self.api).read_namespaced_secret(name, namespace, _request_timeout=TIMEOUT)
        except k8s.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return str(secret.type or ""), sorted({**(secret.data or {}), **(secret.string_data or {})})

    def list(self, api_version: str, kind: str, namespace: str, labels: dict[str, str] | None = None) -> list[Obj]:
        if self.cache.covers(api_version, kind):
            return self.cache.list(api_version, kind, namespace, labels)
        selector = ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or None
        result = _body(throttled(lambda: self._resource(api_version, kind).get(
            namespace=namespace, label_selector=selector, _request_timeout=TIMEOUT, serialize=False), f"list {kind}"))
        return [dict(item) for item in result.get("items") or []]

    def apply(self, obj: Obj) -> Obj:
        """Server-side apply as our field manager (forcing: this operator owns these fields)."""
        meta = obj["metadata"]
        self._check_may_write(f"{obj['kind']} {meta.get('namespace')}/{meta['name']}")
        result = _body(throttled(lambda: self._resource(obj["apiVersion"], obj["kind"]).server_side_apply(
            body=obj, name=meta["name"], namespace=meta.get("namespace"),
            field_manager=self.field_manager, force_conflicts=True, _request_timeout=TIMEOUT, serialize=False,
        ), f"apply {obj['kind']}"))
        self.cache.observe(result)
        LOG.info("Applied %s %s/%s", obj["kind"], meta.get("namespace"), meta["name"])
        return result

    def ensure(self, obj: Obj, live: Obj | None) -> bool:
        """Applies `obj` unless `live` already satisfies it; returns whether it wrote."""
        return self.converge(obj, live) is not live

    def create(self, obj: Obj) -> bool:
        """Creates `obj` unless it exists (for objects written once, e.g. a Secret: needs only `create`,
        not the `patch` that server-side apply takes); returns whether it created it."""
        meta = obj["metadata"]
        self._check_may_write(f"{obj['kind']} {meta.get('namespace')}/{meta['name']}")
        try:
            throttled(lambda: self._resource(obj["apiVersion"], obj["kind"]).create(
                body=obj, namespace=meta.get("namespace"), _request_timeout=TIMEOUT, serialize=False),
                f"create {obj['kind']}")
        except ConflictError:
            return False
        LOG.info("Created %s %s/%s", obj["kind"], meta.get("namespace"), meta["name"])
        return True

    def create_once(self, obj: Obj) -> None:
        """Makes sure `obj` exists (read, created if absent) once per owner for this process's life, for
        objects written once and never changed (a kind not watched, e.g. the peer token Secret): later
        reconciles neither read nor write it. Keyed by the owners' uids, so an owner deleted and created
        again under the same name gets its object checked again."""
        key = existence_key(obj)
        if key in self._known_to_exist:
            return
        meta = obj["metadata"]
        if self.get(obj["apiVersion"], obj["kind"], meta.get("namespace") or "", meta["name"]) is None:
            self.create(obj)
        self._known_to_exist.add(key)

    def converge(self, obj: Obj, live: Obj | None) -> Obj:
        """`live` when it already satisfies `obj`, else the object as applied (e.g. to read an assigned IP)."""
        if live is not None and is_satisfied(obj, live):
            return live
        return self.apply(obj)

    def delete(self, api_version: str, kind: str, namespace: str, name: str, uid: str | None = None) -> bool:
        self._check_may_write(f"{kind} {namespace}/{name}")
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            throttled(lambda: self._resource(api_version, kind).delete(
                name=name, namespace=namespace, body=body, _request_timeout=TIMEOUT, serialize=False), f"delete {kind}")
        except (NotFoundError, ConflictError):
            return False
        self.cache.forget(api_version, kind, namespace, name)
        LOG.info("Deleted %s %s/%s", kind, namespace, name)
        return True

    def scale(self, api_version: str, kind: str, namespace: str, name: str, replicas: int) -> None:
        """Sets replicas through the scale subresource (leaves the rest of the object alone)."""
        self._check_may_write(f"{kind} {namespace}/{name}")
        resource = self._resource(api_version, kind).subresources["scale"]
        scale = _body(throttled(lambda: resource.patch(
            body={"spec": {"replicas": replicas}}, name=name, namespace=namespace,
            content_type="application/merge-patch+json", _request_timeout=TIMEOUT, serialize=False), f"scale {kind}"))
        cached = self.cache.get(api_version, kind, namespace, name) if self.cache.covers(api_version, kind) else None
        if cached is not None:  # write-through: the Scale answer carries the object's new resourceVersion
            meta = cached["metadata"]
            if int(cached["spec"].get("replicas", 0)) != replicas:
                meta["generation"] = int(meta.get("generation", 0)) + 1  # as the API server does on a spec change
            cached["spec"]["replicas"] = replicas
            meta["resourceVersion"] = scale["metadata"]["resourceVersion"]
            self.cache.observe(cached)
        LOG.info("Scaled %s %s/%s to %d", kind, namespace, name, replicas)

    def merge_patch(self, api_version: str, kind: str, namespace: str, name: str, body: Obj) -> None:
        """A JSON merge patch of an object we do not own whole (e.g. a user's HTTPRoute weights)."""
        self._check_may_write(f"{kind} {namespace}/{name}")
        throttled(lambda: self._resource(api_version, kind).patch(
            body=body, name=name, namespace=namespace, content_type="application/merge-patch+json",
            _request_timeout=TIMEOUT, serialize=False), f"patch {kind}")
        LOG.info("Patched %s %s/%s", kind, namespace, name)

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, old: Obj, new: Obj) -> None:
        """Moves the status subresource (never the spec) from `old` to `new` with one merge patch."""
        self._check_may_write(f"{kind} {namespace}/{name} status")
        resource = self._resource(api_version, kind).subresources["status"]
        result = _body(throttled(lambda: resource.patch(
            body={"status": merge_patch(old, new)}, name=name, namespace=namespace,
            content_type="application/merge-patch+json", _request_timeout=TIMEOUT, serialize=False),
            f"patch {kind} status"))
        self.cache.observe(result)

    def event(self, regarding: Obj, type_: str, reason: str, message: str) -> None:
        """Records a core/v1 Event about `regarding` (one per call; callers emit on change only)."""
        meta = regarding["metadata"]
        self._check_may_write(f"Event on {meta['namespace']}/{meta['name']}")
        digest = hashlib.sha256(f"{meta.get('uid')}{reason}{message}{_now()}".encode()).hexdigest()[:10]
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{digest}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": regarding["apiVersion"], "kind": regarding["kind"], "name": meta["name"],
                "namespace": meta["namespace"], "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_, "reason": reason, "message": message[:1024],
            "firstTimestamp": _now(), "lastTimestamp": _now(), "count": 1,
            "source": {"component": self.component}, "reportingComponent": self.component,
        }
        try:
            throttled(lambda: self._resource("v1", "Event").create(
                body=body, namespace=meta["namespace"], _request_timeout=TIMEOUT, serialize=False), "create Event")
        except Exception as exc:
            LOG.warning("Could not record Event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], exc)
