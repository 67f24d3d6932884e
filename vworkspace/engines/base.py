"""The engine interface: materialize, observe, cancel, with typed requests.

An engine turns its request into foreign objects and reads their progress back as an
:class:`Observation`, which is engine-neutral: the ApplicationInstance and Operation reconcilers
map it to their own conditions and never look at the foreign kinds (docs/api.md). Errors are
typed so reconcilers know what to do without knowing the engine:

* :class:`EngineError`: retrying will not help (bad parameters, a workload that belongs to another
  Operation, several candidate workloads); the Operation fails with the message.
* :class:`WorkloadMissingError`: the workload is not there (yet, or any more); the Operation
  reconciler tolerates that for a grace period after the start, then fails.
* :class:`~vworkspace.kube.rest.errors.ApiError`: transient API trouble, retried with backoff.
* :class:`EngineBlockedError`: something outside the engine must change first (e.g. a legacy
  HelmRelease still owns the release); the instance is Blocked with the error's reason.
* :class:`StillPresentError`: from ``cancel``: deletion was asked for but the objects are still
  there (finalizers of a foreign operator); ask again later.

Engines that render an ApplicationInstance (``flux``, ``seaweed``) also implement
:class:`InstanceEngine`: they turn their :class:`Observation` into the instance's conditions and
status fields, and may ask for *supplements*: extra events delivered to the control plane once,
recorded in an annotation after delivery (docs/pull-mode.md, "Supplemental events").
Engines that carry out Operations implement :class:`OperationEngine`, with the engine's own
policy (:meth:`OperationEngine.approval_required`, :meth:`OperationEngine.runs_without_target`).

What an engine needs and watches is declared beside it (engines/descriptor.py); the registry
the controllers ask is engines/registry.py.
"""

from __future__ import annotations

import enum
from typing import Any, Protocol

import attrs

from vworkspace.api.applicationinstance import ApplicationInstanceView
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.operation import OperationView


class State(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@attrs.frozen
class EngineRef:
    kind: str
    name: str
    namespace: str

    def wire(self) -> JsonObj:
        return {"kind": self.kind, "name": self.name, "namespace": self.namespace}


@attrs.frozen
class Observation:
    """Where an engine's workload stands, in terms every reconciler understands.

    ``state``: succeeded and failed are terminal for an Operation; for a long-lived workload (an
    instance's release) failed means "not working now". ``stalled``: failed in a way that will
    not recover without a change (e.g. Flux gave up retrying). ``progressing``: the engine is
    still working on the latest change (a release being installed); a failed state may still be
    progressing for long-lived workloads. ``ref``: the workload found, when the engine located
    one (used to back-fill ``status.engineRef``). ``keep``: a failed workload that has ended by
    itself and is the record of the failure (a Velero Restore, whose logs its controller deletes
    with it): the Operation reconciler does not cancel it after the verdict.
    """

    state: State
    reason: str = ""
    message: str = ""
    outputs: dict[str, str] = attrs.field(factory=dict)
    stalled: bool = False
    progressing: bool = False
    ref: EngineRef | None = None
    keep: bool = False

    @property
    def done(self) -> bool:
        return self.state in (State.SUCCEEDED, State.FAILED)

    @property
    def failed(self) -> bool:
        return self.state == State.FAILED


class EngineError(Exception):
    """Materializing or reading the engine's objects failed in a way retrying will not fix."""


class WorkloadMissingError(EngineError):
    """The workload cannot be found; the Operation reconciler applies the grace period."""


class EngineBlockedError(EngineError):
    """The workload cannot be written until something outside the engine changes."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class StillPresentError(EngineError):
    """``cancel`` asked for deletion, but the engine's objects are still there."""


@attrs.frozen
class ConditionView:
    type: str
    status: str  # "True" / "False" / "Unknown"
    reason: str
    message: str = ""


@attrs.frozen
class Supplement:
    """One extra event for the control plane, delivered once per ``value``.

    ``annotation`` on the instance records the ``value`` delivered last; it is written only
    after the control plane accepted the event. ``event`` is None for "nothing to report now;
    remove the annotation" (a failure report is re-armed when the failure ends). The event may
    carry secret material: it is never logged (``repr=False``)."""

    annotation: str
    value: str
    event: JsonObj | None = attrs.field(default=None, repr=False)


@attrs.frozen
class InstanceStatus:
    """An instance's status as its engine sees it: conditions, status fields (None removes the
    field), supplements and when to look again (seconds, None: wait for a watch event)."""

    conditions: tuple[ConditionView, ...]
    fields: dict[str, Any] = attrs.field(factory=dict)
    supplements: tuple[Supplement, ...] = ()
    requeue_after: float | None = None


# -- the interface: instance engines render ApplicationInstances (flux, seaweed); operation
# engines carry out Operations (job, helmHookJob, helm, velero, workflow). Requests carry typed
# views (vworkspace.api.view), never raw dicts.


@attrs.frozen
class InstanceRequest:
    """What an instance engine acts for: the instance."""

    instance: ApplicationInstanceView


@attrs.frozen
class OperationRequest:
    """What an operation engine acts for: the Operation, and its target when it exists (None
    when the target was deleted while the Operation runs, or for an Operation that runs without
    one, see :meth:`OperationEngine.runs_without_target`)."""

    operation: OperationView
    target: ApplicationInstanceView | None = None


class InstanceEngine(Protocol):
    """An engine that renders ApplicationInstances (flux, seaweed)."""

    name: str

    def claims(self, ai: ApplicationInstanceView) -> bool:
        """Does this engine render ``ai``? (Exactly one registered engine claims a managed
        instance: seaweed the ``seaweedfs`` catalog entry, flux every other.)"""
        ...

    async def materialize(self, request: InstanceRequest) -> EngineRef:
        """Create (or bring up to date) the instance's objects; idempotent. Raises
        :class:`EngineBlockedError` (Blocked), :class:`EngineError` or ``ApiError``."""
        ...

    async def observe(self, request: InstanceRequest) -> Observation:
        """Read the objects' progress (from the informer caches)."""
        ...

    async def cancel(self, request: InstanceRequest) -> None:
        """Delete what :meth:`materialize` made; absent objects are not an error. Raises
        :class:`StillPresentError` while they are still going."""
        ...

    async def instance_status(
        self, ai: ApplicationInstanceView, seen: Observation
    ) -> InstanceStatus:
        """The instance's conditions and status fields for ``seen``."""
        ...

    def instance_failure(self, ai: ApplicationInstanceView, message: str) -> InstanceStatus:
        """The status when :meth:`materialize` failed with ``message`` (retried later)."""
        ...


class OperationEngine(Protocol):
    """An engine that carries out Operations, with its own policy hooks."""

    name: str

    async def materialize(self, request: OperationRequest) -> EngineRef:
        """Create the Operation's workload; idempotent."""
        ...

    async def observe(self, request: OperationRequest) -> Observation:
        """Read the workload's progress. Raises :class:`EngineError` (fail),
        :class:`WorkloadMissingError` (grace) or ``ApiError`` (retry)."""
        ...

    async def cancel(self, request: OperationRequest) -> None:
        """Delete what :meth:`materialize` made; absent objects are not an error."""
        ...

    def approval_required(self, op: OperationView) -> bool:
        """Does ``op`` need an approval claim whatever its spec says (a Velero Restore)?"""
        ...

    def runs_without_target(self, op: OperationView) -> bool:
        """May ``op`` start while its target does not exist (a Velero Restore brings a deleted
        instance back)?"""
        ...
