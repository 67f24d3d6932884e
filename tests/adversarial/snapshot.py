"""Snapshots of everything outside the jobs' target, and what changed between two of them.

The adversarial tier asserts on the cluster, not on job results: before and after each batch,
every object of every listable resource (found through ``/api`` and ``/apis`` discovery, so a
resource nobody thought of is covered too) is fingerprinted by uid, resourceVersion and
deletionTimestamp, except

* objects in a namespace the target policy allows, and Namespaces whose name it allows (that is
  where jobs may write);
* what changes by itself, each rule in :data:`CHURN` and :func:`operator_churn` with its reason,
  and the status of the operator's own kinds (:data:`STATUS_BY_OPERATOR`). Measured by taking
  snapshots seconds apart with nothing running; ``Tier.settle`` re-checks it before the first
  batch (two snapshots in a row must be identical), so a missing exclusion shows there.

A resourceVersion is bumped by any write, so a change to spec, metadata (labels, ownerReferences,
finalizers) or status shows. The trade-off: one LIST per resource kind per snapshot (about 60 on
this API server, well under a second), no watch to keep alive between batches.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import attrs

from vworkspace.api.jsontypes import JsonObj
from vworkspace.testing import ApiError


@attrs.frozen
class Resource:
    """One listable resource of the API server (preferred version of its group)."""

    group_version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def group(self) -> str:
        return self.group_version.rpartition("/")[0]

    @property
    def list_path(self) -> str:
        prefix = "/api" if "/" not in self.group_version else "/apis"
        return f"{prefix}/{self.group_version}/{self.plural}"


@attrs.frozen(order=True)
class ObjectId:
    """Where an object lives: ``kind`` is ``Kind.group`` (core kinds without a group)."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"


@attrs.frozen
class Fingerprint:
    uid: str
    resource_version: str
    deletion_timestamp: str | None
    # What the description of a change compares (hashes, so a Secret's data is never kept).
    parts: tuple[tuple[str, str], ...]


@attrs.frozen
class Churn:
    """Objects that change by themselves; ``reason`` says why excluding them is safe."""

    reason: str
    matches: Callable[[ObjectId], bool]


def _kinds(*names: str) -> Callable[[ObjectId], bool]:
    return lambda oid: oid.kind in names


def _in_namespace(kind: str, namespace: str) -> Callable[[ObjectId], bool]:
    return lambda oid: oid.kind == kind and oid.namespace == namespace


CHURN: tuple[Churn, ...] = (
    Churn(
        "Events are records of what happened (the operator's and the controllers' own)",
        _kinds("Event", "Event.events.k8s.io"),
    ),
    Churn(
        "Leases in kube-system are renewed every few seconds by kube-apiserver (identity "
        "leases) and kube-controller-manager (leader election)",
        _in_namespace("Lease.coordination.k8s.io", "kube-system"),
    ),
    Churn(
        "ComponentStatus objects are synthesized per request and carry neither uid nor "
        "resourceVersion",
        _kinds("ComponentStatus"),
    ),
)


# Kinds whose status the operator writes on its own schedule (a Cluster's heartbeat every minute,
# an instance's lastReconcileTime): compared without status and resourceVersion. A job cannot
# hide a change behind that: the agent drops ``status`` from what it applies and status is a
# separate subresource, so anything a job changes shows in spec, metadata, generation or
# deletionTimestamp, which are compared.
STATUS_BY_OPERATOR = frozenset(
    {
        "ApplicationInstance.apps.vworkspace.io",
        "Operation.ops.vworkspace.io",
        "Cluster.ops.vworkspace.io",
    }
)


def operator_churn(operator_namespace: str) -> tuple[Churn, ...]:
    """What the operator itself writes in its own namespace, outside any job's target."""
    return (
        Churn(
            "the agent's idempotency ConfigMap vworkspace-applied-jobs is rewritten after "
            "succeeded jobs (docs/pull-mode.md, Idempotency)",
            lambda oid: oid == ObjectId("ConfigMap", operator_namespace, "vworkspace-applied-jobs"),
        ),
        Churn(
            "the operator's leader-election Lease in its namespace is renewed",
            _in_namespace("Lease.coordination.k8s.io", operator_namespace),
        ),
    )


def discover(rest: Any) -> list[Resource]:
    """Every resource that can be listed: core ``/api/v1`` and the preferred version of every
    group under ``/apis`` (other versions list the same objects)."""
    versions = [f"{v}" for v in rest.get("/api")["versions"]]
    versions += [g["preferredVersion"]["groupVersion"] for g in rest.get("/apis")["groups"]]
    found: list[Resource] = []
    for group_version in versions:
        prefix = "/api" if "/" not in group_version else "/apis"
        for res in rest.get(f"{prefix}/{group_version}")["resources"]:
            if "/" in res["name"] or "list" not in res.get("verbs", []):
                continue  # a subresource, or a create-only review API
            found.append(Resource(group_version, res["name"], res["kind"], res["namespaced"]))
    return found


