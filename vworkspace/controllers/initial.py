"""The first step of every controller: own the object, and say it has been seen.

Until the kind's full reconcile lands, this adds the kind's finalizer and an initial
``Ready=Unknown`` condition (reason ``Reconciling``) carrying the observed generation; when the
object is being deleted it removes the finalizer again. Both steps are idempotent: a steady-state
reconcile makes no API call at all (it compares with the cached object first). The condition
goes through the one status commit (controllers/status.py) like every controller's.
"""

from __future__ import annotations

import structlog

from vworkspace.api.constants import FIELD_MANAGER_OPERATOR
from vworkspace.api.meta import ObjectKey
from vworkspace.api.view import ObjectView, view_or_none
from vworkspace.controllers.conditions import UNKNOWN
from vworkspace.controllers.status import Outcome, StatusCommit, StatusDraft
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.clock import Clock
from vworkspace.kube.events import NORMAL, EventRecorder
from vworkspace.kube.objects import ensure_finalizer
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.resources import ResourceType
from vworkspace.kube.runtime.controller import Result

READY = "Ready"
REASON = "Reconciling"
MESSAGE = "Seen by the operator; reconciliation pending"
_log = structlog.get_logger("vworkspace.controllers")


class InitialReconciler:
    def __init__(
        self,
        *,
        client: KubeApi,
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
        self._status = StatusCommit(
            client=client, resource=resource, field_manager=FIELD_MANAGER_OPERATOR
        )

    async def reconcile(self, key: ObjectKey) -> Result:
        obj = view_or_none(ObjectView, self._informer.store.get(key))
        if obj is None:
            return Result.done()  # gone; nothing of ours is left to clean up
        if obj.deleting:
            return await self._finalize(obj)
        had_finalizer = obj.has_finalizer(self._finalizer)
        obj = ObjectView(
            await ensure_finalizer(
                self._client,
                self._resource,
                obj.raw,
                self._finalizer,
                present=True,
                field_manager=FIELD_MANAGER_OPERATOR,
            )
        )
        status = StatusDraft(obj, now=self._clock.now())
        # Never overwrite real state: only an object without a Ready condition gets one.
        status.default_condition(READY, UNKNOWN, REASON, MESSAGE)
        accepted = obj

        async def announce() -> None:
            if self._recorder is not None and not had_finalizer:
                await self._recorder.record(
                    accepted.raw,
                    type_=NORMAL,
                    reason="Accepted",
                    note=f"{self._resource.kind} accepted by the operator",
                )

        return await self._status.commit(obj, Outcome(status=status, then=announce))

    async def _finalize(self, obj: ObjectView) -> Result:
        if obj.has_finalizer(self._finalizer):
            await ensure_finalizer(
                self._client,
                self._resource,
                obj.raw,
                self._finalizer,
                present=False,
                field_manager=FIELD_MANAGER_OPERATOR,
            )
            _log.info("finalizer removed", kind=self._resource.kind)
        return Result.done()
