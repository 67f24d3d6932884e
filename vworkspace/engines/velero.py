"""The Velero engine: Backup and Restore Operations become ``velero.io/v1`` objects.

Objects live in the Velero namespace (``--velero-namespace``, default ``velero``), are named like
the Operation, carry ``app.vworkspace.io/managed-by=vworkspace-operator`` and
``ops.vworkspace.io/operation=<Operation UID>``, and get a (non-controller) owner reference only
when they share the Operation's namespace. Fields per docs/api.md (engine table); written with
server-side apply (fields we do not set are left alone).

Phase roll-up (docs/api.md, deviation 22): Completed -> succeeded; Failed, FailedValidation and
PartiallyFailed -> failed (PartiallyFailed counts as success only with
``parameters.allowPartialFailure: true``); a Backup being deleted, or an object that vanished
after creation, -> failed; anything else, known or not -> running.
"""

from __future__ import annotations

import contextlib
from typing import Any

from vworkspace.api import constants
from vworkspace.api.meta import ObjectKey
from vworkspace.engines.base import EngineError, EngineRef, EngineRequest, EngineStatus, State
from vworkspace.kube.client import KubeClient
from vworkspace.kube.errors import NotFoundError
from vworkspace.kube.resources import ResourceType

JsonObj = dict[str, Any]
BACKUPS = ResourceType("velero.io", "v1", "backups", "Backup")
RESTORES = ResourceType("velero.io", "v1", "restores", "Restore")


def target_namespace(target: JsonObj) -> str:
    release_ns = ((target.get("spec") or {}).get("release") or {}).get("namespace")
    return str(release_ns or target["metadata"]["namespace"])


def _params(op: JsonObj) -> JsonObj:
    params = (op.get("spec") or {}).get("parameters")
    return params if isinstance(params, dict) else {}


def _nonempty_list(value: Any) -> list[str] | None:
    return [str(v) for v in value] if isinstance(value, list) and value else None


def backup_spec(op: JsonObj, target: JsonObj) -> JsonObj:
    params = _params(op)
    spec: JsonObj = {
        "includedNamespaces": [target_namespace(target)],
        "storageLocation": params.get("storageLocation") or "default",
    }
    if isinstance(params.get("snapshotVolumes"), bool):
        spec["snapshotVolumes"] = params["snapshotVolumes"]
    snapshot_class = params.get("csiSnapshotClassName") or params.get("snapshotClassName")
    if snapshot_class:
        spec["csiSnapshotClassName"] = snapshot_class
    for key in ("includedResources", "excludedResources"):
        if _nonempty_list(params.get(key)):
            spec[key] = _nonempty_list(params.get(key))
    ttl = params.get("retention") or params.get("ttl")
    if ttl:
        spec["ttl"] = ttl
    return spec


def restore_spec(op: JsonObj) -> JsonObj:
    params = _params(op)
    if not params.get("backupName"):
        raise EngineError("spec.parameters.backupName is required for a Restore")
    spec: JsonObj = {"backupName": params["backupName"]}
    if isinstance(params.get("namespaceMapping"), dict):
        spec["namespaceMapping"] = params["namespaceMapping"]
    if isinstance(params.get("restorePVs"), bool):
        spec["restorePVs"] = params["restorePVs"]
    if params.get("existingResourcePolicy"):
        spec["existingResourcePolicy"] = params["existingResourcePolicy"]
    for key in ("includedResources", "excludedResources"):
        if _nonempty_list(params.get(key)):
            spec[key] = _nonempty_list(params.get(key))
    return spec


class VeleroEngine:
    name = "velero"

    def __init__(self, client: KubeClient, *, namespace: str = "velero") -> None:
        self._client = client
        self.namespace = namespace

    def _kind(self, op: JsonObj) -> tuple[ResourceType, str]:
        kind = (op.get("spec") or {}).get("type")
        if kind == "Backup":
            return BACKUPS, "backupName"
        if kind == "Restore":
            return RESTORES, "restoreName"
        raise EngineError(f"the velero engine runs Backup and Restore Operations, not {kind}")

    async def materialize(self, request: EngineRequest) -> EngineRef:
        op = request.operation
        assert op is not None
        resource, _ = self._kind(op)
        spec = backup_spec(op, request.target) if resource is BACKUPS else restore_spec(op)
        meta = op["metadata"]
        obj: JsonObj = {
            "apiVersion": "velero.io/v1",
            "kind": resource.kind,
            "metadata": {
                "name": meta["name"],
                "namespace": self.namespace,
                "labels": {
                    constants.LABEL_MANAGED_BY: constants.MANAGED_BY_OPERATOR,
                    constants.LABEL_OPERATION: meta["uid"],
                },
            },
            "spec": spec,
        }
        if meta.get("namespace") == self.namespace:
            obj["metadata"]["ownerReferences"] = [
                {
                    "apiVersion": op["apiVersion"],
                    "kind": op["kind"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                }
            ]
        await self._client.apply(resource, obj, field_manager=constants.FIELD_MANAGER_OPERATOR)
        return EngineRef("velero", meta["name"], self.namespace)

    async def status(self, request: EngineRequest) -> EngineStatus:
        op = request.operation
        assert op is not None
        resource, output_key = self._kind(op)
        name = op["metadata"]["name"]
        try:
            obj = await self._client.get(resource, ObjectKey(self.namespace, name))
        except NotFoundError:
            return EngineStatus(
                State.FAILED, "EngineFailed", f"{resource.kind} {self.namespace}/{name} disappeared"
            )
        status = obj.get("status") or {}
        phase = status.get("phase") or ""
        allow_partial = _params(op).get("allowPartialFailure") is True
        outputs = {output_key: name}
        if phase == "Completed" or (phase == "PartiallyFailed" and allow_partial):
            return EngineStatus(
                State.SUCCEEDED, "EngineCompleted", f"{resource.kind} {phase}", outputs
            )
        if phase in ("Failed", "PartiallyFailed", "FailedValidation", "Deleting"):
            detail = (
                status.get("failureReason")
                or "; ".join(status.get("validationErrors") or [])
                or phase
            )
            return EngineStatus(
                State.FAILED, "EngineFailed", f"{resource.kind} {phase}: {detail}", outputs
            )
        if phase in ("", "New", "Queued", "ReadyToStart"):
            return EngineStatus(State.PENDING, "EngineStarted", f"{resource.kind} {phase or 'New'}")
        return EngineStatus(State.RUNNING, "EngineStarted", f"{resource.kind} {phase}")

    async def cancel(self, request: EngineRequest) -> None:
        op = request.operation
        assert op is not None
        try:
            resource, _ = self._kind(op)
        except EngineError:
            return
        meta = op["metadata"]
        with contextlib.suppress(NotFoundError):
            await self._client.delete(resource, ObjectKey(self.namespace, meta["name"]))
        listed = await self._client.list(
            resource, None, labelSelector=f"{constants.LABEL_OPERATION}={meta['uid']}"
        )
        for item in listed.get("items", []):
            with contextlib.suppress(NotFoundError):
                await self._client.delete(
                    resource, ObjectKey(item["metadata"]["namespace"], item["metadata"]["name"])
                )