def kind_of(resource: Resource) -> str:
    return f"{resource.kind}.{resource.group}" if resource.group else resource.kind


def _digest(value: Any) -> str:
    raw = json.dumps(value, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:12]


def _fingerprint(obj: JsonObj, *, status_churns: bool) -> Fingerprint:
    meta = obj.get("metadata") or {}
    parts = [
        (key, _digest(meta.get(key)))
        for key in ("labels", "annotations", "ownerReferences", "finalizers", "generation")
    ]
    skip = ("metadata", "status") if status_churns else ("metadata",)
    parts += [(key, _digest(value)) for key, value in obj.items() if key not in skip]
    return Fingerprint(
        uid=str(meta.get("uid", "")),
        resource_version="" if status_churns else str(meta.get("resourceVersion", "")),
        deletion_timestamp=meta.get("deletionTimestamp"),
        parts=tuple(sorted(parts)),
    )


@attrs.define
class Snapshotter:
    """Takes snapshots of everything outside the namespaces matching ``target_glob``."""

    rest: Any
    target_glob: str
    churn: tuple[Churn, ...]
    resources: list[Resource] = attrs.field(factory=list)

    def in_target(self, namespace: str) -> bool:
        return fnmatch.fnmatchcase(namespace, self.target_glob)

    def excluded(self, oid: ObjectId) -> bool:
        if oid.namespace and self.in_target(oid.namespace):
            return True
        if oid.kind == "Namespace" and self.in_target(oid.name):
            return True
        return any(rule.matches(oid) for rule in self.churn)

    def take(self) -> dict[ObjectId, Fingerprint]:
        # Discovery is repeated per snapshot: a CRD created by a job would add a resource.
        self.resources = discover(self.rest)
        snap: dict[ObjectId, Fingerprint] = {}
        for resource in self.resources:
            for obj in self._list(resource):
                meta = obj.get("metadata") or {}
                oid = ObjectId(kind_of(resource), meta.get("namespace") or "", meta.get("name", ""))
                if not self.excluded(oid):
                    snap[oid] = _fingerprint(obj, status_churns=oid.kind in STATUS_BY_OPERATOR)
        return snap

    def _list(self, resource: Resource) -> list[JsonObj]:
        """The resource's objects; waits while a just-created CRD's storage initialises (429)."""
        deadline = time.monotonic() + 30
        while True:
            try:
                items: list[JsonObj] = self.rest.get(resource.list_path)["items"]
                return items
            except ApiError as err:
                if err.status in (404, 405):  # a CRD deleted since discovery
                    return []
                if err.status != 429 or time.monotonic() > deadline:
                    raise
            time.sleep(0.2)


def terminating_namespaces(snap: dict[ObjectId, Fingerprint]) -> set[str]:
    return {
        oid.name for oid, fp in snap.items() if oid.kind == "Namespace" and fp.deletion_timestamp
    }


@attrs.frozen
class Change:
    oid: ObjectId
    what: str

    def __str__(self) -> str:
        return f"{self.oid}: {self.what}"


def diff(before: dict[ObjectId, Fingerprint], after: dict[ObjectId, Fingerprint]) -> list[Change]:
    """Every object created, deleted or changed between two snapshots.

    Namespaces already terminating before (and their contents) are left out: their deletion
    (e.g. by an earlier test's cleanup) is in progress and not caused by the batch."""
    dying = terminating_namespaces(before)
    changes: list[Change] = []
    for oid in sorted(set(before) | set(after)):
        if oid.namespace in dying or (oid.kind == "Namespace" and oid.name in dying):
            continue
        old, new = before.get(oid), after.get(oid)
        if old is None:
            changes.append(Change(oid, f"created (uid {new.uid if new else '?'})"))
        elif new is None:
            changes.append(Change(oid, f"deleted (uid {old.uid})"))
        elif old != new:
            changes.append(Change(oid, _describe(old, new)))
    return changes


def _describe(old: Fingerprint, new: Fingerprint) -> str:
    if old.uid != new.uid:
        return f"deleted and re-created (uid {old.uid} -> {new.uid})"
    if new.deletion_timestamp and not old.deletion_timestamp:
        return f"deletion started (deletionTimestamp {new.deletion_timestamp})"
    was, now = dict(old.parts), dict(new.parts)
    fields = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
    changed = ", ".join(fields) or "nothing visible"
    if not old.resource_version:  # a kind compared without its resourceVersion
        return f"modified (changed: {changed})"
    return f"modified (resourceVersion {old.resource_version} -> {new.resource_version}; changed: {changed})"
