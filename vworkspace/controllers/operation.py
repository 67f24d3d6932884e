"""Operation reconciler (docs/api.md, "Operation"): validate, wait for what blocks, run the engine.

Order of checks while the Operation has not started: spec shape, target exists, approval claim,
concurrency matrix (docs/api.md), engine registered. Any one failing is *Blocked*: phase Pending,
``Blocked=True`` and ``Accepted=False`` with the reason, looked at again in 30 s. Then the engine
materializes its workload (phase Running) and is polled every 5 s until it is done.

Differences from the Go reconciler (docs/api.md): **terminal phases never regress** (Go dropped a
Succeeded Operation back to Pending when its target disappeared); the concurrency matrix only
blocks Operations that have not started yet (a running Upgrade is never blocked by a newer one);
deleting an Operation cancels its engine objects.
"""

from __future__ import annotations

import contextlib
from typing import Any

from vworkspace.api.approvals import ClaimError, verify
from vworkspace.api.constants import FIELD_MANAGER_OPERATOR, OPERATION_FINALIZER
from vworkspace.api.converter import format_time
from vworkspace.api.meta import ObjectKey
from vworkspace.api.operation import ConditionType as Cond
from vworkspace.api.operation import Reason as Why
from vworkspace.api.validation import conflicting_operation, validate_operation
from vworkspace.controllers.conditions import FALSE, TRUE, Conditions
from vworkspace.controllers.reporting import NullReporter, StatusReporter
from vworkspace.engines.base import EngineError, EngineRegistry, EngineRequest, EngineStatus, State
from vworkspace.kube.client import KubeClient
from vworkspace.kube.clock import Clock
from vworkspace.kube.controller import Result
from vworkspace.kube.errors import ApiError, NotFoundError
from vworkspace.kube.events import NORMAL, WARNING, EventRecorder
from vworkspace.kube.informer import Informer
from vworkspace.kube.objects import ensure_finalizer, update_status
from vworkspace.kube.resources import OPERATIONS
from vworkspace.kube.store import INDEX_NAMESPACE

JsonObj = dict[str, Any]
TERMINAL = frozenset({"Succeeded", "Failed", "Cancelled"})
BLOCKED_RETRY = 30.0
POLL = 5.0


class _BlockedError(Exception):
    def __init__(self, reason: str, message: str, *, retry: float | None = BLOCKED_RETRY) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry = retry


