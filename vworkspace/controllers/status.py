"""The one status commit of the reconcilers: a reconcile decides, this step writes.

A reconcile returns an :class:`Outcome`: the status it wants as a :class:`StatusDraft` (field
edits and condition settings, recorded in order), the requeue it wants, and optionally a step
to run once the status is stored (``then``: cancel a failed workload, settle supplemental
events, release a finalizer). :class:`StatusCommit` is the only place a controller's status is
written; per commit it

1. renders the draft onto the stored object (the informer's copy first) and compares, ignoring
   the ``volatile`` fields (e.g. ``lastReconcileTime``): an equal status is not written, so a
   steady state makes no API writes and wakes no watcher;
2. writes through the status subresource with the resourceVersion it rendered from; after a
   409 it re-reads the object and renders the *same decision* onto the fresh object, keeping
   what another writer stored meanwhile (fields the draft does not touch, conditions it does
   not set) and computing condition transition times against what is really stored, instead of
   re-sending a status built from the stale read (the last writer no longer wins);
3. reports the condition changes to the control plane (:class:`StatusReporter`) and records a
   Kubernetes Event for each transition its ``events`` rule names.

A draft may carry a ``still_valid`` check: when the fresh object read after a 409 no longer
satisfies what the decision was based on (an Operation that meanwhile reached another phase),
nothing is written and the key is looked at again at once, with the fresh object.

Trade-off: a draft replays edits instead of holding a finished status, so a reconcile cannot
express "whatever the status was, make it exactly this"; none needs to, and replaying is what
makes the 409 path correct.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import attrs

from vworkspace.api.conditions import Condition, ConditionStatus
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.view import ObjectView, mapping
from vworkspace.controllers.conditions import Conditions
from vworkspace.controllers.reporting import NullReporter, StatusReporter
from vworkspace.kube.events import EventRecorder
from vworkspace.kube.objects import update_status
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.resources import ResourceType
from vworkspace.kube.runtime.controller import Result

__all__ = ["EventRule", "Outcome", "StatusCommit", "StatusDraft", "no_events"]

# A transition -> (Event type, reason, note), or None for no Event.
EventRule = Callable[[Condition], tuple[str, str, str] | None]

# After a 409 whose fresh object invalidates the decision: look again at once.
_STALE = Result.after(0.0)


def no_events(_: Condition) -> tuple[str, str, str] | None:
    """The rule of a controller whose transitions make no Events (it records its own)."""
    return None


_REMOVE = object()


class StatusDraft:
    """The status one reconcile wants, as edits over whatever is stored.

    Reads (:meth:`get`, :meth:`condition`) see the edits on top of the object the reconcile
    started from, so the deciding code reads what it already decided.
    """

    def __init__(
        self,
        obj: ObjectView,
        *,
        now: datetime.datetime,
        still_valid: Callable[[JsonObj], bool] | None = None,
    ) -> None:
        self._base = obj.status
        self._now = now
        self._edits: dict[str, Any] = {}
        self._settings: list[tuple[str, ConditionStatus, str, str, bool]] = []
        self._still_valid = still_valid
        self._obj = obj.raw
        # The conditions as decided so far, decoded only when the deciding code reads one
        # (:meth:`condition`): decoding costs about 25 us a condition here, and most drafts are
        # only rendered, once, at the commit.
        self._preview: Conditions | None = None

    # -- deciding ------------------------------------------------------------------------

    def get(self, field: str, default: Any = None) -> Any:
        value = self._edits.get(field, self._base.get(field, default))
        return default if value is _REMOVE else value

    def set(self, field: str, value: Any) -> None:
        self._edits[field] = value

    def update(self, fields: Mapping[str, Any]) -> None:
        self._edits.update(fields)

    def remove(self, *fields: str) -> None:
        for field in fields:
            self._edits[field] = _REMOVE

    def set_condition(
        self, type_: str, status: ConditionStatus, reason: str, message: str = ""
    ) -> None:
        self._settings.append((type_, status, reason, message, False))
        if self._preview is not None:
            self._preview.set(type_, status, reason, message)

    def default_condition(
        self, type_: str, status: ConditionStatus, reason: str, message: str = ""
    ) -> None:
        """Set the condition only where the stored object has none of ``type_`` (decided per
        rendering, so a condition another writer stored meanwhile is never overwritten)."""
        self._settings.append((type_, status, reason, message, True))
        if self._preview is not None and self._preview.get(type_) is None:
            self._preview.set(type_, status, reason, message)

    def condition(self, type_: str) -> Condition | None:
        if self._preview is None:
            self._preview = self._apply_settings(Conditions(self._obj, now=self._now))
        return self._preview.get(type_)

    def _apply_settings(self, conds: Conditions) -> Conditions:
        for type_, cond_status, reason, message, if_absent in self._settings:
            if not (if_absent and conds.get(type_) is not None):
                conds.set(type_, cond_status, reason, message)
        return conds

    # -- committing ----------------------------------------------------------------------

    def valid_for(self, live: JsonObj) -> bool:
        return self._still_valid is None or self._still_valid(live)

    def render(self, live: JsonObj) -> tuple[JsonObj, Conditions]:
        """The status this draft makes of ``live``'s, and its conditions (for the reports)."""
        status = dict(mapping(live.get("status")))
        for field, value in self._edits.items():
            if value is _REMOVE:
                status.pop(field, None)
            else:
                status[field] = value
        conds = self._apply_settings(Conditions(live, now=self._now))
        if conds.items != conds.before or "conditions" not in status:
            status["conditions"] = conds.wire()
        # else: the stored list as it is (a re-encoding could differ in form, not in meaning,
        # and would be a write in a steady state)
        return status, conds


