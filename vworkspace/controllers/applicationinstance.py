"""ApplicationInstance reconciler (docs/api.md, "Reconcile"): Flux objects from the spec, status
rolled up from the HelmRelease.

Reads the instance and its HelmRelease from informer caches (a label-selected HelmRelease
informer enqueues the owner on every Flux status change, so there is no 30 s polling), writes
Flux objects through the ``flux`` engine, and writes status exactly once per reconcile.

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
from vworkspace.api.constants import APPLICATION_INSTANCE_FINALIZER, FIELD_MANAGER_OPERATOR
from vworkspace.api.converter import format_time
from vworkspace.api.meta import ObjectKey
from vworkspace.api.validation import validate_application_instance
from vworkspace.controllers.conditions import FALSE, TRUE, UNKNOWN, Conditions
from vworkspace.controllers.reporting import NullReporter, StatusReporter
from vworkspace.engines.base import EngineRegistry, EngineRequest
from vworkspace.engines.flux import FluxEngine, rollup
from vworkspace.kube.client import KubeClient
from vworkspace.kube.clock import Clock
from vworkspace.kube.controller import Result
from vworkspace.kube.errors import ApiError, NotFoundError
from vworkspace.kube.events import NORMAL, WARNING, EventRecorder
from vworkspace.kube.informer import Informer
from vworkspace.kube.objects import ensure_finalizer, update_status
from vworkspace.kube.resources import APPLICATION_INSTANCES

JsonObj = dict[str, Any]
_log = structlog.get_logger("vworkspace.controllers.applicationinstance")


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
        self._recorder = recorder
        # Condition transitions for the control plane (the agent's batcher; none without agent).
        self._reporter = reporter if reporter is not None else NullReporter()

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
        engine = self._engines.get("flux")
        if not isinstance(engine, FluxEngine):
            message = "the Flux CRDs (helm.toolkit.fluxcd.io/v2 HelmRelease) are not installed"
            conds.set(Cond.BLOCKED, TRUE, Why.MISSING_DEPENDENCIES, message)
            conds.set(Cond.READY, FALSE, Why.MISSING_DEPENDENCIES, message)
            return Result.after(60)
        try:
            await engine.materialize(EngineRequest(target=ai))
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
        release = ai["spec"]["release"]
        status["helmReleaseRef"] = {
            "name": release["name"],
            "namespace": ai["metadata"]["namespace"],
        }
        status["lastAppliedChart"] = dict(ai["spec"]["chart"])
        status.pop("endpoints", None)
        state = rollup(engine.helm_release(ai))
        detail = f"{state.reason}: {state.message}"
        conds.set(Cond.BLOCKED, FALSE, Why.UNBLOCKED)
        if state.ready:
            conds.set(Cond.READY, TRUE, Why.HELM_RELEASE_READY, state.message)
        elif state.failed or state.degraded:
            conds.set(
                Cond.READY, FALSE, Why.HELM_RELEASE_FAILED, f"{state.reason}: {state.message}"
            )
        else:
            conds.set(
                Cond.READY,
                UNKNOWN,
                state.reason if state.reason != "HelmReleaseReady" else Why.RECONCILING,
                state.message,
            )
        if state.reconciling:
            conds.set(
                Cond.RECONCILING, TRUE, state.reason or Why.HELM_RELEASE_INSTALLING, state.message
            )
        else:
            conds.set(Cond.RECONCILING, FALSE, Why.STABLE)
        if state.degraded:
            reason = "Stalled" if state.failed else Why.HELM_RELEASE_DEGRADED
            conds.set(Cond.DEGRADED, TRUE, reason, detail)
        else:
            conds.set(Cond.DEGRADED, FALSE, Why.RECOVERED)
        return Result.done()  # the HelmRelease informer brings us back when Flux moves

    async def _write(self, ai: JsonObj, status: JsonObj, conds: Conditions) -> None:
        status["conditions"] = conds.wire()
        previous = ai.get("status") or {}
        # lastReconcileTime alone changing is no reason to write (it would wake every watcher).
        if {**previous, "lastReconcileTime": None} == {**status, "lastReconcileTime": None}:
            return
        await self._store_status(ai, status)
        self._reporter.report(ai, conds.transitions())
        await self._events(ai, conds)

    async def _store_status(self, ai: JsonObj, status: JsonObj) -> None:
        key = ObjectKey(ai["metadata"]["namespace"], ai["metadata"]["name"])
        await update_status(
            self._client,
            APPLICATION_INSTANCES,
            key,
            lambda _: status,
            field_manager=FIELD_MANAGER_OPERATOR,
            current=ai,
        )

    async def _events(self, ai: JsonObj, conds: Conditions) -> None:
        if self._recorder is None:
            return
        for cond in conds.transitions():
            if cond.type == Cond.READY and cond.status == TRUE:
                await self._recorder.record(
                    ai, type_=NORMAL, reason=cond.reason, note=cond.message or "Ready"
                )
            elif (cond.type == Cond.READY and cond.status == FALSE) or (
                cond.type == Cond.BLOCKED and cond.status == TRUE
            ):
                await self._recorder.record(
                    ai, type_=WARNING, reason=cond.reason, note=cond.message
                )

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
        status = {**(ai.get("status") or {}), "conditions": conds.wire()}
        if status != ai.get("status"):
            await self._store_status(ai, status)
        engine = self._engines.get("flux")
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
