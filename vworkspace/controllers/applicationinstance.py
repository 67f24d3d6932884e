"""ApplicationInstance reconciler (docs/api.md, "Reconcile"): the release from the spec, status
from the engine's observation.

Reads the instance from the informer cache, asks the registry for the engine that claims it
(engines/registry.py: ``flux`` for Helm charts, ``seaweed`` for native SeaweedFS), has it
write and observe the workload (the engine's informer enqueues the owner on every status
change), takes the conditions and status fields the engine derives from its observation,
writes status exactly once per reconcile (controllers/status.py) and then settles the
engine's supplemental events (controllers/supplements.py). No foreign kind is known here.

Differences from the Go reconciler (docs/api.md): an invalid spec is Blocked with the field
named and not retried until the spec changes; a failed release is ``Ready=False`` (Go:
``Unknown``); values from Secrets go to the HelmRelease by reference; deletion is checked before
the finalizer is added.
"""

from __future__ import annotations

import structlog

from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.applicationinstance import ConditionType as Cond
from vworkspace.api.applicationinstance import Reason as Why
from vworkspace.api.conditions import Condition, ConditionStatus
from vworkspace.api.constants import APPLICATION_INSTANCE_FINALIZER, FIELD_MANAGER_OPERATOR
from vworkspace.api.converter import format_time
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.api.names import InvalidNameError
from vworkspace.api.validation import validate_application_instance
from vworkspace.controllers.conditions import FALSE, TRUE, Conditions
from vworkspace.controllers.reporting import NullReporter, StatusReporter
from vworkspace.controllers.status import StatusWriter
from vworkspace.controllers.supplements import Supplements
from vworkspace.engines.base import (
    EngineBlockedError,
    EngineError,
    InstanceRequest,
    InstanceStatus,
    StillPresentError,
)
from vworkspace.engines.registry import EngineRegistry
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.clock import Clock
from vworkspace.kube.events import NORMAL, WARNING, EventRecorder
from vworkspace.kube.objects import ensure_finalizer
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.errors import ApiError, NotFoundError
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES
from vworkspace.kube.runtime.controller import Result

_log = structlog.get_logger("vworkspace.controllers.applicationinstance")


def apply_view(conds: Conditions, status: JsonObj, view: InstanceStatus) -> None:
    """The engine's view of the instance: its conditions and status fields (None removes)."""
    for cond in view.conditions:
        conds.set(cond.type, ConditionStatus(cond.status), cond.reason, cond.message)
    for field, value in view.fields.items():
        if value is None:
            status.pop(field, None)
        else:
            status[field] = value


def _event_for(cond: Condition) -> tuple[str, str, str] | None:
    if cond.type == Cond.READY and cond.status == TRUE:
        return NORMAL, cond.reason, cond.message or "Ready"
    if (cond.type == Cond.READY and cond.status == FALSE) or (
        cond.type == Cond.BLOCKED and cond.status == TRUE
    ):
        return WARNING, cond.reason, cond.message
    return None