AfterCommit = Callable[[], Awaitable[Result | None]]


@attrs.frozen
class Outcome:
    """What a reconcile decided: the status (None: leave it), the requeue, whether the control
    plane hears of the transitions, and a step to run once the status is stored (its Result,
    when not None, replaces ``requeue``)."""

    requeue: Result = attrs.field(factory=Result.done)
    status: StatusDraft | None = None
    report: bool = True
    then: AfterCommit | None = None


class StatusCommit:
    def __init__(
        self,
        *,
        client: KubeApi,
        resource: ResourceType,
        field_manager: str,
        events: EventRule = no_events,
        recorder: EventRecorder | None = None,
        reporter: StatusReporter | None = None,
        volatile: Iterable[str] = (),
        on_written: Callable[[JsonObj], None] = lambda _: None,
    ) -> None:
        """``on_written`` receives the stored object after each write (the informer's
        ``record_write``, so the next reconcile reads what was written)."""
        self._client = client
        self._resource = resource
        self._field_manager = field_manager
        self._events = events
        self._recorder = recorder
        self._reporter = reporter if reporter is not None else NullReporter()
        self._volatile = tuple(volatile)
        self._on_written = on_written

    async def commit(self, obj: ObjectView, outcome: Outcome) -> Result:
        """Store ``outcome``'s status (if any, if changed), then run its ``then`` step."""
        if outcome.status is not None:
            stale = not await self._write(obj, outcome.status, report=outcome.report)
            if stale:
                return _STALE
        if outcome.then is not None:
            override = await outcome.then()
            if override is not None:
                return override
        return outcome.requeue

    def _same(self, before: Mapping[str, Any], after: JsonObj) -> bool:
        ignore = dict.fromkeys(self._volatile)
        return {**before, **ignore} == {**after, **ignore}

    async def _write(self, obj: ObjectView, draft: StatusDraft, *, report: bool) -> bool:
        """False when the fresh object after a conflict no longer fits the decision."""
        rendered: list[tuple[JsonObj, Conditions]] = []
        stale = False

        def compute(live: JsonObj) -> JsonObj | None:
            nonlocal stale
            rendered.clear()
            if not draft.valid_for(live):
                stale = True
                return None
            status, conds = draft.render(live)
            if self._same(mapping(live.get("status")), status):
                return None
            rendered.append((live, conds))
            return status

        stored = await update_status(
            self._client,
            self._resource,
            obj.key,
            compute,
            field_manager=self._field_manager,
            current=obj.raw,
        )
        if stored is None or not rendered:
            return not stale
        self._on_written(stored)
        if report:
            base, conds = rendered[0]
            await self._announce(base, conds)
        return True

    async def _announce(self, obj: JsonObj, conds: Conditions) -> None:
        self._reporter.report(obj, conds.changes())
        if self._recorder is None:
            return
        for cond in conds.transitions():
            event = self._events(cond)
            if event is not None:
                type_, reason, note = event
                await self._recorder.record(obj, type_=type_, reason=reason, note=note)
