"""Kubernetes-style status conditions and the helpers that set them.

Semantics follow upstream ``meta.SetStatusCondition``: ``lastTransitionTime`` moves only when
``status`` changes; reason, message and ``observedGeneration`` are updated in place. The Go
operator bumps the time whenever status, reason *or* message change; that makes "how long has
this been Ready" meaningless, so we deliberately differ (docs/api.md, deviation 1).

Reasons are checked against the CRD's pattern here, before a status write, because an invalid
reason makes the API server reject the whole status update.
"""

from __future__ import annotations

import datetime
import enum
import re

import attrs

from vworkspace.api.schema import field

TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
MAX_MESSAGE = 32768
_REASON_RE = re.compile(REASON_PATTERN)
_TYPE_RE = re.compile(TYPE_PATTERN)


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


@attrs.frozen
class Condition:
    """One aspect of the object's current state, in the standard Kubernetes shape."""

    type: str = field(max_length=316, pattern=TYPE_PATTERN)
    """Type of condition in CamelCase, e.g. Ready."""
    status: ConditionStatus = field()
    """Status of the condition: True, False or Unknown."""
    reason: str = field(min_length=1, max_length=1024, pattern=REASON_PATTERN)
    """A programmatic identifier (CamelCase) for the condition's last transition."""
    message: str = field(max_length=MAX_MESSAGE)
    """A human-readable message with details about the transition; may be empty."""
    last_transition_time: datetime.datetime = field()
    """When the condition last changed from one status to another."""
    observed_generation: int | None = field(default=None, minimum=0)
    """The metadata.generation the condition was set from."""


def validate_reason(reason: str) -> str:
    """Return ``reason`` if the CRD accepts it, else raise ValueError naming it."""
    if not reason or len(reason) > 1024 or not _REASON_RE.match(reason):
        raise ValueError(f"condition reason {reason!r} does not match {REASON_PATTERN}")
    return reason


def validate_type(type_: str) -> str:
    if len(type_) > 316 or not _TYPE_RE.match(type_):
        raise ValueError(f"condition type {type_!r} does not match the CRD pattern")
    return type_


def find(conditions: tuple[Condition, ...], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: tuple[Condition, ...], type_: str) -> bool:
    found = find(conditions, type_)
    return found is not None and found.status == ConditionStatus.TRUE


def set_condition(
    conditions: tuple[Condition, ...],
    *,
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    observed_generation: int | None,
    now: datetime.datetime,
) -> tuple[Condition, ...]:
    """Return ``conditions`` with ``type_`` set; other conditions and their order are kept.

    ``lastTransitionTime`` is ``now`` for a new condition or a status change, else unchanged.
    ``now`` is passed in (no hidden clock) and truncated to seconds, the precision Kubernetes
    stores, so a re-set compares equal to what was read back.
    """
    validate_type(type_)
    validate_reason(reason)
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    now = now.astimezone(datetime.UTC).replace(microsecond=0)
    existing = find(conditions, type_)
    transition = (
        now if existing is None or existing.status != status else existing.last_transition_time
    )
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=transition,
        observed_generation=observed_generation,
    )
    if existing is None:
        return (*conditions, updated)
    return tuple(updated if c.type == type_ else c for c in conditions)
