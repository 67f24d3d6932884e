"""The objects the peers write for one managed Helm ApplicationInstance, as plain dicts.

The same shapes vworkspace writes (vworkspace/engines/flux.py ``desired_objects`` and the status
of vworkspace/controllers/applicationinstance.py), spelled out again instead of imported: a peer
that imported vworkspace would carry its modules in its RSS. tests/unit/test_bench_peers.py keeps
the two in step.

Only ``chart.sourceType: helm`` with inline values is covered: that is what the benchmarks create.
"""

from __future__ import annotations

import datetime
import hashlib
import json

from vworkspace.api.jsontypes import JsonObj

FINALIZER = "apps.vworkspace.io/finalizer"
FIELD_MANAGER = "vworkspace-operator"
LABEL_MANAGED_BY = "app.vworkspace.io/managed-by"
LABEL_INSTANCE = "app.vworkspace.io/application-instance"
LABEL_CLUSTER_ID = "app.vworkspace.io/cluster-id"
# Paths below /apis for namespaced collections; the object's URL is "<collection>/<name>".
INSTANCES = "apps.vworkspace.io/v1alpha1/applicationinstances"
HELM_REPOSITORIES = "source.toolkit.fluxcd.io/v1/helmrepositories"
HELM_RELEASES = "helm.toolkit.fluxcd.io/v2/helmreleases"


def collection(resource: str, namespace: str) -> str:
    group, version, plural = resource.split("/")
    return f"/apis/{group}/{version}/namespaces/{namespace}/{plural}"


def labels(ai: JsonObj) -> dict[str, str]:
    own = ai["metadata"].get("labels") or {}
    result = {
        LABEL_MANAGED_BY: own.get(LABEL_MANAGED_BY) or "vworkspace-operator",
        LABEL_INSTANCE: ai["metadata"]["name"],
    }
    if own.get(LABEL_CLUSTER_ID):
        result[LABEL_CLUSTER_ID] = own[LABEL_CLUSTER_ID]
    return result


def source_name(ai: JsonObj) -> str:
    """The shared HelmRepository's name (vworkspace's ``source_name``; the benchmarks' URL is
    already in normalised form)."""
    fetched = {"url": ai["spec"]["chart"]["url"]}
    canonical = json.dumps(
        {"kind": "HelmRepository", "spec": fetched}, sort_keys=True, separators=(",", ":")
    )
    return "vws-src-" + hashlib.sha256(canonical.encode()).hexdigest()[:20]


def helm_repository(ai: JsonObj) -> JsonObj:
    """The HelmRepository all instances of a namespace share (vworkspace also adds each user's
    owner reference, under a field manager of its own; the peers leave it to their delete)."""
    return {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "HelmRepository",
        "metadata": {
            "name": source_name(ai),
            "namespace": ai["metadata"]["namespace"],
            "labels": {LABEL_MANAGED_BY: "vworkspace-operator"},
        },
        "spec": {"interval": "1m0s", "url": ai["spec"]["chart"]["url"]},
    }


def helm_release(ai: JsonObj) -> JsonObj:
    meta, spec = ai["metadata"], ai["spec"]
    chart, release = spec["chart"], spec["release"]
    hr_spec: JsonObj = {
        "interval": "5m0s",
        "chart": {
            "spec": {
                "chart": chart["name"],
                "version": chart["version"],
                "sourceRef": {"kind": "HelmRepository", "name": source_name(ai)},
            }
        },
    }
    values = spec.get("values") or {}
    if values.get("source") == "inline" and values.get("inline") is not None:
        hr_spec["values"] = values["inline"]
    owner = {
        "apiVersion": ai["apiVersion"],
        "kind": ai["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {
            "name": release["name"],
            "namespace": meta["namespace"],
            "labels": labels(ai),
            "ownerReferences": [owner],
        },
        "spec": hr_spec,
    }


# (type, status, reason, message) of a release that exists but Flux has not reconciled yet:
# vworkspace's roll-up of a HelmRelease without status (engines/flux.py ``instance_conditions``).
CONDITIONS = (
    ("Blocked", "False", "Unblocked", ""),
    ("Ready", "Unknown", "Reconciling", "waiting for Flux"),
    ("Reconciling", "True", "Reconciling", "waiting for Flux"),
    ("Degraded", "False", "Recovered", ""),
)


def _time(now: datetime.datetime) -> str:
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(ai: JsonObj, *, now: datetime.datetime) -> JsonObj:
    """The instance's status after its objects are written: conditions keep their
    ``lastTransitionTime`` while their status stays the same (Kubernetes condition semantics)."""
    generation = ai["metadata"].get("generation")
    before = {c.get("type"): c for c in (ai.get("status") or {}).get("conditions") or []}
    conditions = []
    for type_, value, reason, message in CONDITIONS:
        old = before.get(type_) or {}
        since = old.get("lastTransitionTime") if old.get("status") == value else None
        conditions.append(
            {
                "type": type_,
                "status": value,
                "reason": reason,
                "message": message,
                "lastTransitionTime": since or _time(now),
                "observedGeneration": generation,
            }
        )
    release = ai["spec"]["release"]
    return {
        "observedGeneration": generation,
        "lastReconcileTime": _time(now),
        "helmReleaseRef": {"name": release["name"], "namespace": ai["metadata"]["namespace"]},
        "lastAppliedChart": dict(ai["spec"]["chart"]),
        "conditions": conditions,
    }


def same_status(before: JsonObj | None, after: JsonObj) -> bool:
    """Equal but for ``lastReconcileTime``: no reason to write (vworkspace's rule too)."""
    ignore = {"lastReconcileTime": None}
    return {**(before or {}), **ignore} == {**after, **ignore}


def instance(index: int, namespace: str, *, repositories: int = 1) -> JsonObj:
    """The managed Helm ApplicationInstance the benchmarks create (as bench_applicationinstances).
    ``repositories``: over how many chart repository URLs the instances spread (1: all share
    one, so vworkspace keeps one chart source for all of them)."""
    name = f"app-{index:05d}"
    url = (
        "https://charts.example.com"
        if repositories <= 1
        else f"https://charts-{index % repositories}.example.com"
    )
    return {
        "apiVersion": "apps.vworkspace.io/v1alpha1",
        "kind": "ApplicationInstance",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "appRef": {"catalogId": "odoo"},
            "chart": {
                "sourceType": "helm",
                "url": url,
                "name": "odoo",
                "version": "1.0.0",
            },
            "release": {"name": name, "namespace": namespace},
            "values": {"source": "inline", "inline": {"replicaCount": 1}},
        },
    }


def reconciled(ai: JsonObj) -> bool:
    """What every contender must have written to an instance for it to count as reconciled."""
    status = ai.get("status") or {}
    return (
        FINALIZER in (ai["metadata"].get("finalizers") or [])
        and bool(status.get("helmReleaseRef"))
        and any(c.get("type") == "Ready" for c in status.get("conditions") or [])
    )