class OperationReconciler:
    def __init__(
        self,
        *,
        client: KubeClient,
        operations: Informer,
        instances: Informer,
        engines: EngineRegistry,
        clock: Clock,
        approval_secret: str = "",
        recorder: EventRecorder | None = None,
        reporter: StatusReporter | None = None,
    ) -> None:
        self._client = client
        self._operations = operations
        self._instances = instances
        self._engines = engines
        self._clock = clock
        self._approval_secret = approval_secret
        self._recorder = recorder
        # Condition transitions for the control plane (the agent's batcher; none without agent).
        self._reporter = reporter if reporter is not None else NullReporter()

    async def reconcile(self, key: ObjectKey) -> Result:
        op = self._operations.store.get(key)
        if op is None:
            return Result.done()
        if op["metadata"].get("deletionTimestamp"):
            return await self._delete(op)
        op = await ensure_finalizer(
            self._client,
            OPERATIONS,
            op,
            OPERATION_FINALIZER,
            present=True,
            field_manager=FIELD_MANAGER_OPERATOR,
        )
        status = dict(op.get("status") or {})
        phase = status.get("phase") or ""
        if phase in TERMINAL:
            return Result.done()  # never regress, never re-run
        conds = Conditions(op, now=self._clock.now())
        target = self._target(op)
        try:
            engine, request = self._admit(op, target, started=phase == "Running")
        except _BlockedError as blocked:
            status["phase"] = "Pending"
            conds.set(Cond.BLOCKED, TRUE, blocked.reason, str(blocked))
            conds.set(Cond.ACCEPTED, FALSE, blocked.reason, str(blocked))
            await self._write(op, status, conds)
            return Result.after(blocked.retry) if blocked.retry else Result.done()
        if phase != "Running":
            return await self._start(op, engine, request, status, conds)
        return await self._progress(op, engine, request, status, conds)

    def _target(self, op: JsonObj) -> JsonObj | None:
        name = ((op.get("spec") or {}).get("targetRef") or {}).get("name") or ""
        return (
            self._instances.store.get(ObjectKey(op["metadata"]["namespace"], name))
            if name
            else None
        )

    def _admit(
        self, op: JsonObj, target: JsonObj | None, *, started: bool
    ) -> tuple[Any, EngineRequest]:
        problem = validate_operation(op)
        if problem:
            raise _BlockedError(Why.VALIDATION_FAILED, problem, retry=None)
        spec = op["spec"]
        if target is None:
            raise _BlockedError(
                Why.TARGET_NOT_READY, f"ApplicationInstance {spec['targetRef']['name']} not found"
            )
        if not started:
            self._check_approval(op)
            others = self._operations.store.by_index(INDEX_NAMESPACE, op["metadata"]["namespace"])
            other = conflicting_operation(op, others)
            if other is not None:
                raise _BlockedError(
                    Why.CONFLICTING_OPERATION,
                    f"{other['spec']['type']} Operation {other['metadata']['name']} "
                    "is in flight on the same target",
                )
        engine = self._engines.get(spec["engine"])
        if engine is None:
            raise _BlockedError(
                Why.DEPENDENCY_MISSING,
                f"engine {spec['engine']} is not available on this cluster",
                retry=60.0,
            )
        return engine, EngineRequest(target=target, operation=op)

    def _check_approval(self, op: JsonObj) -> None:
        spec = op["spec"]
        approvals = spec.get("approvals") or {}
        required = approvals.get("required") is True or (
            spec["type"] == "Restore" and spec["engine"] == "velero"
        )
        claim = (approvals.get("claim") or "").strip()
        if not required and not claim:
            return
        if not claim:
            raise _BlockedError(Why.AWAITING_APPROVAL, "approval claim required")
        try:
            verify(
                claim,
                secret=self._approval_secret,
                operation=op["metadata"]["name"],
                now=self._clock.now().timestamp(),
            )
        except ClaimError as err:
            raise _BlockedError(Why.AWAITING_APPROVAL, str(err)) from None

    async def _start(
        self, op: JsonObj, engine: Any, request: EngineRequest, status: JsonObj, conds: Conditions
    ) -> Result:
        try:
            ref = await engine.materialize(request)
        except (EngineError, ApiError) as err:
            if isinstance(err, ApiError) and (err.status >= 500 or err.status in (409, 429)):
                raise  # transient: retry with backoff
            return await self._finish(
                op,
                EngineStatus(State.FAILED, Why.ENGINE_FAILED, str(err)),
                status,
                conds,
                engine,
                request,
            )
        status.update(
            {
                "phase": "Running",
                "startedAt": format_time(self._clock.now()),
                "engineRef": {"kind": ref.kind, "name": ref.name, "namespace": ref.namespace},
            }
        )
        conds.set(Cond.ACCEPTED, TRUE, Why.ADMISSION_PASSED)
        conds.set(Cond.RUNNING, TRUE, Why.ENGINE_STARTED)
        conds.set(Cond.BLOCKED, FALSE, Why.UNBLOCKED)
        await self._write(op, status, conds)
        return Result.after(POLL)

    async def _progress(
        self, op: JsonObj, engine: Any, request: EngineRequest, status: JsonObj, conds: Conditions
    ) -> Result:
        result: EngineStatus = await engine.status(request)
        if result.done:
            return await self._finish(op, result, status, conds, engine, request)
        return Result.after(POLL)

    async def _finish(
        self,
        op: JsonObj,
        result: EngineStatus,
        status: JsonObj,
        conds: Conditions,
        engine: Any,
        request: EngineRequest,
    ) -> Result:
        succeeded = result.state == State.SUCCEEDED
        if not succeeded and status.get("phase") == "Running":
            with contextlib.suppress(ApiError):  # best effort: the Operation has failed either way
                await engine.cancel(request)
        status["phase"] = "Succeeded" if succeeded else "Failed"
        status["finishedAt"] = format_time(self._clock.now())
        if result.outputs:
            status["outputs"] = dict(result.outputs)
        if succeeded:
            conds.set(Cond.SUCCEEDED, TRUE, Why.ENGINE_COMPLETED, result.message)
        else:
            conds.set(Cond.FAILED, TRUE, Why.ENGINE_FAILED, result.message)
        if conds.get(Cond.RUNNING) is not None:
            conds.set(Cond.RUNNING, FALSE, Why.ENGINE_NOT_STARTED, "")
        await self._write(op, status, conds)
        return Result.done()

    async def _write(self, op: JsonObj, status: JsonObj, conds: Conditions) -> None:
        status["conditions"] = conds.wire()
        if status == (op.get("status") or {}):
            return
        key = ObjectKey(op["metadata"]["namespace"], op["metadata"]["name"])
        await update_status(
            self._client,
            OPERATIONS,
            key,
            lambda _: status,
            field_manager=FIELD_MANAGER_OPERATOR,
            current=op,
        )
        self._reporter.report(op, conds.transitions())
        if self._recorder is None:
            return
        for cond in conds.transitions():
            if cond.status != TRUE:
                continue
            if cond.type in (Cond.RUNNING, Cond.SUCCEEDED):
                await self._recorder.record(
                    op, type_=NORMAL, reason=cond.reason, note=cond.message or cond.type
                )
            elif cond.type in (Cond.FAILED, Cond.BLOCKED):
                await self._recorder.record(
                    op, type_=WARNING, reason=cond.reason, note=cond.message
                )

    async def _delete(self, op: JsonObj) -> Result:
        try:
            return await self._finalize(op)
        except NotFoundError:
            return Result.done()  # already gone

    async def _finalize(self, op: JsonObj) -> Result:
        if OPERATION_FINALIZER not in (op["metadata"].get("finalizers") or []):
            return Result.done()
        engine = self._engines.get((op.get("spec") or {}).get("engine", ""))
        target = self._target(op)
        if engine is not None and (op.get("status") or {}).get("phase") not in (
            None,
            "",
            "Pending",
        ):
            await engine.cancel(
                EngineRequest(
                    target=target or {"metadata": op["metadata"], "spec": {}}, operation=op
                )
            )
        fresh = await self._client.get(
            OPERATIONS, ObjectKey(op["metadata"]["namespace"], op["metadata"]["name"])
        )
        await ensure_finalizer(
            self._client,
            OPERATIONS,
            fresh,
            OPERATION_FINALIZER,
            present=False,
            field_manager=FIELD_MANAGER_OPERATOR,
        )
        return Result.done()
