"""The first step of every controller: own the object, and say it has been seen.

Until the kind's full reconcile lands, this adds the kind's finalizer and an initial
``Ready=Unknown`` condition (reason ``Reconciling``) carrying the observed generation; when the
object is being deleted it removes the finalizer again. Both steps are idempotent: a steady-state
reconcile makes no API call at all (it compares with the cached object first).
"""

from __future__ import annotations

from typing import Any

import structlog

from vworkspace.api.conditions import Condition, ConditionStatus, set_condition
from vworkspace.api.constants import FIELD_MANAGER_OPERATOR
from vworkspace.api.converter import from_dict, to_dict
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.clock import Clock
from vworkspace.kube.events import NORMAL, EventRecorder
from vworkspace.kube.objects import ensure_finalizer, update_status
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.resources import ResourceType
from vworkspace.kube.runtime.controller import Result

READY = "Ready"
REASON = "Reconciling"
MESSAGE = "Seen by the operator; reconciliation pending"
_log = structlog.get_logger("vworkspace.controllers")


def initial_status(obj: JsonObj, *, now: Any) -> JsonObj:
    """The object's status with ``Ready=Unknown`` set (kept if already Unknown)."""
    status = dict(obj.get("status") or {})
    conditions = tuple(from_dict(Condition, c) for c in status.get("conditions") or [])
    ready = next((c for c in conditions if c.type == READY), None)
    if ready is not None:
        return status  # a condition is already there; never overwrite real state
    updated = set_condition(
        conditions,
        type_=READY,
        status=ConditionStatus.UNKNOWN,
        reason=REASON,
        message=MESSAGE,
        observed_generation=obj["metadata"].get("generation"),
        now=now,
    )
    status["conditions"] = [to_dict(c) for c in updated]
    return status


class InitialReconciler:
    def __init__(
        self,
        *,
        client: KubeClient,
        informer: Informer,
        resource: ResourceType,
        finalizer: str,
        clock: Clock,
        recorder: EventRecorder | None = None,
    ) -> None:
        self._client = client
        self._informer = informer
        self._resource = resource
        self._finalizer = finalizer
        self._clock = clock
        self._recorder = recorder

    async def reconcile(self, key: ObjectKey) -> Result:
        obj = self._informer.store.get(key)
        if obj is None:
            return Result.done()  # gone; nothing of ours is left to clean up
        if obj["metadata"].get("deletionTimestamp"):
            return await self._finalize(obj)
        had_finalizer = self._finalizer in (obj["metadata"].get("finalizers") or [])
        obj = await ensure_finalizer(
            self._client,
            self._resource,
            obj,
            self._finalizer,
            present=True,
            field_manager=FIELD_MANAGER_OPERATOR,
        )
        written = await update_status(
            self._client,
            self._resource,
            key,
            lambda current: initial_status(current, now=self._clock.now()),
            field_manager=FIELD_MANAGER_OPERATOR,
            current=obj,
        )
        if self._recorder is not None and not had_finalizer:
            await self._recorder.record(
                written or obj,
                type_=NORMAL,
                reason="Accepted",
                note=f"{self._resource.kind} accepted by the operator",
            )
        return Result.done()

    async def _finalize(self, obj: JsonObj) -> Result:
        if self._finalizer in (obj["metadata"].get("finalizers") or []):
            await ensure_finalizer(
                self._client,
                self._resource,
                obj,
                self._finalizer,
                present=False,
                field_manager=FIELD_MANAGER_OPERATOR,
            )
            _log.info("finalizer removed", kind=self._resource.kind)
        return Result.done()
