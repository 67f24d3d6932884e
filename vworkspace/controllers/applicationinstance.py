"""ApplicationInstance reconciler (docs/api.md, "Reconcile"): the release from the spec, status
from the engine's observation.

Reads the instance from the informer cache, asks the registry for the engine that claims it
(engines/registry.py: ``flux`` for Helm charts, ``seaweed`` for native SeaweedFS), has it write
and observe the workload (the
engine's informer enqueues the owner on every status change), takes the conditions and status
fields the engine derives from its observation, and returns them as an Outcome that the status
commit writes exactly once per reconcile (controllers/status.py); the Outcome's ``then`` step
settles the engine's supplemental events (controllers/supplements.py). No foreign kind is known
here.

Differences from the Go reconciler (docs/api.md): an invalid spec is Blocked with the field
named and not retried until the spec changes; a failed release is ``Ready=False`` (Go:
``Unknown``); values from Secrets go to the HelmRelease by reference; deletion is checked before
the finalizer is added.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.applicationinstance import ConditionType as Cond
from vworkspace.api.applicationinstance import Reason as Why
from vworkspace.api.conditions import Condition, ConditionStatus
from vworkspace.api.constants import APPLICATION_INSTANCE_FINALIZER, FIELD_MANAGER_OPERATOR
from vworkspace.api.converter import format_time
from vworkspace.api.meta import ObjectKey
from vworkspace.api.names import InvalidNameError
from vworkspace.api.validation import validate_application_instance
from vworkspace.api.view import view_or_none
from vworkspace.controllers.conditions import FALSE, TRUE
from vworkspace.controllers.reporting import NullReporter, StatusReporter
from vworkspace.controllers.status import Outcome, StatusCommit, StatusDraft
from vworkspace.controllers.supplements import Supplements
from vworkspace.engines.base import (
    EngineBlockedError,
    EngineError,
    InstanceEngine,
    InstanceRequest,
    InstanceStatus,
    StillPresentError,
)
from vworkspace.engines.registry import EngineRegistry
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.cache.predicates import spec_or_metadata_changed
from vworkspace.kube.clock import Clock
from vworkspace.kube.events import NORMAL, WARNING, EventRecorder
from vworkspace.kube.objects import ensure_finalizer
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.errors import ApiError, NotFoundError
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES
from vworkspace.kube.runtime.controller import Controller, Result
from vworkspace.kube.runtime.host import ControllerHost, new_controller, new_queue

NAME = "applicationinstance"  # the controller's name: its queue and `controller` metric label
_log = structlog.get_logger("vworkspace.controllers.applicationinstance")


def setup(
    host: ControllerHost,
    *,
    client: KubeApi,
    engines: EngineRegistry,
    recorder: EventRecorder | None = None,
    reporter: StatusReporter | None = None,
) -> Controller:
    """The ApplicationInstance controller: its informer, queue, reconciler and watch. The
    engines' own objects (HelmRelease, Seaweed, ...) are watched by the engines' setup, which
    enqueues into the returned controller's queue."""
    informer = host.informer(APPLICATION_INSTANCES)
    queue = new_queue(host, NAME)
    reconciler = ApplicationInstanceReconciler(
        client=client,
        informer=informer,
        engines=engines,
        clock=host.clock,
        recorder=recorder,
        reporter=reporter,
        wake=queue.add,  # a delivered supplemental event brings its instance back
    )
    controller = new_controller(host, NAME, reconciler, queue)
    # Our own status writes are not a reason to reconcile again (kube/cache/predicates.py).
    controller.watch(informer, on_update=spec_or_metadata_changed)
    return controller


