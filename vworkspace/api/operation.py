"""Operation (``ops.vworkspace.io/v1alpha1``): a day-2 action on an ApplicationInstance.

Backups and restores (Velero), upgrades (Helm), migrations, commands and runbooks. Wire-compatible
with the Go operator (docs/api.md, "Operation"). ``spec.parameters`` is free-form on the wire and
validated against the built-in template of the Operation's type.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping
from typing import Any

import attrs

from vworkspace.api import constants
from vworkspace.api.conditions import Condition
from vworkspace.api.meta import ObjectKey, ObjectMeta
from vworkspace.api.resource import AGE, PrinterColumn, ResourceInfo, Scope
from vworkspace.api.schema import FreeForm, field
from vworkspace.api.view import ObjectView, mapping, time_field

KIND = "Operation"


class OperationType(enum.StrEnum):
    BACKUP = "Backup"
    RESTORE = "Restore"
    UPGRADE = "Upgrade"
    MIGRATION = "Migration"
    RUN_COMMAND = "RunCommand"
    RUNBOOK = "Runbook"


class EngineName(enum.StrEnum):
    VELERO = "velero"
    WORKFLOW = "workflow"
    JOB = "job"
    HELM = "helm"
    VOLSYNC = "volsync"
    HELM_HOOK_JOB = "helmHookJob"


class Phase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})


class ConditionType(enum.StrEnum):
    ACCEPTED = "Accepted"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    BLOCKED = "Blocked"


class Reason(enum.StrEnum):
    """Condition reasons the operator emits (the control plane depends on these strings)."""

    ADMISSION_PASSED = "AdmissionPassed"
    VALIDATION_FAILED = "ValidationFailed"
    TARGET_NOT_READY = "TargetNotReady"
    AWAITING_APPROVAL = "AwaitingApproval"
    CONFLICTING_OPERATION = "ConflictingOperation"
    DEPENDENCY_MISSING = "DependencyMissing"
    UNBLOCKED = "Unblocked"
    ENGINE_STARTED = "EngineStarted"
    ENGINE_NOT_STARTED = "EngineNotStarted"
    ENGINE_COMPLETED = "EngineCompleted"
    ENGINE_FAILED = "EngineFailed"


@attrs.frozen
class TargetRef:
    """The ApplicationInstance the Operation acts on, in the Operation's own namespace."""

    api_version: str = field()
    """API version of the target; must be apps.vworkspace.io/v1alpha1."""
    kind: str = field()
    """Kind of the target; must be ApplicationInstance."""
    name: str = field()
    """Name of the target ApplicationInstance in the Operation's namespace."""


@attrs.frozen
class Approvals:
    """Approval of the Operation by the control plane."""

    required: bool | None = field(default=None)
    """Require a signed approval claim before the Operation may start."""
    claim: str | None = field(default=None)
    """The vws1 HMAC-signed approval claim issued by the control plane."""
    approved_by: str | None = field(default=None)
    """Who approved (informational)."""
    approved_at: str | None = field(default=None)
    """When it was approved (informational, free text)."""


@attrs.frozen
class OperationSpec:
    """What to do, to which ApplicationInstance, with which engine."""

    target_ref: TargetRef = field()
    """The ApplicationInstance to act on."""
    type: OperationType = field()
    """The kind of action. Immutable."""
    engine: EngineName = field()
    """The engine that carries the action out. Immutable."""
    parameters: FreeForm | None = field(default=None)
    """Engine parameters, validated against the built-in template of the type
    (e.g. backupName for a Restore, targetVersion for an Upgrade)."""
    approvals: Approvals | None = field(default=None)
    """Approval requirements and the approval claim."""


@attrs.frozen
class EngineRef:
    """The engine's workload for this Operation."""

    kind: str | None = field(default=None)
    """Kind of the workload (Job, Workflow) or the engine name (velero, helm)."""
    name: str | None = field(default=None)
    """Name of the workload."""
    namespace: str | None = field(default=None)
    """Namespace of the workload."""


