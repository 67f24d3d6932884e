"""The Velero engine: Backup and Restore Operations become ``velero.io/v1`` objects.

Objects live in the Velero namespace (``--velero-namespace``, default ``velero``), are named
``<operation namespace>--<operation name>`` (the UID when longer than 63 characters; Go named
them like the Operation alone, so same-named Operations of two namespaces shared one Backup),
carry ``app.vworkspace.io/managed-by=vworkspace-operator`` and
``ops.vworkspace.io/operation=<Operation UID>``, and get a (non-controller) owner reference only
when they share the Operation's namespace. Fields per docs/api.md (engine table); written with
server-side apply (fields we do not set are left alone).

A Restore needs no live target: its spec names only the backup, and bringing back a deleted
ApplicationInstance is what a Restore is for (the instance lives in its release namespace, which
is the namespace a Backup includes, so the backup holds it). A Backup needs its target (it
backs up the target's namespace).

Phase roll-up (:func:`rollup`, docs/api.md, deviation 22), checked against the Velero v1.18.1
server (issue 26): Completed -> succeeded; Failed, FailedValidation and PartiallyFailed ->
failed (PartiallyFailed counts as success only with ``parameters.allowPartialFailure: true``); a
Backup being deleted -> failed; New, Queued, ReadyToStart or none yet -> pending; anything else
(InProgress, WaitingForPluginOperations[PartiallyFailed], Finalizing[PartiallyFailed], a phase
we do not know) -> running. The real server sets ``failureReason`` only on Failed; a
PartiallyFailed object carries only its ``errors`` / ``warnings`` counts (every error-level line
of the backup's log counts), so the message names those counts and the command that shows the
errors; a failed object is kept after the verdict (``Observation.keep``: deleting a Restore
deletes its logs from the bucket). An object that cannot be found is "workload missing" (the
Operation reconciler's grace period, then failed); it is located by ``status.engineRef``, else
by name, and found by the UID label only through the shared lookup
(vworkspace/engines/workload.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vworkspace.api import constants
from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.api.operation import OperationType, OperationView
from vworkspace.api.view import ObjectView
from vworkspace.engines import workload
from vworkspace.engines.base import EngineError, EngineRef, Observation, OperationRequest, State
from vworkspace.engines.descriptor import OperationEngineDescriptor
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.errors import NotFoundError
from vworkspace.kube.rest.resources import OPERATIONS, ResourceType

BACKUPS = ResourceType("velero.io", "v1", "backups", "Backup")
NEVER_RESTORED = f"{OPERATIONS.plural}.{OPERATIONS.group}"
RESTORES = ResourceType("velero.io", "v1", "restores", "Restore")


def _nonempty_list(value: Any) -> list[str] | None:
    return [str(v) for v in value] if isinstance(value, list) and value else None


def backup_spec(op: OperationView, target: ApplicationInstanceView) -> JsonObj:
    params = op.parameters
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


def restore_spec(op: OperationView) -> JsonObj:
    params = op.parameters
    if not params.get("backupName"):
        raise EngineError("spec.parameters.backupName is required for a Restore")
    # Only the Operation's own namespace of the backup: the namespace a Backup Operation of
    # this namespace includes (the target's release namespace is its own namespace), and
    # nothing of another namespace the backup may hold (a cluster-wide backup of an admin).
    spec: JsonObj = {
        "backupName": params["backupName"],
        "includedNamespaces": [op.namespace],
    }
    if isinstance(params.get("namespaceMapping"), dict):
        spec["namespaceMapping"] = params["namespaceMapping"]
    if isinstance(params.get("restorePVs"), bool):
        spec["restorePVs"] = params["restorePVs"]
    if params.get("existingResourcePolicy"):
        spec["existingResourcePolicy"] = params["existingResourcePolicy"]
    if _nonempty_list(params.get("includedResources")):
        spec["includedResources"] = _nonempty_list(params.get("includedResources"))
    # Never Operations: a backup holds the namespace's Operations, and one restored (Velero
    # drops the status) would run again: an old Upgrade would take the instance back a version.
    excluded = _nonempty_list(params.get("excludedResources")) or []
    if NEVER_RESTORED not in excluded:
        excluded.append(NEVER_RESTORED)
    spec["excludedResources"] = excluded
    return spec


PENDING_PHASES = frozenset({"", "New", "Queued", "ReadyToStart"})
FAILED_PHASES = frozenset({"Failed", "PartiallyFailed", "FailedValidation", "Deleting"})


def _number(value: Any) -> int:
    """A count Velero wrote; anything but a non-negative integer counts as 0 (never a crash)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _counts(status: Mapping[str, Any]) -> str:
    """``2 errors, 1 warning`` and, when hooks failed, ``1 of 1 hooks failed``."""
    parts = [
        _plural(_number(status.get("errors")), "error"),
        _plural(_number(status.get("warnings")), "warning"),
    ]
    hooks = status.get("hookStatus")
    failed = _number(hooks.get("hooksFailed")) if isinstance(hooks, dict) else 0
    if failed and isinstance(hooks, dict):
        parts.append(f"{failed} of {_number(hooks.get('hooksAttempted'))} hooks failed")
    return ", ".join(parts)


def _progress(kind: str, status: Mapping[str, Any]) -> str:
    """``: 12 of 12 items backed up`` (``restored``) from ``status.progress``, or nothing."""
    progress = status.get("progress")
    if not isinstance(progress, dict) or "totalItems" not in progress:
        return ""
    done = progress.get("itemsBackedUp" if kind == "Backup" else "itemsRestored")
    verb = "backed up" if kind == "Backup" else "restored"
    return f": {_number(done)} of {_number(progress.get('totalItems'))} items {verb}"


