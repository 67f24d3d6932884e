"""The Velero engine: Backup and Restore Operations become ``velero.io/v1`` objects.

Objects live in the Velero namespace (``--velero-namespace``, default ``velero``), are named
``<operation namespace>--<operation name>`` (the UID when longer than 63 characters; Go named
them like the Operation alone, so same-named Operations of two namespaces shared one Backup),
carry ``app.vworkspace.io/managed-by=vworkspace-operator`` and
``ops.vworkspace.io/operation=<Operation UID>``, and get a (non-controller) owner reference only
when they share the Operation's namespace. Fields per docs/api.md (engine table); written with
server-side apply (fields we do not set are left alone).

Phase roll-up (docs/api.md, deviation 22): Completed -> succeeded; Failed, FailedValidation and
PartiallyFailed -> failed (PartiallyFailed counts as success only with
``parameters.allowPartialFailure: true``); a Backup being deleted -> failed; anything else,
known or not -> running. An object that cannot be found is "workload missing" (the Operation
reconciler's grace period, then failed); it is located by ``status.engineRef``, else by name,
and found by the UID label only through the shared lookup (vworkspace/engines/workload.py).
"""

from __future__ import annotations

from typing import Any

from vworkspace.api import constants
from vworkspace.api.meta import ObjectKey
from vworkspace.engines import workload
from vworkspace.engines.base import EngineError, EngineRef, EngineRequest, Observation, State
from vworkspace.kube.client import KubeClient
from vworkspace.kube.errors import NotFoundError
from vworkspace.kube.resources import ResourceType

JsonObj = dict[str, Any]
BACKUPS = ResourceType("velero.io", "v1", "backups", "Backup")
RESTORES = ResourceType("velero.io", "v1", "restores", "Restore")


def _params(op: JsonObj) -> JsonObj:
    params = (op.get("spec") or {}).get("parameters")
    return params if isinstance(params, dict) else {}


def _nonempty_list(value: Any) -> list[str] | None:
    return [str(v) for v in value] if isinstance(value, list) and value else None


def backup_spec(op: JsonObj, target: JsonObj) -> JsonObj:
    params = _params(op)
    spec: JsonObj = {
        "includedNamespaces": [workload.target_namespace(target)],
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

    def _key(self, op: JsonObj) -> ObjectKey:
        return ObjectKey(self.namespace, workload.workload_name(op))

    async def materialize(self, request: EngineRequest) -> EngineRef:
        op, target = request.operation, request.target
        assert op is not None
        if target is None:
            raise EngineError("the target ApplicationInstance does not exist")
        resource, _ = self._kind(op)
        spec = backup_spec(op, target) if resource is BACKUPS else restore_spec(op)
        key = self._key(op)
        obj: JsonObj = {
            "apiVersion": "velero.io/v1",
            "kind": resource.kind,
            "metadata": workload.metadata(op, name=key.name, namespace=self.namespace),
            "spec": spec,
        }
        try:
            existing = await self._client.get(resource, key)
        except NotFoundError:
            existing = None
        if existing is not None and not workload.owned_by(existing, op):
            raise workload.foreign(resource, key)
        await self._client.apply(resource, obj, field_manager=constants.FIELD_MANAGER_OPERATOR)
        return EngineRef("velero", key.name, self.namespace)

    async def observe(self, request: EngineRequest) -> Observation:
        op = request.operation
        assert op is not None
        resource, output_key = self._kind(op)
        obj = await workload.locate(self._client, resource, op, computed=self._key(op))
        name = obj["metadata"]["name"]
        ref = EngineRef("velero", name, obj["metadata"]["namespace"])
        status = obj.get("status") or {}
        phase = status.get("phase") or ""
        allow_partial = _params(op).get("allowPartialFailure") is True
        outputs = {output_key: name}
        if phase == "Completed" or (phase == "PartiallyFailed" and allow_partial):
            return Observation(
                State.SUCCEEDED, "EngineCompleted", f"{resource.kind} {phase}", outputs, ref=ref
            )
        if phase in ("Failed", "PartiallyFailed", "FailedValidation", "Deleting"):
            detail = (
                status.get("failureReason")
                or "; ".join(status.get("validationErrors") or [])
                or phase
            )
            return Observation(
                State.FAILED, "EngineFailed", f"{resource.kind} {phase}: {detail}", outputs, ref=ref
            )
        state = State.PENDING if phase in ("", "New", "Queued", "ReadyToStart") else State.RUNNING
        return Observation(
            state, "EngineStarted", f"{resource.kind} {phase or 'New'}", outputs, ref=ref
        )

    async def cancel(self, request: EngineRequest) -> None:
        """Delete every object of the kind carrying the Operation's UID label, in any namespace;
        never an object by name alone (another Operation's Backup could have that name)."""
        op = request.operation
        assert op is not None
        try:
            resource, _ = self._kind(op)
        except EngineError:
            return
        await workload.delete_labelled(self._client, resource, op, namespace=None)
