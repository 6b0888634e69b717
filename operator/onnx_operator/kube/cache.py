"""A watch-fed cache of the objects the operator reads, so a reconcile reads memory, not the API server.

kopf's watches feed it (`observe` / `forget` from the index and event handlers in handlers/), and
every write's answer goes in too (write-through), so a reconcile right after a write sees it. An
older copy never replaces a newer one (resourceVersions compared as etcd revisions). kopf fills
every index from its initial listings before any handler runs, so once reconciles start a missing
object is one that does not exist, as in a client-go informer.

Stored copies leave out `metadata.managedFields` and the last-applied annotation: nothing here
reads them and they are most of an object's size.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

Obj = dict[str, Any]
KindKey = tuple[str, str]  # (apiVersion, kind)
_DROPPED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"


def _revision(obj: Mapping[str, Any]) -> int:
    try:
        return int(obj["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return -1


def slim(obj: Mapping[str, Any]) -> Obj:
    """A shallow copy without the fields nothing reads (managedFields, last-applied annotation)."""
    out = {k: v for k, v in obj.items()}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    annotations = meta.get("annotations")
    if annotations and _DROPPED_ANNOTATION in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != _DROPPED_ANNOTATION}
    out["metadata"] = meta
    return out


def matches(labels: Mapping[str, str] | None, selector: Mapping[str, str]) -> bool:
    have = labels or {}
    return all(have.get(k) == v for k, v in selector.items())


class ObjectCache:
    """Objects of the watched kinds by (apiVersion, kind), namespace, name. Thread-safe: the event
    loop writes, reconciles in worker threads read. Stored dicts are never mutated in place."""

    def __init__(self, kinds: Iterable[KindKey] = ()) -> None:
        self._lock = threading.Lock()
        self._objects: dict[KindKey, dict[str, dict[str, Obj]]] = {kind: {} for kind in kinds}

    def covers(self, api_version: str, kind: str) -> bool:
        return (api_version, kind) in self._objects

    def observe(self, obj: Mapping[str, Any]) -> bool:
        """Stores `obj` unless a newer copy is there; returns whether it was newer than the stored one."""
        key = (str(obj.get("apiVersion")), str(obj.get("kind")))
        store = self._objects.get(key)
        if store is None:
            return False
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name"))
        copy = slim(obj)
        with self._lock:
            objects = store.setdefault(namespace, {})
            old = objects.get(name)
            if old is not None and _revision(old) >= _revision(copy):
                return False
            objects[name] = copy
        return True

    def forget(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        store = self._objects.get((api_version, kind))
        if store is not None:
            with self._lock:
                objects = store.get(namespace, {})
                objects.pop(name, None)
                if not objects:
                    store.pop(namespace, None)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        with self._lock:
            return self._objects[(api_version, kind)].get(namespace, {}).get(name)

    def list(self, api_version: str, kind: str, namespace: str, labels: Mapping[str, str] | None = None) -> list[Obj]:
        with self._lock:
            items = list(self._objects[(api_version, kind)].get(namespace, {}).values())
        return [obj for obj in items if matches(obj["metadata"].get("labels"), labels or {})]

    def size(self) -> int:
        with self._lock:
            return sum(len(objects) for store in self._objects.values() for objects in store.values())