def _logs_hint(kind: str, key: ObjectKey) -> str:
    return f"velero {kind.lower()} logs {key.name} -n {key.namespace}"


def rollup(
    kind: str, status: Mapping[str, Any], *, key: ObjectKey, allow_partial: bool = False
) -> tuple[State, str]:
    """The state and message of a Velero ``kind`` (Backup or Restore) whose ``status`` is
    given, for the object at ``key`` (named in the message's ``velero ... logs`` hint).

    Velero writes ``failureReason`` only when the whole run failed (phase Failed) and the
    reasons of FailedValidation in ``validationErrors``; a PartiallyFailed object says only how
    many errors its log holds, so the message gives the counts and the command that prints
    them (the log is in the object store, not in the object).
    """
    phase = str(status.get("phase") or "")
    if phase == "Completed":
        return State.SUCCEEDED, f"{kind} Completed{_progress(kind, status)}"
    if phase == "PartiallyFailed":
        detail = f"{_counts(status)}; see {_logs_hint(kind, key)}"
        if allow_partial:
            allowed = "allowed by parameters.allowPartialFailure"
            return State.SUCCEEDED, f"{kind} PartiallyFailed ({detail}), {allowed}"
        return State.FAILED, f"{kind} PartiallyFailed: {detail}"
    if phase in FAILED_PHASES:
        detail = (
            status.get("failureReason")
            or "; ".join(str(e) for e in _strings(status.get("validationErrors")))
            or ("being deleted" if phase == "Deleting" else _counts(status))
        )
        return State.FAILED, f"{kind} {phase}: {detail}"
    if phase in PENDING_PHASES:
        return State.PENDING, f"{kind} {phase or 'New'}"
    return State.RUNNING, f"{kind} {phase}"


class VeleroEngine:
    name = "velero"

    def __init__(self, client: KubeApi, *, namespace: str = "velero") -> None:
        self._client = client
        self.namespace = namespace

    def approval_required(self, op: OperationView) -> bool:
        """A Restore overwrites the application's objects with a backup's: it always needs
        the control plane's signed approval, whatever ``spec.approvals.required`` says."""
        return op.type == OperationType.RESTORE

    def runs_without_target(self, op: OperationView) -> bool:
        """A Restore may run while its target does not exist: bringing back a deleted
        ApplicationInstance is what it is for (issue 26). It is confined to the Operation's
        namespace (:func:`restore_spec`; a namespace mapping is refused then, see
        ``api.admission.targetless_problem``) and its approval is always required
        (:meth:`approval_required`), so the capability annotation, which went with the deleted
        instance, is not missed."""
        return op.type == OperationType.RESTORE

    def _kind(self, op: OperationView) -> tuple[ResourceType, str]:
        kind = op.type
        if kind == "Backup":
            return BACKUPS, "backupName"
        if kind == "Restore":
            return RESTORES, "restoreName"
        raise EngineError(f"the velero engine runs Backup and Restore Operations, not {kind}")

    def _key(self, op: OperationView) -> ObjectKey:
        return ObjectKey(self.namespace, workload.workload_name(op))

    async def materialize(self, request: OperationRequest) -> EngineRef:
        op, target = request.operation, request.target
        resource, _ = self._kind(op)
        if resource is RESTORES:
            spec = restore_spec(op)  # needs no target: restoring a deleted one is its purpose
        elif target is None:
            raise EngineError("the target ApplicationInstance does not exist")
        else:
            spec = backup_spec(op, target)
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

    async def observe(self, request: OperationRequest) -> Observation:
        op = request.operation
        resource, output_key = self._kind(op)
        obj = ObjectView(await workload.locate(self._client, resource, op, computed=self._key(op)))
        name = obj.name
        ref = EngineRef("velero", name, obj.namespace or "")
        status = obj.status
        phase = status.get("phase")
        state, message = rollup(
            resource.kind,
            status,
            key=ObjectKey(ref.namespace, name),
            allow_partial=op.parameters.get("allowPartialFailure") is True,
        )
        reason = {State.SUCCEEDED: "EngineCompleted", State.FAILED: "EngineFailed"}.get(
            state, "EngineStarted"
        )
        # A failed Velero object has ended and is the failure's record: deleting a Restore makes
        # Velero delete its logs and results from the bucket (its external-resources
        # finalizer), the logs the message points to; deleting a Backup object does not delete
        # the backup (Velero's sync brings the object back). Deleting the Operation still
        # deletes them (cancel).
        ended = state == State.FAILED and phase != "Deleting"
        return Observation(state, reason, message, {output_key: name}, ref=ref, keep=ended)

    async def cancel(self, request: OperationRequest) -> None:
        """Delete every object of the kind carrying the Operation's UID label, in any namespace;
        never an object by name alone (another Operation's Backup could have that name)."""
        op = request.operation
        try:
            resource, _ = self._kind(op)
        except EngineError:
            return
        await workload.delete_labelled(self._client, resource, op, namespace=None)


DESCRIPTOR = OperationEngineDescriptor(
    name=VeleroEngine.name,
    requires=("velero.io/v1/Backup",),
    missing="the Velero CRDs (velero.io/v1 Backup) are not installed",
    build=lambda context: VeleroEngine(context.client, namespace=context.settings.velero_namespace),
)
