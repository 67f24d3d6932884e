"""The one status-write step of the reconcilers: write if changed, report the condition
transitions to the control plane, record Kubernetes Events for the transitions that matter.

Each reconciler computes its whole status in memory and hands it over once per reconcile, with
its rule for which transitions become Events. A status equal to the stored one (ignoring the
``volatile`` fields, e.g. ``lastReconcileTime``) is not written, so a steady state makes no API
writes and wakes no watcher.
"""

from __future__ import annotations

from collections.abc import Callable

from vworkspace.api.conditions import Condition
from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.controllers.conditions import Conditions
from vworkspace.controllers.reporting import NullReporter, StatusReporter
from vworkspace.kube.events import EventRecorder
from vworkspace.kube.objects import update_status
from vworkspace.kube.rest.client import KubeClient
from vworkspace.kube.rest.resources import ResourceType

# A transition -> (Event type, reason, note), or None for no Event.
EventRule = Callable[[Condition], tuple[str, str, str] | None]


class StatusWriter:
    def __init__(
        self,
        *,
        client: KubeClient,
        resource: ResourceType,
        field_manager: str,
        events: EventRule,
        recorder: EventRecorder | None = None,
        reporter: StatusReporter | None = None,
        volatile: tuple[str, ...] = (),
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
        self._volatile = volatile
        self._on_written = on_written

    def _same(self, before: JsonObj, after: JsonObj) -> bool:
        ignore = dict.fromkeys(self._volatile)
        return {**before, **ignore} == {**after, **ignore}

    async def write(
        self, obj: JsonObj, status: JsonObj, conds: Conditions, *, report: bool = True
    ) -> bool:
        """Store ``status`` (with the conditions); False when nothing changed. ``report=False``
        stores without telling anyone (e.g. the last status of an object being deleted)."""
        status["conditions"] = conds.wire()
        if self._same(obj.get("status") or {}, status):
            return False
        key = ObjectKey(obj["metadata"].get("namespace"), obj["metadata"]["name"])
        stored = await update_status(
            self._client,
            self._resource,
            key,
            lambda _: status,
            field_manager=self._field_manager,
            current=obj,
        )
        if stored is not None:
            self._on_written(stored)
        if not report:
            return True
        self._reporter.report(obj, conds.changes())
        if self._recorder is not None:
            for cond in conds.transitions():
                event = self._events(cond)
                if event is not None:
                    type_, reason, note = event
                    await self._recorder.record(obj, type_=type_, reason=reason, note=note)
        return True
