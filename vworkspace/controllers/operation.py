"""Operation reconciler (docs/api.md, "Operation"): admit, start the engine, follow it to the end.

Admission gates the *start* only. While the Operation has not started: the validating webhook's
rules that keep an Operation inside what it may do (docs/webhooks.md, "Without the webhook"),
target exists (a Velero Restore may run without it: bringing a deleted instance back is its
purpose; then it may not map namespaces), approval claim, concurrency matrix (docs/api.md,
"Concurrency matrix"), engine registered. Any of them failing is *Blocked*: phase Pending,
``Blocked=True`` and ``Accepted=False`` with the reason, and a Warning Event. A rule on the
Operation alone (ServiceAccount, type, template, parameter schema: ``ValidationFailed`` with the
webhook's message) is looked at again only when the spec changes; the others (a missing or
invalid target, the Namespace's allow-list, the target's capability annotation, approval,
conflicts) in 30 s, as they change without the Operation changing. Then the engine materializes
its workload (phase Running). A Running Operation follows its workload, polled every 5 s,
whatever happens to its target, approvals or other Operations: the engine locates the workload
by ``status.engineRef`` (back-filled when missing), the target or the UID label; a workload that
cannot be found is tolerated for ``missing_grace`` (60 s) after ``startedAt``, then the
Operation fails.

The terminal verdict (phase, reason, outputs) is written *before* the failed workload is
cancelled, and a terminal phase is never looked at again, so a retried reconcile can never
re-derive a different verdict from a workload that the cancel removed.

Differences from the Go reconciler (docs/api.md): terminal phases never regress (Go dropped a
Succeeded Operation back to Pending when its target disappeared); a Running Operation is never
sent back to Pending (Go re-ran the target and conflict checks on every reconcile); deleting an
Operation cancels its engine objects.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import structlog

from vworkspace.api.admission import (
    allowed_type_problem,
    invalid_target_problem,
    operation_cluster_problem,
    operation_spec_problem,
    targetless_problem,
)
from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.approvals import ClaimError, verify
from vworkspace.api.conditions import Condition
from vworkspace.api.constants import FIELD_MANAGER_OPERATOR, OPERATION_FINALIZER
from vworkspace.api.converter import format_time
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.api.names import InvalidNameError
from vworkspace.api.operation import ConditionType as Cond
from vworkspace.api.operation import OperationView
from vworkspace.api.operation import Reason as Why
from vworkspace.api.validation import conflicting_operation, waiting
from vworkspace.controllers.conditions import FALSE, TRUE, Conditions
from vworkspace.controllers.reporting import StatusReporter
from vworkspace.controllers.status import StatusWriter
from vworkspace.engines.base import (
    EngineError,
    Observation,
    OperationEngine,
    OperationRequest,
    State,
    WorkloadMissingError,
)
from vworkspace.engines.registry import EngineRegistry
from vworkspace.kube.cache.informer import Informer
from vworkspace.kube.cache.store import INDEX_NAMESPACE
from vworkspace.kube.clock import Clock
from vworkspace.kube.events import NORMAL, WARNING, EventRecorder
from vworkspace.kube.objects import ensure_finalizer
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.errors import ApiError, NotFoundError
from vworkspace.kube.rest.resources import NAMESPACES, OPERATIONS
from vworkspace.kube.runtime.controller import Result

TERMINAL = frozenset({"Succeeded", "Failed", "Cancelled"})
BLOCKED_RETRY = 30.0
POLL = 5.0
MISSING_GRACE = 60.0
_log = structlog.get_logger("vworkspace.controllers.operation")


def _event_for(cond: Condition) -> tuple[str, str, str] | None:
    if cond.status != TRUE:
        return None
    if cond.type in (Cond.RUNNING, Cond.SUCCEEDED):
        return NORMAL, cond.reason, cond.message or cond.type
    if cond.type in (Cond.FAILED, Cond.BLOCKED):
        return WARNING, cond.reason, cond.message
    return None


def _transient(err: ApiError) -> bool:
    return err.status >= 500 or err.status in (409, 429)


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
        missing_grace: float = MISSING_GRACE,
    ) -> None:
        self._client = client
        self._operations = operations
        self._instances = instances
        self._engines = engines
        self._clock = clock
        self._approval_secret = approval_secret
        self._missing_grace = missing_grace
        # Condition transitions go to the control plane (the agent's batcher; none without agent).
        self._status = StatusWriter(
            client=client,
            resource=OPERATIONS,
            field_manager=FIELD_MANAGER_OPERATOR,
            events=_event_for,
            recorder=recorder,
            reporter=reporter,
            on_written=operations.record_write,
        )

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
        self._operations.record_write(op)
        status = dict(op.get("status") or {})
        phase = status.get("phase") or ""
        if phase in TERMINAL:
            return Result.done()  # never regress, never re-run, never re-derive the verdict
        conds = Conditions(op, now=self._clock.now())
        if phase == "Running":
            return await self._follow(op, status, conds)
        try:
            engine, request = await self._admit(op)
        except _BlockedError as blocked:
            status["phase"] = "Pending"
            conds.set(Cond.BLOCKED, TRUE, blocked.reason, str(blocked))
            conds.set(Cond.ACCEPTED, FALSE, blocked.reason, str(blocked))
            await self._status.write(op, status, conds)
            return Result.after(blocked.retry) if blocked.retry else Result.done()
        return await self._start(op, engine, request, status, conds)

    def _target(self, op: JsonObj) -> JsonObj | None:
        name = ((op.get("spec") or {}).get("targetRef") or {}).get("name") or ""
        return (
            self._instances.store.get(ObjectKey(op["metadata"]["namespace"], name))
            if name
            else None
        )

    async def _admit(self, op: JsonObj) -> tuple[OperationEngine, OperationRequest]:
        # The webhook's rules run here too: with the webhook off (the default) nothing else
        # stops, say, a RunCommand as ServiceAccount cluster-admin (issue 24, F9).
        problem = operation_spec_problem(op)
        if problem:
            raise _BlockedError(Why.VALIDATION_FAILED, problem, retry=None)
        spec = op["spec"]
        view = OperationView(op)
        # The engine's own policy (a Velero Restore runs without its target, with approval).
        engine = self._engines.operation_engine(spec["engine"])
        target = self._target(op)
        if target is not None:
            await self._check_cluster_rules(op, target)
        elif engine is not None and engine.runs_without_target(view):
            await self._check_targetless_rules(op)
        else:
            raise _BlockedError(
                Why.TARGET_NOT_READY, f"ApplicationInstance {spec['targetRef']['name']} not found"
            )
        self._check_approval(op, engine is not None and engine.approval_required(view))
        others = self._operations.store.by_index(INDEX_NAMESPACE, op["metadata"]["namespace"])
        other = conflicting_operation(op, others)
        if other is not None:
            raise _BlockedError(
                Why.CONFLICTING_OPERATION,
                f"{other['spec']['type']} Operation {other['metadata']['name']} "
                "is in flight on the same target",
            )
        if engine is None:
            raise _BlockedError(
                Why.DEPENDENCY_MISSING,
                f"engine {spec['engine']} is not available on this cluster",
            )
        return engine, OperationRequest(operation=view, target=_view(target))

    async def _check_cluster_rules(self, op: JsonObj, target: JsonObj) -> None:
        """The target's own validity (the engines place workloads in its release namespace),
        the Namespace's allow-list and the target's capability annotation. Blocked with
        ``ValidationFailed`` and looked at again in 30 s: the target and the Namespace change
        without the Operation changing."""
        problem = invalid_target_problem(op, target) or operation_cluster_problem(
            op,
            namespace_annotations=await self._namespace_annotations(op["metadata"]["namespace"]),
            target=target,
        )
        if problem:
            raise _BlockedError(Why.VALIDATION_FAILED, problem)

    async def _check_targetless_rules(self, op: JsonObj) -> None:
        """A Velero Restore whose target does not exist (bringing back a deleted instance): the
        Namespace's allow-list, and no namespace mapping (:func:`targetless_problem`). Its
        approval claim, always required, is checked next."""
        problem = targetless_problem(op) or allowed_type_problem(
            op, await self._namespace_annotations(op["metadata"]["namespace"])
        )
        if problem:
            raise _BlockedError(Why.VALIDATION_FAILED, problem)

    async def _namespace_annotations(self, namespace: str) -> dict[str, str]:
        """Read live (no Namespace informer: one small GET per admission of an Operation that
        has not started, as the webhook does)."""
        try:
            ns = await self._client.get(NAMESPACES, ObjectKey(None, namespace))
        except NotFoundError:
            return {}
        return dict((ns.get("metadata") or {}).get("annotations") or {})

    def _check_approval(self, op: JsonObj, engine_requires: bool) -> None:
        spec = op["spec"]
        approvals = spec.get("approvals") or {}
        required = approvals.get("required") is True or engine_requires
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
        self,
        op: JsonObj,
        engine: OperationEngine,
        request: OperationRequest,
        status: JsonObj,
        conds: Conditions,
    ) -> Result:
        try:
            ref = await engine.materialize(request)
        except (EngineError, ApiError, InvalidNameError) as err:  # a spec's name: issue 24, F1
            if isinstance(err, ApiError) and _transient(err):
                raise  # retry with backoff
            failed = Observation(State.FAILED, Why.ENGINE_FAILED, str(err))
            return await self._finish(op, failed, status, conds, engine, request)
        status.update(
            {
                "phase": "Running",
                "startedAt": format_time(self._clock.now()),
                "engineRef": ref.wire(),
            }
        )
        conds.set(Cond.ACCEPTED, TRUE, Why.ADMISSION_PASSED)
        conds.set(Cond.RUNNING, TRUE, Why.ENGINE_STARTED)
        conds.set(Cond.BLOCKED, FALSE, Why.UNBLOCKED)
        await self._status.write(op, status, conds)
        return Result.after(POLL)

    async def _follow(self, op: JsonObj, status: JsonObj, conds: Conditions) -> Result:
        """A Running Operation: ask the engine, whatever became of the target."""
        engine = self._engines.operation_engine(op["spec"]["engine"])
        if engine is None:
            # Started by an earlier process whose cluster served the engine's CRDs: wait for
            # them (the engine watcher registers it) instead of failing a running workload.
            return Result.after(BLOCKED_RETRY)
        request = OperationRequest(operation=OperationView(op), target=_view(self._target(op)))
        if not status.get("startedAt"):
            status["startedAt"] = format_time(self._clock.now())
        try:
            seen = await engine.observe(request)
        except WorkloadMissingError as err:
            if self._within_grace(status):
                await self._status.write(op, status, conds)
                return Result.after(POLL)
            missing = Observation(State.FAILED, Why.ENGINE_FAILED, f"workload missing: {err}")
            return await self._finish(op, missing, status, conds, engine, request)
        except (EngineError, InvalidNameError) as err:
            failed = Observation(State.FAILED, Why.ENGINE_FAILED, str(err))
            return await self._finish(op, failed, status, conds, engine, request)
        if seen.ref is not None and not status.get("engineRef"):
            status["engineRef"] = seen.ref.wire()
        if seen.done:
            return await self._finish(op, seen, status, conds, engine, request)
        await self._status.write(op, status, conds)
        return Result.after(POLL)

    def _within_grace(self, status: JsonObj) -> bool:
        started = datetime.datetime.fromisoformat(status["startedAt"])
        return (self._clock.now() - started).total_seconds() < self._missing_grace

    async def _finish(
        self,
        op: JsonObj,
        result: Observation,
        status: JsonObj,
        conds: Conditions,
        engine: OperationEngine,
        request: OperationRequest,
    ) -> Result:
        """Record the verdict, then (for a failure) cancel the workload, best effort, unless the
        engine keeps it as the failure's record (``Observation.keep``)."""
        succeeded = result.state == State.SUCCEEDED
        started = status.get("phase") == "Running"
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
        await self._status.write(op, status, conds)
        if not succeeded and started and not result.keep:
            try:
                await engine.cancel(request)
            except (ApiError, EngineError, InvalidNameError) as err:
                # The verdict is stored; a leftover workload is cleaned up when the Operation is
                # deleted (or by the Job's TTL), so this is worth a log line, not a retry.
                _log.warning("cancelling a failed operation's workload failed", error=str(err))
        return Result.done()

    async def _delete(self, op: JsonObj) -> Result:
        try:
            return await self._finalize(op)
        except NotFoundError:
            return Result.done()  # already gone

    async def _finalize(self, op: JsonObj) -> Result:
        if OPERATION_FINALIZER not in (op["metadata"].get("finalizers") or []):
            return Result.done()
        engine = self._engines.operation_engine((op.get("spec") or {}).get("engine", ""))
        if engine is not None and (op.get("status") or {}).get("phase") not in (
            None,
            "",
            "Pending",
        ):
            await engine.cancel(
                OperationRequest(operation=OperationView(op), target=_view(self._target(op)))
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


def waiting_on_same_target(operations: Informer) -> Callable[[JsonObj], list[ObjectKey]]:
    """For ``Controller.watch_mapped``: when an Operation has finished, the Operations on the
    same target that have not started, so one held back by it (``ConflictingOperation``) starts
    now rather than at its next 30 s look."""

    def mapper(op: JsonObj) -> list[ObjectKey]:
        if (op.get("status") or {}).get("phase") not in TERMINAL:
            return []
        namespace = op["metadata"].get("namespace")
        target = ((op.get("spec") or {}).get("targetRef") or {}).get("name")
        return [
            ObjectKey(namespace, other["metadata"]["name"])
            for other in operations.store.by_index(INDEX_NAMESPACE, namespace)
            if waiting(other)
            and ((other.get("spec") or {}).get("targetRef") or {}).get("name") == target
        ]

    return mapper


def _view(target: JsonObj | None) -> ApplicationInstanceView | None:
    return None if target is None else ApplicationInstanceView(target)
