"""Conditions of one object during one reconcile: set them, then write status once.

Wraps the raw ``status.conditions`` list with :func:`vworkspace.api.conditions.set_condition`
(Kubernetes transition-time semantics, observedGeneration, reason validation) and remembers which
conditions changed, for Events and for the status reporter.
"""

from __future__ import annotations

import datetime

from vworkspace.api.conditions import Condition, ConditionStatus, set_condition
from vworkspace.api.converter import from_dict, to_dict
from vworkspace.api.jsontypes import JsonObj

TRUE, FALSE, UNKNOWN = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN


class Conditions:
    def __init__(self, obj: JsonObj, *, now: datetime.datetime) -> None:
        self._generation = (obj.get("metadata") or {}).get("generation")
        self._now = now
        raw = ((obj.get("status") or {}).get("conditions")) or []
        self.before: tuple[Condition, ...] = tuple(from_dict(Condition, c) for c in raw)
        self.items = self.before

    def set(self, type_: str, status: ConditionStatus, reason: str, message: str = "") -> None:
        self.items = set_condition(
            self.items,
            type_=type_,
            status=status,
            reason=reason,
            message=message,
            observed_generation=self._generation,
            now=self._now,
        )

    def get(self, type_: str) -> Condition | None:
        return next((c for c in self.items if c.type == type_), None)

    def wire(self) -> list[JsonObj]:
        return [to_dict(c) for c in self.items]

    def transitions(self) -> list[Condition]:
        """Conditions that are new or whose status changed in this reconcile."""
        old = {c.type: c for c in self.before}
        return [c for c in self.items if c.type not in old or old[c.type].status != c.status]

    def changes(self) -> list[Condition]:
        """Transitions, and conditions whose reason or message changed at the same status: what
        the control plane hears about (its audit view keys on reasons; docs/pull-mode.md).
        Kubernetes Events stay with :meth:`transitions`."""
        old = {c.type: c for c in self.before}
        return [
            c
            for c in self.items
            if c.type not in old
            or (old[c.type].status, old[c.type].reason, old[c.type].message)
            != (c.status, c.reason, c.message)
        ]
