"""What the workload engines (job, helmHookJob, workflow, velero) share: naming, labels, owner
references, create-if-absent with the ownership check, locating and cancelling by the Operation
UID label (docs/api.md, "What the operator makes of it").

* Name: ``<operation namespace>--<operation name>``, or the Operation UID when that is longer
  than 63 characters, so two Operations of the same name in two namespaces never share a
  workload (a Velero namespace is shared by all of them).
* Labels ``app.vworkspace.io/managed-by=vworkspace-operator`` and
  ``ops.vworkspace.io/operation=<UID>``; a non-controller owner reference to the Operation only
  when the workload lives in the Operation's namespace (owner references cannot cross
  namespaces).
* Locating for status: ``status.engineRef`` (name and namespace), else the name computed from the
  target; when neither gives an object (the target is gone, or the object is not there), a list
  by the UID label (in that namespace when known, else in all): one object -> it, several ->
  ambiguous (the Operation fails), none -> :class:`WorkloadMissingError` (the reconciler's grace
  period). An object at the expected name with another Operation's label fails the Operation.
* Cancel deletes every object carrying the UID label (in the workload's namespace when known,
  else in all namespaces), and nothing else: an object with our name but another Operation's
  label is never touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from vworkspace.api import constants
from vworkspace.api.admission import service_account_problem
from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.api.operation import OperationView
from vworkspace.api.templates import RUNNER_SERVICE_ACCOUNT
from vworkspace.api.view import ObjectView
from vworkspace.engines.base import EngineError, EngineRef, WorkloadMissingError
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.errors import AlreadyExistsError, NotFoundError
from vworkspace.kube.rest.resources import ResourceType

MAX_NAME = 63


def workload_name(op: OperationView | JsonObj) -> str:
    """The workload's name (also for tests and tools holding the Operation as JSON)."""
    view = op if isinstance(op, OperationView) else OperationView(op)
    name = f"{view.namespace}--{view.name}"
    return name if len(name) <= MAX_NAME else view.uid


def target_namespace(target: ApplicationInstanceView) -> str:
    """``spec.release.namespace`` when set, else the instance's own namespace."""
    return target.release_namespace or target.namespace or ""


def params(op: OperationView) -> Mapping[str, Any]:
    return op.parameters


def runner_account(op: OperationView) -> str:
    """The ServiceAccount a Pod-running workload runs as: always the runner. A parameter naming
    another one is refused with the admission message (the reconciler refuses it earlier; this
    keeps an engine from ever writing such a Pod, whoever calls it)."""
    problem = service_account_problem(dict(op.spec))
    if problem:
        raise EngineError(problem)
    return RUNNER_SERVICE_ACCOUNT


def labels(op: OperationView) -> dict[str, str]:
    return {
        constants.LABEL_MANAGED_BY: constants.MANAGED_BY_OPERATOR,
        constants.LABEL_OPERATION: op.uid,
    }


def metadata(op: OperationView, *, name: str, namespace: str) -> JsonObj:
    meta: JsonObj = {"name": name, "namespace": namespace, "labels": labels(op)}
    if op.namespace == namespace:
        meta["ownerReferences"] = [
            {"apiVersion": op.api_version, "kind": op.kind, "name": op.name, "uid": op.uid}
        ]
    return meta


def uid_selector(op: OperationView) -> str:
    return f"{constants.LABEL_OPERATION}={op.uid}"


def owned_by(obj: JsonObj, op: OperationView) -> bool:
    return ObjectView(obj).labels.get(constants.LABEL_OPERATION) == op.uid


def foreign(resource: ResourceType, key: ObjectKey) -> EngineError:
    return EngineError(
        f"{resource.kind} {key.namespace}/{key.name} belongs to a different operation"
    )


async def create_if_absent(client: KubeApi, resource: ResourceType, obj: JsonObj) -> JsonObj:
    """Create ``obj``; if it exists already it must carry the same Operation label."""
    wanted = ObjectView(obj)
    uid = wanted.labels[constants.LABEL_OPERATION]
    try:
        return await client.create(resource, obj, field_manager=constants.FIELD_MANAGER_OPERATOR)
    except AlreadyExistsError:
        existing = await client.get(resource, wanted.key)
    if ObjectView(existing).labels.get(constants.LABEL_OPERATION) != uid:
        raise foreign(resource, wanted.key)
    return existing


def recorded_ref(op: OperationView) -> ObjectKey | None:
    ref = op.engine_ref
    if ref.get("name") and ref.get("namespace"):
        return ObjectKey(ref["namespace"], ref["name"])
    return None


async def locate(
    client: KubeApi,
    resource: ResourceType,
    op: OperationView,
    *,
    computed: ObjectKey | None,
) -> JsonObj:
    """The Operation's workload: by ``status.engineRef``, else by ``computed`` (the name derived
    from the target), else by the UID label."""
    key = recorded_ref(op) or computed
    if key is not None:
        try:
            obj = await client.get(resource, key)
        except NotFoundError:
            obj = None  # renamed or never created under this name: the label still finds it
        if obj is not None:
            if not owned_by(obj, op):
                raise foreign(resource, key)
            return obj
    namespace = key.namespace if key is not None else None
    listed = await client.list(resource, namespace, labelSelector=uid_selector(op))
    items = [ObjectView(i) for i in listed.get("items", [])]
    if len(items) > 1:
        names = ", ".join(sorted(f"{i.namespace}/{i.name}" for i in items))
        raise EngineError(
            f"ambiguous: several {resource.kind}s carry this operation's label: {names}"
        )
    if not items:
        where = f"{key.namespace}/{key.name}" if key is not None else "with this operation's label"
        raise WorkloadMissingError(f"{resource.kind} {where} not found")
    return dict(items[0].raw)


def ref_of(resource: ResourceType, obj: JsonObj) -> EngineRef:
    view = ObjectView(obj)
    return EngineRef(resource.kind, view.name, view.namespace or "")


SERVICE_ACCOUNTS = ResourceType("", "v1", "serviceaccounts", "ServiceAccount")


async def ensure_runner_account(client: KubeApi, namespace: str) -> None:
    """Create the runner ServiceAccount (no role bindings: it grants nothing) in ``namespace``
    if it is missing, so the workload's Pods can start (docs/operations.md)."""
    key = ObjectKey(namespace, RUNNER_SERVICE_ACCOUNT)
    try:
        await client.get(SERVICE_ACCOUNTS, key)
        return
    except NotFoundError:
        pass
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": RUNNER_SERVICE_ACCOUNT,
            "namespace": namespace,
            "labels": {constants.LABEL_MANAGED_BY: constants.MANAGED_BY_OPERATOR},
        },
    }
    with contextlib.suppress(AlreadyExistsError):
        await client.create(
            SERVICE_ACCOUNTS, account, field_manager=constants.FIELD_MANAGER_OPERATOR
        )


async def delete_labelled(
    client: KubeApi, resource: ResourceType, op: OperationView, *, namespace: str | None
) -> None:
    """Delete every ``resource`` with the Operation's UID label (in ``namespace``, or in all)."""
    listed = await client.list(resource, namespace, labelSelector=uid_selector(op))
    for item in listed.get("items", []):
        with contextlib.suppress(NotFoundError):
            await client.delete(resource, ObjectView(item).key)