@attrs.frozen
class LogsRef:
    """Where the Operation's logs can be found."""

    kind: str | None = field(default=None)
    """Kind of the object holding the logs."""
    name: str | None = field(default=None)
    """Its name."""
    namespace: str | None = field(default=None)
    """Its namespace."""
    url: str | None = field(default=None)
    """A URL to the logs."""


@attrs.frozen
class OperationStatus:
    """Observed state, written by the operator only."""

    phase: Phase | None = field(default=None)
    """Pending, Running, Succeeded, Failed or Cancelled. Terminal phases never change again."""
    started_at: datetime.datetime | None = field(default=None)
    """When the engine workload was created."""
    finished_at: datetime.datetime | None = field(default=None)
    """When the Operation reached a terminal phase."""
    engine_ref: EngineRef | None = field(default=None)
    """The engine workload."""
    conditions: tuple[Condition, ...] = field(default=(), list_map_keys=("type",))
    """Accepted, Blocked, Running, Succeeded, Failed and Cancelled conditions."""
    outputs: FreeForm | None = field(default=None)
    """Results of the engine, e.g. backupName or restoreName."""
    logs_ref: LogsRef | None = field(default=None)
    """Where to find logs."""


@attrs.frozen(kw_only=True)
class Operation:
    """A day-2 action on an ApplicationInstance."""

    api_version: str = constants.OPS_API_VERSION
    kind: str = KIND
    metadata: ObjectMeta
    spec: OperationSpec
    status: OperationStatus | None = None


RESOURCE = ResourceInfo(
    group=constants.OPS_GROUP,
    version=constants.VERSION,
    kind=KIND,
    plural="operations",
    singular="operation",
    scope=Scope.NAMESPACED,
    short_names=("op",),
    printer_columns=(
        PrinterColumn("Phase", "string", ".status.phase", "Phase of the Operation"),
        PrinterColumn("Type", "string", ".spec.type", "Type of action"),
        PrinterColumn("Engine", "string", ".spec.engine", "Engine carrying it out"),
        AGE,
    ),
    spec_type=OperationSpec,
    status_type=OperationStatus,
    description=(
        "Operation is a day-2 action (backup, restore, upgrade, migration, command, runbook) "
        "on an ApplicationInstance, carried out by an engine."
    ),
)


class OperationView(ObjectView):
    """A stored Operation, read-only (:mod:`vworkspace.api.view`)."""

    __slots__ = ()

    @property
    def target_name(self) -> str:
        """``spec.targetRef.name``, "" when unset."""
        return str(mapping(self.spec.get("targetRef")).get("name") or "")

    @property
    def target_key(self) -> ObjectKey | None:
        """The target ApplicationInstance (same namespace), None when no name is given."""
        name = self.target_name
        return ObjectKey(self.namespace, name) if name else None

    @property
    def type(self) -> str:
        return str(self.spec.get("type") or "")

    @property
    def engine(self) -> str:
        return str(self.spec.get("engine") or "")

    @property
    def parameters(self) -> Mapping[str, Any]:
        return mapping(self.spec.get("parameters"))

    @property
    def approvals(self) -> Mapping[str, Any]:
        return mapping(self.spec.get("approvals"))

    @property
    def approval_required(self) -> bool:
        """``spec.approvals.required`` is true (an engine may require it regardless)."""
        return self.approvals.get("required") is True

    @property
    def approval_claim(self) -> str:
        return str(self.approvals.get("claim") or "").strip()

    @property
    def phase(self) -> str:
        """``status.phase``, "" before the reconciler first wrote it."""
        return str(self.status.get("phase") or "")

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    @property
    def waiting(self) -> bool:
        """Not started and not finished (no phase yet, or Pending)."""
        return self.phase in ("", Phase.PENDING)

    @property
    def started_at(self) -> datetime.datetime | None:
        return time_field(self.status.get("startedAt"))

    @property
    def engine_ref(self) -> Mapping[str, Any]:
        """``status.engineRef`` (kind, name, namespace), empty when unset."""
        return mapping(self.status.get("engineRef"))
