"""Supplemental events: delivered to the control plane once, recorded after delivery.

An engine may ask for extra events beside the condition transitions (the SeaweedFS
managed-storage and endpoints reports, docs/pull-mode.md, "Supplemental events"). Each
:class:`~vworkspace.engines.base.Supplement` names an instance annotation and a value; the
protocol, per reconcile of the instance:

1. the annotation already holds the value: done (also after a restart);
2. the reporter said the event was delivered (kept in memory): write the annotation, done;
3. the reporter still holds the event (buffered or being posted): done, nothing twice;
4. otherwise hand the event to the reporter, which calls back after a successful POST; the
   callback records the delivery and wakes the instance, whose next reconcile does step 2.

One annotation per report, written only after delivery, replaces Go's claim / posted / ack-retry
annotations and its in-memory state machine. The guarantees are the same: nothing reported
before delivery; nothing lost to restarts, outages or overflow (an event dropped from the buffer
is no longer pending, so the next reconcile hands it over again); no repost while one is in
flight (reconciles of one key never run concurrently). A crash between the POST and the
annotation write reposts the same event under the same eventKey after the restart, which the
control plane deduplicates (Go has the same window between the POST and its "posted" mark).
"""

from __future__ import annotations

from collections.abc import Callable

from vworkspace.api.jsontypes import JsonObj
from vworkspace.api.meta import ObjectKey
from vworkspace.api.view import ObjectView
from vworkspace.controllers.reporting import StatusReporter
from vworkspace.engines.base import Supplement
from vworkspace.kube.rest.api import KubeApi
from vworkspace.kube.rest.resources import ResourceType


class Supplements:
    def __init__(
        self,
        *,
        client: KubeApi,
        resource: ResourceType,
        reporter: StatusReporter,
        field_manager: str,
        wake: Callable[[ObjectKey], None] = lambda key: None,
    ) -> None:
        """``wake`` enqueues an instance (its controller's queue): a delivery brings it back
        to record the delivery."""
        self._client = client
        self._resource = resource
        self._reporter = reporter
        self._field_manager = field_manager
        self._delivered: dict[tuple[ObjectKey, str], str] = {}
        self.wake = wake

    async def settle(self, obj: JsonObj, supplements: tuple[Supplement, ...]) -> None:
        view = ObjectView(obj)
        key, annotations = view.key, view.annotations
        patch: dict[str, str | None] = {}
        for item in supplements:
            slot = (key, item.annotation)
            current = annotations.get(item.annotation)
            if item.event is None or not item.value:  # nothing to report: re-arm
                if current is not None:
                    patch[item.annotation] = None
                self._delivered.pop(slot, None)
                continue
            if current == item.value:
                self._delivered.pop(slot, None)
            elif self._delivered.get(slot) == item.value:
                patch[item.annotation] = item.value
            elif not self._reporter.pending(item.event["eventKey"]):
                self._reporter.deliver(item.event, self._on_delivered(slot, item.value))
        if patch:
            await self._client.merge_patch(
                self._resource,
                key,
                {"metadata": {"annotations": patch}},
                field_manager=self._field_manager,
            )
            for name, value in patch.items():
                if value is not None:
                    self._delivered.pop((key, name), None)

    def _on_delivered(self, slot: tuple[ObjectKey, str], value: str) -> Callable[[], None]:
        def delivered() -> None:
            self._delivered[slot] = value
            self.wake(slot[0])

        return delivered

    def forget(self, key: ObjectKey) -> None:
        for slot in [s for s in self._delivered if s[0] == key]:
            del self._delivered[slot]
