"""Semantic validation shared by the reconcilers and (later) the admission webhooks.

Each function returns None when the object is valid, else one message naming the field at fault
(docs/api.md, "Validation": evaluated in order, the first failure wins). They read plain wire
dictionaries so both an informer's cached object and an AdmissionReview's object can be checked
as they are.
"""

from __future__ import annotations

from typing import Any

from vworkspace.api import constants
from vworkspace.api.jsontypes import JsonObj

SOURCE_TYPES = ("oci", "helm")
VALUES_SOURCES = ("inline", "secretRef", "configMapRef")


def _blank(value: Any) -> bool:
    return not isinstance(value, str) or not value.strip()


def validate_application_instance(obj: JsonObj) -> str | None:
    spec = obj.get("spec") or {}
    namespace = (obj.get("metadata") or {}).get("namespace") or ""
    if _blank((spec.get("appRef") or {}).get("catalogId")):
        return "spec.appRef.catalogId must not be blank"
    if spec.get("mode") == "placeholder":
        if spec.get("chart") is not None:
            return "spec.chart must be absent for a placeholder instance"
        if spec.get("values") is not None:
            return "spec.values must be absent for a placeholder instance"
        release_ns = (spec.get("release") or {}).get("namespace")
        if release_ns and release_ns != namespace:
            return _namespace_mismatch(namespace, release_ns)
        return None
    if (spec.get("appRef") or {}).get("catalogId") == constants.SEAWEED_CATALOG_ID:
        # Native SeaweedFS (docs/api.md, "Native SeaweedFS"): no chart, the rest as managed.
        if spec.get("chart") is not None:
            return "spec.chart must not be set for native SeaweedFS workloads"
        return _validate_release_and_values(spec, namespace)
    return _validate_managed(spec, namespace)


def _namespace_mismatch(namespace: str, got: str) -> str:
    return f"spec.release.namespace must equal metadata.namespace ({namespace!r}), got {got!r}"


def _validate_managed(spec: JsonObj, namespace: str) -> str | None:
    chart = spec.get("chart")
    if not isinstance(chart, dict):
        return "spec.chart is required in managed mode"
    if chart.get("sourceType") not in SOURCE_TYPES:
        return f"spec.chart.sourceType must be one of oci, helm, got {chart.get('sourceType')!r}"
    for field in ("url", "name", "version"):
        if _blank(chart.get(field)):
            return f"spec.chart.{field} must not be blank"
    return _validate_release_and_values(spec, namespace)


def _validate_release_and_values(spec: JsonObj, namespace: str) -> str | None:
    release = spec.get("release")
    if not isinstance(release, dict):
        return "spec.release is required in managed mode"
    for field in ("name", "namespace"):
        if _blank(release.get(field)):
            return f"spec.release.{field} must not be blank"
    if release["namespace"] != namespace:
        return _namespace_mismatch(namespace, release["namespace"])
    values = spec.get("values")
    if not isinstance(values, dict):
        return "spec.values is required in managed mode"
    source = values.get("source")
    if source not in VALUES_SOURCES:
        return f"spec.values.source must be one of inline, secretRef, configMapRef, got {source!r}"
    if source == "inline" and not isinstance(values.get("inline"), dict):
        return "spec.values.inline is required when spec.values.source is inline"
    if source in ("secretRef", "configMapRef"):
        ref = values.get(source) or {}
        if _blank(ref.get("name")) or _blank(ref.get("key")):
            return (
                f"spec.values.{source}.name and spec.values.{source}.key are required "
                f"when spec.values.source is {source}"
            )
    return None


def validate_operation(obj: JsonObj) -> str | None:
    spec = obj.get("spec") or {}
    target = spec.get("targetRef") or {}
    if target.get("apiVersion") != constants.APPS_API_VERSION:
        got = target.get("apiVersion")
        return f"spec.targetRef.apiVersion must be {constants.APPS_API_VERSION}, got {got!r}"
    if target.get("kind") != "ApplicationInstance":
        return f"spec.targetRef.kind must be ApplicationInstance, got {target.get('kind')!r}"
    if _blank(target.get("name")):
        return "spec.targetRef.name must not be blank"
    if _blank(spec.get("type")):
        return "spec.type must not be blank"
    if _blank(spec.get("engine")):
        return "spec.engine must not be blank"
    return None


# Concurrency matrix (docs/api.md, "Concurrency matrix"): incoming type -> types that block it.
BLOCKED_BY = {
    "Upgrade": frozenset({"Upgrade"}),
    "Restore": frozenset({"Upgrade", "Backup"}),
    "Backup": frozenset({"Restore"}),
}


def started(op: JsonObj) -> bool:
    """The Operation's workload was materialised (phase Running)."""
    return (op.get("status") or {}).get("phase") == "Running"


def waiting(op: JsonObj) -> bool:
    """Not started and not finished: no phase yet (the reconciler has not admitted it) or
    Pending (Blocked for some reason)."""
    return (op.get("status") or {}).get("phase") in (None, "", "Pending")


def _queue_position(op: JsonObj) -> tuple[str, str]:
    meta = op["metadata"]
    return (meta.get("creationTimestamp") or "", meta["name"])


def ahead_of(other: JsonObj, op: JsonObj) -> bool:
    """``other`` was created before ``op`` (names break ties within the same second). An
    Operation not created yet (admission of a CREATE) comes after every existing one."""
    if not op["metadata"].get("creationTimestamp"):
        return True
    return _queue_position(other) < _queue_position(op)


def conflicting_operation(op: JsonObj, others: list[JsonObj]) -> JsonObj | None:
    """The first Operation on the same target that blocks ``op``, oldest first.

    A started (Running) Operation of a blocking type always blocks. One that has not started
    (no phase, or Pending) blocks only the Operations created after it: creation order is a
    total order that every reconcile worker sees the same way, so two Operations created
    together can neither both start (one worker cannot see the other's status yet) nor wait for
    each other forever (a Backup and a Restore both Pending, each blocking the other).
    """
    spec = op.get("spec") or {}
    blockers = BLOCKED_BY.get(str(spec.get("type")), frozenset())
    if not blockers:
        return None
    name = op["metadata"]["name"]
    target = (spec.get("targetRef") or {}).get("name")
    candidates = sorted((o for o in others if o["metadata"]["name"] != name), key=_queue_position)
    for other in candidates:
        other_spec = other.get("spec") or {}
        if (other_spec.get("targetRef") or {}).get("name") != target:
            continue
        if other_spec.get("type") not in blockers:
            continue
        if started(other) or (waiting(other) and ahead_of(other, op)):
            return other
    return None
