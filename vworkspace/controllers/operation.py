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
its workload (phase Running). A Running Operation follows its workload, polled every ``poll``
seconds (5 s; ``--operation-poll-interval``),
whatever happens to its target, approvals or other Operations: the engine locates the workload
by ``status.engineRef`` (back-filled when missing), the target or the UID label; a workload that
cannot be found is tolerated for ``missing_grace`` (60 s) after ``startedAt``, then the
Operation fails.

Every branch decides an :class:`~vworkspace.controllers.status.Outcome`; the status is written
in one place (controllers/status.py). The terminal verdict (phase, reason, outputs) is written
*before* the failed workload is cancelled (the Outcome's ``then`` step), and a terminal phase is
never looked at again, so a retried reconcile can never re-derive a different verdict from a
workload that the cancel removed. A status write that meets a 409 is rendered again onto the
fresh Operation, and dropped (the key looked at again) when that one is no longer in the phase
the decision was made in.

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
from vworkspace.api.operation import OperationView, Phase
from vworkspace.api.operation import Reason as Why
from vworkspace.api.validation import conflicting_operation, waiting
from vworkspace.api.view import view_or_none
from vworkspace.controllers.conditions import FALSE, TRUE
from vworkspace.controllers.reporting import StatusReporter
from vworkspace.controllers.status import Outcome, StatusCommit, StatusDraft
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
from vworkspace.kube.cache.predicates import spec_or_metadata_changed
from vworkspace.kube.cache.store import INDEX_NAMESPACE
from vworkspace.kube.clock import Clock
from vworkspace.kube.events import NORMAL, WARNING, EventRecorder
from vworkspace.kube.objects import ensure_finalizer
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.errors import ApiError, NotFoundError
from vworkspace.kube.rest.resources import APPLICATION_INSTANCES, NAMESPACES, OPERATIONS
from vworkspace.kube.runtime.controller import Controller, Result
from vworkspace.kube.runtime.host import ControllerHost, new_controller, new_queue

BLOCKED_RETRY = 30.0
POLL = 5.0
MISSING_GRACE = 60.0
NAME = "operation"  # the controller's name: its queue and `controller` metric label
_log = structlog.get_logger("vworkspace.controllers.operation")


def setup(
    host: ControllerHost,
    *,
    client: KubeApi,
    engines: EngineRegistry,
    approval_secret: str = "",
    poll: float = POLL,
    recorder: EventRecorder | None = None,
    reporter: StatusReporter | None = None,
) -> Controller:
    """The Operation controller: the Operations' informer (and the instances', shared, to find
    targets), queue, reconciler and watches: an Operation's own changes, and a finished
    Operation waking those held back behind it on the same target."""
    operations = host.informer(OPERATIONS)
    reconciler = OperationReconciler(
        client=client,
        operations=operations,
        instances=host.informer(APPLICATION_INSTANCES),
        engines=engines,
        clock=host.clock,
        approval_secret=approval_secret,
        recorder=recorder,
        reporter=reporter,
        poll=poll,
    )
    controller = new_controller(host, NAME, reconciler, new_queue(host, NAME))
    # Our own status writes are not a reason to reconcile again (kube/cache/predicates.py).
    controller.watch(operations, on_update=spec_or_metadata_changed)
    controller.watch_mapped(operations, waiting_on_same_target(operations))
    return controller


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


def _in_phase(phase: str) -> Callable[[JsonObj], bool]:
    """A draft's ``still_valid``: the fresh Operation read after a 409 is still in the phase
    the decision was made in (else it is looked at again, never overwritten)."""
    return lambda live: OperationView(live).phase == phase


class _BlockedError(Exception):
    def __init__(self, reason: str, message: str, *, retry: float | None = BLOCKED_RETRY) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry = retry


class OperationReconciler:
    def __init__(
        self,
        *,
        client: KubeApi,
        operations: Informer,
        instances: Informer,
        engines: EngineRegistry,
        clock: Clock,
        approval_secret: str = "",
        recorder: EventRecorder | None = None,
        reporter: StatusReporter | None = None,
        missing_grace: float = MISSING_GRACE,
        poll: float = POLL,
    ) -> None:
        """``poll``: how often a Running Operation's workload is looked at (tests shorten it)."""
        self._client = client
        self._operations = operations
        self._instances = instances
        self._engines = engines
        self._clock = clock
        self._approval_secret = approval_secret
        self._missing_grace = missing_grace
        self._poll = poll
        # Condition transitions go to the control plane (the agent's batcher; none without agent).
        self._status = StatusCommit(
            client=client,
            resource=OPERATIONS,
            field_manager=FIELD_MANAGER_OPERATOR,
            events=_event_for,
            recorder=recorder,
            reporter=reporter,
            on_written=operations.record_write,
        )

    async def reconcile(self, key: ObjectKey) -> Result:
        op = view_or_none(OperationView, self._operations.store.get(key))
        if op is None:
            return Result.done()
        if op.deleting:
            return await self._delete(op)
        op = OperationView(
            await ensure_finalizer(
                self._client,
                OPERATIONS,
                op.raw,
                OPERATION_FINALIZER,
                present=True,
                field_manager=FIELD_MANAGER_OPERATOR,
            )
        )
        self._operations.record_write(op.raw)
        if op.terminal:
            return Result.done()  # never regress, never re-run, never re-derive the verdict
        return await self._status.commit(op, await self._decide(op))

    async def _decide(self, op: OperationView) -> Outcome:
        status = StatusDraft(op, now=self._clock.now(), still_valid=_in_phase(op.phase))
        if op.phase == Phase.RUNNING:
            return await self._follow(op, status)
        try:
            engine, request = await self._admit(op)
        except _BlockedError as blocked:
            status.set("phase", Phase.PENDING)
            status.set_condition(Cond.BLOCKED, TRUE, blocked.reason, str(blocked))
            status.set_condition(Cond.ACCEPTED, FALSE, blocked.reason, str(blocked))
            retry = Result.after(blocked.retry) if blocked.retry else Result.done()
            return Outcome(retry, status)
        return await self._start(op, engine, request, status)

    # -- engines (the registry's API) ------------------------------------------------------

    def _engine(self, op: OperationView) -> OperationEngine | None:
        return self._engines.operation_engine(op.engine)

    def _request(
        self, op: OperationView, target: ApplicationInstanceView | None
    ) -> OperationRequest:
        return OperationRequest(operation=op, target=target)

    # -- admission -------------------------------------------------------------------------

    def _target(self, op: OperationView) -> ApplicationInstanceView | None:
        key = op.target_key
        return (
            None
            if key is None
            else view_or_none(ApplicationInstanceView, self._instances.store.get(key))
        )

    async def _admit(self, op: OperationView) -> tuple[OperationEngine, OperationRequest]:
        # The webhook's rules run here too: with the webhook off (the default) nothing else
        # stops, say, a RunCommand as ServiceAccount cluster-admin (issue 24, F9).
        problem = operation_spec_problem(op.raw)
        if problem:
            raise _BlockedError(Why.VALIDATION_FAILED, problem, retry=None)
        # The engine's own policy: a Velero Restore runs without its target, with approval.
        engine = self._engine(op)
        target = self._target(op)
        if target is not None:
            await self._check_cluster_rules(op, target)
        elif engine is not None and engine.runs_without_target(op):
            await self._check_targetless_rules(op)
        else:
            raise _BlockedError(
                Why.TARGET_NOT_READY, f"ApplicationInstance {op.target_name} not found"
            )
        self._check_approval(op, required=engine is not None and engine.approval_required(op))
        others = self._operations.store.by_index(INDEX_NAMESPACE, op.namespace or "")
        other = view_or_none(OperationView, conflicting_operation(op.raw, others))
        if other is not None:
            raise _BlockedError(
                Why.CONFLICTING_OPERATION,
                f"{other.type} Operation {other.name} is in flight on the same target",
            )
        if engine is None:
            raise _BlockedError(
                Why.DEPENDENCY_MISSING, f"engine {op.engine} is not available on this cluster"
            )
        return engine, self._request(op, target)

    async def _check_cluster_rules(
        self, op: OperationView, target: ApplicationInstanceView
    ) -> None:
        """The target's own validity (the engines place workloads in its release namespace),
        the Namespace's allow-list and the target's capability annotation. Blocked with
        ``ValidationFailed`` and looked at again in 30 s: the target and the Namespace change
        without the Operation changing."""
        problem = invalid_target_problem(op.raw, target.raw) or operation_cluster_problem(
            op.raw,
            namespace_annotations=await self._namespace_annotations(op.namespace or ""),
            target=target.raw,
        )
        if problem:
            raise _BlockedError(Why.VALIDATION_FAILED, problem)

    async def _check_targetless_rules(self, op: OperationView) -> None:
        """An Operation its engine runs without a target (a Velero Restore bringing back a
        deleted instance): the Namespace's allow-list, and no namespace mapping
        (:func:`targetless_problem`). Its approval claim, always required, is checked next."""
        problem = targetless_problem(op.raw) or allowed_type_problem(
            op.raw, await self._namespace_annotations(op.namespace or "")
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

    def _check_approval(self, op: OperationView, *, required: bool) -> None:
        """``required``: the engine requires approval whatever the spec says."""
        claim = op.approval_claim
        if not (op.approval_required or required) and not claim:
            return
        if not claim:
            raise _BlockedError(Why.AWAITING_APPROVAL, "approval claim required")
        try:
            verify(
                claim,
                secret=self._approval_secret,
                operation=op.name,
                now=self._clock.now().timestamp(),
            )
        except ClaimError as err:
            raise _BlockedError(Why.AWAITING_APPROVAL, str(err)) from None

    # -- running ---------------------------------------------------------------------------

    async def _start(
        self,
        op: OperationView,
        engine: OperationEngine,
        request: OperationRequest,
        status: StatusDraft,
    ) -> Outcome:
        try:
            ref = await engine.materialize(request)
        except (EngineError, ApiError, InvalidNameError) as err:  # a spec's name: issue 24, F1
            if isinstance(err, ApiError) and _transient(err):
                raise  # retry with backoff
            failed = Observation(State.FAILED, Why.ENGINE_FAILED, str(err))
            return self._finish(failed, status, engine, request)
        status.update(
            {
                "phase": Phase.RUNNING,
                "startedAt": format_time(self._clock.now()),
                "engineRef": ref.wire(),
            }
        )
        status.set_condition(Cond.ACCEPTED, TRUE, Why.ADMISSION_PASSED)
        status.set_condition(Cond.RUNNING, TRUE, Why.ENGINE_STARTED)
        status.set_condition(Cond.BLOCKED, FALSE, Why.UNBLOCKED)
        return Outcome(Result.after(self._poll), status)

    async def _follow(self, op: OperationView, status: StatusDraft) -> Outcome:
        """A Running Operation: ask the engine, whatever became of the target."""
        engine = self._engine(op)
        if engine is None:
            # Started by an earlier process whose cluster served the engine's CRDs: wait for
            # them (the engine watcher registers it) instead of failing a running workload.
            return Outcome(Result.after(BLOCKED_RETRY))
        request = self._request(op, self._target(op))
        if not status.get("startedAt"):
            status.set("startedAt", format_time(self._clock.now()))
        try:
            seen = await engine.observe(request)
        except WorkloadMissingError as err:
            if self._within_grace(status):
                return Outcome(Result.after(self._poll), status)
            missing = Observation(State.FAILED, Why.ENGINE_FAILED, f"workload missing: {err}")
            return self._finish(missing, status, engine, request)
        except (EngineError, InvalidNameError) as err:
            failed = Observation(State.FAILED, Why.ENGINE_FAILED, str(err))
            return self._finish(failed, status, engine, request)
        if seen.ref is not None and not status.get("engineRef"):
            status.set("engineRef", seen.ref.wire())
        if seen.done:
            return self._finish(seen, status, engine, request)
        return Outcome(Result.after(self._poll), status)

    def _within_grace(self, status: StatusDraft) -> bool:
        started = datetime.datetime.fromisoformat(status.get("startedAt"))
        return (self._clock.now() - started).total_seconds() < self._missing_grace

    def _finish(
        self,
        result: Observation,
        status: StatusDraft,
        engine: OperationEngine,
        request: OperationRequest,
    ) -> Outcome:
        """The verdict; then (for a failure) cancel the workload, best effort, unless the
        engine keeps it as the failure's record (``Observation.keep``)."""
        succeeded = result.state == State.SUCCEEDED
        started = status.get("phase") == Phase.RUNNING
        status.set("phase", Phase.SUCCEEDED if succeeded else Phase.FAILED)
        status.set("finishedAt", format_time(self._clock.now()))
        if result.outputs:
            status.set("outputs", dict(result.outputs))
        if succeeded:
            status.set_condition(Cond.SUCCEEDED, TRUE, Why.ENGINE_COMPLETED, result.message)
        else:
            status.set_condition(Cond.FAILED, TRUE, Why.ENGINE_FAILED, result.message)
        if status.condition(Cond.RUNNING) is not None:
            status.set_condition(Cond.RUNNING, FALSE, Why.ENGINE_NOT_STARTED, "")
        if succeeded or not started or result.keep:
            return Outcome(Result.done(), status)

        async def cancel() -> None:
            try:
                await engine.cancel(request)
            except (ApiError, EngineError, InvalidNameError) as err:
                # The verdict is stored; a leftover workload is cleaned up when the Operation is
                # deleted (or by the Job's TTL), so this is worth a log line, not a retry.
                _log.warning("cancelling a failed operation's workload failed", error=str(err))

        return Outcome(Result.done(), status, then=cancel)

    # -- deletion --------------------------------------------------------------------------

    async def _delete(self, op: OperationView) -> Result:
        try:
            return await self._finalize(op)
        except NotFoundError:
            return Result.done()  # already gone

    async def _finalize(self, op: OperationView) -> Result:
        if not op.has_finalizer(OPERATION_FINALIZER):
            return Result.done()
        engine = self._engine(op)
        if engine is not None and op.phase not in ("", Phase.PENDING):
            await engine.cancel(self._request(op, self._target(op)))
        fresh = await self._client.get(OPERATIONS, op.key)
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

    def mapper(obj: JsonObj) -> list[ObjectKey]:
        op = OperationView(obj)
        if not op.terminal:
            return []
        return [
            other.key
            for other in map(
                OperationView, operations.store.by_index(INDEX_NAMESPACE, op.namespace or "")
            )
            if waiting(other.raw) and other.target_name == op.target_name
        ]

    return mapper