def apply_view(status: StatusDraft, view: InstanceStatus) -> None:
    """The engine's view of the instance: its conditions and status fields (None removes)."""
    for cond in view.conditions:
        status.set_condition(cond.type, ConditionStatus(cond.status), cond.reason, cond.message)
    for field, value in view.fields.items():
        if value is None:
            status.remove(field)
        else:
            status.set(field, value)


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
        client: KubeApi,
        informer: Informer,
        engines: EngineRegistry,
        clock: Clock,
        recorder: EventRecorder | None = None,
        reporter: StatusReporter | None = None,
        wake: Callable[[ObjectKey], None] = lambda key: None,
    ) -> None:
        """``wake`` enqueues an instance (the controller's queue), for supplemental events
        delivered to the control plane (controllers/supplements.py)."""
        self._client = client
        self._informer = informer
        self._engines = engines
        self._clock = clock
        # Condition transitions go to the control plane (the agent's batcher; none without agent).
        self._status = StatusCommit(
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
            wake=wake,
        )

    async def reconcile(self, key: ObjectKey) -> Result:
        ai = view_or_none(ApplicationInstanceView, self._informer.store.get(key))
        if ai is None:
            return Result.done()
        if ai.deleting:
            return await self._delete(ai)
        ai = ApplicationInstanceView(
            await ensure_finalizer(
                self._client,
                APPLICATION_INSTANCES,
                ai.raw,
                APPLICATION_INSTANCE_FINALIZER,
                present=True,
                field_manager=FIELD_MANAGER_OPERATOR,
            )
        )
        self._informer.record_write(ai.raw)  # the next reconcile must not add it a second time
        return await self._status.commit(ai, await self._decide(ai))

    async def _decide(self, ai: ApplicationInstanceView) -> Outcome:
        status = StatusDraft(ai, now=self._clock.now())
        status.set("observedGeneration", ai.generation)
        status.set("lastReconcileTime", format_time(self._clock.now()))
        problem = validate_application_instance(ai.raw)
        if problem:
            status.set_condition(Cond.BLOCKED, TRUE, Why.VALIDATION_FAILED, problem)
            status.set_condition(Cond.READY, FALSE, Why.VALIDATION_FAILED, problem)
            status.set_condition(Cond.RECONCILING, FALSE, Why.STABLE)
            return Outcome(Result.done(), status)
        if ai.placeholder:
            self._placeholder(status)
            return Outcome(Result.done(), status)
        result, view = await self._managed(ai, status)
        if view is None or not view.supplements:
            return Outcome(result, status)
        supplements = view.supplements

        async def settle() -> None:
            await self.supplements.settle(ai.raw, supplements)

        return Outcome(result, status, then=settle)

    def _placeholder(self, status: StatusDraft) -> None:
        status.remove("helmReleaseRef", "lastAppliedChart", "endpoints")
        status.set_condition(Cond.RECONCILING, FALSE, Why.STABLE)
        status.set_condition(Cond.DEGRADED, FALSE, Why.RECOVERED)
        status.set_condition(
            Cond.READY, TRUE, Why.PLACEHOLDER, "placeholder instance: no Helm release"
        )
        status.set_condition(Cond.BLOCKED, FALSE, Why.UNBLOCKED)

    # -- engines (the registry's API) ------------------------------------------------------

    def _engine(self, ai: ApplicationInstanceView) -> InstanceEngine | None:
        return self._engines.instance_engine(ai)

    def _request(self, ai: ApplicationInstanceView) -> InstanceRequest:
        return InstanceRequest(instance=ai)

    async def _managed(
        self, ai: ApplicationInstanceView, status: StatusDraft
    ) -> tuple[Result, InstanceStatus | None]:
        engine = self._engine(ai)
        if engine is None:
            missing = self._engines.instance_engine_missing(ai)
            status.set_condition(Cond.BLOCKED, TRUE, Why.MISSING_DEPENDENCIES, missing)
            status.set_condition(Cond.READY, FALSE, Why.MISSING_DEPENDENCIES, missing)
            return Result.after(60), None
        request = self._request(ai)
        try:
            await engine.materialize(request)
        except EngineBlockedError as err:
            status.set_condition(Cond.BLOCKED, TRUE, err.reason, err.message)
            status.set_condition(Cond.READY, FALSE, err.reason, err.message)
            return Result.after(30), None  # and the engine's watch, whichever comes first
        except (EngineError, ApiError, InvalidNameError) as err:
            # InvalidNameError: a name in the spec that cannot be a path segment (issue 24, F1).
            message = err.message if isinstance(err, ApiError) else str(err)
            view = engine.instance_failure(ai, message)
            apply_view(status, view)
            return _after(view), None
        view = await engine.instance_status(ai, await engine.observe(request))
        apply_view(status, view)
        return _after(view), view

    # -- deletion --------------------------------------------------------------------------

    async def _delete(self, ai: ApplicationInstanceView) -> Result:
        if not ai.has_finalizer(APPLICATION_INSTANCE_FINALIZER):
            return Result.done()
        status = StatusDraft(ai, now=self._clock.now())
        why = Why.DELETING if ai.placeholder else Why.UNINSTALLING
        status.set_condition(Cond.DELETING, TRUE, why, "")

        async def release() -> Result:
            return await self._release(ai)

        try:
            # The last status of an object being deleted is stored, not reported.
            return await self._status.commit(ai, Outcome(status=status, report=False, then=release))
        except NotFoundError:
            return Result.done()  # already gone (e.g. its namespace was deleted meanwhile)

    async def _release(self, ai: ApplicationInstanceView) -> Result:
        """Remove the workload, then the finalizer."""
        # No engine: its kinds are not served, so none of its objects can exist (and what it
        # made is owned by the instance, for the garbage collector): never wait forever.
        engine = self._engine(ai)
        if not ai.placeholder and engine is not None and ai.release_name:
            try:
                await engine.cancel(self._request(ai))
            except StillPresentError as err:
                _log.info("waiting for the workload to go", reason=str(err))
                return Result.after(15)
        self.supplements.forget(ai.key)
        fresh = await self._client.get(APPLICATION_INSTANCES, ai.key)
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
