"""A watch-fed cache of the objects the operator reads, so a reconcile reads memory, not the API server.

kopf's watches feed it (`observe` / `forget` from the index and event handlers in handlers/), and
every write's answer goes in too (write-through), so a reconcile right after a write sees it. An
older copy never replaces a newer one (resourceVersions compared as etcd revisions). kopf fills
every index from its initial listings before any handler runs, so once reconciles start a missing
object is one that does not exist, as in a client-go informer.

Stored copies leave out `metadata.managedFields`, the last-applied annotation and a pod's spec
(nothing here reads them) and are kept as compact JSON, decoded on each read: a Deployment as nested
dicts takes ~10x the memory of its JSON, and 1,000 ModelDeployments' objects would otherwise be most of the heap.
Every read returns a fresh copy, so callers may change what they get.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]
KindKey = tuple[str, str]  # (apiVersion, kind)
_DROPPED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"


def _revision(obj: Mapping[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {})["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return -1


def slim(obj: Mapping[str, Any]) -> Obj:
    """A shallow copy without the fields nothing reads (managedFields, last-applied annotation, and a
    pod's spec: only its metadata and status say why it is not Ready, and the spec is most of its size)."""
    out = {k: v for k, v in obj.items() if not (k == "spec" and obj.get("kind") == "Pod")}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    annotations = meta.get("annotations")
    if annotations and _DROPPED_ANNOTATION in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != _DROPPED_ANNOTATION}
    out["metadata"] = meta
    return out


@dataclass(frozen=True)
class _Entry:
    revision: int
    labels: dict[str, str]
    raw: bytes

    def decode(self) -> Obj:
        return dict(json.loads(self.raw))


def matches(labels: Mapping[str, str] | None, selector: Mapping[str, str]) -> bool:
    have = labels or {}
    return all(have.get(k) == v for k, v in selector.items())


class ObjectCache:
    """Objects of the watched kinds by (apiVersion, kind), namespace, name. Thread-safe: the event
    loop writes, reconciles in worker threads read. Stored dicts are never mutated in place."""

    def __init__(self, kinds: Iterable[KindKey] = (), index_label: str | None = None) -> None:
        self._lock = threading.Lock()
        self._objects: dict[KindKey, dict[str, dict[str, _Entry]]] = {kind: {} for kind in kinds}
        # (kind, namespace, value of index_label) -> names: a list by that label reads only its objects
        self._index_label = index_label
        self._index: dict[tuple[KindKey, str, str], set[str]] = {}

    def _reindex(self, key: KindKey, namespace: str, name: str, old: _Entry | None, new: _Entry | None) -> None:
        if self._index_label is None:
            return
        for entry, add in ((old, False), (new, True)):
            value = entry.labels.get(self._index_label) if entry is not None else None
            if value is None:
                continue
            names = self._index.setdefault((key, namespace, value), set())
            if add:
                names.add(name)
            else:
                names.discard(name)
                if not names:
                    del self._index[(key, namespace, value)]

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
        revision = _revision(obj)
        with self._lock:
            old = store.get(namespace, {}).get(name)
        if old is not None and old.revision >= revision:
            return False
        entry = _Entry(revision, dict(meta.get("labels") or {}),
                       json.dumps(slim(obj), separators=(",", ":")).encode())
        with self._lock:
            objects = store.setdefault(namespace, {})
            old = objects.get(name)
            if old is not None and old.revision >= revision:
                return False
            objects[name] = entry
            self._reindex(key, namespace, name, old, entry)
        return True

    def forget(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        store = self._objects.get((api_version, kind))
        if store is not None:
            with self._lock:
                objects = store.get(namespace, {})
                self._reindex((api_version, kind), namespace, name, objects.pop(name, None), None)
                if not objects:
                    store.pop(namespace, None)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        with self._lock:
            entry = self._objects[(api_version, kind)].get(namespace, {}).get(name)
        return entry.decode() if entry is not None else None

    def list(self, api_version: str, kind: str, namespace: str, labels: Mapping[str, str] | None = None) -> list[Obj]:
        selector = labels or {}
        with self._lock:
            objects = self._objects[(api_version, kind)].get(namespace, {})
            value = selector.get(self._index_label) if self._index_label else None
            if value is not None:
                names = self._index.get(((api_version, kind), namespace, value), set())
                items = [objects[n] for n in names if n in objects]
            else:
                items = list(objects.values())
        return [entry.decode() for entry in items if matches(entry.labels, selector)]

    def size(self) -> int:
        with self._lock:
            return sum(len(objects) for store in self._objects.values() for objects in store.values())
