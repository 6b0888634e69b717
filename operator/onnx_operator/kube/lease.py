"""Reads and writes the coordination.k8s.io/v1 Lease of leader election (get, create, update: nothing else)."""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException


@dataclass(frozen=True)
class LeaseRecord:
    """The election fields of a Lease's spec (`holder` is empty once released)."""

    holder: str
    lease_duration_seconds: int
    acquire_time: dt.datetime
    renew_time: dt.datetime
    transitions: int


@dataclass(frozen=True)
class StoredLease:
    record: LeaseRecord
    resource_version: str


class LeaseConflict(RuntimeError):
    """Someone else created or updated the Lease since we read it."""


def _lease(name: str, record: LeaseRecord, resource_version: str | None) -> k8s.V1Lease:
    # with a resourceVersion the update is optimistic: a stale one gets 409 Conflict
    return k8s.V1Lease(
        api_version="coordination.k8s.io/v1", kind="Lease",
        metadata=k8s.V1ObjectMeta(name=name, resource_version=resource_version),
        spec=k8s.V1LeaseSpec(holder_identity=record.holder, lease_duration_seconds=record.lease_duration_seconds,
                             acquire_time=record.acquire_time, renew_time=record.renew_time,
                             lease_transitions=record.transitions),
    )


def _epoch() -> dt.datetime:
    return dt.datetime.fromtimestamp(0, dt.UTC)


class LeaseStore:
    """One Lease, read and written with a bounded timeout per call (a hung call must not hang the elector)."""

    def __init__(self, api: k8s.ApiClient, namespace: str, name: str) -> None:
        configuration = copy.copy(api.configuration)
        configuration.retries = False  # one try per attempt: the elector retries, within its deadline
        self.api = k8s.CoordinationV1Api(k8s.ApiClient(configuration))
        self.namespace, self.name = namespace, name

    def get(self, timeout: float) -> StoredLease | None:
        try:
            lease = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=timeout)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        spec, meta = lease.spec or k8s.V1LeaseSpec(), lease.metadata or k8s.V1ObjectMeta()
        record = LeaseRecord(
            holder=spec.holder_identity or "", lease_duration_seconds=int(spec.lease_duration_seconds or 0),
            acquire_time=spec.acquire_time or _epoch(), renew_time=spec.renew_time or _epoch(),
            transitions=int(spec.lease_transitions or 0),
        )
        return StoredLease(record, str(meta.resource_version))

    def create(self, record: LeaseRecord, timeout: float) -> None:
        self._write(record, None, timeout)

    def update(self, record: LeaseRecord, resource_version: str, timeout: float) -> None:
        self._write(record, resource_version, timeout)

    def _write(self, record: LeaseRecord, resource_version: str | None, timeout: float) -> None:
        body = _lease(self.name, record, resource_version)
        try:
            if resource_version is None:
                self.api.create_namespaced_lease(self.namespace, body, _request_timeout=timeout)
            else:
                self.api.replace_namespaced_lease(self.name, self.namespace, body, _request_timeout=timeout)
        except ApiException as exc:
            if exc.status == 409:
                raise LeaseConflict(f"Lease {self.namespace}/{self.name} changed under us") from exc
            raise