class ApplicationInstanceReconciler:
    def __init__(
        self,
        *,
        client: KubeClient,
        informer: Informer,
        engines: EngineRegistry,
        clock: Clock,
        recorder: EventRecorder | None = None,
        reporter: StatusReporter | None = None,
    ) -> None:
        self._client = client
        self._informer = informer
        self._engines = engines
        self._clock = clock
        # Condition transitions go to the control plane (the agent's batcher; none without agent).
        self._status = StatusWriter(
            client=client,
            resource=APPLICATION_INSTANCES,
            field_manager=FIELD_MANAGER_OPERATOR,
            events=_event_for,
            recorder=recorder,
            reporter=reporter,
            # lastReconcileTime alone changing is no reason to write (it would wake every watcher).
            volatile=("lastReconcileTime",),
            on_written=informer.record_write,
        )
        self.supplements = Supplements(
            client=client,
            resource=APPLICATION_INSTANCES,
            reporter=reporter if reporter is not None else NullReporter(),
            field_manager=FIELD_MANAGER_OPERATOR,
        )

    async def reconcile(self, key: ObjectKey) -> Result:
        ai = self._informer.store.get(key)
        if ai is None:
            return Result.done()
        if ai["metadata"].get("deletionTimestamp"):
            return await self._delete(ai)
        ai = await ensure_finalizer(
            self._client,
            APPLICATION_INSTANCES,
            ai,
            APPLICATION_INSTANCE_FINALIZER,
            present=True,
            field_manager=FIELD_MANAGER_OPERATOR,
        )
        self._informer.record_write(ai)  # the next reconcile must not add it a second time
        conds = Conditions(ai, now=self._clock.now())
        status = dict(ai.get("status") or {})
        status["observedGeneration"] = ai["metadata"].get("generation")
        status["lastReconcileTime"] = format_time(self._clock.now())
        problem = validate_application_instance(ai)
        result = Result.done()
        view: InstanceStatus | None = None
        if problem:
            conds.set(Cond.BLOCKED, TRUE, Why.VALIDATION_FAILED, problem)
            conds.set(Cond.READY, FALSE, Why.VALIDATION_FAILED, problem)
            conds.set(Cond.RECONCILING, FALSE, Why.STABLE)
        elif ai["spec"].get("mode") == "placeholder":
            self._placeholder(status, conds)
        else:
            result, view = await self._managed(ai, status, conds)
        await self._write(ai, status, conds)
        if view is not None and view.supplements:
            await self.supplements.settle(ai, view.supplements)
        return result

    def _placeholder(self, status: JsonObj, conds: Conditions) -> None:
        for field in ("helmReleaseRef", "lastAppliedChart", "endpoints"):
            status.pop(field, None)
        conds.set(Cond.RECONCILING, FALSE, Why.STABLE)
        conds.set(Cond.DEGRADED, FALSE, Why.RECOVERED)
        conds.set(Cond.READY, TRUE, Why.PLACEHOLDER, "placeholder instance: no Helm release")
        conds.set(Cond.BLOCKED, FALSE, Why.UNBLOCKED)

    async def _managed(
        self, ai: JsonObj, status: JsonObj, conds: Conditions
    ) -> tuple[Result, InstanceStatus | None]:
        view_ = ApplicationInstanceView(ai)
        engine = self._engines.instance_engine(view_)
        if engine is None:
            missing = self._engines.instance_engine_missing(view_)
            conds.set(Cond.BLOCKED, TRUE, Why.MISSING_DEPENDENCIES, missing)
            conds.set(Cond.READY, FALSE, Why.MISSING_DEPENDENCIES, missing)
            return Result.after(60), None
        request = InstanceRequest(instance=view_)
        try:
            await engine.materialize(request)
        except EngineBlockedError as err:
            conds.set(Cond.BLOCKED, TRUE, err.reason, err.message)
            conds.set(Cond.READY, FALSE, err.reason, err.message)
            return Result.after(30), None  # and the engine's watch, whichever comes first
        except (EngineError, ApiError, InvalidNameError) as err:
            # InvalidNameError: a name in the spec that cannot be a path segment (issue 24, F1).
            message = err.message if isinstance(err, ApiError) else str(err)
            view = engine.instance_failure(view_, message)
            apply_view(conds, status, view)
            return _after(view), None
        view = await engine.instance_status(view_, await engine.observe(request))
        apply_view(conds, status, view)
        return _after(view), view

    async def _write(self, ai: JsonObj, status: JsonObj, conds: Conditions) -> None:
        await self._status.write(ai, status, conds)

    async def _delete(self, ai: JsonObj) -> Result:
        try:
            return await self._finalize(ai)
        except NotFoundError:
            return Result.done()  # already gone (e.g. its namespace was deleted meanwhile)

    async def _finalize(self, ai: JsonObj) -> Result:
        if APPLICATION_INSTANCE_FINALIZER not in (ai["metadata"].get("finalizers") or []):
            return Result.done()
        placeholder = ai["spec"].get("mode") == "placeholder"
        conds = Conditions(ai, now=self._clock.now())
        conds.set(Cond.DELETING, TRUE, Why.DELETING if placeholder else Why.UNINSTALLING, "")
        await self._status.write(ai, dict(ai.get("status") or {}), conds, report=False)
        # No engine: its kinds are not served, so none of its objects can exist (and what it
        # made is owned by the instance, for the garbage collector): never wait forever.
        engine = self._engines.instance_engine(ApplicationInstanceView(ai))
        if not placeholder and engine is not None and (ai["spec"].get("release") or {}).get("name"):
            try:
                await engine.cancel(InstanceRequest(instance=ApplicationInstanceView(ai)))
            except StillPresentError as err:
                _log.info("waiting for the workload to go", reason=str(err))
                return Result.after(15)
        self.supplements.forget(ObjectKey(ai["metadata"]["namespace"], ai["metadata"]["name"]))
        fresh = await self._client.get(
            APPLICATION_INSTANCES, ObjectKey(ai["metadata"]["namespace"], ai["metadata"]["name"])
        )
        await ensure_finalizer(
            self._client,
            APPLICATION_INSTANCES,
            fresh,
            APPLICATION_INSTANCE_FINALIZER,
            present=False,
            field_manager=FIELD_MANAGER_OPERATOR,
        )
        _log.info("workload removed; finalizer released")
        return Result.done()


def _after(view: InstanceStatus) -> Result:
    return Result.done() if view.requeue_after is None else Result.after(view.requeue_after)
