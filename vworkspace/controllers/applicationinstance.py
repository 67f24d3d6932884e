"""ApplicationInstance reconciler (docs/api.md, "Reconcile"): the release from the spec, status
from the engine's observation.

Reads the instance from the informer cache, has the ``flux`` engine write and observe the
release (its HelmRelease informer enqueues the owner on every Flux status change, so there is no
30 s polling), maps the engine-neutral observation to conditions and writes status exactly once
per reconcile (controllers/status.py). No Flux kind is known here.

Differences from the Go reconciler (docs/api.md): an invalid spec is Blocked with the field
named and not retried until the spec changes; a failed release is ``Ready=False`` (Go:
``Unknown``); values from Secrets go to the HelmRelease by reference; deletion is checked before
the finalizer is added.
"""

from __future__ import annotations

from typing import Any

import structlog

from vworkspace.api.applicationinstance import ConditionType as Cond
from vworkspace.api.applicationinstance import Reason as Why
from vworkspace.api.conditions import Condition
from vworkspace.api.constants import APPLICATION_INSTANCE_FINALIZER, FIELD_MANAGER_OPERATOR
from vworkspace.api.converter import format_time
from vworkspace.api.meta import ObjectKey
from vworkspace.api.validation import validate_application_instance
from vworkspace.controllers.conditions import FALSE, TRUE, UNKNOWN, Conditions
from vworkspace.controllers.reporting import StatusReporter
from vworkspace.controllers.status import StatusWriter
from vworkspace.engines.base import EngineRegistry, EngineRequest, Observation, State
from vworkspace.kube.client import KubeClient
from vworkspace.kube.clock import Clock
from vworkspace.kube.controller import Result
from vworkspace.kube.errors import ApiError, NotFoundError
from vworkspace.kube.events import NORMAL, WARNING, EventRecorder
from vworkspace.kube.informer import Informer
from vworkspace.kube.objects import ensure_finalizer
from vworkspace.kube.resources import APPLICATION_INSTANCES

JsonObj = dict[str, Any]
_log = structlog.get_logger("vworkspace.controllers.applicationinstance")
ENGINE = "flux"  # the engine that renders a managed instance


def apply_observation(conds: Conditions, seen: Observation) -> None:
    """The engine's view of the release as the instance's Ready, Reconciling and Degraded."""
    conds.set(Cond.BLOCKED, FALSE, Why.UNBLOCKED)
    detail = f"{seen.reason}: {seen.message}"
    if seen.state == State.SUCCEEDED:
        conds.set(Cond.READY, TRUE, Why.HELM_RELEASE_READY, seen.message)
    elif seen.failed:
        conds.set(Cond.READY, FALSE, Why.HELM_RELEASE_FAILED, detail)
    else:
        conds.set(Cond.READY, UNKNOWN, seen.reason or Why.RECONCILING, seen.message)
    if seen.progressing:
        conds.set(Cond.RECONCILING, TRUE, seen.reason or Why.HELM_RELEASE_INSTALLING, seen.message)
    else:
        conds.set(Cond.RECONCILING, FALSE, Why.STABLE)
    if seen.failed:
        conds.set(
            Cond.DEGRADED, TRUE, "Stalled" if seen.stalled else Why.HELM_RELEASE_DEGRADED, detail
        )
    else:
        conds.set(Cond.DEGRADED, FALSE, Why.RECOVERED)


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
        conds = Conditions(ai, now=self._clock.now())
        status = dict(ai.get("status") or {})
        status["observedGeneration"] = ai["metadata"].get("generation")
        status["lastReconcileTime"] = format_time(self._clock.now())
        problem = validate_application_instance(ai)
        result = Result.done()
        if problem:
            conds.set(Cond.BLOCKED, TRUE, Why.VALIDATION_FAILED, problem)
            conds.set(Cond.READY, FALSE, Why.VALIDATION_FAILED, problem)
            conds.set(Cond.RECONCILING, FALSE, Why.STABLE)
        elif ai["spec"].get("mode") == "placeholder":
            self._placeholder(status, conds)
        else:
            result = await self._managed(ai, status, conds)
        await self._write(ai, status, conds)
        return result

    def _placeholder(self, status: JsonObj, conds: Conditions) -> None:
        for field in ("helmReleaseRef", "lastAppliedChart", "endpoints"):
            status.pop(field, None)
        conds.set(Cond.RECONCILING, FALSE, Why.STABLE)
        conds.set(Cond.DEGRADED, FALSE, Why.RECOVERED)
        conds.set(Cond.READY, TRUE, Why.PLACEHOLDER, "placeholder instance: no Helm release")
        conds.set(Cond.BLOCKED, FALSE, Why.UNBLOCKED)

    async def _managed(self, ai: JsonObj, status: JsonObj, conds: Conditions) -> Result:
        engine = self._engines.get(ENGINE)
        if engine is None:
            message = "the Flux CRDs (helm.toolkit.fluxcd.io/v2 HelmRelease) are not installed"
            conds.set(Cond.BLOCKED, TRUE, Why.MISSING_DEPENDENCIES, message)
            conds.set(Cond.READY, FALSE, Why.MISSING_DEPENDENCIES, message)
            return Result.after(60)
        request = EngineRequest(target=ai)
        try:
            ref = await engine.materialize(request)
        except ApiError as err:
            conds.set(
                Cond.READY,
                FALSE,
                Why.HELM_RELEASE_FAILED,
                f"writing the Flux objects failed: {err.message}",
            )
            conds.set(Cond.RECONCILING, FALSE, Why.STABLE)
            conds.set(Cond.BLOCKED, FALSE, Why.UNBLOCKED)
            return Result.after(30)
        status["helmReleaseRef"] = {"name": ref.name, "namespace": ref.namespace}
        status["lastAppliedChart"] = dict(ai["spec"]["chart"])
        status.pop("endpoints", None)
        apply_observation(conds, await engine.observe(request))
        return Result.done()  # the engine's informer brings us back when the release moves

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
        engine = self._engines.get(ENGINE)
        if not placeholder and engine is not None and (ai["spec"].get("release") or {}).get("name"):
            await engine.cancel(EngineRequest(target=ai))
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
        _log.info("flux objects removed; finalizer released")
        return Result.done()
